"""Small samples, marked: when a number rests on too few images to be read as a result.

A ROC AUC from 2 positive images, a subgroup of 2 patients or a temperature that ran into the edge of
its search interval still prints as a number with three decimals. ``thoracic evaluate``, ``thoracic
report`` and ``thoracic predict`` mark them with the warnings of this module, from the thresholds below
(defined here once):

- :data:`MIN_POSITIVES` (10): a class with fewer positive images on a split. Its AUC takes at most
  ``positives x negatives + 1`` values and one positive image moves it by up to ``1 / positives``; its
  bootstrap interval, resampling so few positives, is itself unreliable (Hanley and McNeil 1982,
  Radiology 143:29-36, give the AUC's standard error in terms of the two counts). A threshold (operating
  point) or a temperature fitted on so few validation positives is close to a guess.
- :data:`MIN_SUBGROUP_IMAGES` (30): a subgroup (sex, age band, view, follow-up) with fewer images: its
  mean AUC and its gap to the reference group rest on a handful of patients.
- a fitted temperature at a bound of
  :data:`~thoracic.evaluation.calibration.TEMPERATURE_BOUNDS`
  (:func:`~thoracic.evaluation.calibration.temperature_at_bound`): the data did not determine it; at the
  upper bound (20) the calibrated probabilities are ~0.5 on every image.

Every function returns a list of sentences (empty when nothing is small), so a caller prints, stores or
renders them as it likes. Nothing is hidden or dropped: the numbers stay in every table, marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from thoracic.evaluation.calibration import TEMPERATURE_BOUNDS, temperature_at_bound

#: Fewest positive images of a class on a split for its AUC, threshold or temperature to read as a result.
MIN_POSITIVES = 10
#: Fewest images of a subgroup for its AUC / TPR and its gaps to read as a result.
MIN_SUBGROUP_IMAGES = 30


def few_positive_classes(class_names: Sequence[str], n_positive: Sequence[int] | Mapping[str, int]
                         ) -> dict[str, int]:
    """``class -> positives`` of the classes with fewer than :data:`MIN_POSITIVES` positive images
    (in class order); ``n_positive`` per class, as a sequence in ``class_names`` order or a mapping."""
    counts = n_positive if isinstance(n_positive, Mapping) else dict(zip(class_names, n_positive))
    return {name: int(counts[name]) for name in class_names
            if name in counts and counts[name] is not None and int(counts[name]) < MIN_POSITIVES}


def _listing(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def positives_warnings(class_names: Sequence[str], n_positive: Sequence[int] | Mapping[str, int], split: str,
                       n_images: int | None = None) -> list[str]:
    """The classes whose AUC on ``split`` rests on fewer than :data:`MIN_POSITIVES` positive images."""
    few = few_positive_classes(class_names, n_positive)
    if not few:
        return []
    images = f" of {n_images} images" if n_images is not None else ""
    return [f"{len(few)} of {len(class_names)} classes have fewer than {MIN_POSITIVES} positive images on the "
            f"{split} split{images} ({_listing(few)}): their AUCs and intervals say little"]


#: What a value fitted on few positives means for its user, by what was fitted.
FITTED_CONSEQUENCES = {
    "operating-point thresholds": "decisions at them are close to a guess",
    "temperatures": "the calibrated probabilities of those classes rest on a handful of images",
}


def fitted_on_few_warnings(class_names: Sequence[str], n_positive: Sequence[int] | Mapping[str, int],
                           what: str = "operating-point thresholds", split: str = "val") -> list[str]:
    """The classes whose ``what`` (a key of :data:`FITTED_CONSEQUENCES`: operating-point thresholds,
    temperatures) were fitted on fewer than :data:`MIN_POSITIVES` positive images of ``split``."""
    few = few_positive_classes(class_names, n_positive)
    if not few:
        return []
    return [f"the {what} of {len(few)} of {len(class_names)} classes were fitted on fewer than {MIN_POSITIVES} "
            f"positive {split}-split images ({_listing(few)}): "
            f"{FITTED_CONSEQUENCES.get(what, 'they say little')}"]


def small_subgroups(groups: pd.DataFrame) -> pd.DataFrame:
    """The non-empty subgroups with fewer than :data:`MIN_SUBGROUP_IMAGES` images: the ``Mean`` rows of a
    subgroup table (``attribute, group, class_name, n_images``, as ``subgroups_<split>.csv`` / ``.json``)."""
    if groups is None or not len(groups):
        return pd.DataFrame(columns=["attribute", "group", "n_images"])
    means = groups[groups["class_name"] == "Mean"]
    n = means["n_images"].astype(int)
    return means[(n > 0) & (n < MIN_SUBGROUP_IMAGES)][["attribute", "group", "n_images"]]


def subgroup_warnings(groups: pd.DataFrame) -> list[str]:
    """The subgroups with fewer than :data:`MIN_SUBGROUP_IMAGES` images (see :func:`small_subgroups`)."""
    small = small_subgroups(groups)
    if not len(small):
        return []
    listing = ", ".join(f"{a} {g} ({int(n)})" for a, g, n in small.itertuples(index=False))
    return [f"{len(small)} subgroup(s) have fewer than {MIN_SUBGROUP_IMAGES} images ({listing}): their AUC, TPR "
            "and gaps to the reference group rest on a handful of patients"]


def temperature_warnings(class_names: Sequence[str], temperature: Sequence[float] | float | None,
                         n_images: int | None = None) -> list[str]:
    """The classes whose fitted temperature sits at a bound of the search interval."""
    if temperature is None:
        return []
    values = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (len(class_names),))
    at_bound = {name: float(t) for name, t, hit in zip(class_names, values, temperature_at_bound(values)) if hit}
    if not at_bound:
        return []
    listing = ", ".join(f"{name} T = {t:.3g}" for name, t in at_bound.items())
    fitted = f" fitted on {n_images} images" if n_images else ""
    high = any(np.isclose(t, TEMPERATURE_BOUNDS[1], rtol=1e-3) for t in at_bound.values())
    return [f"the temperature of {len(at_bound)} class(es) sits at a bound of its search interval "
            f"{TEMPERATURE_BOUNDS}{fitted} ({listing}): the data did not determine it"
            + ("; at the upper bound the calibrated probabilities are ~0.5 on every image" if high else "")]


__all__ = ["FITTED_CONSEQUENCES", "MIN_POSITIVES", "MIN_SUBGROUP_IMAGES", "few_positive_classes", "fitted_on_few_warnings",
           "positives_warnings", "small_subgroups", "subgroup_warnings", "temperature_warnings"]
