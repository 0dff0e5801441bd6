"""Published numbers that reports put beside this project's own (package data in ``thoracic/reference``).

- ``classification_auc.csv``: per-class test AUC on the official ChestX-ray14 split: Wang et al. 2017
  (ChestX-ray8, ResNet-50) and the seed paper's Table 1 (baseline ResNet-34, space attention,
  attention-gated).
- ``localization_wang2017.csv``: Wang et al. 2017 weakly supervised localization accuracy (ResNet-50) at
  every T(IoU) and T(IoBB), with IoBB = intersection / area of the *predicted* box.

The seed paper's own localization Tables 2-7 are deliberately not shipped: they were computed with a
metric that divides by the ground-truth box and scored 104 of the 984 rows against the wrong box (see
``docs/evaluation.md``), so they are not comparable with anything computed here.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES
from thoracic.errors import DataError

#: Column of ``classification_auc.csv`` -> label used in tables.
CLASSIFICATION_REFERENCE_LABELS: dict[str, str] = {
    "wang2017_resnet50": "Wang 2017 ResNet-50",
    "paper_baseline_resnet34": "Paper BL ResNet-34",
    "paper_space_attention": "Paper S.Att.",
    "paper_attention_gated": "Paper AG",
}

#: Label of the Wang et al. 2017 localization reference in tables.
LOCALIZATION_REFERENCE_LABEL = "Wang 2017 ResNet-50"


def _read_reference(name: str) -> pd.DataFrame:
    try:
        with resources.files("thoracic.reference").joinpath(name).open("r", encoding="utf-8") as handle:
            return pd.read_csv(handle)
    except FileNotFoundError as exc:
        raise DataError(f"reference file thoracic/reference/{name} is missing from the installed package") from exc


def load_classification_reference() -> pd.DataFrame:
    """Published per-class AUCs: index = the 14 classes in canonical order, one column per source.

    Columns are the raw CSV names (see :data:`CLASSIFICATION_REFERENCE_LABELS` for display labels).
    """
    table = _read_reference("classification_auc.csv").set_index("class")
    missing = [c for c in CLASS_NAMES if c not in table.index]
    if missing:
        raise DataError(f"reference classification_auc.csv lacks rows for classes {missing}")
    return table.loc[list(CLASS_NAMES)].astype(float)


def load_localization_reference() -> pd.DataFrame:
    """Wang et al. 2017 localization accuracy in long form.

    Columns: ``metric`` ('IoU' or 'IoBB'), ``threshold`` (float), ``class_name``, ``accuracy``.
    """
    wide = _read_reference("localization_wang2017.csv")
    missing = [c for c in BOX_CLASS_NAMES if c not in wide.columns]
    if missing:
        raise DataError(f"reference localization_wang2017.csv lacks columns for classes {missing}")
    long = wide.melt(id_vars=["metric", "threshold"], value_vars=list(BOX_CLASS_NAMES),
                     var_name="class_name", value_name="accuracy")
    long["threshold"] = long["threshold"].astype(float).round(4)
    return long
