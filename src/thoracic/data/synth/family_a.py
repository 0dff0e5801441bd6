"""Family A: one draw function per finding, all 14 classes (the table in :mod:`thoracic.data.synth`).

Each function is a :data:`~thoracic.data.synth.shapes.Drawer`: it draws its random numbers from the
image's finding stream ``rng`` (in a fixed order) and returns the finding's mask and the image with the
finding drawn. :data:`FAMILY_A` maps each class to its function; adding a finding is one function and
one entry. Cardiomegaly and Emphysema also change the anatomy before anything is drawn (a bigger
heart; bigger, lower lungs): see :func:`thoracic.data.synth.render.render_phantom`.
"""

from __future__ import annotations

import math

import numpy as np

from thoracic.data.synth.shapes import Drawer, Drawn, Scene, ellipse, ellipse_radius, lung_point, ramp


def atelectasis(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Thin oblique plate-like band in a lower lung zone."""
    u, v = s.u, s.v
    pu, pv = lung_point(rng, s.anatomy, s.side, (0.42, 0.55), 0.5)
    angle = math.radians(rng.uniform(-25, 25))
    du, dv = u - pu, v - pv
    along = du * math.cos(angle) + dv * math.sin(angle)
    across = -du * math.sin(angle) + dv * math.cos(angle)
    half_len, half_thick = rng.uniform(0.08, 0.11), rng.uniform(0.012, 0.017)
    mask = ramp(1.0 - np.sqrt((along / half_len) ** 2 + (across / half_thick) ** 2), 0.15) * s.lungs[s.side]
    return Drawn(mask, image + 0.3 * mask)


def cardiomegaly(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """The heart, already enlarged with the anatomy; the box is the heart."""
    return Drawn(s.heart, image)


def effusion(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Basal homogeneous opacity with a meniscus rising towards the chest wall."""
    a, u, v = s.anatomy, s.u, s.v
    depth = rng.uniform(0.06, 0.11)
    level = (a.diaphragm + 0.02 * s.side - depth) - 0.12 * np.clip((u - s.cx) * s.outward / a.lung_rx, 0, None) ** 2
    # fluid replaces the dark lung below a meniscus that rises towards the chest wall
    mask = s.lungs[s.side] * ramp(v - level, 2 * s.edge)
    return Drawn(mask, image + 0.32 * mask)


def infiltration(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """5-8 ill-defined small patches scattered in a mid/upper zone."""
    u, v = s.u, s.v
    pu, pv = lung_point(rng, s.anatomy, s.side, (0.3, 0.5), 0.5)
    field = np.zeros((s.size, s.size), dtype=np.float32)
    for _ in range(int(rng.integers(5, 9))):
        bu, bv = pu + rng.normal(0, 0.04), pv + rng.normal(0, 0.05)
        sigma = rng.uniform(0.014, 0.022)
        field = field + np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sigma**2))
    mask = np.clip(field * 1.1, 0.0, 1.0) * s.lungs[s.side]
    return Drawn(mask, image + 0.24 * mask)


def mass(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Large (r 6.5-9.5% of width) lobulated sharp round opacity in a lung."""
    u, v = s.u, s.v
    pu, pv = lung_point(rng, s.anatomy, s.side, (0.28, 0.58), 0.55)
    radius = rng.uniform(0.065, 0.095)
    theta = np.arctan2(v - pv, u - pu)
    lobes = 1.0 + 0.1 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.05 * np.sin(5 * theta + rng.uniform(0, 6.3))
    mask = ramp(radius * lobes - np.sqrt((u - pu) ** 2 + (v - pv) ** 2), 2 * s.edge)
    return Drawn(mask, image + 0.33 * mask)


def nodule(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Small (r 2.5-3.5%) very dense round opacity in a lung."""
    u, v = s.u, s.v
    pu, pv = lung_point(rng, s.anatomy, s.side, (0.25, 0.6), 0.7)
    radius = rng.uniform(0.025, 0.035)
    mask = ramp(radius - np.sqrt((u - pu) ** 2 + (v - pv) ** 2), 2 * s.edge)
    return Drawn(mask, image + 0.42 * mask)


def pneumonia(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Large fluffy lower-zone opacity with dark radial air bronchograms."""
    a, u, v = s.anatomy, s.u, s.v
    pu, pv = lung_point(rng, a, s.side, (0.48, 0.58), 0.45)
    radius = rng.uniform(0.08, 0.11)
    theta = np.arctan2(v - pv, u - pu)
    ragged = 1.0 + 0.15 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.1 * np.sin(7 * theta + rng.uniform(0, 6.3))
    blob = ramp(1.0 - np.sqrt((u - pu) ** 2 + (v - pv) ** 2) / (radius * ragged), 0.5) * s.lungs[s.side]
    hilum_theta = np.arctan2(v - (a.lung_cy - 0.02), u - (0.5 + 0.07 * s.outward))
    bronchi = np.clip(1.0 - np.abs(np.sin(9 * hilum_theta + rng.uniform(0, 6.3))) / 0.12, 0.0, 1.0)
    return Drawn(blob, image + 0.3 * blob * (1.0 - 0.7 * bronchi))


def pneumothorax(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Lucent apical/lateral crescent without lung markings, bright pleural line."""
    a, v = s.anatomy, s.v
    lung, radius = s.lungs[s.side], s.lung_radius[s.side]
    inner = rng.uniform(0.62, 0.75)
    top = ramp(a.lung_cy + 0.06 - v, 2 * s.edge)
    mask = lung * ramp(radius - inner, 0.02) * top
    pleura = np.clip(1.0 - np.abs(radius - inner) / 0.025, 0.0, 1.0) * lung * top
    return Drawn(mask, image - 0.15 * mask + 0.16 * pleura, hides_markings=mask)


def consolidation(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Dense homogeneous upper-zone opacity with one straight (fissure) border."""
    u, v = s.u, s.v
    pu, pv = lung_point(rng, s.anatomy, s.side, (0.26, 0.36), 0.45)
    angle = rng.uniform(-0.5, 0.5)
    fissure = (v - pv) - angle * (u - pu)  # straight lower border
    region = ramp(1.0 - ellipse_radius(u, v, pu, pv, rng.uniform(0.07, 0.09), rng.uniform(0.09, 0.12)), 0.08)
    mask = region * ramp(-fissure, 2 * s.edge) * s.lungs[s.side]
    return Drawn(mask, image + 0.34 * mask)


def edema(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Bilateral symmetric perihilar haze (bat wing)."""
    a, u, v = s.anatomy, s.u, s.v
    haze = np.zeros((s.size, s.size), dtype=np.float32)
    spread = rng.uniform(0.9, 1.1)
    for side in (0, 1):
        hu = 0.5 + (0.1 if side else -0.1)
        haze = haze + np.exp(-(((u - hu) / (0.07 * spread)) ** 2 + ((v - a.lung_cy - 0.02) / (0.1 * spread)) ** 2))
    mask = np.clip(haze * 1.3, 0.0, 1.0) * s.lung
    return Drawn(mask, image + 0.2 * mask)


def emphysema(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Darker lungs with a few bullae (the larger lungs and flat diaphragm are in the anatomy); the box
    is both lungs."""
    u, v, edge = s.u, s.v, s.edge
    image = image - 0.1 * s.lung
    for _ in range(int(rng.integers(2, 4))):
        bs = int(rng.integers(0, 2))
        bu, bv = lung_point(rng, s.anatomy, bs, (0.2, 0.45), 0.7)
        radius = rng.uniform(0.025, 0.04)
        distance = np.sqrt((u - bu) ** 2 + (v - bv) ** 2)
        image = image - 0.08 * ramp(radius - distance, 2 * edge) * s.lungs[bs]
        image = image + 0.1 * np.clip(1 - np.abs(distance - radius) / (1.5 * edge), 0, 1) * s.lungs[bs]
    return Drawn(s.lung, image)


def fibrosis(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Reticular net (rotated grid of fine lines) in both lower lateral zones."""
    a, u, v = s.anatomy, s.u, s.v
    angle = rng.uniform(0, np.pi / 2)
    period = rng.uniform(0.04, 0.05)
    a_coord = (u * math.cos(angle) + v * math.sin(angle)) / period
    b_coord = (-u * math.sin(angle) + v * math.cos(angle)) / period
    net = np.maximum(
        np.clip(1 - np.abs(np.sin(np.pi * a_coord)) / 0.35, 0, 1),
        np.clip(1 - np.abs(np.sin(np.pi * b_coord)) / 0.35, 0, 1),
    )
    region = np.zeros((s.size, s.size), dtype=np.float32)
    for side in (0, 1):
        zu = a.lung_cx(side) + (0.55 * a.lung_rx if side else -0.55 * a.lung_rx)
        region = np.maximum(region, ellipse(u, v, zu, a.diaphragm - 0.09, 0.07, 0.1, 0.15) * s.lungs[side])
    return Drawn(region, image + region * (0.08 + 0.25 * net))


def pleural_thickening(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Dense band along the lateral chest wall of one lung."""
    a, u, v = s.anatomy, s.u, s.v
    v_top = rng.uniform(0.25, 0.38)
    lateral = ramp((u - s.cx) * s.outward / a.lung_rx - 0.35, 0.1)
    band = ramp(0.17 - np.abs(s.lung_radius[s.side] - 0.9), 0.04)
    rows = ramp(v - v_top, 2 * s.edge) * ramp(v_top + 0.26 - v, 2 * s.edge)
    mask = band * lateral * rows * s.body
    return Drawn(mask, image + 0.32 * mask)


def hernia(s: Scene, rng: np.random.Generator, image: np.ndarray) -> Drawn:
    """Retrocardiac round shadow with an air-fluid level."""
    a, u, v, edge = s.anatomy, s.u, s.v, s.edge
    hu, hv = 0.5 + rng.uniform(-0.03, 0.03), a.diaphragm - rng.uniform(0.01, 0.04)
    radius = rng.uniform(0.05, 0.065)
    distance = np.sqrt((u - hu) ** 2 + (v - hv) ** 2)
    disc = ramp(radius - distance, 2 * edge)
    level = hv + rng.uniform(-0.01, 0.015)
    air = disc * ramp(level - v, 2 * edge)
    wall = np.clip(1 - np.abs(distance - radius) / (2 * edge), 0, 1)
    return Drawn(disc, image - 0.3 * air + 0.12 * disc * (1 - air) + 0.12 * wall)


#: class -> draw function of family A (every class).
FAMILY_A: dict[str, Drawer] = {
    "Atelectasis": atelectasis,
    "Cardiomegaly": cardiomegaly,
    "Effusion": effusion,
    "Infiltration": infiltration,
    "Mass": mass,
    "Nodule": nodule,
    "Pneumonia": pneumonia,
    "Pneumothorax": pneumothorax,
    "Consolidation": consolidation,
    "Edema": edema,
    "Emphysema": emphysema,
    "Fibrosis": fibrosis,
    "Pleural_Thickening": pleural_thickening,
    "Hernia": hernia,
}
