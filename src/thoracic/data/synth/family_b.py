"""Family B: other shapes, positions and sizes for the box classes (the table in :mod:`thoracic.data.synth`).

:data:`FAMILY_B` maps each of its classes to a :data:`~thoracic.data.synth.shapes.Drawer`; the classes
it leaves out (Cardiomegaly and the six classes without boxes) are drawn as in family A
(:data:`thoracic.data.synth.render.FAMILIES` holds the merged tables).
"""

from __future__ import annotations

import math

import numpy as np

from thoracic.data.synth.shapes import Drawer, Drawn, Scene, lung_point, ramp, smooth_noise, soft_polygon


def atelectasis(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Wedge (triangle) in an upper zone, apex at the hilum, base on the chest wall."""
    a = s.anatomy
    apex = (0.5 + s.outward * 0.07, a.lung_cy - rng.uniform(0.0, 0.04))
    top = a.lung_cy - a.lung_ry * rng.uniform(0.55, 0.7)
    wall = s.cx + s.outward * a.lung_rx * 0.85
    base = [(wall, top), (wall, top + rng.uniform(0.07, 0.1))]
    mask = soft_polygon(s.u, s.v, [apex, *base], 2 * s.edge) * s.lungs[s.side]
    return Drawn(mask, image + 0.3 * mask)


def effusion(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Bilateral: thin basal layers under both lungs (a wide, flat box)."""
    a = s.anatomy
    depth = rng.uniform(0.035, 0.05)
    mask = np.zeros_like(s.lung)
    for side in (0, 1):
        floor = a.diaphragm + 0.02 * side + a.dome * (s.u - a.lung_cx(side)) ** 2
        mask = np.maximum(mask, s.lungs[side] * ramp(s.v - (floor - depth), 2 * s.edge))
    return Drawn(mask, image + 0.34 * mask)


def infiltration(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """3-5 thin linear streaks beside the heart border (medial lower zone)."""
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
    return Drawn(mask, image + 0.32 * mask)


def mass(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Cavitating: bright square-ish rim (superellipse) around a dark centre, upper zone or near the
    hilum (r 5-8% of width)."""
    a = s.anatomy
    if rng.random() < 0.5:  # upper zone, or beside the hilum
        pu, pv = lung_point(rng, a, s.side, (0.22, 0.33), 0.55)
    else:
        pu, pv = s.cx - s.outward * a.lung_rx * 0.45, a.lung_cy + rng.uniform(-0.03, 0.03)
    radius = rng.uniform(0.05, 0.08)
    power = 4.0  # superellipse: a rounded square
    r = (np.abs((s.u - pu) / radius) ** power + np.abs((s.v - pv) / radius) ** power) ** (1 / power)
    mask = ramp(1.0 - r, 2 * s.edge / radius)
    cavity = ramp(0.55 - r, 2 * s.edge / radius)
    return Drawn(mask, image + (0.36 * mask - 0.3 * cavity))


def nodule(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Tiny (r 1.6-2.4%) spiculated dense star in the lateral third of a lung."""
    a = s.anatomy
    pu = s.cx + s.outward * a.lung_rx * rng.uniform(0.45, 0.65)
    pv = rng.uniform(a.lung_cy - 0.1, a.lung_cy + 0.12)
    radius = rng.uniform(0.016, 0.024)
    theta = np.arctan2(s.v - pv, s.u - pu)
    spikes = 1.0 + 0.35 * np.clip(np.cos(7 * theta + rng.uniform(0, 6.3)), 0, None) ** 4
    mask = ramp(radius * spikes - np.sqrt((s.u - pu) ** 2 + (s.v - pv) ** 2), 1.5 * s.edge)
    return Drawn(mask, image + 0.5 * mask)


def pneumonia(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Lobar: the whole lung above a horizontal fissure, mottled (a tall box)."""
    a = s.anatomy
    fissure = a.lung_cy + rng.uniform(-0.03, 0.02)
    mottle = 0.75 + 0.25 * np.clip(smooth_noise(rng, s.size, 24), -1, 1)
    mask = s.lungs[s.side] * ramp(fissure - s.v, 2 * s.edge)
    return Drawn(mask, image + 0.26 * mask * mottle)


def pneumothorax(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Deep sulcus: lucent crescent at the lateral costophrenic angle (basal)."""
    a = s.anatomy
    floor = a.diaphragm + 0.02 * s.side
    corner = (s.cx + s.outward * a.lung_rx * 0.8, floor - 0.02)
    radius = rng.uniform(0.07, 0.1)
    distance = np.sqrt(((s.u - corner[0]) / 1.2) ** 2 + (s.v - corner[1]) ** 2)
    mask = ramp(radius - distance, 2 * s.edge) * ramp(s.lungs[s.side] - 0.2, 0.1)
    rim = np.clip(1.0 - np.abs(distance - radius) / (2 * s.edge), 0, 1) * (s.lungs[s.side] > 0.2)
    return Drawn(mask, image + (-0.2 * mask + 0.15 * rim))


#: class -> draw function of family B (the box classes but Cardiomegaly; the rest is drawn as in A).
FAMILY_B: dict[str, Drawer] = {
    "Atelectasis": atelectasis,
    "Effusion": effusion,
    "Infiltration": infiltration,
    "Mass": mass,
    "Nodule": nodule,
    "Pneumonia": pneumonia,
    "Pneumothorax": pneumothorax,
}
