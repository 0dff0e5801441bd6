"""Subgroup evaluation: per-class AUC and true-positive rate by sex, age band, view and follow-up.

For each attribute of the data-entry table the images of a split fall into groups:

=============  ===========================================================================================
``sex``        ``Patient Gender`` as written (``F``, ``M``)
``age_band``   ``Patient Age`` in bands given by their lower edges (default 0, 20, 40, 60, 80: ``0-19``,
               ``20-39``, ``40-59``, ``60-79``, ``80+``); an age outside 0-120 (NIH has a few data-entry
               errors such as 412) goes to ``unknown``, never into a band
``view``       ``View Position`` as written (``PA``, ``AP``)
``follow_up``  ``first`` (``Follow-up #`` 0: the patient's first image) or ``later``
=============  ===========================================================================================

Per group and class: the ROC AUC with its percentile bootstrap CI (:func:`~thoracic.evaluation.classification.compute_auc`,
resampling the group's images), and the true-positive rate (sensitivity) at the class's operating point
(``operating_points.json`` of the run, else 0.5) with a bootstrap CI. Every group is listed, however
small: an AUC is undefined (NaN, with the reason) when the group has fewer than ``min_count`` positive or
negative images of the class, a TPR when it has no positive image, and an empty group says so. A NaN label
(an image not labelled for a class) is skipped: each class counts the group's images labelled for it.

Gaps: per attribute, each group minus the reference group (the largest group of the attribute), per class
and for the mean, with a percentile CI of the difference from independent resamples of the two groups
(the groups are disjoint, so this is the stratified bootstrap of the difference). The mean's gap is over
the classes with a defined AUC (TPR) in both groups.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.deprecation import renamed_keywords
from thoracic.errors import DataError
from thoracic.evaluation.classification import compute_auc
from thoracic.evaluation.operating_points import DEFAULT_THRESHOLD, OPERATING_POINTS_FILE, load_operating_points
from thoracic.evaluation.figures import new_figure, save_figure
from thoracic.evaluation.sample_size import MIN_SUBGROUP_IMAGES
from thoracic.io import write_csv_atomic, write_text_atomic
from thoracic.metrics import check_labels, resolve_class_names

#: Lower edges of the default age bands: 0-19, 20-39, 40-59, 60-79, 80+.
DEFAULT_AGE_BANDS: tuple[int, ...] = (0, 20, 40, 60, 80)
#: Ages above this (or negative) are data-entry errors: their images go to the group ``unknown``.
MAX_PLAUSIBLE_AGE = 120
#: The attributes evaluated, in report order.
ATTRIBUTES: tuple[str, ...] = ("sex", "age_band", "view", "follow_up")
UNKNOWN = "unknown"
MEAN = "Mean"

_PREFERRED_ORDER = {"sex": ("F", "M"), "view": ("PA", "AP"), "follow_up": ("first", "later")}


def age_band_labels(edges: Sequence[int]) -> list[str]:
    """``[0, 20, 40]`` -> ``["0-19", "20-39", "40+"]`` (integer ages; the last band is open)."""
    edges = [int(e) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0:
        raise DataError(f"age bands must be increasing non-negative lower edges, e.g. 0 20 40 60 80; got {edges}")
    return [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]


def subgroup_attributes(metadata: pd.DataFrame, age_bands: Sequence[int] = DEFAULT_AGE_BANDS) -> pd.DataFrame:
    """One row per image (index ``image_id``), one string column per attribute of :data:`ATTRIBUTES`.

    Args:
        metadata: the data-entry table (:attr:`thoracic.data.metadata.ChestXray14.table`): ``image_id``,
            ``sex``, ``age``, ``view``, and ``follow_up`` (a dataset without it, every reader's but
            ChestX-ray14's: ``unknown`` for every image).
        age_bands: lower edges of the age bands, increasing (the first band starts at its edge; ages
            below it, like ages above :data:`MAX_PLAUSIBLE_AGE`, are ``unknown``).
    """
    needed = ["image_id", "sex", "age", "view"]
    missing = [c for c in needed if c not in metadata.columns]
    if missing:
        raise DataError(f"metadata table lacks column(s) {missing} needed for subgroups; expected {needed}")
    labels = age_band_labels(age_bands)
    age = pd.to_numeric(metadata["age"], errors="coerce").to_numpy(dtype=float)
    band = np.searchsorted(np.asarray(age_bands, dtype=float), age, side="right") - 1
    valid = np.isfinite(age) & (age >= age_bands[0]) & (age <= MAX_PLAUSIBLE_AGE)
    age_band = np.where(valid, np.asarray(labels, dtype=object)[np.clip(band, 0, len(labels) - 1)], UNKNOWN)
    follow_up = (pd.to_numeric(metadata["follow_up"], errors="coerce") if "follow_up" in metadata.columns
                 else pd.Series(np.nan, index=metadata.index))
    table = pd.DataFrame({
        "sex": metadata["sex"].astype(str).str.strip().replace("", UNKNOWN).to_numpy(),
        "age_band": age_band,
        "view": metadata["view"].astype(str).str.strip().replace("", UNKNOWN).to_numpy(),
        "follow_up": np.where(follow_up.isna(), UNKNOWN, np.where(follow_up == 0, "first", "later")),
    }, index=pd.Index(metadata["image_id"].astype(str).to_numpy(), name="image_id"))
    return table


def informative_attributes(metadata: pd.DataFrame, image_ids: Sequence[str],
                           age_bands: Sequence[int] = DEFAULT_AGE_BANDS) -> list[str]:
    """The attributes of :data:`ATTRIBUTES` with at least two known groups among ``image_ids`` (where a
    subgroup comparison makes sense: a dataset that records no sex or age, or a single view, has none)."""
    table = subgroup_attributes(metadata, age_bands)
    table = table[table.index.isin([str(i) for i in image_ids])]
    return [a for a in ATTRIBUTES if len(set(table[a].unique()) - {UNKNOWN}) >= 2]


def group_order(attribute: str, present: Sequence[str], age_bands: Sequence[int] = DEFAULT_AGE_BANDS) -> list[str]:
    """Groups of ``attribute`` in report order: every expected group (an absent one too, so that it is
    shown as empty), then any other value found, alphabetically; ``unknown`` last."""
    expected = list(age_band_labels(age_bands)) if attribute == "age_band" else list(_PREFERRED_ORDER.get(attribute, ()))
    others = sorted(set(present) - set(expected) - {UNKNOWN})
    return expected + others + ([UNKNOWN] if UNKNOWN in set(present) else [])


def subgroup_thresholds(evaluation_dir: str | Path,
                        class_names: Sequence[str]) -> tuple[dict[str, float], str]:
    """Per-class thresholds from ``<evaluation_dir>/operating_points.json``, else 0.5 for every class of
    ``class_names`` (the run's labels).

    Returns ``(thresholds, source)``; ``source`` says where they came from in words (for tables and
    reports). The file is read by :func:`~thoracic.evaluation.operating_points.load_operating_points`, not
    strictly: a class missing from it gets 0.5 and the source says so (``thoracic predict`` reads it
    strictly; a subgroup table is still worth showing for a file written for fewer classes).
    ``thoracic evaluate`` passes the thresholds it has just chosen in memory
    (:func:`thresholds_with_source`) instead of reading them back.

    Raises:
        DataError: the file is not JSON, lacks ``thresholds``, names an unknown class, or a threshold is
            not a number in [0, 1].
    """
    path = Path(evaluation_dir) / OPERATING_POINTS_FILE
    if not path.is_file():
        return {name: DEFAULT_THRESHOLD for name in class_names}, f"{DEFAULT_THRESHOLD:g} (no operating_points.json)"
    points = load_operating_points(path, class_names, strict=False)
    return thresholds_with_source(points["thresholds"], points.get("method", "?"), points.get("split", "?"),
                                  class_names, path.name, "not in the file")


def thresholds_with_source(chosen: Mapping[str, float | None], method: str, split: str,
                           class_names: Sequence[str] | None = None, where: str = OPERATING_POINTS_FILE,
                           why_default: str = "no threshold chosen: one label value") -> tuple[dict[str, float], str]:
    """``(thresholds, source)`` of per-class operating points ``chosen`` (``method`` on ``split``) for
    ``class_names`` (default: the classes of ``chosen``); a class without one (absent or None) gets
    :data:`DEFAULT_THRESHOLD`, and ``source`` names it with ``why_default``."""
    class_names = list(chosen) if class_names is None else class_names
    thresholds = {name: DEFAULT_THRESHOLD if chosen.get(name) is None else float(chosen[name])
                  for name in class_names}
    source = f"operating points of {where} ({method} on {split})"
    absent = [n for n in class_names if chosen.get(n) is None]
    if absent:
        source += f"; {DEFAULT_THRESHOLD:g} for {', '.join(absent)} ({why_default})"
    return thresholds, source


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1.0 - alpha))


def _rowwise_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN (NaN for an all-NaN row, without a warning)."""
    finite = np.isfinite(values)
    count = finite.sum(-1)
    total = np.where(finite, values, 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class _Group:
    """What one group's rows and the bootstrap give (internal)."""

    name: str
    n_images: int
    n_positive: np.ndarray
    n_negative: np.ndarray
    auc: np.ndarray
    auc_notes: dict[int, str]
    auc_replicates: np.ndarray  # (B, C), NaN where undefined
    tpr: np.ndarray
    tpr_replicates: np.ndarray  # (B, C)


def _tpr_bootstrap(labels: np.ndarray, hits: np.ndarray, n_bootstrap: int, rng: np.random.Generator,
                   chunk_size: int = 100) -> np.ndarray:
    """``(B, C)`` TPR of image resamples: TP weight / positive weight, with image multiplicities as weights
    (an image not labelled for a class, NaN, is not one of its positives)."""
    n, c = labels.shape
    out = np.full((n_bootstrap, c), np.nan)
    if n == 0 or n_bootstrap == 0:
        return out
    positive = (labels == 1).astype(np.float64)
    true_positive = positive * hits
    for first in range(0, n_bootstrap, chunk_size):
        b = min(chunk_size, n_bootstrap - first)
        # multiplicity of every image in every resample (as compute_auc draws them)
        index = rng.integers(0, n, size=(b, n))
        counts = np.bincount((index + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n)
        counts = counts.reshape(b, n).astype(np.float64)
        pos = counts @ positive
        with np.errstate(invalid="ignore", divide="ignore"):
            out[first:first + b] = np.where(pos > 0, (counts @ true_positive) / np.where(pos > 0, pos, 1), np.nan)
    return out


def _evaluate_group(name: str, labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
                    class_names: Sequence[str], n_bootstrap: int, seed: int, min_count: int) -> _Group:
    n, c = labels.shape
    n_pos = (labels == 1).sum(0).astype(int)
    n_neg = (labels == 0).sum(0).astype(int)
    notes: dict[int, str] = {}
    if n == 0:
        empty = np.full(c, np.nan)
        return _Group(name, 0, n_pos, n_neg, empty, {j: "no images in this group" for j in range(c)},
                      np.full((n_bootstrap, c), np.nan), empty.copy(), np.full((n_bootstrap, c), np.nan))
    # one seed per group (derived from the run's seed and the group), so groups resample independently
    auc_seed, tpr_seed = np.random.SeedSequence([seed, *name.encode()]).generate_state(2)
    result = compute_auc(labels, scores, class_names, bootstrap=n_bootstrap, seed=int(auc_seed),
                         keep_replicates=True)
    auc = result.auc.copy()
    replicates = result.replicates if result.replicates is not None else np.full((0, c), np.nan)
    replicates = replicates.copy()
    for j in range(c):
        if n_pos[j] < min_count or n_neg[j] < min_count:
            notes[j] = (f"AUC undefined: {n_pos[j]} positive and {n_neg[j]} negative image(s) in this group "
                        f"(at least {min_count} of each needed)")
            auc[j] = np.nan
            replicates[:, j] = np.nan
    hits = (scores >= thresholds[None, :]).astype(np.int8)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(n_pos > 0, ((labels == 1) & (hits == 1)).sum(0) / np.maximum(n_pos, 1), np.nan)
    tpr_replicates = _tpr_bootstrap(labels, hits, n_bootstrap, np.random.default_rng(int(tpr_seed)))
    tpr_replicates[:, n_pos == 0] = np.nan
    return _Group(name, n, n_pos, n_neg, auc, notes, replicates, tpr, tpr_replicates)


@dataclass(frozen=True)
class SubgroupResult:
    """Subgroup AUC / TPR table, the gaps to each attribute's reference group, and the settings.

    Attributes:
        groups: one row per (attribute, group, class or ``Mean``): ``attribute, group, class_name,
            n_images, n_positive, n_negative, auc, auc_ci_low, auc_ci_high, threshold, tpr, tpr_ci_low,
            tpr_ci_high, note`` (every group, an empty one included).
        gaps: one row per (attribute, group other than the reference, class or ``Mean``, metric):
            ``attribute, group, reference, class_name, metric`` (``auc`` or ``tpr``), ``gap`` (group minus
            reference), ``ci_low, ci_high, note``.
        settings: age bands, thresholds and where they came from, bootstrap size, confidence, seed,
            ``min_count``, number of images.
    """

    groups: pd.DataFrame
    gaps: pd.DataFrame
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready (NaN as null)."""

        def records(frame: pd.DataFrame) -> list[dict]:
            return json.loads(frame.to_json(orient="records"))

        return {**self.settings, "groups": records(self.groups), "gaps": records(self.gaps)}


@renamed_keywords(n_bootstrap="bootstrap")
def evaluate_subgroups(
    labels: np.ndarray,
    probabilities: np.ndarray,
    image_ids: Sequence[str],
    metadata: pd.DataFrame,
    thresholds: Mapping[str, float] | None = None,
    threshold_source: str = "",
    class_names: Sequence[str] | None = None,
    age_bands: Sequence[int] = DEFAULT_AGE_BANDS,
    attributes: Sequence[str] = ATTRIBUTES,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_count: int = 1,
    progress: bool = False,
) -> SubgroupResult:
    """Per-class AUC (bootstrap CI) and TPR at the operating points per subgroup, and the gaps between groups.

    Args:
        labels: ``(N, C)`` 0/1 ground truth of the split's images; NaN (not labelled) entries are skipped.
        probabilities: ``(N, C)`` predicted probabilities (the TPR thresholds apply to them).
        image_ids: the ``N`` image ids, looked up in ``metadata``.
        metadata: data-entry table with ``image_id, sex, age, view, follow_up`` (every image of the split).
        thresholds: class -> probability threshold (default 0.5 for every class).
        threshold_source: words on where the thresholds came from (kept in ``settings``).
        age_bands: lower edges of the age bands.
        attributes: which of :data:`ATTRIBUTES` to evaluate.
        bootstrap: resamples per group (0: no intervals).
        seed: seed of the resamples (each group derives its own from it).
        confidence: two-sided level of the percentile intervals.
        min_count: fewest positive and negative images of a class for a group's AUC to be reported.
        progress: a progress bar over the groups.
    """
    labels = check_labels(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    class_names = resolve_class_names(class_names, probabilities.shape[-1])
    image_ids = np.asarray([str(i) for i in image_ids])
    n, c = probabilities.shape
    if labels.shape != (n, c) or len(image_ids) != n or len(class_names) != c:
        raise DataError(f"subgroups: labels {labels.shape}, probabilities {probabilities.shape}, "
                        f"{len(image_ids)} image ids and {len(class_names)} classes do not match")
    unknown_attributes = sorted(set(attributes) - set(ATTRIBUTES))
    if unknown_attributes:
        raise DataError(f"unknown subgroup attribute(s) {unknown_attributes}; expected among {list(ATTRIBUTES)}")
    if min_count < 1:
        raise DataError(f"min_count must be at least 1, got {min_count}")
    table = subgroup_attributes(metadata, age_bands)
    missing = [i for i in image_ids if i not in table.index]
    if missing:
        raise DataError(f"{len(missing)} image(s) of the predictions are not in the data-entry table, "
                        f"e.g. {missing[:3]}")
    table = table.loc[image_ids]
    thresholds = dict(thresholds or {})
    threshold_vector = np.array([float(thresholds.get(name, DEFAULT_THRESHOLD)) for name in class_names])

    work = [(attribute, group) for attribute in attributes
            for group in group_order(attribute, table[attribute].unique().tolist(), age_bands)]
    if progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc="subgroups", unit="group", leave=False)
    evaluated: dict[str, list[_Group]] = {attribute: [] for attribute in attributes}
    for attribute, group in work:
        rows = np.flatnonzero(table[attribute].to_numpy() == group)
        evaluated[attribute].append(_evaluate_group(f"{attribute}={group}", labels[rows], probabilities[rows],
                                                    threshold_vector, class_names, bootstrap, seed, min_count))

    group_rows, gap_rows = [], []
    for attribute, groups in evaluated.items():
        for group in groups:
            group_rows.extend(_group_records(attribute, group, class_names, threshold_vector, confidence))
        reference = max(groups, key=lambda g: g.n_images)  # the first of the largest on ties
        for group in groups:
            if group is not reference:
                gap_rows.extend(_gap_records(attribute, group, reference, class_names, confidence))
    settings = {
        "attributes": list(attributes), "age_bands": [int(a) for a in age_bands],
        "age_band_labels": age_band_labels(age_bands), "max_plausible_age": MAX_PLAUSIBLE_AGE,
        "thresholds": {name: float(t) for name, t in zip(class_names, threshold_vector)},
        "threshold_source": threshold_source or "given thresholds",
        "bootstrap": {"n_resamples": int(bootstrap), "confidence": confidence, "seed": seed},
        "min_count": int(min_count), "n_images": int(n), "class_names": list(class_names),
        "reference": "per attribute, the group with the most images; gap = group minus reference",
    }
    return SubgroupResult(pd.DataFrame(group_rows), pd.DataFrame(gap_rows, columns=_GAP_COLUMNS), settings)


_GAP_COLUMNS = ["attribute", "group", "reference", "class_name", "metric", "gap", "ci_low", "ci_high", "note"]


def _label(group: _Group) -> str:
    return group.name.split("=", 1)[1]


def _group_records(attribute: str, group: _Group, class_names: Sequence[str], thresholds: np.ndarray,
                   confidence: float) -> list[dict]:
    records = []
    for j, name in enumerate(class_names):
        auc_ci = _percentile_ci(group.auc_replicates[:, j], confidence) if np.isfinite(group.auc[j]) else (np.nan, np.nan)
        tpr_ci = _percentile_ci(group.tpr_replicates[:, j], confidence) if np.isfinite(group.tpr[j]) else (np.nan, np.nan)
        notes = [group.auc_notes[j]] if j in group.auc_notes else []
        if group.n_images and group.n_positive[j] == 0:
            notes.append("TPR undefined: no positive image")
        records.append({
            "attribute": attribute, "group": _label(group), "class_name": name, "n_images": group.n_images,
            "n_positive": int(group.n_positive[j]), "n_negative": int(group.n_negative[j]),
            "auc": group.auc[j], "auc_ci_low": auc_ci[0], "auc_ci_high": auc_ci[1],
            "threshold": float(thresholds[j]), "tpr": group.tpr[j], "tpr_ci_low": tpr_ci[0], "tpr_ci_high": tpr_ci[1],
            "note": "; ".join(dict.fromkeys(notes)),
        })
    auc_defined = np.isfinite(group.auc)
    tpr_defined = np.isfinite(group.tpr)
    mean_auc = float(group.auc[auc_defined].mean()) if auc_defined.any() else np.nan
    mean_tpr = float(group.tpr[tpr_defined].mean()) if tpr_defined.any() else np.nan
    auc_ci = _percentile_ci(_rowwise_nanmean(group.auc_replicates[:, auc_defined]), confidence) \
        if auc_defined.any() else (np.nan, np.nan)
    tpr_ci = _percentile_ci(_rowwise_nanmean(group.tpr_replicates[:, tpr_defined]), confidence) \
        if tpr_defined.any() else (np.nan, np.nan)
    note = ("no images in this group" if group.n_images == 0 else
            f"mean over {int(auc_defined.sum())} (AUC) and {int(tpr_defined.sum())} (TPR) of {len(class_names)} "
            "classes with a defined value")
    records.append({
        "attribute": attribute, "group": _label(group), "class_name": MEAN, "n_images": group.n_images,
        "n_positive": int(group.n_positive.sum()), "n_negative": int(group.n_negative.sum()),
        "auc": mean_auc, "auc_ci_low": auc_ci[0], "auc_ci_high": auc_ci[1], "threshold": np.nan,
        "tpr": mean_tpr, "tpr_ci_low": tpr_ci[0], "tpr_ci_high": tpr_ci[1], "note": note,
    })
    return records


def _gap_records(attribute: str, group: _Group, reference: _Group, class_names: Sequence[str],
                 confidence: float) -> list[dict]:
    records = []
    for metric, value, ref_value, reps, ref_reps in (
            ("auc", group.auc, reference.auc, group.auc_replicates, reference.auc_replicates),
            ("tpr", group.tpr, reference.tpr, group.tpr_replicates, reference.tpr_replicates)):
        for j, name in enumerate(class_names):
            defined = np.isfinite(value[j]) and np.isfinite(ref_value[j])
            gap = value[j] - ref_value[j] if defined else np.nan
            ci = _percentile_ci(reps[:, j] - ref_reps[:, j], confidence) if defined else (np.nan, np.nan)
            note = "" if defined else f"{metric.upper()} undefined in {'this group' if not np.isfinite(value[j]) else 'the reference group'}"
            records.append({"attribute": attribute, "group": _label(group), "reference": _label(reference),
                            "class_name": name, "metric": metric, "gap": gap, "ci_low": ci[0], "ci_high": ci[1],
                            "note": note})
        common = np.isfinite(value) & np.isfinite(ref_value)
        if common.any():
            gap = float(value[common].mean() - ref_value[common].mean())
            ci = _percentile_ci(_rowwise_nanmean(reps[:, common]) - _rowwise_nanmean(ref_reps[:, common]), confidence)
            note = f"mean over the {int(common.sum())} classes defined in both groups"
        else:
            gap, ci, note = np.nan, (np.nan, np.nan), "no class defined in both groups"
        records.append({"attribute": attribute, "group": _label(group), "reference": _label(reference),
                        "class_name": MEAN, "metric": metric, "gap": gap, "ci_low": ci[0], "ci_high": ci[1],
                        "note": note})
    return records


def save_subgroups(result: SubgroupResult, out_dir: str | Path, split: str = "test",
                   extra: Mapping | None = None) -> dict[str, Path]:
    """Write ``subgroups_<split>.csv``, ``subgroup_gaps_<split>.csv``, ``subgroups_<split>.json`` and
    ``subgroups_<split>.png`` into ``out_dir``; returns them by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"subgroups_csv": out / f"subgroups_{split}.csv", "subgroup_gaps_csv": out / f"subgroup_gaps_{split}.csv",
             "subgroups_json": out / f"subgroups_{split}.json"}
    write_csv_atomic(files["subgroups_csv"], result.groups, index=False, float_format="%.6f")
    write_csv_atomic(files["subgroup_gaps_csv"], result.gaps, index=False, float_format="%.6f")
    write_text_atomic(files["subgroups_json"], json.dumps({"split": split, **(extra or {}), **result.to_dict()},
                                                          indent=1))
    files["subgroups_png"] = save_figure(subgroup_figure(result, f"Subgroup AUC ({split} split)"),
                                         out / f"subgroups_{split}.png")
    return files


def subgroup_figure(result: SubgroupResult, title: str = "Subgroup AUC") -> object:
    """One panel per attribute: per-class AUC (and the mean) of each group with its CI as an error bar;
    undefined values are left out of the plot (and listed in the table); the legend gives each group's
    images, marking groups under :data:`~thoracic.evaluation.sample_size.MIN_SUBGROUP_IMAGES`."""
    table = result.groups
    attributes = list(dict.fromkeys(table["attribute"])) if len(table) else []
    figure = new_figure(figsize=(13, 2.6 * max(1, len(attributes))), layout="constrained")
    axes = figure.subplots(max(1, len(attributes)), 1, squeeze=False)[:, 0]
    classes = list(dict.fromkeys(table["class_name"])) if len(table) else []
    x = np.arange(len(classes))
    for ax, attribute in zip(axes, attributes):
        part = table[table["attribute"] == attribute]
        groups = list(dict.fromkeys(part["group"]))
        width = 0.8 / max(1, len(groups))
        for k, group in enumerate(groups):
            rows = part[part["group"] == group].set_index("class_name").reindex(classes)
            auc = rows["auc"].to_numpy(float)
            low = np.clip(auc - rows["auc_ci_low"].to_numpy(float), 0, None)
            high = np.clip(rows["auc_ci_high"].to_numpy(float) - auc, 0, None)
            errors = np.where(np.isfinite(low) & np.isfinite(high), np.vstack([low, high]), 0.0)
            n = int(rows["n_images"].iloc[0]) if len(rows) else 0
            few = f", fewer than {MIN_SUBGROUP_IMAGES}" if 0 < n < MIN_SUBGROUP_IMAGES else ""
            ax.errorbar(x - 0.4 + width * (k + 0.5), auc, yerr=errors, fmt="o", ms=3, capsize=1.5, lw=0.8,
                        label=f"{group} (n={n}{few})")
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")
        ax.set_ylabel("AUC")
        ax.set_title(attribute.replace("_", " "), fontsize=10, loc="left")
        ax.set_xticks(x, classes, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0.0, 1.02)
        ax.legend(fontsize=7, ncol=min(6, len(groups)), loc="lower left")
    figure.suptitle(title)
    return figure


__all__ = [
    "ATTRIBUTES", "DEFAULT_AGE_BANDS", "DEFAULT_THRESHOLD", "SubgroupResult", "age_band_labels",
    "evaluate_subgroups", "group_order", "informative_attributes", "save_subgroups", "subgroup_attributes",
    "subgroup_figure", "subgroup_thresholds", "thresholds_with_source",
]
