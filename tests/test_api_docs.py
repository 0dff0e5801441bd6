"""The public API is documented where users meet it: docstrings on every public name, examples that run.

The examples in the docstrings of the public modules and in ``docs/api.md`` are doctests: a change that
makes one of them wrong (a shape, a name, a value) fails here.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
API_PAGE = REPO / "docs" / "api.md"

#: Packages whose ``__all__`` is the public API.
PUBLIC_PACKAGES = ("thoracic.models", "thoracic.heatmaps", "thoracic.evaluation")
#: ``thoracic.data`` lists its submodules; each one's public names are those it defines.
DATA_MODULES = ("thoracic.data.metadata", "thoracic.data.splits", "thoracic.data.boxes", "thoracic.data.images",
                "thoracic.data.cache", "thoracic.data.cache_writer", "thoracic.data.dataset",
                "thoracic.data.transforms", "thoracic.data.synth.folder", "thoracic.data.synth.render",
                "thoracic.data.synth.shapes", "thoracic.data.synth.family_a", "thoracic.data.synth.family_b",
                "thoracic.data.synth.layouts", "thoracic.data.collection", "thoracic.data.harmonisation",
                "thoracic.data.tables", "thoracic.data.datasets", "thoracic.data.datasets.base",
                "thoracic.data.datasets.chestxray14", "thoracic.data.datasets.chexpert", "thoracic.data.datasets.mimic",
                "thoracic.data.datasets.padchest", "thoracic.data.datasets.vindr", "thoracic.data.datasets.rsna")
#: Modules whose docstrings hold examples (each must hold at least one).
DOCTEST_MODULES = ("thoracic.models", "thoracic.models.registry", "thoracic.heatmaps.native",
                   "thoracic.evaluation.classification", "thoracic.evaluation.localization",
                   "thoracic.heatmaps.boxes", "thoracic.data", "thoracic.data.datasets", "thoracic.data.harmonisation",
                   "thoracic.data.boxes", "thoracic.data.images", "thoracic.io", "thoracic.metrics",
                   "thoracic.geometry", "thoracic.spec")
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    if module_name in PUBLIC_PACKAGES:
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module_name
            and (inspect.isclass(value) or inspect.isfunction(value))]


def _undocumented(module_name: str) -> list[str]:
    """Public classes and functions without their own docstring, and public methods / properties of those
    classes defined in thoracic without one."""
    module = importlib.import_module(module_name)
    missing = []
    for name in public_names(module_name):
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isroutine(value)):
            continue  # constants are documented in the module docstring and docs/api.md
        if not (value.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(value) and value.__module__.startswith("thoracic"):
            for attribute, member in vars(value).items():
                if attribute.startswith("_"):
                    continue
                function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if (inspect.isfunction(function) or isinstance(member, property)) \
                        and not (function.__doc__ or "").strip():
                    missing.append(f"{name}.{attribute}")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_PACKAGES + DATA_MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    assert public_names(module_name), f"{module_name} exposes nothing"
    assert _undocumented(module_name) == []


def test_every_public_name_is_on_the_api_page() -> None:
    text = API_PAGE.read_text()
    for package in PUBLIC_PACKAGES:
        for name in importlib.import_module(package).__all__:
            assert re.search(rf"\b{re.escape(name)}\b", text), f"{package}.{name} is missing from docs/api.md"
    for name in ("load_chestxray14", "ChestXray14", "make_splits", "read_image", "scale_boxes", "prepare_cache",
                 "ImageCache", "ChestXrayDataset", "ChestXrayDataModule", "collate_samples", "normalize_images",
                 "generate_phantom_dataset", "load_config", "load_config_by_name", "load_dataset",
                 "detect_dataset_kind", "ChestXrayCollection", "DATASET_KINDS", "shared_labels", "HARMONISED_LABELS",
                 "generate_layout"):
        assert re.search(rf"\b{name}\b", text), f"{name} is missing from docs/api.md"


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder().find(module, module_name) if t.examples]
    assert tests, f"{module_name}: no example in its docstrings"
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_api_page_examples_run() -> None:
    """The ``>>>`` examples of docs/api.md's code blocks, run in order in one namespace."""
    blocks = re.findall(r"^```python\n(.*?)^```", API_PAGE.read_text(), flags=re.S | re.M)
    text = "\n".join(block for block in blocks if ">>> " in block)
    test = doctest.DocTestParser().get_doctest(text, {}, "docs/api.md", str(API_PAGE), 0)
    assert len(test.examples) >= 10
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
