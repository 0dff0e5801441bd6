"""NIH ChestX-ray14 (Wang et al. 2017) as the NIH distributes it: :func:`thoracic.data.metadata.load_chestxray14`.

Layout, label rules and checks: :mod:`thoracic.data.metadata` and docs/data.md. Official split:
``train_val_list.txt`` / ``test_list.txt``; 984 radiologist boxes in ``BBox_List_2017.csv`` (one reader,
no reader ids); PNG images, all frontal (PA or AP).
"""

from __future__ import annotations

from pathlib import Path

from thoracic.constants import BOX_CLASS_NAMES
from thoracic.data.datasets.base import DatasetReader, check_policy
from thoracic.data.metadata import DATA_ENTRY_NAMES, ChestXray14, find_metadata_files, load_chestxray14


class ChestXray14Reader(DatasetReader):
    """NIH ChestX-ray14: ``Data_Entry_2017[_v2020].csv``, ``BBox_List_2017.csv``, the split lists, PNGs."""

    kind = "chestxray14"
    title = "NIH ChestX-ray14"
    signature = "Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv)"
    documentation = "https://nihcc.app.box.com/v/ChestXray-NIHCC (README_CHESTXRAY.pdf, FAQ_CHESTXRAY.pdf)"
    image_format = "PNG"
    box_classes = BOX_CLASS_NAMES

    def matches(self, root: Path) -> bool:
        return any((folder / name).is_file() for folder in (root, root / "metadata") for name in DATA_ENTRY_NAMES)

    def metadata_files(self, root: Path) -> list[Path]:
        # the data-entry CSV alone, as caches and runs have always fingerprinted it
        return [find_metadata_files(root).data_entry]

    def read(self, root: Path, *, uncertain: str = "ignore", check_box_images: bool = True) -> ChestXray14:
        check_policy(uncertain)  # no uncertain labels: any policy reads the same labels
        return load_chestxray14(root, check_box_images=check_box_images)

    def image_location(self, root: Path) -> str:
        return f"{root / 'images'} or {root / 'images_0XX' / 'images'}"
