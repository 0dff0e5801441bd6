"""Reports of evaluated runs: Markdown and self-contained HTML reports of one or more evaluated runs beside the published numbers.

Input: run folders on which ``thoracic evaluate`` (and optionally ``thoracic localize``) ran, or
experiment folders (``seed*/`` run folders of one config). Runs whose configs differ only in ``seed``
(and ``run_name`` / ``output_dir``) form one group, reported as mean +- std over the runs; a single run
shows its bootstrap 95% CI instead.

A report is a list of :class:`Section` s (title, anchor, figures, headline tables, folded secondary
tables, notes), each built by one function of :data:`SECTION_BUILDERS` from a :class:`ReportContext`;
adding a section is adding one function. Both outputs are rendered from the same sections by the
Jinja2 templates in ``thoracic/reporting/templates/`` (no Markdown is converted to HTML):

Columns are named by run folder with the model beside it (``seed0: baseline (resnet10, 64 px)``; an
experiment's seeds by the experiment folder). Numbers that rest on small samples are marked and warned
about at the top of their section (:mod:`thoracic.evaluation.sample_size`).

- Setup: one column per run: model, backbone, input size, weights, frozen backbone, epochs run and best
  epoch, seed, image counts per split, box rows, what the run saw of the full dataset (test images, box
  rows), data folder (phantom or real), checkpoint hash.
- Classification: ROC curves, Table 1 (classes as rows; positives per class, Wang et al. 2017 ResNet-50,
  then each group beside the seed paper's column for the same model), and (folded) the per-class
  operating points.
- Localization: overlays; a headline table (per run and heatmap method: accuracy at T(IoU) = 0.3 and
  T(IoBB) = 0.25 at heatmap threshold 180, the paper's, with false positives per image, threshold 60 and
  pooled beside it, the random-box (mean ± sd over its seeded draws) and centre-box baselines, the
  pointing game); the per-class tables at those two criteria (heatmap threshold 180, every cell
  ``accuracy (false positives per image)``, the box rows of each class and the mean over the classes
  that have boxes); the pointing game per class; then (folded) the other thresholds, the accuracy per
  heatmap threshold and the average false positives.

The HTML embeds every figure (re-encoded as WebP, or JPEG where Pillow lacks WebP, to keep the file
small), so the one file can be mailed or archived.

Modules: :mod:`~thoracic.reporting.runs` (finding and reading run folders), the tables as DataFrames by
family (:mod:`~thoracic.reporting.setup_tables`, :mod:`~thoracic.reporting.classification_tables`,
:mod:`~thoracic.reporting.localization_tables`), :mod:`~thoracic.reporting.document` (sections as data),
:mod:`~thoracic.reporting.sections` (one builder per section), :mod:`~thoracic.reporting.render` (Markdown and
HTML through the Jinja2 templates), :mod:`~thoracic.reporting.comparison` (the side-by-side overlay figure);
``thoracic report`` is :func:`thoracic.workflows.report.build_report`.
"""
