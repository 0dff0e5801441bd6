"""One orchestrator per command, each reading and writing run folders through the libraries below it
(docs/ARCHITECTURE.md): :mod:`~thoracic.workflows.evaluate`, :mod:`~thoracic.workflows.localize`,
:mod:`~thoracic.workflows.experiment`, :mod:`~thoracic.workflows.sweep`, :mod:`~thoracic.workflows.report`,
:mod:`~thoracic.workflows.predict`, :mod:`~thoracic.workflows.export`, :mod:`~thoracic.workflows.demo`
(settings in :mod:`~thoracic.workflows.demo_settings`); :mod:`~thoracic.workflows.common` is their shared
set-up. Nothing below this layer imports it; the commands only parse arguments and call it.
"""
