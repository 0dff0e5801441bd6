"""One phantom image: anatomy, acquisition and the findings its family's table draws.

:func:`render_phantom` draws the anatomy of the patient, then each present finding with the draw
function of :data:`FAMILIES` (family -> class -> :data:`~thoracic.data.synth.shapes.Drawer`), then
markings, blur, noise and the acquisition's contrast / brightness / gamma, and measures each finding's
box on its own mask. Which classes an image has comes from :func:`finding_draws` and :data:`PREVALENCE`.
"""

from __future__ import annotations

from thoracic.io import atomic_write

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES
from thoracic.data.synth.family_a import FAMILY_A
from thoracic.data.synth.family_b import FAMILY_B
from thoracic.data.synth.shapes import (
    Anatomy,
    Drawer,
    Scene,
    ellipse,
    ellipse_radius,
    mask_box,
    ramp,
    smooth_noise,
)
from thoracic.errors import DataError

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


@dataclass(frozen=True)
class PhantomImage:
    """One rendered image: pixels (uint8), its findings' boxes (x, y, w, h in pixels), storage mode."""

    pixels: np.ndarray
    findings: tuple[tuple[str, tuple[int, int, int, int]], ...]
    storage: str  # "L", "RGBA" or "I;16"
    bbox_rows: tuple[int, ...]  # indices into findings that BBox_List gets (if a test image)


#: family -> {class: draw function} for every class. ``A`` is :data:`~thoracic.data.synth.family_a.FAMILY_A`;
#: ``B`` is A with the box classes of :data:`~thoracic.data.synth.family_b.FAMILY_B` drawn its own way.
FAMILIES: dict[str, dict[str, Drawer]] = {
    "A": FAMILY_A,
    "B": {**FAMILY_A, **FAMILY_B},
}


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
    anatomy = Anatomy.draw(np.random.default_rng([seed, 1, patient]))

    present = [name for name, draw in zip(CLASS_NAMES, finding_draws(seed, index)) if draw < prevalence.get(name, 0.0)]
    a = anatomy
    if "Emphysema" in present:  # hyperinflation: bigger lungs, flat low diaphragm
        a = Anatomy(**{**a.__dict__, "lung_rx": a.lung_rx * 1.1, "lung_ry": a.lung_ry * 1.08,
                       "diaphragm": a.diaphragm + 0.05, "dome": a.dome * 0.25})
    heart_scale = a.heart_scale * (frng.uniform(1.4, 1.6) if "Cardiomegaly" in present else 1.0)

    # acquisition: small shift and zoom of the whole anatomy, then contrast etc. at the end
    shift_u, shift_v = rng.uniform(-0.03, 0.03, 2)
    zoom = rng.uniform(0.95, 1.05)
    pixel = (np.arange(size, dtype=np.float32) + 0.5) / size
    u = ((pixel - 0.5 - shift_u) / zoom + 0.5)[None, :]
    v = ((pixel - 0.5 - shift_v) / zoom + 0.5)[:, None]
    edge = 1.5 / size  # a 1.5-pixel soft edge keeps shapes smooth at any size

    body = ellipse(u, v, 0.5, 0.55, a.body_rx, a.body_ry, 0.04)
    lung_radius = [ellipse_radius(u, v, a.lung_cx(s), a.lung_cy, a.lung_rx, a.lung_ry) for s in (0, 1)]
    diaphragm = [a.diaphragm + 0.02 * s + a.dome * (u - a.lung_cx(s)) ** 2 for s in (0, 1)]
    heart_cy = a.diaphragm - 0.05
    heart = ellipse(u, v, 0.53, heart_cy, 0.115 * heart_scale, 0.095 * heart_scale, 0.1)
    lungs = [
        ramp(1.0 - lung_radius[s], 0.06) * ramp(diaphragm[s] - v, 2 * edge) * (1.0 - 0.85 * heart)
        for s in (0, 1)
    ]
    lung = np.maximum(lungs[0], lungs[1])

    markings = 0.6 * smooth_noise(rng, size, 10) + 0.4 * smooth_noise(rng, size, 28)
    hidden_markings = np.zeros((size, size), dtype=np.float32)  # where a pneumothorax removes them

    image = 0.08 + 0.5 * body - 0.32 * lung
    mediastinum = ramp(0.045 - np.abs(u - 0.5), 0.02) * ramp(heart_cy - v, 0.05) * ramp(v - 0.08, 0.05)
    image = image + 0.2 * mediastinum * (1.0 - lung) + 0.2 * heart
    rib_phase = (v - 0.9 * (u - 0.5) ** 2) / a.rib_period
    ribs = np.clip((np.cos(2 * np.pi * rib_phase) - 0.55) / 0.45, 0.0, 1.0) * ramp(0.62 - v, 0.05)
    image = image + 0.07 * ribs * body
    for sign in (-1.0, 1.0):  # clavicles: bright bars from the sternum notch outwards and up
        along = sign * (u - 0.5)
        line_v = 0.16 - 0.18 * (along - 0.05)
        clavicle = ramp(0.013 - np.abs(v - line_v), 2 * edge) * ramp(along - 0.05, 0.02) * ramp(0.3 - along, 0.02)
        image = image + 0.12 * clavicle

    findings: list[tuple[str, np.ndarray]] = []
    base = Scene(u=u, v=v, anatomy=a, body=body, heart=heart, lung_radius=lung_radius, lungs=lungs, lung=lung,
                 size=size, edge=edge)
    for name in present:
        side = int(frng.integers(0, 2))
        drawn = drawers[name](replace(base, side=side), frng, image)
        image = drawn.image
        if drawn.hides_markings is not None:
            hidden_markings = np.maximum(hidden_markings, drawn.hides_markings)
        findings.append((name, drawn.mask))

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
        box = mask_box(np.broadcast_to(mask, (size, size)))
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
    with atomic_write(path, "wb") as handle:  # a kill mid-image leaves no truncated PNG
        image.save(handle, format="PNG", compress_level=3)
