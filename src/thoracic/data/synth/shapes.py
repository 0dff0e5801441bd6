"""Drawing primitives and the anatomy of a phantom, and what a finding's draw function gets and returns.

Coordinates are normalised: ``u`` across, ``v`` down, both in [0, 1]; masks are soft (a linear ramp
over a pixel or two), and a finding's box is where its own mask exceeds 0.5 (:func:`mask_box`).
A finding is drawn by a :data:`Drawer`: ``(scene, rng, image) -> Drawn`` (the tables of
:mod:`thoracic.data.synth.family_a` and :mod:`thoracic.data.synth.family_b`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage


def ramp(signed_distance: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-mask from a signed distance (positive inside): linear ramp of width ``edge``."""
    return np.clip(signed_distance / edge + 0.5, 0.0, 1.0)


def ellipse_radius(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Normalised elliptic radius around ``(cx, cy)``: 1 on the ellipse with half-axes ``rx``, ``ry``."""
    return np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)


def ellipse(u, v, cx, cy, rx, ry, edge=0.05) -> np.ndarray:
    """Soft mask of the ellipse (``edge`` in units of the normalised radius)."""
    return ramp(1.0 - ellipse_radius(u, v, cx, cy, rx, ry), edge)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a cells x cells random grid upsampled bilinearly to size x size."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    up = ndimage.zoom(grid, size / (cells + 1), order=1, grid_mode=True, mode="nearest")
    return up[:size, :size]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """x, y, w, h of the pixels where ``mask > 0.5`` (None when there is none)."""
    inside = mask > 0.5
    rows = np.flatnonzero(inside.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(inside.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def soft_polygon(u: np.ndarray, v: np.ndarray, points: list[tuple[float, float]], edge: float) -> np.ndarray:
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
        edge_ramp = ramp(distance, edge)
        mask = edge_ramp if mask is None else np.minimum(mask, edge_ramp)
    return mask


@dataclass
class Anatomy:
    """One patient's anatomy (fixed across their follow-ups), in normalised coordinates."""

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
    def draw(cls, rng: np.random.Generator) -> Anatomy:
        """A random anatomy (the draws are always the same ten, in this order)."""
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
        """Horizontal centre of the lung on ``side`` (0: left of the image, 1: right)."""
        return 0.5 - self.lung_offset if side == 0 else 0.5 + self.lung_offset


def lung_point(rng: np.random.Generator, a: Anatomy, side: int, v_range=(0.25, 0.62), shrink=0.65):
    """A random point inside one lung (inside ``shrink`` of its ellipse, within a vertical band)."""
    cx = a.lung_cx(side)
    for _ in range(100):
        u = cx + rng.uniform(-1, 1) * a.lung_rx * shrink
        v = rng.uniform(*v_range)
        if ((u - cx) / (a.lung_rx * shrink)) ** 2 + ((v - a.lung_cy) / (a.lung_ry * shrink)) ** 2 <= 1.0:
            return u, v
    return cx, a.lung_cy


@dataclass(frozen=True)
class Scene:
    """What a finding is drawn on: pixel coordinates, the anatomy and its masks, and the finding's side."""

    u: np.ndarray  # 1 x size, across
    v: np.ndarray  # size x 1, down
    anatomy: Anatomy
    body: np.ndarray
    heart: np.ndarray
    lung_radius: list[np.ndarray]  # per side: the lung's normalised elliptic radius
    lungs: list[np.ndarray]  # per side: the lung's soft mask
    lung: np.ndarray  # both lungs
    size: int
    edge: float  # a soft edge of 1.5 pixels, in normalised units
    side: int = 0  # the finding's side (0: left of the image, 1: right)

    @property
    def cx(self) -> float:
        """Horizontal centre of the finding's lung."""
        return self.anatomy.lung_cx(self.side)

    @property
    def outward(self) -> float:
        """Sign of the direction from the finding's lung towards its chest wall."""
        return -1.0 if self.side == 0 else 1.0


class Drawn(NamedTuple):
    """What a draw function returns."""

    mask: np.ndarray  # the finding's own soft mask: its box is where it exceeds 0.5
    image: np.ndarray  # the image with the finding drawn on it
    hides_markings: np.ndarray | None = None  # where the lung markings vanish (a pneumothorax)


#: A finding's draw function: ``(scene, rng, image) -> Drawn``; ``rng`` is the image's finding stream.
Drawer = Callable[[Scene, np.random.Generator, np.ndarray], Drawn]
