"""Label names that mean the same finding across datasets: one table, and the labels two datasets share.

Each dataset names its labels its own way (ChestX-ray14 ``Effusion``, CheXpert and MIMIC-CXR
``Pleural Effusion``, PadChest ``pleural effusion``, VinDr-CXR ``Pleural effusion``). :data:`HARMONISED_LABELS`
maps a **finding** (a name of this project's choosing, the key) to the label that means it in each dataset
that has one. It merges only names of the same radiological finding: it does not merge a label into a
broader or narrower one (VinDr-CXR's ``Nodule/Mass`` is neither ChestX-ray14's ``Nodule`` nor its
``Mass``; ChestX-ray14's ``Mass`` is not PadChest's ``pulmonary mass``, nor its ``Hernia`` PadChest's
``hiatal hernia``: each is one kind of the other; ChestX-ray14's ``Infiltration`` is not CheXpert's
``Lung Opacity``, an umbrella term whose definition differs from VinDr-CXR's ``Lung Opacity`` too), nor
"no finding" labels, which mean "none of *this dataset's* findings" and so differ with the label list
(CheXpert's and MIMIC-CXR's, from the same labeler and list, are merged). docs/data.md prints the table.

PadChest's names are its report-derived terms in lower case (Bustos et al. 2020; the CSV's ``Labels``
column, e.g. ``pleural effusion``, ``pulmonary edema``, ``infiltrates``); the PadChest reader takes its
label names from that column, so a PadChest label is shared only where a folder's file holds it.

>>> [(s.finding, s.name_a, s.name_b) for s in shared_labels("chestxray14", "chexpert")][:3]
[('Atelectasis', 'Atelectasis', 'Atelectasis'), ('Cardiomegaly', 'Cardiomegaly', 'Cardiomegaly'), ('Consolidation', 'Consolidation', 'Consolidation')]
>>> dataset_label("vindr", harmonised_name("chestxray14", "Effusion"))
'Pleural effusion'
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from thoracic.errors import DataError

#: finding -> {dataset kind: that dataset's label name for it}. Kinds: ``chestxray14``, ``chexpert``,
#: ``mimic``, ``padchest``, ``vindr``, ``rsna`` (:data:`thoracic.constants.DATASET_KINDS`).
HARMONISED_LABELS: dict[str, dict[str, str]] = {
    "Atelectasis": {"chestxray14": "Atelectasis", "chexpert": "Atelectasis", "mimic": "Atelectasis",
                    "padchest": "atelectasis", "vindr": "Atelectasis"},
    "Cardiomegaly": {"chestxray14": "Cardiomegaly", "chexpert": "Cardiomegaly", "mimic": "Cardiomegaly",
                     "padchest": "cardiomegaly", "vindr": "Cardiomegaly"},
    "Consolidation": {"chestxray14": "Consolidation", "chexpert": "Consolidation", "mimic": "Consolidation",
                      "padchest": "consolidation", "vindr": "Consolidation"},
    "Edema": {"chestxray14": "Edema", "chexpert": "Edema", "mimic": "Edema", "padchest": "pulmonary edema",
              "vindr": "Edema"},
    "Emphysema": {"chestxray14": "Emphysema", "padchest": "emphysema", "vindr": "Emphysema"},
    "Enlarged Cardiomediastinum": {"chexpert": "Enlarged Cardiomediastinum", "mimic": "Enlarged Cardiomediastinum"},
    "Fibrosis": {"chestxray14": "Fibrosis", "padchest": "pulmonary fibrosis", "vindr": "Pulmonary fibrosis"},
    "Fracture": {"chexpert": "Fracture", "mimic": "Fracture"},
    "Infiltration": {"chestxray14": "Infiltration", "padchest": "infiltrates", "vindr": "Infiltration"},
    "Lung Lesion": {"chexpert": "Lung Lesion", "mimic": "Lung Lesion"},
    "Lung Opacity": {"chexpert": "Lung Opacity", "mimic": "Lung Opacity"},
    "No Finding": {"chexpert": "No Finding", "mimic": "No Finding"},
    "Nodule": {"chestxray14": "Nodule", "padchest": "nodule"},
    "Pleural Effusion": {"chestxray14": "Effusion", "chexpert": "Pleural Effusion", "mimic": "Pleural Effusion",
                         "padchest": "pleural effusion", "vindr": "Pleural effusion"},
    "Pleural Other": {"chexpert": "Pleural Other", "mimic": "Pleural Other"},
    "Pleural Thickening": {"chestxray14": "Pleural_Thickening", "padchest": "pleural thickening",
                           "vindr": "Pleural thickening"},
    "Pneumonia": {"chestxray14": "Pneumonia", "chexpert": "Pneumonia", "mimic": "Pneumonia", "padchest": "pneumonia",
                  "vindr": "Pneumonia", "rsna": "Pneumonia"},
    "Pneumothorax": {"chestxray14": "Pneumothorax", "chexpert": "Pneumothorax", "mimic": "Pneumothorax",
                     "padchest": "pneumothorax", "vindr": "Pneumothorax"},
    "Rib Fracture": {"padchest": "rib fracture", "vindr": "Rib fracture"},
    "Clavicle Fracture": {"padchest": "clavicle fracture", "vindr": "Clavicle fracture"},
    "Support Devices": {"chexpert": "Support Devices", "mimic": "Support Devices"},
    "Tuberculosis": {"padchest": "tuberculosis", "vindr": "Tuberculosis"},
}

#: (kind, label name) -> finding, the inverse of :data:`HARMONISED_LABELS`.
_FINDING_OF: dict[tuple[str, str], str] = {
    (kind, name): finding for finding, names in HARMONISED_LABELS.items() for kind, name in names.items()
}


@dataclass(frozen=True)
class SharedLabel:
    """A finding two datasets both label: its name here and in each dataset."""

    finding: str
    name_a: str
    name_b: str


def harmonised_name(kind: str, label: str) -> str | None:
    """The finding a dataset's label means (a key of :data:`HARMONISED_LABELS`), None when it has none."""
    return _FINDING_OF.get((kind, label))


def dataset_label(kind: str, finding: str | None) -> str | None:
    """A dataset's label name for a finding, None when the dataset does not label it."""
    return HARMONISED_LABELS.get(finding or "", {}).get(kind)


def shared_labels(kind_a: str, kind_b: str, labels_a: Sequence[str] | None = None,
                  labels_b: Sequence[str] | None = None) -> list[SharedLabel]:
    """The findings two datasets share, in :data:`HARMONISED_LABELS` order.

    With ``labels_a`` / ``labels_b`` (e.g. the label names of a run, or of a PadChest folder) only the
    labels in those lists count. The same kind shares every label of ``labels_a`` also in ``labels_b``.
    """
    if kind_a == kind_b:
        if labels_a is None or labels_b is None:
            names = labels_a if labels_a is not None else labels_b
            if names is None:
                names = [n for names in HARMONISED_LABELS.values() for k, n in names.items() if k == kind_a]
            return [SharedLabel(harmonised_name(kind_a, n) or n, n, n) for n in names]
        return [SharedLabel(harmonised_name(kind_a, n) or n, n, n) for n in labels_a if n in set(labels_b)]
    shared = []
    for finding, names in HARMONISED_LABELS.items():
        name_a, name_b = names.get(kind_a), names.get(kind_b)
        if name_a is None or name_b is None:
            continue
        if (labels_a is not None and name_a not in labels_a) or (labels_b is not None and name_b not in labels_b):
            continue
        shared.append(SharedLabel(finding, name_a, name_b))
    return shared


@dataclass(frozen=True)
class LabelMapping:
    """How a run's outputs meet another dataset's labels: the findings both label, each with the run's
    label (and its output index) and the dataset's label (and its column), in the run's output order.

    Built by :func:`label_mapping` from :data:`HARMONISED_LABELS` only: a run's output is scored against a
    dataset's label exactly when both name the same finding (nothing broader, narrower or merely similar).
    """

    run_kind: str
    test_kind: str
    shared: tuple[SharedLabel, ...]
    run_indices: tuple[int, ...]
    test_indices: tuple[int, ...]

    @property
    def run_labels(self) -> tuple[str, ...]:
        """The run's label names of the shared findings (the names every output file uses)."""
        return tuple(s.name_a for s in self.shared)

    @property
    def test_labels(self) -> tuple[str, ...]:
        """The other dataset's label names of the same findings."""
        return tuple(s.name_b for s in self.shared)

    @property
    def findings(self) -> tuple[str, ...]:
        """The harmonised finding names (the keys of :data:`HARMONISED_LABELS`)."""
        return tuple(s.finding for s in self.shared)

    def test_label(self, run_label: str) -> str:
        """The dataset's label for one of the run's shared labels."""
        return self.test_labels[self.run_labels.index(run_label)]

    def run_label(self, test_label: str) -> str | None:
        """The run's label for one of the dataset's labels (None when the run has none for it)."""
        return self.run_labels[self.test_labels.index(test_label)] if test_label in self.test_labels else None

    def to_frame(self) -> pd.DataFrame:
        """``finding, run_label, test_label, run_index, test_index`` (``label_mapping.csv``)."""
        return pd.DataFrame({"finding": list(self.findings), "run_label": list(self.run_labels),
                             "test_label": list(self.test_labels), "run_index": list(self.run_indices),
                             "test_index": list(self.test_indices)})

    def to_records(self) -> list[dict[str, str]]:
        """The mapping as JSON records (``finding``, ``run_label``, ``test_label``)."""
        return [{"finding": s.finding, "run_label": s.name_a, "test_label": s.name_b} for s in self.shared]

    def describe(self) -> str:
        """``Effusion = Pleural Effusion, Edema = Edema, ...`` (run label = dataset label)."""
        return ", ".join(f"{s.name_a} = {s.name_b}" for s in self.shared)


def label_mapping(run_kind: str, run_labels: Sequence[str], test_kind: str, test_labels: Sequence[str]) -> LabelMapping:
    """The labels a run (trained on ``run_kind`` with outputs ``run_labels``) shares with a dataset of kind
    ``test_kind`` labelled ``test_labels`` (:func:`shared_labels`), in the run's output order.

    >>> mapping = label_mapping("chestxray14", ["Atelectasis", "Effusion", "Hernia"], "vindr",
    ...                         ["Pleural effusion", "Atelectasis", "Nodule/Mass"])
    >>> mapping.describe(), mapping.run_indices, mapping.test_indices
    ('Atelectasis = Atelectasis, Effusion = Pleural effusion', (0, 1), (1, 0))

    Raises:
        DataError: the two share no label (nothing could be scored), naming both label lists.
    """
    run_labels, test_labels = list(run_labels), list(test_labels)
    shared = sorted(shared_labels(run_kind, test_kind, run_labels, test_labels), key=lambda s: run_labels.index(s.name_a))
    if not shared:
        raise DataError(f"the run's labels ({run_kind}: {', '.join(run_labels)}) and the {test_kind} labels "
                        f"({', '.join(test_labels)}) name no common finding (docs/data.md, harmonisation table): "
                        "nothing to score")
    return LabelMapping(run_kind, test_kind, tuple(shared), tuple(run_labels.index(s.name_a) for s in shared),
                        tuple(test_labels.index(s.name_b) for s in shared))


def label_suggestions(kind: str, name: str, labels: Sequence[str]) -> str | None:
    """The label of ``labels`` a user probably meant by ``name`` (for error messages): the dataset's name
    for the same finding (``Effusion`` on CheXpert -> ``Pleural Effusion``), else a close spelling."""
    for finding, names in HARMONISED_LABELS.items():
        if name in names.values() or name == finding:
            candidate = names.get(kind)
            if candidate in labels:
                return candidate
    close = difflib.get_close_matches(name, list(labels), n=1, cutoff=0.75)
    if not close:
        lowered = {label.lower().replace("_", " "): label for label in labels}
        return lowered.get(name.lower().replace("_", " "))
    return close[0]
