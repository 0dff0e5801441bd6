"""Calibration of the per-class probabilities: expected calibration error, reliability diagrams and
temperature scaling.

Each of the 14 outputs is a separate sigmoid (multi-label), so calibration is measured per class: the
predicted probability of a finding against the fraction of images that have it.

- **ECE** (expected calibration error, Guo et al. 2017) per class: probabilities binned into ``n_bins``
  equal-width bins over [0, 1]; ECE = sum over bins of (images in bin / all images) x |fraction positive
  in bin - mean probability in bin|. Computed with ``torchmetrics``' ``binary_calibration_error``
  (``norm="l1"``); the reliability diagram uses the same bins.
- **Temperature scaling** (Guo et al. 2017): calibrated probability = sigmoid(logit / T), with T > 0
  fitted on the validation split by minimising the binary cross-entropy (``scipy.optimize``), per class
  (default) or one T shared by all classes. Dividing by T > 0 keeps the order of the scores, so AUCs do
  not change; thresholds chosen on uncalibrated probabilities map to sigmoid(logit(t) / T).
  A class whose validation labels take one value keeps T = 1 (nothing to fit), and says so.

A NaN label (an image not labelled for a class) is skipped: each class's ECE, reliability bins and
temperature count the images labelled for it only (``n_images`` per class in the table).

The fitted temperature is stored in the run as ``evaluation/calibration.json``::

    {"method": "temperature", "mode": "per_class" | "single", "temperature": float or [14 floats],
     "fitted_on": "val", "class_names": [...], "ece_split": "test", "ece_before": mean ECE,
     "ece_after": mean ECE, "n_images_fitted": N,
     "per_class": {class: {"temperature", "ece_before", "ece_after", "note", "n_positive_fitted"}},
     "n_bins": 15, "checkpoint": path, "checkpoint_sha256": ...}

``thoracic predict`` applies it when it belongs to the checkpoint it loads (same SHA-256), and says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.errors import DataError
from thoracic.io import write_csv_atomic, write_text_atomic
from thoracic.provenance import file_sha256
from thoracic.evaluation.figures import new_figure
from thoracic.evaluation.figures import save_figure
from thoracic.metrics import check_labels, resolve_class_names

#: Equal-width probability bins of the ECE and the reliability diagram (torchmetrics' default).
DEFAULT_BINS = 15
CALIBRATION_FILE = "calibration.json"
CALIBRATION_MODES = ("per_class", "single")
#: Search interval of the temperature (log-uniform); a fit at a bound is reported as such.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """``(C,)`` ECE per class of ``(N, C)`` 0/1 labels and probabilities (torchmetrics, l1 norm, equal-width
    bins), over the rows labelled for each class (NaN labels skipped); NaN for a class without any."""
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    labels, probabilities = _check(labels, probabilities)
    ece = np.full(labels.shape[1], np.nan)
    for j in range(labels.shape[1]):
        labelled = ~np.isnan(labels[:, j])
        if labelled.any():
            p = torch.from_numpy(np.ascontiguousarray(probabilities[labelled, j]))
            y = torch.from_numpy(labels[labelled, j].astype(np.int64))
            ece[j] = float(binary_calibration_error(p, y, n_bins=n_bins, norm="l1"))
    return ece


def _check(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities)`` as float64 ``(N, C)``: labels 0 / 1 / NaN (not labelled)."""
    labels = check_labels(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        probabilities = probabilities.reshape(-1, 1)
    if labels.shape != probabilities.shape:
        raise DataError(f"labels {labels.shape} and probabilities {probabilities.shape} must have the same shape")
    if not (np.all(np.isfinite(probabilities)) and probabilities.min(initial=0) >= 0 and probabilities.max(initial=1) <= 1):
        raise DataError("probabilities must be finite and in [0, 1]")
    return labels, probabilities


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str] | None = None,
                     n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """Per class and bin: ``class_name, bin, bin_low, bin_high, count, mean_probability, fraction_positive``.

    Bins are ``[k / n_bins, (k + 1) / n_bins)``, the last one closed, as torchmetrics bins them (it gives
    a probability of exactly 1 a bin of its own, which here joins the last bin). Empty bins have NaN
    means. Each class counts the images labelled for it (NaN labels skipped).
    """
    labels, probabilities = _check(labels, probabilities)
    class_names = resolve_class_names(class_names, labels.shape[1])
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    records = []
    for j, name in enumerate(class_names):
        labelled = ~np.isnan(labels[:, j])
        scores, truth = probabilities[labelled, j], labels[labelled, j]
        index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
        count = np.bincount(index, minlength=n_bins)
        total_p = np.bincount(index, weights=scores, minlength=n_bins)
        total_y = np.bincount(index, weights=truth, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = np.where(count > 0, total_p / np.maximum(count, 1), np.nan)
            frac_y = np.where(count > 0, total_y / np.maximum(count, 1), np.nan)
        for k in range(n_bins):
            records.append({"class_name": name, "bin": k, "bin_low": edges[k], "bin_high": edges[k + 1],
                            "count": int(count[k]), "mean_probability": mean_p[k], "fraction_positive": frac_y[k]})
    return pd.DataFrame(records)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (``scipy.special.expit``)."""
    from scipy.special import expit

    return expit(x)


def apply_temperature(logits: np.ndarray, temperature: np.ndarray | float) -> np.ndarray:
    """Calibrated probabilities ``sigmoid(logits / T)``; ``T`` a scalar or one per column."""
    return sigmoid(np.asarray(logits, dtype=np.float64) / np.asarray(temperature, dtype=np.float64))


def _bce(logits: np.ndarray, labels: np.ndarray) -> float:
    # log(1 + exp(z)) - y z: the binary cross-entropy of sigmoid(z), finite for any z
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def _fit_one(logits: np.ndarray, labels: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    bounds = np.log(TEMPERATURE_BOUNDS)
    fit = minimize_scalar(lambda log_t: _bce(logits / np.exp(log_t), labels), bounds=tuple(bounds),
                          method="bounded", options={"xatol": 1e-6})
    return float(np.exp(fit.x))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, mode: str = "per_class",
                    class_names: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, str]]:
    """Temperatures minimising the binary cross-entropy of ``sigmoid(logits / T)`` (Guo et al. 2017).

    Args:
        logits: ``(N, C)`` raw model outputs on the fitting split (validation).
        labels: ``(N, C)`` 0/1; NaN entries (not labelled) are left out of the fit.
        mode: ``per_class`` (one T per column) or ``single`` (one T for all, fitted on every labelled entry).
    Returns:
        ``(T (C,), notes)``: ``notes`` names the classes left at T = 1 (one label value only) or fitted at
        a bound of :data:`TEMPERATURE_BOUNDS`, and why.
    """
    if mode not in CALIBRATION_MODES:
        raise DataError(f"calibration mode must be one of {CALIBRATION_MODES}, got {mode!r}")
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if logits.shape != labels.shape or logits.ndim != 2 or len(logits) == 0:
        raise DataError(f"temperature fit: logits {logits.shape} and labels {labels.shape} must be the same (N, C), N > 0")
    labels = check_labels(labels)
    c = logits.shape[1]
    class_names = resolve_class_names(class_names, c)
    labelled = ~np.isnan(labels)
    notes: dict[str, str] = {}
    if mode == "single":
        temperature = np.full(c, _fit_one(logits[labelled], labels[labelled]))
    else:
        temperature = np.ones(c)
        for j, name in enumerate(class_names):
            truth = labels[labelled[:, j], j]
            positives = int(truth.sum())
            if not len(truth):
                notes[name] = f"T = 1: none of the {len(labels)} fitting images is labelled"
            elif positives in (0, len(truth)):
                images = "fitting images" if len(truth) == len(labels) else "labelled fitting images"
                notes[name] = f"T = 1: all {len(truth)} {images} are {'negative' if positives == 0 else 'positive'}"
            else:
                temperature[j] = _fit_one(logits[labelled[:, j], j], truth)
    for j, name in enumerate(class_names):
        if name not in notes and temperature_at_bound(temperature[j]):
            notes[name] = f"T = {temperature[j]:.3g} at the bound of the search interval {TEMPERATURE_BOUNDS}"
    return temperature, notes


def temperature_at_bound(temperature: np.ndarray | float) -> np.ndarray:
    """Whether each temperature sits at a bound of :data:`TEMPERATURE_BOUNDS` (within 0.1%): the fit
    ran into the edge of its search interval, so the data did not determine it (at the upper bound the
    calibrated probabilities are ~0.5 on every image)."""
    temperature = np.asarray(temperature, dtype=np.float64)
    low, high = TEMPERATURE_BOUNDS
    return np.isclose(temperature, low, rtol=1e-3) | np.isclose(temperature, high, rtol=1e-3)


@dataclass(frozen=True)
class CalibrationResult:
    """ECE before (and after) temperature scaling per class and the reliability bins.

    Attributes:
        table: one row per class plus ``Mean``: ``class_name, n_images, n_positive, ece, ece_calibrated,
            temperature, note`` (``ece_calibrated`` / ``temperature`` NaN without a temperature).
        bins: :func:`reliability_bins` of the raw probabilities (``probabilities = "raw"``) and, with a
            temperature, of the calibrated ones (``"calibrated"``).
        settings: ``n_bins``, ``split``, the temperature's source.
    """

    table: pd.DataFrame
    bins: pd.DataFrame
    settings: dict = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return bool(np.isfinite(self.table["ece_calibrated"]).any())

    def to_dict(self) -> dict:
        return {**self.settings, "per_class": json.loads(self.table.to_json(orient="records"))}


def evaluate_calibration(labels: np.ndarray, logits: np.ndarray, class_names: Sequence[str] | None = None,
                         temperature: np.ndarray | None = None, n_bins: int = DEFAULT_BINS,
                         notes: Mapping[str, str] | None = None, settings: Mapping | None = None) -> CalibrationResult:
    """ECE and reliability bins of ``sigmoid(logits)``, and of ``sigmoid(logits / temperature)`` when given.

    Args:
        labels, logits: ``(N, C)`` on the split measured (test); NaN labels (not labelled) are skipped.
        temperature: ``(C,)`` fitted temperatures, or None.
        notes: class -> remark (e.g. why its T is 1).
        settings: extra entries for ``CalibrationResult.settings``.
    """
    labels = check_labels(labels)
    logits = np.asarray(logits, dtype=np.float64)
    class_names = resolve_class_names(class_names, logits.shape[-1])
    raw = sigmoid(logits)
    ece = expected_calibration_error(labels, raw, n_bins)
    bins = [reliability_bins(labels, raw, class_names, n_bins).assign(probabilities="raw")]
    if temperature is not None:
        temperature = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (len(class_names),))
        calibrated = apply_temperature(logits, temperature)
        ece_after = expected_calibration_error(labels, calibrated, n_bins)
        bins.append(reliability_bins(labels, calibrated, class_names, n_bins).assign(probabilities="calibrated"))
    else:
        ece_after = np.full(len(class_names), np.nan)
        temperature = np.full(len(class_names), np.nan)
    notes = dict(notes or {})
    table = pd.DataFrame({
        "class_name": class_names, "n_images": (~np.isnan(labels)).sum(0).astype(int),
        "n_positive": (labels == 1).sum(0).astype(int),
        "ece": ece, "ece_calibrated": ece_after, "temperature": temperature,
        "note": [notes.get(name, "") for name in class_names]})
    mean = {"class_name": "Mean", "n_images": len(labels), "n_positive": int((labels == 1).sum()),
            "ece": float(np.nanmean(ece)) if np.isfinite(ece).any() else np.nan,
            "ece_calibrated": float(np.nanmean(ece_after)) if np.isfinite(ece_after).any() else np.nan,
            "temperature": np.nan, "note": f"mean over the {len(class_names)} classes"}
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    bins_frame = pd.concat(bins, ignore_index=True)
    bins_frame = bins_frame[["class_name", "probabilities", *[c for c in bins_frame.columns
                                                              if c not in ("class_name", "probabilities")]]]
    return CalibrationResult(table, bins_frame, {"n_bins": int(n_bins), **(settings or {})})


def reliability_figure(result: CalibrationResult, title: str = "Reliability diagrams") -> object:
    """One panel per class: fraction positive against mean probability per bin (raw, and calibrated when
    fitted), the diagonal of perfect calibration, ECE in the title; marker area ~ images in the bin."""
    names = [n for n in result.table["class_name"] if n != "Mean"]
    columns = 5
    rows = int(np.ceil(len(names) / columns))
    figure = new_figure(figsize=(2.6 * columns, 2.5 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    table = result.table.set_index("class_name")
    styles = {"raw": ("tab:red", "raw"), "calibrated": ("tab:blue", "temperature-scaled")}
    for ax, name in zip(axes, names):
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
        for kind, part in result.bins[result.bins["class_name"] == name].groupby("probabilities", sort=False):
            part = part[part["count"] > 0]
            color, label = styles.get(kind, ("k", kind))
            sizes = 6 + 60 * part["count"] / max(1, part["count"].max())
            ax.plot(part["mean_probability"], part["fraction_positive"], "-", color=color, lw=0.8, label=label)
            ax.scatter(part["mean_probability"], part["fraction_positive"], s=sizes, color=color, zorder=3)
        ece = table.loc[name, "ece"]
        after = table.loc[name, "ece_calibrated"]
        text = f"ECE {ece:.3f}" + (f" -> {after:.3f}" if np.isfinite(after) else "")
        ax.set_title(f"{name}\n{text}", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.axis("off")
    if names:
        axes[0].legend(fontsize=6, loc="upper left")
        figure.supxlabel("mean predicted probability in bin", fontsize=9)
        figure.supylabel("fraction positive in bin", fontsize=9)
    figure.suptitle(title)
    return figure


def save_calibration(result: CalibrationResult, out_dir: str | Path, split: str = "test") -> dict[str, Path]:
    """Write ``calibration_<split>.csv`` / ``.json``, ``reliability_<split>.csv`` and ``reliability_<split>.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"calibration_csv": out / f"calibration_{split}.csv", "calibration_json": out / f"calibration_{split}.json",
             "reliability_csv": out / f"reliability_{split}.csv"}
    write_csv_atomic(files["calibration_csv"], result.table, index=False, float_format="%.6f")
    write_csv_atomic(files["reliability_csv"], result.bins, index=False, float_format="%.6f")
    write_text_atomic(files["calibration_json"], json.dumps({"split": split, **result.to_dict()}, indent=1))
    suffix = ", before -> after temperature scaling" if result.calibrated else ""
    files["reliability_png"] = save_figure(reliability_figure(result, f"Reliability ({split} split{suffix})"),
                                           out / f"reliability_{split}.png")
    return files


# --------------------------------------------------------------------------------------------------
# The calibration artefact of a run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A stored temperature: ``temperature`` ``(C,)`` (a single T repeated), the file's content, its path."""

    temperature: np.ndarray
    info: dict
    path: Path | None = None

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``(..., C)`` logits."""
        return apply_temperature(logits, self.temperature)

    def describe(self) -> str:
        """One line for logs: what is applied and where it came from."""
        where = f" from {self.path}" if self.path else ""
        if self.info.get("mode") == "single":
            return f"temperature scaling T = {float(self.temperature[0]):.3f}{where} (fitted on {self.info.get('fitted_on')})"
        return (f"temperature scaling per class, T in [{self.temperature.min():.3f}, {self.temperature.max():.3f}]"
                f"{where} (fitted on {self.info.get('fitted_on')})")


def calibration_from_dict(info: Mapping, source: str = "calibration",
                          class_names: Sequence[str] | None = None) -> Calibration:
    """Validate a calibration dict (the content of ``calibration.json`` or of export metadata); with
    ``class_names`` (the model's labels), its ``class_names`` must be those, in that order."""
    if not isinstance(info, Mapping) or info.get("method") != "temperature":
        raise DataError(f"{source}: expected {{'method': 'temperature', 'temperature': ...}}, got {dict(info) if isinstance(info, Mapping) else info!r}")
    stored_names = info.get("class_names", None if class_names is None else list(class_names))
    if not isinstance(stored_names, (list, tuple)) or not stored_names:
        raise DataError(f"{source}: expected 'class_names', the labels the temperatures belong to")
    if class_names is not None and list(stored_names) != list(class_names):
        raise DataError(f"{source}: class_names {stored_names} differ from the model's {list(class_names)}")
    class_names = list(stored_names)
    value = info.get("temperature")
    try:
        temperature = np.broadcast_to(np.asarray(value, dtype=np.float64), (len(class_names),)).copy()
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: temperature {value!r} is neither a number nor {len(class_names)} numbers") from exc
    if not (np.all(np.isfinite(temperature)) and np.all(temperature > 0)):
        raise DataError(f"{source}: temperature {value!r} must be positive and finite")
    return Calibration(temperature, dict(info))


def read_calibration(path: str | Path, class_names: Sequence[str] | None = None) -> Calibration:
    """Read and validate a ``calibration.json`` (with ``class_names``: fitted for those labels)."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the calibration file ({exc})") from exc
    calibration = calibration_from_dict(info, str(path), class_names)
    return Calibration(calibration.temperature, calibration.info, path)




def write_calibration(path: str | Path, temperature: np.ndarray, mode: str, checkpoint: str | Path,
                      result: CalibrationResult | None = None, split: str = "test", n_fit: int = 0,
                      notes: Mapping[str, str] | None = None, class_names: Sequence[str] | None = None,
                      n_positive: Sequence[int] | None = None) -> Path:
    """Store a fitted temperature as ``calibration.json`` (format in the module docstring); ``class_names``:
    the model's labels (default: ``result``'s classes); ``n_positive``: the positive images of each class
    among the ``n_fit`` fitting images (kept per class as ``n_positive_fitted``, so that whoever applies the
    temperature can tell how much it rests on)."""
    path = Path(path)
    temperature = np.asarray(temperature, dtype=np.float64)
    if class_names is None:
        if result is None:
            raise DataError(f"{path}: write_calibration needs the class names (or the result they come with)")
        class_names = [n for n in result.table["class_name"] if n != "Mean"]
    per_class = {name: {"temperature": float(temperature[j]), "note": (notes or {}).get(name)}
                 for j, name in enumerate(class_names)}
    if n_positive is not None:
        for name, n in zip(class_names, n_positive):
            per_class[name]["n_positive_fitted"] = int(n)
    ece_before = ece_after = None
    if result is not None:
        table = result.table.set_index("class_name")
        for name in class_names:
            per_class[name]["ece_before"] = float(table.loc[name, "ece"])
            per_class[name]["ece_after"] = float(table.loc[name, "ece_calibrated"])
        ece_before, ece_after = float(table.loc["Mean", "ece"]), float(table.loc["Mean", "ece_calibrated"])
    info = {
        "method": "temperature", "mode": mode,
        "temperature": float(temperature[0]) if mode == "single" else [float(t) for t in temperature],
        "fitted_on": "val", "n_images_fitted": int(n_fit), "class_names": list(class_names),
        "ece_split": split, "ece_before": ece_before, "ece_after": ece_after,
        "n_bins": result.settings.get("n_bins") if result is not None else DEFAULT_BINS,
        "per_class": per_class, "checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint),
        "applies_to": "probability = sigmoid(logit / temperature), per class",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(info, indent=1))
    return path


def calibration_for_checkpoint(evaluation_dir: str | Path, checkpoint: str | Path,
                               class_names: Sequence[str] | None = None) -> tuple[Calibration | None, str]:
    """The run's stored calibration if it was fitted for ``checkpoint``; ``(None, why)`` otherwise.

    A calibration fitted for other weights (a retrained run, or the ``last`` checkpoint) is not applied:
    the message says so. ``class_names``: the model's labels (a file for others is an error).
    """
    path = Path(evaluation_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None, f"no {CALIBRATION_FILE}: uncalibrated probabilities"
    calibration = read_calibration(path)
    stored = calibration.info.get("checkpoint_sha256")
    if stored != file_sha256(checkpoint):
        return None, (f"{path} was fitted for other weights than {checkpoint} (checkpoint SHA-256 differs): "
                      "not applied; rerun `thoracic evaluate RUN --calibrate` to refit")
    if class_names is not None:  # the same weights: the same labels, unless the file was edited
        read_calibration(path, class_names)
    return calibration, f"applied {calibration.describe()}"


def calibration_for_run(loaded: Any) -> tuple[Calibration | None, str]:
    """:func:`calibration_for_checkpoint` of a :class:`~thoracic.training.checkpoints.LoadedRun`
    (its ``evaluation/`` folder, or ``evaluation/`` beside a bare checkpoint file)."""
    base = loaded.run_dir if loaded.run_dir is not None else loaded.checkpoint_path.parent
    return calibration_for_checkpoint(base / "evaluation", loaded.checkpoint_path, loaded.class_names)


__all__ = [
    "CALIBRATION_FILE", "CALIBRATION_MODES", "DEFAULT_BINS", "Calibration", "CalibrationResult",
    "apply_temperature", "calibration_for_checkpoint", "calibration_for_run", "calibration_from_dict", "evaluate_calibration",
    "expected_calibration_error", "fit_temperature", "read_calibration", "reliability_bins", "reliability_figure",
    "save_calibration", "temperature_at_bound", "write_calibration",
]
