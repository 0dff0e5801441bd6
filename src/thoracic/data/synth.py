"""Phantom chest X-rays: a ChestX-ray14-shaped folder with known, exact lesion boxes.

:func:`generate_phantom_dataset` writes a folder in exactly the NIH layout (``images/`` or the tarballs'
``images_0XX/images/``, ``Data_Entry_2017_v2020.csv`` and ``BBox_List_2017.csv`` with the real headers,
``train_val_list.txt`` / ``test_list.txt`` without trailing newline, patient-disjoint, patients with
several follow-ups), so every command runs on it unchanged.

What an image is. A frontal "radiograph" drawn with vectorised numpy in normalised coordinates: body,
two lung fields with vascular markings, mediastinum and heart, diaphragm domes, ribs and clavicles; then
blur, noise and random contrast / brightness / gamma / small shifts. Per patient the anatomy (body and
lung size, heart size, diaphragm level, rib spacing) is fixed; follow-ups differ in acquisition.

Findings. All 14 classes, each with its own shape, texture, intensity and anatomical prior, chosen to be
visible and distinct at 128 px (so a small CNN learns them from image labels alone and its class maps
point at them):

=====================  ======================================================================
Atelectasis            thin oblique plate-like band in a lower lung zone
Cardiomegaly           heart enlarged 1.4-1.6x (box: the heart)
Effusion               basal homogeneous opacity with a meniscus rising towards the chest wall
Infiltration           5-8 ill-defined small patches scattered in a mid/upper zone
Mass                   large (r 6.5-9.5% of width) lobulated sharp round opacity in a lung
Nodule                 small (r 2.5-3.5%) very dense round opacity in a lung
Pneumonia              large fluffy lower-zone opacity with dark radial air bronchograms
Pneumothorax           lucent apical/lateral crescent without lung markings, bright pleural line
Consolidation          dense homogeneous upper-zone opacity with one straight (fissure) border
Edema                  bilateral symmetric perihilar haze (bat wing)
Emphysema              larger, darker lungs, flat diaphragm, a few bullae (box: both lungs)
Fibrosis               reticular net (rotated grid of fine lines) in both lower lateral zones
Pleural_Thickening     dense band along the lateral chest wall of one lung
Hernia                 retrocardiac round shadow with an air-fluid level
=====================  ======================================================================

Families (``family``, :data:`FAMILIES`). ``A`` is the table above. ``B`` is a second family designed
differently for the box classes (other shapes, positions and sizes; the other classes and the anatomy
are shared), so that a localization result can be checked on findings the first design did not shape:

=====================  ======================================================================
Atelectasis            wedge (triangle) in an upper zone, apex at the hilum, base on the chest wall
Cardiomegaly           as in A (the heart is anatomy)
Effusion               bilateral: thin basal layers under both lungs (a wide, flat box)
Infiltration           3-5 thin linear streaks beside the heart border (medial lower zone)
Mass                   cavitating: bright square-ish rim (superellipse) around a dark centre, upper
                       zone or near the hilum (r 5-8% of width)
Nodule                 tiny (r 1.6-2.4%) spiculated dense star in the lateral third of a lung
Pneumonia              lobar: the whole lung above a horizontal fissure, mottled (a tall box)
Pneumothorax           deep sulcus: lucent crescent at the lateral costophrenic angle (basal)
=====================  ======================================================================

Every instance has an exact box: the bounding box of the pixels where its own mask exceeds 0.5. All of
them go to ``phantom_findings.csv`` (beside the NIH files); ``BBox_List_2017.csv`` gets rows for the 8
box classes on a subset of the test images, mostly one row per image and all rows on some, like the
real file.

Prevalence (:data:`PREVALENCE`): roughly like NIH, in NIH's order of frequency (Infiltration 8% ...
Hernia 3%) and with most images (about 54%, NIH: 54%) without finding, but compressed so that every
class is positive in at least 3% of images (NIH's rarest, Hernia, is 0.2%): a set of ~2,000 images
then has about 60 positives of the rarest class, enough to learn it and to measure an AUC. Classes
are drawn from equidistributed sequences (:func:`finding_draws`), so counts are within one or two of
``N * p`` even in tiny sets, and co-occur as if independent.

Determinism: the patient structure comes from ``seed``; each image is drawn from its own generator
seeded with ``(seed, index)`` (and its patient's anatomy from ``(seed, patient)``), so an image does not
depend on the order of generation or on the number of workers.

Phantom results say nothing clinical: the findings are drawn to be learnable and localizable, not to
resemble disease; a model's score on phantoms only shows that the pipeline works.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from thoracic.constants import BOX_CLASS_NAMES, CLASS_INDEX, CLASS_NAMES, NO_FINDING
from thoracic.data.metadata import BBOX_HEADER, DATA_ENTRY_HEADER, DATA_ENTRY_NAMES, TEST_NAME, TRAIN_VAL_NAME
from thoracic.errors import DataError, UnsafeDeleteError
from thoracic.io import write_json_atomic
from thoracic.safety import ensure_output_dir, folder_entries, quiet_worker, remove_owned

GENERATOR_VERSION = 3  # 2: NIH-like prevalences (about 54% of images without finding); 3: families A, B

#: Probability that an image carries each finding (drawn as if independently). NIH's order of frequency
#: (Wang et al. 2017, Table 1: Infiltration 17.7%, Effusion 11.9%, Atelectasis 10.3%, Nodule 5.6%,
#: Mass 5.2%, Pneumothorax 4.7%, Consolidation 4.2%, Pleural_Thickening 3.0%, Cardiomegaly 2.5%,
#: Emphysema 2.2%, Edema 2.1%, Fibrosis 1.5%, Pneumonia 1.3%, Hernia 0.2%), compressed to 3-8% so
#: that the product of (1 - p), the share of images without finding, is 0.546 (NIH: 0.54) while the
#: rarest class keeps 3%.
PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.06,
    "Cardiomegaly": 0.035,
    "Effusion": 0.065,
    "Infiltration": 0.08,
    "Mass": 0.045,
    "Nodule": 0.045,
    "Pneumonia": 0.03,
    "Pneumothorax": 0.04,
    "Consolidation": 0.035,
    "Edema": 0.03,
    "Emphysema": 0.03,
    "Fibrosis": 0.03,
    "Pleural_Thickening": 0.035,
    "Hernia": 0.03,
}

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
    from thoracic.data.cache import is_cache_file, owned_cache_folder

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


@dataclass(frozen=True)
class PhantomImage:
    """One rendered image: pixels (uint8), its findings' boxes (x, y, w, h in pixels), storage mode."""

    pixels: np.ndarray
    findings: tuple[tuple[str, tuple[int, int, int, int]], ...]
    storage: str  # "L", "RGBA" or "I;16"
    bbox_rows: tuple[int, ...]  # indices into findings that BBox_List gets (if a test image)


# --------------------------------------------------------------------------------------------------
# Drawing primitives (normalised coordinates: u across, v down, both in [0, 1])
# --------------------------------------------------------------------------------------------------


def _ramp(signed_distance: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-mask from a signed distance (positive inside): linear ramp of width ``edge``."""
    return np.clip(signed_distance / edge + 0.5, 0.0, 1.0)


def _ellipse_radius(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)


def _ellipse(u, v, cx, cy, rx, ry, edge=0.05) -> np.ndarray:
    return _ramp(1.0 - _ellipse_radius(u, v, cx, cy, rx, ry), edge)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a cells x cells random grid upsampled bilinearly to size x size."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    up = ndimage.zoom(grid, size / (cells + 1), order=1, grid_mode=True, mode="nearest")
    return up[:size, :size]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """x, y, w, h of the pixels where ``mask > 0.5`` (None when there is none)."""
    inside = mask > 0.5
    rows = np.flatnonzero(inside.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(inside.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


@dataclass
class _Anatomy:
    body_rx: float
    body_ry: float
    lung_offset: float
    lung_rx: float
    lung_ry: float
    lung_cy: float
    heart_scale: float
    diaphragm: float
    dome: float
    rib_period: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Anatomy:
        return cls(
            body_rx=rng.uniform(0.42, 0.47),
            body_ry=rng.uniform(0.52, 0.58),
            lung_offset=rng.uniform(0.165, 0.19),
            lung_rx=rng.uniform(0.12, 0.14),
            lung_ry=rng.uniform(0.26, 0.30),
            lung_cy=rng.uniform(0.43, 0.46),
            heart_scale=rng.uniform(0.92, 1.06),
            diaphragm=rng.uniform(0.64, 0.68),
            dome=rng.uniform(3.0, 4.5),
            rib_period=rng.uniform(0.065, 0.078),
        )

    def lung_cx(self, side: int) -> float:
        return 0.5 - self.lung_offset if side == 0 else 0.5 + self.lung_offset


def _lung_point(rng: np.random.Generator, a: _Anatomy, side: int, v_range=(0.25, 0.62), shrink=0.65):
    """A random point inside one lung (inside ``shrink`` of its ellipse, within a vertical band)."""
    cx = a.lung_cx(side)
    for _ in range(100):
        u = cx + rng.uniform(-1, 1) * a.lung_rx * shrink
        v = rng.uniform(*v_range)
        if ((u - cx) / (a.lung_rx * shrink)) ** 2 + ((v - a.lung_cy) / (a.lung_ry * shrink)) ** 2 <= 1.0:
            return u, v
    return cx, a.lung_cy


# --------------------------------------------------------------------------------------------------
# Family B: other shapes, positions and sizes for the box classes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    """What a finding is drawn on: pixel coordinates, the anatomy, its masks and the finding's side."""

    u: np.ndarray
    v: np.ndarray
    anatomy: _Anatomy
    lungs: list[np.ndarray]
    lung: np.ndarray
    size: int
    edge: float
    side: int

    @property
    def cx(self) -> float:
        return self.anatomy.lung_cx(self.side)

    @property
    def outward(self) -> float:
        return -1.0 if self.side == 0 else 1.0


def _soft_polygon(u: np.ndarray, v: np.ndarray, points: list[tuple[float, float]], edge: float) -> np.ndarray:
    """Inside of a convex polygon (vertices in order) as a soft mask: the minimum of its edges' ramps."""
    pts = np.asarray(points)
    centre = pts.mean(axis=0)
    mask = None
    for (u0, v0), (u1, v1) in zip(pts, np.roll(pts, -1, axis=0)):
        normal = np.array([v1 - v0, -(u1 - u0)])
        normal /= np.linalg.norm(normal)
        if np.dot(normal, centre - (u0, v0)) < 0:  # point the normal inwards
            normal = -normal
        distance = (u - u0) * normal[0] + (v - v0) * normal[1]
        ramp = _ramp(distance, edge)
        mask = ramp if mask is None else np.minimum(mask, ramp)
    return mask


def _b_atelectasis(s: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = s.anatomy
    apex = (0.5 + s.outward * 0.07, a.lung_cy - rng.uniform(0.0, 0.04))
    top = a.lung_cy - a.lung_ry * rng.uniform(0.55, 0.7)
    wall = s.cx + s.outward * a.lung_rx * 0.85
    base = [(wall, top), (wall, top + rng.uniform(0.07, 0.1))]
    mask = _soft_polygon(s.u, s.v, [apex, *base], 2 * s.edge) * s.lungs[s.side]
    return mask, 0.3 * mask


def _b_effusion(s: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = s.anatomy
    depth = rng.uniform(0.035, 0.05)
    mask = np.zeros_like(s.lung)
    for side in (0, 1):
        floor = a.diaphragm + 0.02 * side + a.dome * (s.u - a.lung_cx(side)) ** 2
        mask = np.maximum(mask, s.lungs[side] * _ramp(s.v - (floor - depth), 2 * s.edge))
    return mask, 0.34 * mask


def _b_infiltration(s: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    field = np.zeros_like(s.lung)
    base_u = 0.5 + s.outward * rng.uniform(0.1, 0.13)
    base_v = rng.uniform(0.5, 0.56)
    for _ in range(int(rng.integers(3, 6))):
        angle = rng.uniform(-0.6, 0.6) + np.pi / 2  # mostly vertical streaks
        pu, pv = base_u + rng.normal(0, 0.02), base_v + rng.normal(0, 0.03)
        du, dv = s.u - pu, s.v - pv
        along = du * math.cos(angle) + dv * math.sin(angle)
        across = -du * math.sin(angle) + dv * math.cos(angle)
        length, width = rng.uniform(0.05, 0.08), rng.uniform(0.005, 0.008)
        field = field + np.exp(-((along / length) ** 2 + (across / width) ** 2))
    mask = np.clip(field * 1.5, 0.0, 1.0) * (s.lungs[s.side] > 0.05)
    return mask, 0.32 * mask


def _b_mass(s: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = s.anatomy
    if rng.random() < 0.5:  # upper zone, or beside the hilum
        pu, pv = _lung_point(rng, a, s.side, (0.22, 0.33), 0.55)
    else:
        pu, pv = s.cx - s.outward * a.lung_rx * 0.45, a.lung_cy + rng.uniform(-0.03, 0.03)
    radius = rng.uniform(0.05, 0.08)
    power = 4.0  # superellipse: a rounded square
    r = (np.abs((s.u - pu) / radius) ** power + np.abs((s.v - pv) / radius) ** power) ** (1 / power)
    mask = _ramp(1.0 - r, 2 * s.edge / radius)
    cavity = _ramp(0.55 - r, 2 * s.edge / radius)
    return mask, 0.36 * mask - 0.3 * cavity


def _b_nodule(s: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = s.anatomy
    pu = s.cx + s.outward * a.lung_rx * rng.uniform(0.45, 0.65)
    pv = rng.uniform(a.lung_cy - 0.1, a.lung_cy + 0.12)
    radius = rng.uniform(0.016, 0.024)
    theta = np.arctan2(s.v - pv, s.u - pu)
    spikes = 1.0 + 0.35 * np.clip(np.cos(7 * theta + rng.uniform(0, 6.3)), 0, None) ** 4
    mask = _ramp(radius * spikes - np.sqrt((s.u - pu) ** 2 + (s.v - pv) ** 2), 1.5 * s.edge)
    return mask, 0.5 * mask


def _b_pneumonia(s: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = s.anatomy
    fissure = a.lung_cy + rng.uniform(-0.03, 0.02)
    mottle = 0.75 + 0.25 * np.clip(_smooth_noise(rng, s.size, 24), -1, 1)
    mask = s.lungs[s.side] * _ramp(fissure - s.v, 2 * s.edge)
    return mask, 0.26 * mask * mottle


def _b_pneumothorax(s: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = s.anatomy
    floor = a.diaphragm + 0.02 * s.side
    corner = (s.cx + s.outward * a.lung_rx * 0.8, floor - 0.02)
    radius = rng.uniform(0.07, 0.1)
    distance = np.sqrt(((s.u - corner[0]) / 1.2) ** 2 + (s.v - corner[1]) ** 2)
    mask = _ramp(radius - distance, 2 * s.edge) * _ramp(s.lungs[s.side] - 0.2, 0.1)
    rim = np.clip(1.0 - np.abs(distance - radius) / (2 * s.edge), 0, 1) * (s.lungs[s.side] > 0.2)
    return mask, -0.2 * mask + 0.15 * rim


#: family -> {class: drawer(scene, rng) -> (mask, change of the image)}; a class without a drawer in
#: the family's table is drawn as in family A (the ``render_phantom`` code). A's table is empty.
Drawer = Callable[[_Scene, np.random.Generator], tuple[np.ndarray, np.ndarray]]
FAMILIES: dict[str, dict[str, Drawer]] = {
    "A": {},
    "B": {
        "Atelectasis": _b_atelectasis,
        "Effusion": _b_effusion,
        "Infiltration": _b_infiltration,
        "Mass": _b_mass,
        "Nodule": _b_nodule,
        "Pneumonia": _b_pneumonia,
        "Pneumothorax": _b_pneumothorax,
    },
}


# --------------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------------

#: One irrational step per class (fractional parts of square roots of the first 14 primes).
_WEYL_STEPS = np.sqrt(np.array([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43], dtype=np.float64)) % 1.0


def finding_draws(seed: int, index: int) -> np.ndarray:
    """14 numbers in [0, 1): image ``index`` has class c when draw c < its prevalence.

    A randomly shifted Weyl sequence ``frac(index * alpha_c + shift_c)`` instead of independent coin
    flips: it depends on the index only (order independent) and every run of n consecutive images has
    about n * p_c (+- 2) positives of class c, so even a 100-image phantom set holds every class.
    """
    shifts = np.random.default_rng([seed, 3]).random(len(_WEYL_STEPS))
    return (index * _WEYL_STEPS + shifts) % 1.0


# --------------------------------------------------------------------------------------------------


def render_phantom(
    size: int,
    seed: int,
    index: int,
    patient: int,
    prevalence: Mapping[str, float] | None = None,
    *,
    special_fraction: float = 0.04,
    box_fraction: float = 0.8,
    all_boxes_fraction: float = 0.25,
    family: str = "A",
) -> PhantomImage:
    """Draw image ``index`` of patient ``patient`` (deterministic in ``(seed, index, patient)``) in the
    finding design ``family`` (:data:`FAMILIES`)."""
    prevalence = PREVALENCE if prevalence is None else prevalence
    if family not in FAMILIES:
        raise DataError(f"phantom family must be one of {list(FAMILIES)}, got {family!r}")
    drawers = FAMILIES[family]
    # separate streams: acquisition (shift, noise, contrast, storage) does not depend on the findings,
    # so the same image with and without a finding differs only by the finding
    rng = np.random.default_rng([seed, 2, index])
    frng = np.random.default_rng([seed, 4, index])
    anatomy = _Anatomy.draw(np.random.default_rng([seed, 1, patient]))

    present = [name for name, draw in zip(CLASS_NAMES, finding_draws(seed, index)) if draw < prevalence.get(name, 0.0)]
    a = anatomy
    if "Emphysema" in present:  # hyperinflation: bigger lungs, flat low diaphragm
        a = _Anatomy(**{**a.__dict__, "lung_rx": a.lung_rx * 1.1, "lung_ry": a.lung_ry * 1.08,
                        "diaphragm": a.diaphragm + 0.05, "dome": a.dome * 0.25})
    heart_scale = a.heart_scale * (frng.uniform(1.4, 1.6) if "Cardiomegaly" in present else 1.0)

    # acquisition: small shift and zoom of the whole anatomy, then contrast etc. at the end
    shift_u, shift_v = rng.uniform(-0.03, 0.03, 2)
    zoom = rng.uniform(0.95, 1.05)
    pixel = (np.arange(size, dtype=np.float32) + 0.5) / size
    u = ((pixel - 0.5 - shift_u) / zoom + 0.5)[None, :]
    v = ((pixel - 0.5 - shift_v) / zoom + 0.5)[:, None]
    edge = 1.5 / size  # a 1.5-pixel soft edge keeps shapes smooth at any size

    body = _ellipse(u, v, 0.5, 0.55, a.body_rx, a.body_ry, 0.04)
    lung_radius = [_ellipse_radius(u, v, a.lung_cx(s), a.lung_cy, a.lung_rx, a.lung_ry) for s in (0, 1)]
    diaphragm = [a.diaphragm + 0.02 * s + a.dome * (u - a.lung_cx(s)) ** 2 for s in (0, 1)]
    heart_cy = a.diaphragm - 0.05
    heart = _ellipse(u, v, 0.53, heart_cy, 0.115 * heart_scale, 0.095 * heart_scale, 0.1)
    lungs = [
        _ramp(1.0 - lung_radius[s], 0.06) * _ramp(diaphragm[s] - v, 2 * edge) * (1.0 - 0.85 * heart)
        for s in (0, 1)
    ]
    lung = np.maximum(lungs[0], lungs[1])

    markings = 0.6 * _smooth_noise(rng, size, 10) + 0.4 * _smooth_noise(rng, size, 28)
    hidden_markings = np.zeros((size, size), dtype=np.float32)  # where a pneumothorax removes them

    image = 0.08 + 0.5 * body - 0.32 * lung
    mediastinum = _ramp(0.045 - np.abs(u - 0.5), 0.02) * _ramp(heart_cy - v, 0.05) * _ramp(v - 0.08, 0.05)
    image = image + 0.2 * mediastinum * (1.0 - lung) + 0.2 * heart
    rib_phase = (v - 0.9 * (u - 0.5) ** 2) / a.rib_period
    ribs = np.clip((np.cos(2 * np.pi * rib_phase) - 0.55) / 0.45, 0.0, 1.0) * _ramp(0.62 - v, 0.05)
    image = image + 0.07 * ribs * body
    for sign in (-1.0, 1.0):  # clavicles: bright bars from the sternum notch outwards and up
        along = sign * (u - 0.5)
        line_v = 0.16 - 0.18 * (along - 0.05)
        clavicle = _ramp(0.013 - np.abs(v - line_v), 2 * edge) * _ramp(along - 0.05, 0.02) * _ramp(0.3 - along, 0.02)
        image = image + 0.12 * clavicle

    findings: list[tuple[str, np.ndarray]] = []
    for name in present:
        side = int(frng.integers(0, 2))
        cx = a.lung_cx(side)
        outward = -1.0 if side == 0 else 1.0  # towards the chest wall
        if name in drawers:
            scene = _Scene(u, v, a, lungs, lung, size, edge, side)
            mask, change = drawers[name](scene, frng)
            image = image + change
        elif name == "Atelectasis":
            pu, pv = _lung_point(frng, a, side, (0.42, 0.55), 0.5)
            angle = math.radians(frng.uniform(-25, 25))
            du, dv = u - pu, v - pv
            along = du * math.cos(angle) + dv * math.sin(angle)
            across = -du * math.sin(angle) + dv * math.cos(angle)
            half_len, half_thick = frng.uniform(0.08, 0.11), frng.uniform(0.012, 0.017)
            mask = _ramp(1.0 - np.sqrt((along / half_len) ** 2 + (across / half_thick) ** 2), 0.15) * lungs[side]
            image = image + 0.3 * mask
        elif name == "Cardiomegaly":
            mask = heart  # already enlarged; the box is the heart
        elif name == "Effusion":
            depth = frng.uniform(0.06, 0.11)
            level = (a.diaphragm + 0.02 * side - depth) - 0.12 * np.clip((u - cx) * outward / a.lung_rx, 0, None) ** 2
            # fluid replaces the dark lung below a meniscus that rises towards the chest wall
            mask = lungs[side] * _ramp(v - level, 2 * edge)
            image = image + 0.32 * mask
        elif name == "Infiltration":
            pu, pv = _lung_point(frng, a, side, (0.3, 0.5), 0.5)
            field = np.zeros((size, size), dtype=np.float32)
            for _ in range(int(frng.integers(5, 9))):
                bu, bv = pu + frng.normal(0, 0.04), pv + frng.normal(0, 0.05)
                sigma = frng.uniform(0.014, 0.022)
                field = field + np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sigma**2))
            mask = np.clip(field * 1.1, 0.0, 1.0) * lungs[side]
            image = image + 0.24 * mask
        elif name == "Mass":
            pu, pv = _lung_point(frng, a, side, (0.28, 0.58), 0.55)
            radius = frng.uniform(0.065, 0.095)
            theta = np.arctan2(v - pv, u - pu)
            lobes = 1.0 + 0.1 * np.sin(3 * theta + frng.uniform(0, 6.3)) + 0.05 * np.sin(5 * theta + frng.uniform(0, 6.3))
            mask = _ramp(radius * lobes - np.sqrt((u - pu) ** 2 + (v - pv) ** 2), 2 * edge)
            image = image + 0.33 * mask
        elif name == "Nodule":
            pu, pv = _lung_point(frng, a, side, (0.25, 0.6), 0.7)
            radius = frng.uniform(0.025, 0.035)
            mask = _ramp(radius - np.sqrt((u - pu) ** 2 + (v - pv) ** 2), 2 * edge)
            image = image + 0.42 * mask
        elif name == "Pneumonia":
            pu, pv = _lung_point(frng, a, side, (0.48, 0.58), 0.45)
            radius = frng.uniform(0.08, 0.11)
            theta = np.arctan2(v - pv, u - pu)
            ragged = 1.0 + 0.15 * np.sin(3 * theta + frng.uniform(0, 6.3)) + 0.1 * np.sin(7 * theta + frng.uniform(0, 6.3))
            blob = _ramp(1.0 - np.sqrt((u - pu) ** 2 + (v - pv) ** 2) / (radius * ragged), 0.5) * lungs[side]
            hilum_theta = np.arctan2(v - (a.lung_cy - 0.02), u - (0.5 + 0.07 * outward))
            bronchi = np.clip(1.0 - np.abs(np.sin(9 * hilum_theta + frng.uniform(0, 6.3))) / 0.12, 0.0, 1.0)
            mask = blob
            image = image + 0.3 * blob * (1.0 - 0.7 * bronchi)
        elif name == "Pneumothorax":
            inner = frng.uniform(0.62, 0.75)
            top = _ramp(a.lung_cy + 0.06 - v, 2 * edge)
            mask = lungs[side] * _ramp(lung_radius[side] - inner, 0.02) * top
            pleura = np.clip(1.0 - np.abs(lung_radius[side] - inner) / 0.025, 0.0, 1.0) * lungs[side] * top
            hidden_markings = np.maximum(hidden_markings, mask)
            image = image - 0.15 * mask + 0.16 * pleura
        elif name == "Consolidation":
            pu, pv = _lung_point(frng, a, side, (0.26, 0.36), 0.45)
            angle = frng.uniform(-0.5, 0.5)
            fissure = (v - pv) - angle * (u - pu)  # straight lower border
            region = _ramp(1.0 - _ellipse_radius(u, v, pu, pv, frng.uniform(0.07, 0.09), frng.uniform(0.09, 0.12)), 0.08)
            mask = region * _ramp(-fissure, 2 * edge) * lungs[side]
            image = image + 0.34 * mask
        elif name == "Edema":
            haze = np.zeros((size, size), dtype=np.float32)
            spread = frng.uniform(0.9, 1.1)
            for s in (0, 1):
                hu = 0.5 + (0.1 if s else -0.1)
                haze = haze + np.exp(-(((u - hu) / (0.07 * spread)) ** 2 + ((v - a.lung_cy - 0.02) / (0.1 * spread)) ** 2))
            mask = np.clip(haze * 1.3, 0.0, 1.0) * lung
            image = image + 0.2 * mask
        elif name == "Emphysema":
            mask = lung
            image = image - 0.1 * lung
            for _ in range(int(frng.integers(2, 4))):
                bs = int(frng.integers(0, 2))
                bu, bv = _lung_point(frng, a, bs, (0.2, 0.45), 0.7)
                radius = frng.uniform(0.025, 0.04)
                distance = np.sqrt((u - bu) ** 2 + (v - bv) ** 2)
                image = image - 0.08 * _ramp(radius - distance, 2 * edge) * lungs[bs]
                image = image + 0.1 * np.clip(1 - np.abs(distance - radius) / (1.5 * edge), 0, 1) * lungs[bs]
        elif name == "Fibrosis":
            angle = frng.uniform(0, np.pi / 2)
            period = frng.uniform(0.04, 0.05)
            a_coord = (u * math.cos(angle) + v * math.sin(angle)) / period
            b_coord = (-u * math.sin(angle) + v * math.cos(angle)) / period
            net = np.maximum(
                np.clip(1 - np.abs(np.sin(np.pi * a_coord)) / 0.35, 0, 1),
                np.clip(1 - np.abs(np.sin(np.pi * b_coord)) / 0.35, 0, 1),
            )
            region = np.zeros((size, size), dtype=np.float32)
            for s in (0, 1):
                zu = a.lung_cx(s) + (0.55 * a.lung_rx if s else -0.55 * a.lung_rx)
                region = np.maximum(region, _ellipse(u, v, zu, a.diaphragm - 0.09, 0.07, 0.1, 0.15) * lungs[s])
            mask = region
            image = image + region * (0.08 + 0.25 * net)
        elif name == "Pleural_Thickening":
            v_top = frng.uniform(0.25, 0.38)
            lateral = _ramp((u - cx) * outward / a.lung_rx - 0.35, 0.1)
            band = _ramp(0.17 - np.abs(lung_radius[side] - 0.9), 0.04)
            rows = _ramp(v - v_top, 2 * edge) * _ramp(v_top + 0.26 - v, 2 * edge)
            mask = band * lateral * rows * body
            image = image + 0.32 * mask
        elif name == "Hernia":
            hu, hv = 0.5 + frng.uniform(-0.03, 0.03), a.diaphragm - frng.uniform(0.01, 0.04)
            radius = frng.uniform(0.05, 0.065)
            distance = np.sqrt((u - hu) ** 2 + (v - hv) ** 2)
            disc = _ramp(radius - distance, 2 * edge)
            level = hv + frng.uniform(-0.01, 0.015)
            air = disc * _ramp(level - v, 2 * edge)
            wall = np.clip(1 - np.abs(distance - radius) / (2 * edge), 0, 1)
            mask = disc
            image = image - 0.3 * air + 0.12 * disc * (1 - air) + 0.12 * wall
        else:  # pragma: no cover - CLASS_NAMES is fixed
            raise AssertionError(name)
        findings.append((name, mask))

    image = image + 0.05 * markings * lung * (1.0 - hidden_markings)
    blur = size / 256.0 * rng.uniform(0.5, 1.1)
    if blur > 0.3:
        image = ndimage.gaussian_filter(image, blur, mode="nearest")
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.022), image.shape).astype(np.float32)
    contrast, brightness, gamma = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05), rng.uniform(0.85, 1.15)
    image = np.clip((image - 0.4) * contrast + 0.4 + brightness, 0.0, 1.0) ** gamma
    pixels = np.rint(image * 255.0).astype(np.uint8)

    instances: list[tuple[str, tuple[int, int, int, int]]] = []
    for name, mask in findings:
        box = _bbox(np.broadcast_to(mask, (size, size)))
        if box is not None:  # a finding shifted out of view is dropped with its label
            instances.append((name, box))

    draw = rng.random()
    storage = "RGBA" if draw < special_fraction else "I;16" if draw < 2 * special_fraction else "L"
    box_candidates = [i for i, (name, _) in enumerate(instances) if name in BOX_CLASS_NAMES]
    bbox_rows: tuple[int, ...] = ()
    if box_candidates and rng.random() < box_fraction:
        if len(box_candidates) > 1 and rng.random() < all_boxes_fraction:
            bbox_rows = tuple(box_candidates)
        else:
            bbox_rows = (box_candidates[int(rng.integers(0, len(box_candidates)))],)
    return PhantomImage(pixels=pixels, findings=tuple(instances), storage=storage, bbox_rows=bbox_rows)


def save_png(pixels: np.ndarray, path: str | Path, storage: str = "L") -> None:
    """Write 8-bit gray pixels as an L, RGBA (gray in R=G=B, alpha 255) or 16-bit (v * 257) PNG."""
    if storage == "RGBA":
        alpha = np.full_like(pixels, 255)
        image = Image.fromarray(np.stack([pixels, pixels, pixels, alpha], axis=-1))
    elif storage == "I;16":
        image = Image.fromarray(pixels.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(pixels)
    image.save(path, compress_level=3)


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


def _render_job(job: tuple) -> tuple[int, PhantomImage]:
    plan, size, seed, prevalence, kwargs, path = job  # kwargs: render_phantom's keywords (family too)
    phantom = render_phantom(size, seed, plan.index, plan.patient, prevalence, **kwargs)
    save_png(phantom.pixels, path, phantom.storage)
    # the pixels are on disk; send back only what the CSVs need
    return plan.index, PhantomImage(np.empty((0, 0), np.uint8), phantom.findings, phantom.storage, phantom.bbox_rows)


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
    workers: int | None = 1,
    overwrite: bool = False,
    progress: bool = True,
    family: str = "A",
) -> Path:
    """Write a phantom ChestX-ray14 folder to ``out_dir`` and return it (see the module docstring).

    Args:
        num_images, image_size, seed: how many images, their side in pixels, and the seed.
        prevalence: per-class probability (default :data:`PREVALENCE`).
        test_fraction: fraction of patients in ``test_list.txt``.
        tarball_layout: ``images_001/images/...`` (``images_per_folder`` each) instead of ``images/``.
        special_fraction: fraction of images stored as RGBA, and again as 16-bit, like some real files.
        box_fraction: fraction of test images with a box-class finding that get BBox_List rows;
            ``all_boxes_fraction`` of those with several get one row per finding, the others one row.
        workers: processes (None: all cores); the result does not depend on it.
        overwrite: replace an existing non-empty ``out_dir`` (otherwise a DataError).
        family: the finding design, ``A`` (default) or ``B`` (:data:`FAMILIES`, module docstring).
    """
    out = Path(out_dir)
    if num_images < 1:
        raise DataError(f"--images: expected at least 1 image, got {num_images}")
    if image_size < 16:
        raise DataError(f"--size: expected at least 16 pixels, got {image_size}")
    if not (0.0 < test_fraction < 1.0):  # also rejects nan
        raise DataError(f"--test-fraction: expected a fraction of patients strictly between 0 and 1, got "
                        f"{test_fraction} (0 or 1 would leave the test or the train_val list empty)")
    for name, value in (("special_fraction", special_fraction), ("box_fraction", box_fraction),
                        ("all_boxes_fraction", all_boxes_fraction)):
        if not (0.0 <= value <= 1.0):
            raise DataError(f"{name}: expected a fraction in [0, 1], got {value}")
    if family not in FAMILIES:
        raise DataError(f"--family: expected one of {list(FAMILIES)}, got {family!r}")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is an existing file; expected a folder (new or empty)")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
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
        jobs.append((plan, image_size, seed, prevalence, kwargs, folder / plan.image_id))
    # The marker first, listing every file this call writes: from now on --overwrite (and nothing else)
    # may delete exactly these, even if this run is killed halfway.
    written = [*(job[-1].relative_to(out).as_posix() for job in jobs), *_METADATA_FILES]
    write_json_atomic(out / MARKER_FILE, {
        "generator": "thoracic synth", "version": GENERATOR_VERSION,
        "note": "a phantom ChestX-ray14 folder: results on it say nothing clinical",
        "files": written,
    })
    for folder in sorted({job[-1].parent for job in jobs}):
        folder.mkdir(parents=True, exist_ok=True)

    results: list[PhantomImage | None] = [None] * len(plans)
    workers = (os.cpu_count() or 1) if workers is None else max(1, workers)
    bar = tqdm(total=len(jobs), desc="synth", unit="img", disable=not progress)
    if workers == 1 or len(jobs) < 2 * workers:
        for job in jobs:
            index, phantom = _render_job(job)
            results[index] = phantom
            bar.update()
    else:
        # ProcessPoolExecutor: a worker that dies raises BrokenProcessPool instead of a silent hang
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(),
                                     initializer=quiet_worker, initargs=(os.getpid(),)) as pool:
                for index, phantom in pool.map(_render_job, jobs, chunksize=8):
                    results[index] = phantom
                    bar.update()
        except BrokenProcessPool:
            raise DataError(f"a synth worker process died (killed, or out of memory) while writing {out}; "
                            "rerun with --overwrite to start again") from None
    bar.close()

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
    (out / "Data_Entry_2017_v2020.csv").write_text("\n".join(entry_lines) + "\n")
    (out / "BBox_List_2017.csv").write_text("\n".join([BBOX_HEADER] + [r[2] for r in box_rows]) + "\n")
    (out / TRUTH_FILE).write_text("\n".join(truth_lines) + "\n")
    (out / "train_val_list.txt").write_text("\n".join(p.image_id for p in plans if not p.test))
    (out / "test_list.txt").write_text("\n".join(p.image_id for p in plans if p.test))
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
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out
