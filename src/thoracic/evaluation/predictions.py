"""Running a model over a loader: probabilities for classification, heatmaps for the box images.

The predictions file (``predictions_<split>.csv``) lets anyone recompute every classification number:
one row per image with ``image_id``, a probability ``prob_<class>`` and a label ``label_<class>`` (0, 1, or
empty where the image is not labelled for the class: NaN in memory) per class of the run, in the order of
its spec's ``class_names`` (the file's own order when read back; checked against the names given).

Heatmaps are computed at the model's native resolution (8 x 8 or 32 x 32 at 256 px input) for the
ground-truth class of every box row; :mod:`thoracic.heatmaps.boxes` upsamples them to the original
image size.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from thoracic.errors import DataError
from thoracic.heatmaps import HEATMAP_METHOD_NAMES, create_heatmap_method, list_heatmap_methods
from thoracic.io import save_npz_atomic, write_csv_atomic

#: The built-in heatmap methods (:func:`thoracic.heatmaps.create_heatmap_method`): native, gradcam,
#: gradcam-layer3, gradcam-layer2, ig, gradcampp, smoothgrad, occlusion (``list_heatmap_methods()`` adds
#: the registered ones).
HEATMAP_METHODS: tuple[str, ...] = HEATMAP_METHOD_NAMES


@dataclass(frozen=True)
class Predictions:
    """Model outputs on one split: ``probabilities`` and ``labels`` are ``(N, C)`` aligned with ``image_ids``.

    ``labels`` are floats: 0, 1, or NaN where an image is not labelled for a class (the metrics skip it).

    ``logits`` (``(N, C)``, float64) are kept when the predictions come from a model (calibration fits
    temperatures on them); a predictions file stores probabilities only, so they are None when read back.
    """

    image_ids: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    """The labels of the columns (the run's, in the order of its outputs)."""
    logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, c = len(self.image_ids), len(self.class_names)
        if self.probabilities.shape != (n, c) or self.labels.shape != (n, c):
            raise DataError(f"predictions of {n} images: probabilities {self.probabilities.shape} and labels "
                            f"{self.labels.shape} must both be ({n}, {c})")

    def to_frame(self) -> pd.DataFrame:
        data = {"image_id": self.image_ids}
        data.update({f"prob_{name}": self.probabilities[:, j] for j, name in enumerate(self.class_names)})
        # nullable integers: 0 / 1 as before, an empty cell for a NaN (not labelled) entry
        data.update({f"label_{name}": pd.array(np.where(np.isnan(self.labels[:, j]), None, self.labels[:, j]),
                                               dtype="Int64")
                     for j, name in enumerate(self.class_names)})
        return pd.DataFrame(data)


def save_predictions(predictions: Predictions, path: str | Path) -> Path:
    """Write the predictions CSV (probabilities with 8 significant digits)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(path, predictions.to_frame(), index=False, float_format="%.8g")
    return path


def load_predictions(path: str | Path, class_names: Sequence[str] | None = None) -> Predictions:
    """Read a predictions CSV back; the columns must be ``image_id, prob_<class>..., label_<class>...`` for
    ``class_names`` (the run's labels; default: the classes of the file's ``prob_`` columns)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file {path} does not exist (run `thoracic evaluate` first)")
    table = pd.read_csv(path)
    if class_names is None:
        class_names = [str(c)[len("prob_"):] for c in table.columns if str(c).startswith("prob_")]
    expected = ["image_id", *[f"prob_{c}" for c in class_names], *[f"label_{c}" for c in class_names]]
    if list(table.columns) != expected:
        raise DataError(f"{path}: expected columns {expected}, got {list(table.columns)}")
    return Predictions(
        table["image_id"].astype(str).to_numpy(),
        table[[f"prob_{c}" for c in class_names]].to_numpy(dtype=np.float64),
        table[[f"label_{c}" for c in class_names]].to_numpy(dtype=np.float64),
        tuple(class_names),
    )


def _progress(iterable: Iterable, description: str, enabled: bool, total: int | None = None) -> Iterable:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, unit="batch", total=total)


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Iterable[Mapping], device: str | torch.device = "cpu",
            progress: bool = True, *, class_names: Sequence[str],
            output_columns: Sequence[int] | None = None, label_columns: Sequence[int] | None = None) -> Predictions:
    """Sigmoid probabilities of every image of ``loader`` (batches: dicts with image, labels, image_id).

    ``class_names``: the model's labels (its spec's), the order of its outputs and of the batches' labels.
    The model is put in eval mode (BatchNorm uses its running statistics; the seed code validated in train
    mode). On another dataset than the model's, ``output_columns`` (of the model's outputs) and
    ``label_columns`` (of the batches' labels) pair the labels both share, named ``class_names``
    (:class:`thoracic.data.harmonisation.LabelMapping`).
    """
    model = model.to(device).eval()
    ids: list[str] = []
    probabilities: list[np.ndarray] = []
    logit_batches: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for batch in _progress(loader, "predict", progress, _length(loader)):
        images = batch["image"].to(device, non_blocking=True)
        output = model(images)
        logits = output.logits if hasattr(output, "logits") else output
        probabilities.append(torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64))
        logit_batches.append(logits.float().cpu().numpy().astype(np.float64))
        labels.append(batch["labels"].cpu().numpy().astype(np.float64))  # NaN: not labelled
        ids.extend(str(i) for i in batch["image_id"])
    if not ids:
        raise DataError("the loader yielded no images: nothing to evaluate")
    outputs = slice(None) if output_columns is None else list(output_columns)
    truth = slice(None) if label_columns is None else list(label_columns)
    return Predictions(np.asarray(ids), np.concatenate(probabilities)[:, outputs], np.concatenate(labels)[:, truth],
                       tuple(class_names), logits=np.concatenate(logit_batches)[:, outputs])


def compute_heatmaps(
    model: torch.nn.Module,
    loader: Iterable[Mapping],
    needed: Mapping[str, Iterable[str]],
    method: str = "native",
    device: str | torch.device = "cpu",
    progress: bool = True,
    *,
    class_names: Sequence[str],
) -> dict[tuple[str, str], np.ndarray]:
    """Heatmaps ``(image_id, class_name) -> (h, w)`` on the method's own grid for the pairs in ``needed``.

    Args:
        model: a registered model in eval mode.
        loader: batches of the box images (dicts with ``image`` and ``image_id``).
        needed: ``image_id -> class names`` whose heatmap is wanted (the classes of its box rows), among
            ``class_names``.
        class_names: the model's labels, in the order of its outputs (its spec's).
        method: one of :func:`thoracic.heatmaps.list_heatmap_methods`: ``native`` (the model's own class
            maps, one forward pass per batch); the others run once per class present in the batch
            (Grad-CAM: one backward pass; ``ig``: one path integral; ``occlusion``: 225 forward passes).
        class_names: the model's outputs in order (its run's :attr:`~thoracic.training.checkpoints.LoadedRun.class_names`).
    """
    if method not in list_heatmap_methods():
        raise DataError(f"heatmap method must be one of {list_heatmap_methods()}, got {method!r}")
    model = model.to(device).eval()
    index = {name: k for k, name in enumerate(class_names)}
    unknown = sorted({c for classes in needed.values() for c in classes} - set(index))
    if unknown:
        raise DataError(f"heatmaps asked for class(es) {', '.join(unknown)}, which the model does not score "
                        f"(its labels: {', '.join(class_names)})")
    wanted = {image_id: sorted(set(classes), key=index.__getitem__) for image_id, classes in needed.items()}
    maps: dict[tuple[str, str], np.ndarray] = {}
    heatmap_method = create_heatmap_method(method, model)
    with heatmap_method:
        for batch in _progress(loader, f"heatmaps ({method})", progress, _length(loader)):
            batch_ids = [str(i) for i in batch["image_id"]]
            keep = [k for k, image_id in enumerate(batch_ids) if wanted.get(image_id)]
            if not keep:
                continue
            images = batch["image"][keep].to(device)
            ids = [batch_ids[k] for k in keep]
            pairs = [(row, index[name]) for row, image_id in enumerate(ids) for name in wanted[image_id]]
            for (row, k), heatmap in heatmap_method.selected(images, pairs).items():
                maps[(ids[row], class_names[k])] = heatmap.float().cpu().numpy().astype(np.float64)
    missing = [(i, c) for i, classes in wanted.items() for c in classes if (i, c) not in maps]
    if missing:
        raise DataError(f"{len(missing)} box images were not in the loader, e.g. {missing[:3]}")
    return maps


#: Key of the ``.npz`` entry holding the SHA-256 of the checkpoint the heatmaps were computed with.
HEATMAPS_CHECKPOINT_KEY = "checkpoint_sha256"


def save_heatmaps(heatmaps: Mapping[tuple[str, str], np.ndarray], path: str | Path,
                  checkpoint_sha256: str | None = None) -> Path:
    """Store native-resolution heatmaps in one ``.npz`` (keys ``<image_id>|<class_name>``; and
    :data:`HEATMAPS_CHECKPOINT_KEY`, the checkpoint's SHA-256, when given), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{i}|{c}": h.astype(np.float32) for (i, c), h in heatmaps.items()}
    if checkpoint_sha256 is not None:
        arrays[HEATMAPS_CHECKPOINT_KEY] = np.array(checkpoint_sha256)
    return save_npz_atomic(path, arrays)


def load_heatmaps(path: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """Inverse of :func:`save_heatmaps` (the heatmaps; :func:`heatmaps_checkpoint` reads the hash).

    Raises:
        DataError: the file is damaged (empty, truncated, not an ``.npz``), naming it.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {tuple(key.split("|", 1)): data[key].astype(np.float64)  # type: ignore[misc]
                    for key in data.files if "|" in key}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: heatmaps file is damaged ({type(exc).__name__}: {exc}); rerun "
                        "`thoracic localize` for this run") from None


def heatmaps_checkpoint(path: str | Path) -> str | None:
    """The checkpoint SHA-256 a heatmaps file records (None for files written before it was recorded)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return str(data[HEATMAPS_CHECKPOINT_KEY]) if HEATMAPS_CHECKPOINT_KEY in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
