"""Set-up shared by the workflows that read a run folder: its checkpoint, its data, its evaluation folder;
and a run opened on **another dataset** than the one it was trained on (cross-dataset validation).

A run opened with ``dataset`` (``--dataset KIND``, with ``data`` the folder) naming another layout than the
run's own is scored on that dataset: :class:`TestSet` says which (kind, folder, metadata fingerprint), the
labels both share (:func:`thoracic.data.harmonisation.label_mapping`) and where the results go: the
sub-folder ``<run>/evaluation/<kind>-<folder name>/`` (:func:`test_set_folder`; its ``test_set.json``
records the dataset), so the run's own evaluation is never overwritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from thoracic.config import ConfigError
from thoracic.config import replace as replace_config
from thoracic.constants import TEST_SET_FILE
from thoracic.data.dataset import ChestXrayDataModule
from thoracic.data.datasets import AUTO, dataset_reader, detect_dataset_kind, load_dataset, metadata_fingerprint, resolve_dataset_kind
from thoracic.data.harmonisation import LabelMapping, label_mapping
from thoracic.data.shared_images import (
    overlap_note,
    read_image_mapping,
    shared_summary,
    shared_test_images,
    shared_warning,
)
from thoracic.data.splits import make_splits
from thoracic.deprecation import renamed_keywords
from thoracic.errors import DataError, ThoracicError
from thoracic.io import write_csv_atomic, write_json_atomic
from thoracic.provenance import checkpoint_source, file_sha256
from thoracic.runtime import resolve_device
from thoracic.safety import folder_lock, output_folder
from thoracic.training.checkpoints import LoadedRun, load_run
from thoracic.training.factory import build_datamodule

#: The label mapping of a test set (``finding, run_label, test_label, run_index, test_index``).
LABEL_MAPPING_FILE = "label_mapping.csv"
#: The test images a mapping file links to the run's own images (``--shared-images``).
SHARED_IMAGES_FILE = "shared_images.csv"
#: What an uncertain label of another dataset becomes when a run is scored on it: not labelled (U-Ignore),
#: so that no uncertain label counts as a positive or a negative.
TEST_UNCERTAIN = "ignore"


def evaluation_dir(run_dir: Path | None, checkpoint_path: Path) -> Path:
    """``<run>/evaluation`` (or ``evaluation/`` beside a bare checkpoint file)."""
    base = run_dir if run_dir is not None else checkpoint_path.parent
    path = base / "evaluation"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class TestSet:
    """Another dataset a run is scored on (cross-dataset validation)."""

    kind: str
    """Its layout (:data:`~thoracic.constants.DATASET_KINDS`)."""
    root: Path
    metadata_files: tuple[str, ...]
    metadata_sha256: str
    """:func:`~thoracic.data.datasets.metadata_fingerprint` of its folder."""
    cache: Path
    labels: LabelMapping
    """The run's labels and the dataset's labels that name the same finding."""
    train: dict[str, Any]
    """The dataset the run was trained on: ``kind``, ``root``, ``metadata_sha256``."""
    folder: str
    """The sub-folder of the run's ``evaluation/`` its results go to."""
    image_mapping: pd.DataFrame | None = None
    """``--shared-images``: pairs of this dataset's and the run's dataset's image ids."""
    mapping_file: Path | None = None

    def record(self) -> dict[str, Any]:
        """What every result file records about the test set (``test_dataset``) and ``test_set.json`` holds."""
        return {"kind": self.kind, "root": str(self.root), "metadata_files": list(self.metadata_files),
                "metadata_sha256": self.metadata_sha256, "cache": str(self.cache), "folder": self.folder,
                "train_dataset": dict(self.train), "label_mapping": self.labels.to_records(),
                "shared_images_mapping": None if self.mapping_file is None else
                {"path": str(self.mapping_file), "sha256": file_sha256(self.mapping_file)}}


@dataclass(frozen=True)
class OpenedRun:
    """A run's checkpoint loaded on ``device``, its data module set up for testing and its evaluation folder
    (``out``); on another dataset (``test_set``), ``data`` is that dataset's and ``out`` its sub-folder of the
    run's evaluation folder ``own_out``."""

    loaded: LoadedRun
    data: ChestXrayDataModule
    out: Path
    device: str
    test_set: TestSet | None = None
    own_out: Path | None = None
    """The run's own evaluation folder (its operating points and calibration live there)."""


def run_dataset_kind(loaded: LoadedRun) -> str:
    """The layout a run was trained on: the checkpoint's record, else its config's ``data.dataset``
    (``auto``: detected in its ``data.root``; ChestX-ray14 when that folder is gone)."""
    if loaded.spec is not None and not loaded.spec.derived and loaded.spec.dataset:
        return loaded.spec.dataset  # the spec stored with the model
    recorded = (loaded.data_provenance or {}).get("dataset")
    if recorded:
        return str(recorded)
    try:
        return resolve_dataset_kind(loaded.config.data.root, loaded.config.data.dataset)
    except ThoracicError:
        return "chestxray14"


def _train_record(loaded: LoadedRun, kind: str) -> dict[str, Any]:
    """The dataset the run was trained on, as its checkpoint records it (the fingerprint of its folder now,
    for a checkpoint written before it was recorded)."""
    provenance = loaded.data_provenance or {}
    root = str(provenance.get("root") or loaded.config.data.root)
    digest = provenance.get("metadata_sha256")
    if digest is None:
        try:
            digest = metadata_fingerprint(root, kind)[1]
        except ThoracicError:
            digest = None
    return {"kind": kind, "root": root, "metadata_sha256": digest}


def test_set_folder(evaluation: Path, kind: str, root: Path) -> str:
    """``<kind>-<folder name>`` (characters other than letters, digits, ``._-`` replaced): the sub-folder of
    ``evaluation`` for the dataset ``root``; ``-2``, ``-3`` ... when that name already holds another
    folder's results (its ``test_set.json`` names another root) or files thoracic did not write there."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(root).resolve().name).strip("._") or "data"
    base = f"{kind}-{name}"
    for k in range(1, 1000):
        candidate = base if k == 1 else f"{base}-{k}"
        folder = evaluation / candidate
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            return candidate
        record = folder / TEST_SET_FILE
        try:
            recorded = json.loads(record.read_text()) if record.is_file() else {}
        except (OSError, ValueError):
            recorded = {}
        if isinstance(recorded, dict) and recorded.get("root") == str(Path(root).resolve()) \
                and recorded.get("kind") == kind:
            return candidate
    raise DataError(f"{evaluation}: no free sub-folder name for {kind} {root} (tried {base} ... {base}-999)")


def _test_kind(loaded: LoadedRun, data: str | Path | None, dataset: str | None) -> str | None:
    """The layout the run is to be scored on: ``dataset`` when given; for a ``data`` folder without it, the
    layout the run's ``data.dataset`` reads it as (``auto``: detected); None without either (the run's own)."""
    if dataset not in (None, AUTO):
        return dataset_reader(str(dataset)).kind
    if data is None:
        return None
    if dataset == AUTO:
        return detect_dataset_kind(data)
    return resolve_dataset_kind(data, loaded.config.data.dataset)


@renamed_keywords(which="checkpoint", data_root="data")
def open_run(run: str | Path, checkpoint: str = "best", device: str = "auto", batch_size: int | None = None,
             data: str | Path | None = None, cache: str | Path | None = None,
             num_workers: int | None = None, *, trust_checkpoint: bool = False, dataset: str | None = None,
             shared_images: str | Path | None = None) -> OpenedRun:
    """Load the ``checkpoint`` (``best``, ``last`` or a ``.ckpt`` path) of ``run`` on ``device`` (``auto``,
    ``cpu``, ``cuda:N``) and the data it was trained on (or ``data`` / ``cache`` instead), ready for
    ``thoracic evaluate`` / ``localize``; ``trust_checkpoint`` opens the checkpoint with full pickle.

    ``dataset`` naming another layout than the run's (``auto``: the one detected in ``data``) opens the
    dataset in ``data`` instead (its cache: ``cache``, else ``<data>/cache_<size>``), for scoring the run on
    the labels both share (module docs); ``shared_images`` is then a mapping file between the two datasets'
    image ids (:func:`thoracic.data.shared_images.read_image_mapping`).

    Raises:
        ConfigError: ``batch_size`` below 1 or ``num_workers`` below 0 (never silently replaced); another
            dataset without ``data``; ``shared_images`` without another dataset.
        DataError: the run and the dataset share no label; a bad mapping file.
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size: expected at least 1 image per batch, got {batch_size}")
    if num_workers is not None and num_workers < 0:
        raise ConfigError(f"--num-workers: expected 0 (load in this process) or more worker processes, got "
                          f"{num_workers}")
    device = resolve_device(device)
    loaded = load_run(run, checkpoint=checkpoint, map_location=device, trust_checkpoint=trust_checkpoint)
    train_kind = run_dataset_kind(loaded)
    test_kind = _test_kind(loaded, data, dataset)
    if test_kind is None or test_kind == train_kind:
        if shared_images is not None:
            raise ConfigError(f"--shared-images: the run is scored on its own dataset ({train_kind}); a mapping of "
                              "shared images is for another dataset (--data FOLDER --dataset KIND)")
        module = build_datamodule(loaded.config, stage="test", batch_size=batch_size, data_root=data, cache=cache,
                                  num_workers=num_workers)
        if tuple(module.class_names) != loaded.class_names:  # the labels' columns must be the model's outputs
            raise DataError(f"{module.root}: its labels ({', '.join(module.class_names)}) are not those the run "
                            f"was trained on ({', '.join(loaded.class_names)}); a run is scored on another "
                            "dataset's labels with --dataset KIND (the labels both share)")
        own_out = evaluation_dir(loaded.run_dir, loaded.checkpoint_path)
        return OpenedRun(loaded, module, own_out, device, own_out=own_out)
    if data is None:
        raise ConfigError(f"--dataset {test_kind}: the run was trained on {train_kind}; give the {test_kind} folder "
                          "with --data")
    root = Path(data)
    if not root.is_dir():
        raise ConfigError(f"--data: folder {root} does not exist (expected a {test_kind} folder as distributed)")
    config = replace_config(loaded.config, **{"data.root": str(root), "data.dataset": test_kind,
                                              "data.cache": None if cache is None else str(cache),
                                              "data.classes": [], "data.uncertain": TEST_UNCERTAIN})
    module = build_datamodule(config, stage="test", batch_size=batch_size, num_workers=num_workers)
    labels = label_mapping(train_kind, loaded.class_names, test_kind, module.class_names)
    files, digest = metadata_fingerprint(root, test_kind)
    mapping = None
    if shared_images is not None:
        mapping = read_image_mapping(shared_images, test_kind, train_kind)
    own_out = evaluation_dir(loaded.run_dir, loaded.checkpoint_path)
    test_set = TestSet(test_kind, root.resolve(), tuple(files), digest, module.cache_dir, labels,
                       _train_record(loaded, train_kind), test_set_folder(own_out, test_kind, root), mapping,
                       None if shared_images is None else Path(shared_images).resolve())
    return OpenedRun(loaded, module, own_out / test_set.folder, device, test_set, own_out)


def run_splits(loaded: LoadedRun) -> dict[str, list[str]]:
    """The image ids of the run's own train / val / test splits, drawn again from its data folder's
    metadata as training drew them (the views, validation fraction and split seed of its config).

    Raises:
        DataError: the run's data folder cannot be read (named, with why the splits are needed).
    """
    data = loaded.config.data
    kind = run_dataset_kind(loaded)
    try:
        dataset = load_dataset(data.root, kind, uncertain=data.uncertain, views=data.views, check_box_images=False)
        splits = make_splits(dataset, data.val_fraction, data.split_seed)
    except ThoracicError as exc:
        raise DataError(f"--shared-images: which images the run trained on comes from its own data folder "
                        f"{data.root} ({kind}), which cannot be read: {exc}") from None
    ids = dataset.table["image_id"].to_numpy()
    return {name: [str(i) for i in ids[splits[name]]] for name in ("train", "val", "test")}


def flag_shared_images(opened: OpenedRun, test_ids: list[str]) -> tuple[dict[str, Any] | None, list[str]]:
    """Write ``shared_images.csv`` (the scored test images the mapping links to the run's own images, with
    their split there) into the test set's folder; returns its summary for the result files (None without a
    mapping) and the warnings (test images the run was trained on; two datasets known to share images and no
    mapping given)."""
    test_set = opened.test_set
    if test_set is None:
        return None, []
    if test_set.image_mapping is None:
        note = overlap_note(test_set.train["kind"], test_set.kind)
        return None, [note] if note else []
    shared = shared_test_images(test_set.image_mapping, test_set.kind, test_ids, test_set.train["kind"],
                                run_splits(opened.loaded))
    path = opened.out / SHARED_IMAGES_FILE
    write_csv_atomic(path, shared, index=False)
    counts = shared_summary(shared, len(test_ids))
    warning = shared_warning(counts, test_set.kind, str(test_set.mapping_file))
    return {**counts, "file": path.name, "mapping": str(test_set.mapping_file)}, [warning] if warning else []


def write_test_set(opened: OpenedRun) -> dict[str, Path]:
    """``test_set.json`` and ``label_mapping.csv`` of a run opened on another dataset (nothing otherwise)."""
    test_set = opened.test_set
    if test_set is None:
        return {}
    files = {"test_set": opened.out / TEST_SET_FILE, "label_mapping": opened.out / LABEL_MAPPING_FILE}
    write_json_atomic(files["test_set"], test_set.record())
    write_csv_atomic(files["label_mapping"], test_set.labels.to_frame(), index=False)
    return files


@contextmanager
def evaluation_outputs(opened: OpenedRun, command: str) -> Iterator[None]:
    """Writing ``opened``'s evaluation folder: the run folder's lock (the evaluation folder's, beside a bare
    checkpoint) and the folder's manifest, every file recorded as coming from the evaluated checkpoint.

    In a run folder every file of ``evaluation/`` is thoracic's by name (``RUN_FILES``); beside a bare
    checkpoint file only those the manifest lists are, as in a test set's sub-folder.
    """
    loaded = opened.loaded
    own_out = opened.own_out or opened.out
    locked, what = (loaded.run_dir, "run folder") if loaded.run_dir is not None else (own_out, "evaluation folder")
    legacy = ("*",) if loaded.run_dir is not None and opened.test_set is None else ()
    with folder_lock(locked, what, f"thoracic {command} {loaded.checkpoint_path}"), \
            output_folder(opened.out, command, checkpoint_source(loaded.info), option="evaluation folder",
                          legacy=legacy):
        yield


__all__ = ["LABEL_MAPPING_FILE", "OpenedRun", "SHARED_IMAGES_FILE", "TEST_SET_FILE", "TestSet", "evaluation_dir",
           "evaluation_outputs", "flag_shared_images", "open_run", "run_dataset_kind", "run_splits",
           "test_set_folder", "write_test_set"]
