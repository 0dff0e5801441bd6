"""The phantom folder: :func:`generate_phantom_dataset` and the generator's marker.

:func:`generate_phantom_dataset` plans patients, follow-ups, demographics and the patient-wise split
from ``seed``, renders every image (:func:`thoracic.data.synth.render.render_phantom`, on several
processes if asked: an image does not depend on the order or the number of workers) and writes the NIH
files beside them (see :mod:`thoracic.data.synth`). Its marker :data:`MARKER_FILE`, written first, lists
every file it writes: the only files ``overwrite`` may delete (:func:`synth_owned_files`), and what
makes a folder a phantom (:func:`folder_kind`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from thoracic.constants import CLASS_INDEX, CLASS_NAMES, NO_FINDING
from thoracic.data.cache import is_cache_file, owned_cache_folder
from thoracic.data.metadata import BBOX_HEADER, DATA_ENTRY_HEADER, DATA_ENTRY_NAMES, TEST_NAME, TRAIN_VAL_NAME
from thoracic.data.synth.render import FAMILIES, PREVALENCE, PhantomImage, render_phantom, save_png
from thoracic.deprecation import renamed_keywords
from thoracic.errors import DataError, Interrupted, UnsafeDeleteError
from thoracic.io import write_json_atomic, write_text_atomic
from thoracic.safety import ensure_output_dir, folder_entries, quiet_worker, remove_owned

GENERATOR_VERSION = 3  # 2: NIH-like prevalences (about 54% of images without finding); 3: families A, B

TRUTH_FILE = "phantom_findings.csv"
INFO_FILE = "phantom.json"
#: The generator's marker, written before anything else: it says "this folder is a phantom" (data
#: provenance, :func:`folder_kind`) and lists every file the generator writes there, the only files
#: ``overwrite`` may delete.
MARKER_FILE = "thoracic_synth.json"


#: The metadata files the generator writes beside the images.
_METADATA_FILES = (DATA_ENTRY_NAMES[0], "BBox_List_2017.csv", TRUTH_FILE, TRAIN_VAL_NAME, TEST_NAME, INFO_FILE)
_IMAGE_FOLDER = re.compile(r"images(_\d{3})?(/images)?/")  # an empty image folder (killed early)
_LEGACY_IMAGE = re.compile(r"(?:images|images_\d{3}/images)/([^/]+)")


def synth_owned_files(out: str | Path) -> Callable[[str], bool] | None:
    """Which files of ``out`` ``thoracic synth`` wrote (a predicate on relative paths), or None when
    ``out`` is not a phantom folder.

    The files listed in :data:`MARKER_FILE` (folders written before the marker existed: the NIH files,
    ``phantom.json`` and the images the data-entry CSV names), the temporary files of the generator's
    atomic writes, and image caches that ``thoracic prepare`` wrote inside the folder (they hold
    nothing but their own files; see :func:`thoracic.data.cache.owned_cache_folder`).
    """
    out = Path(out)
    marker = out / MARKER_FILE
    if marker.is_file():
        try:
            listed = set(json.loads(marker.read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        images: set[str] = set()
    elif folder_kind(out) == "phantom":  # legacy folder: phantom.json, no marker
        listed = set(_METADATA_FILES)
        try:
            entry = (out / DATA_ENTRY_NAMES[0]).read_text().splitlines()[1:]
        except OSError:
            entry = []
        images = {line.split(",", 1)[0] for line in entry if line}
    else:
        return None
    listed |= {MARKER_FILE}
    caches = {p.name for p in out.iterdir() if p.is_dir() and owned_cache_folder(p)}

    def owned(name: str) -> bool:
        parts = name.rstrip("/").split("/")
        if name in listed or _IMAGE_FOLDER.fullmatch(name):
            return True
        if len(parts) == 1 and parts[0].startswith(".") and ".tmp-" in parts[0]:
            return parts[0][1:].split(".tmp-")[0] in listed  # an atomic write that was killed
        if len(parts) == 2 and parts[0] in caches:
            return is_cache_file(parts[1])
        match = _LEGACY_IMAGE.fullmatch(name)
        return match is not None and match.group(1) in images

    return owned


def folder_kind(root: str | Path | None) -> str:
    """``"phantom"`` for a folder written by :func:`generate_phantom_dataset` (it holds the generator's
    marker, or, written before the marker existed, its ``phantom.json``), ``"real"`` for any other
    existing folder, ``"unknown"`` when there is no such folder (any more) on this machine."""
    if root is None:
        return "unknown"
    root = Path(root)
    if (root / MARKER_FILE).is_file():
        return "phantom"
    info = root / INFO_FILE
    if info.is_file():  # folders written before the marker existed
        try:
            if json.loads(info.read_text()).get("generator") == "thoracic.data.synth":
                return "phantom"
        except (OSError, ValueError, AttributeError):
            pass
    return "real" if root.is_dir() else "unknown"


# --------------------------------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImagePlan:
    index: int
    image_id: str
    patient: int
    follow_up: int
    age: int
    sex: str
    view: str
    test: bool


def _plan(num_images: int, seed: int, test_fraction: float) -> list[_ImagePlan]:
    """Patients, follow-ups, demographics and the patient-wise split (from ``seed`` alone)."""
    rng = np.random.default_rng([seed, 0])
    plans: list[_ImagePlan] = []
    patient = 0
    test_patients = 0
    while len(plans) < num_images:
        patient += 1
        count = 1 if rng.random() < 0.55 else int(min(1 + rng.geometric(0.4), 8))
        count = min(count, num_images - len(plans))
        is_test = bool(rng.random() < test_fraction)
        test_patients += is_test
        sex = "M" if rng.random() < 0.56 else "F"
        age = int(rng.integers(18, 86))
        years = 0.0
        for follow_up in range(count):
            # up to 0.8 years between follow-ups, accumulated: a patient never gets younger
            step = rng.uniform(0.0, 0.8)
            years += step if follow_up else 0.0
            age_now = age + int(years)
            view = "PA" if rng.random() < 0.6 else "AP"
            plans.append(_ImagePlan(0, f"{patient:08d}_{follow_up:03d}.png", patient, follow_up, age_now, sex, view, is_test))
    # make both official lists non-empty when there are at least two patients
    if num_images > 1 and patient > 1 and test_patients in (0, patient):
        flip = plans[-1].patient
        plans = [p if p.patient != flip else _ImagePlan(0, p.image_id, p.patient, p.follow_up, p.age, p.sex, p.view,
                                                         not p.test) for p in plans]
    plans.sort(key=lambda p: p.image_id)
    return [_ImagePlan(i, p.image_id, p.patient, p.follow_up, p.age, p.sex, p.view, p.test) for i, p in enumerate(plans)]


def write_png(phantom: PhantomImage, path: Path) -> None:
    """An image writer of :class:`RenderJob`: the PNG in the phantom's storage mode (L, RGBA or 16-bit)."""
    save_png(phantom.pixels, path, phantom.storage)


@dataclass(frozen=True)
class RenderJob:
    """One image to draw and write: ``render_phantom(size, seed, index, patient, prevalence, **kwargs)``,
    then ``writer(phantom, path, **options)`` (a module-level function: jobs travel to worker processes)."""

    index: int
    patient: int
    size: int
    seed: int
    prevalence: Mapping[str, float]
    kwargs: Mapping[str, object]
    path: Path
    writer: Callable[..., None] = write_png
    options: Mapping[str, object] = field(default_factory=dict)


def _render_job(job: RenderJob) -> tuple[int, PhantomImage]:
    phantom = render_phantom(job.size, job.seed, job.index, job.patient, job.prevalence, **job.kwargs)
    job.writer(phantom, job.path, **job.options)
    # the pixels are on disk; send back only what the CSVs need
    return job.index, PhantomImage(np.empty((0, 0), np.uint8), phantom.findings, phantom.storage, phantom.bbox_rows)


def render_images(jobs: Sequence[RenderJob], out: Path, num_workers: int | None = 1,
                  progress: bool = True) -> list[PhantomImage]:
    """Draw and write every job (``index`` 0 ... N-1) on ``num_workers`` processes (None: all cores);
    returns each image's findings (the pixels are on disk). The result does not depend on ``num_workers``."""
    results: list[PhantomImage | None] = [None] * len(jobs)
    workers = (os.cpu_count() or 1) if num_workers is None else max(1, num_workers)
    bar = tqdm(total=len(jobs), desc="synth", unit="img", disable=not progress)
    try:
        if workers == 1 or len(jobs) < 2 * workers:
            for job in jobs:
                index, phantom = _render_job(job)
                results[index] = phantom
                bar.update()
        else:
            # ProcessPoolExecutor: a worker that dies raises BrokenProcessPool instead of a silent hang
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(),
                                     initializer=quiet_worker, initargs=(os.getpid(),)) as pool:
                try:
                    for index, phantom in pool.map(_render_job, jobs, chunksize=8):
                        results[index] = phantom
                        bar.update()
                except KeyboardInterrupt:
                    pool.shutdown(wait=True, cancel_futures=True)  # stop now, not after every queued image
                    raise
    except BrokenProcessPool:
        raise DataError(f"a synth worker process died (killed, or out of memory) while writing {out}; "
                        "rerun the same command to start again") from None
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted (Ctrl-C); the phantom folder {out} is unfinished: rerun the same command "
                          "to write it again (only the generator's own files there are replaced)") from None
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def prepare_output(out: Path, overwrite: bool) -> None:
    """Make ``out`` a new or empty folder: a phantom folder there is replaced with ``overwrite`` (only the
    files its marker lists are deleted), an unfinished one (its marker but no :data:`INFO_FILE`, which the
    generator writes last: an interrupted run) without; anything else is refused."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is an existing file; expected a folder (new or empty)")
    if out.is_dir() and any(out.iterdir()):
        # a folder this generator started and never finished (interrupted): the same command writes it again
        unfinished = (out / MARKER_FILE).is_file() and not (out / INFO_FILE).is_file()
        if not overwrite and not unfinished:
            raise DataError(f"--out {out} exists and is not empty; choose another folder, or pass --overwrite to "
                            "replace a phantom folder written by thoracic synth (only its own files are deleted)")
        owned = synth_owned_files(out)
        if owned is None:
            entries = folder_entries(out)
            raise UnsafeDeleteError(
                f"--out {out} was not written by thoracic synth (no {MARKER_FILE} or {INFO_FILE}) and holds "
                f"{len(entries)} file(s): {', '.join(entries[:12])}{' ...' if len(entries) > 12 else ''}. Nothing was "
                "deleted: --overwrite replaces only a phantom folder; choose another --out folder")
        remove_owned(out, owned, "phantom folder", remove_folder=False,
                     hint="Move them away or choose another --out folder.")
    ensure_output_dir(out, "--out")


def write_marker(out: Path, files: Sequence[str], note: str) -> None:
    """The generator's marker, written before anything else: every file this call writes (relative paths)."""
    write_json_atomic(out / MARKER_FILE, {"generator": "thoracic synth", "version": GENERATOR_VERSION,
                                          "note": note, "files": list(files)})


@renamed_keywords(workers="num_workers")
def generate_phantom_dataset(
    out_dir: str | Path,
    num_images: int,
    image_size: int,
    seed: int = 0,
    *,
    prevalence: Mapping[str, float] | None = None,
    test_fraction: float = 0.25,
    tarball_layout: bool = False,
    images_per_folder: int = 10000,
    special_fraction: float = 0.04,
    box_fraction: float = 0.8,
    all_boxes_fraction: float = 0.25,
    num_workers: int | None = 1,
    overwrite: bool = False,
    progress: bool = True,
    family: str = "A",
) -> Path:
    """Write a phantom ChestX-ray14 folder to ``out_dir`` and return it (see :mod:`thoracic.data.synth`).

    Args:
        num_images, image_size, seed: how many images, their side in pixels, and the seed.
        prevalence: per-class probability (default :data:`PREVALENCE`).
        test_fraction: fraction of patients in ``test_list.txt``.
        tarball_layout: ``images_001/images/...`` (``images_per_folder`` each) instead of ``images/``.
        special_fraction: fraction of images stored as RGBA, and again as 16-bit, like some real files.
        box_fraction: fraction of test images with a box-class finding that get BBox_List rows;
            ``all_boxes_fraction`` of those with several get one row per finding, the others one row.
        num_workers: processes (None: all cores); the result does not depend on it.
        overwrite: replace an existing non-empty ``out_dir`` (otherwise a DataError).
        family: the finding design, ``A`` (default) or ``B`` (:data:`~thoracic.data.synth.render.FAMILIES`,
            :mod:`thoracic.data.synth`).
    """
    out = Path(out_dir)
    if num_images < 1:
        raise DataError(f"--num-images: expected at least 1 image, got {num_images}")
    if image_size < 16:
        raise DataError(f"--image-size: expected at least 16 pixels, got {image_size}")
    if not (0.0 < test_fraction < 1.0):  # also rejects nan
        raise DataError(f"--test-fraction: expected a fraction of patients strictly between 0 and 1, got "
                        f"{test_fraction} (0 or 1 would leave the test or the train_val list empty)")
    for name, value in (("special_fraction", special_fraction), ("box_fraction", box_fraction),
                        ("all_boxes_fraction", all_boxes_fraction)):
        if not (0.0 <= value <= 1.0):
            raise DataError(f"{name}: expected a fraction in [0, 1], got {value}")
    if family not in FAMILIES:
        raise DataError(f"--family: expected one of {list(FAMILIES)}, got {family!r}")
    prepare_output(out, overwrite)
    plans = _plan(num_images, seed, test_fraction)
    kwargs = {"special_fraction": special_fraction, "box_fraction": box_fraction,
              "all_boxes_fraction": all_boxes_fraction, "family": family}
    prevalence = dict(PREVALENCE if prevalence is None else prevalence)
    unknown = sorted(set(prevalence) - set(CLASS_NAMES))
    if unknown:
        raise DataError(f"prevalence names unknown class(es) {unknown}; expected names among {CLASS_NAMES}")

    jobs = []
    for plan in plans:
        if tarball_layout:
            folder = out / f"images_{plan.index // images_per_folder + 1:03d}" / "images"
        else:
            folder = out / "images"
        jobs.append(RenderJob(plan.index, plan.patient, image_size, seed, prevalence, kwargs, folder / plan.image_id))
    # The marker first, listing every file this call writes: from now on --overwrite (and nothing else)
    # may delete exactly these, even if this run is killed halfway.
    write_marker(out, [*(job.path.relative_to(out).as_posix() for job in jobs), *_METADATA_FILES],
                 "a phantom ChestX-ray14 folder: results on it say nothing clinical")
    for folder in sorted({job.path.parent for job in jobs}):
        folder.mkdir(parents=True, exist_ok=True)
    results = render_images(jobs, out, num_workers, progress)

    entry_lines = [DATA_ENTRY_HEADER]
    truth_lines = ["Image Index,Finding Label,x,y,w,h"]
    box_rows: list[tuple[int, str, str]] = []
    spacing = 0.143 * 1024 / image_size
    for plan, phantom in zip(plans, results):
        assert phantom is not None
        names = sorted({name for name, _ in phantom.findings}) or [NO_FINDING]
        entry_lines.append(
            f"{plan.image_id},{'|'.join(names)},{plan.follow_up},{plan.patient},{plan.age},{plan.sex},"
            f"{plan.view},{image_size},{image_size},{spacing:.4f},{spacing:.4f}"
        )
        for name, (x, y, w, h) in phantom.findings:
            truth_lines.append(f"{plan.image_id},{name},{x},{y},{w},{h}")
        if plan.test:
            for row in phantom.bbox_rows:
                name, (x, y, w, h) = phantom.findings[row]
                label = "Infiltrate" if name == "Infiltration" else name  # the real file's spelling
                box_rows.append((CLASS_INDEX[name], plan.image_id, f"{plan.image_id},{label},{x}.0,{y}.0,{w}.0,{h}.0"))
    box_rows.sort()  # grouped by class like the real file
    write_text_atomic(out / "Data_Entry_2017_v2020.csv", "\n".join(entry_lines) + "\n")
    write_text_atomic(out / "BBox_List_2017.csv", "\n".join([BBOX_HEADER] + [r[2] for r in box_rows]) + "\n")
    write_text_atomic(out / TRUTH_FILE, "\n".join(truth_lines) + "\n")
    write_text_atomic(out / "train_val_list.txt", "\n".join(p.image_id for p in plans if not p.test))
    write_text_atomic(out / "test_list.txt", "\n".join(p.image_id for p in plans if p.test))
    info = {
        "generator": "thoracic.data.synth",
        "version": GENERATOR_VERSION,
        "num_images": num_images,
        "image_size": image_size,
        "seed": seed,
        "family": family,
        "prevalence": prevalence,
        "test_fraction": test_fraction,
        "tarball_layout": tarball_layout,
        "class_names": list(CLASS_NAMES),
        "note": "phantom images: results on them say nothing clinical",
    }
    write_text_atomic(out / INFO_FILE, json.dumps(info, indent=2) + "\n")  # last: the folder is complete
    return out
