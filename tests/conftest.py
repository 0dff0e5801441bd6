"""Session-wide fixtures: the real ChestX-ray14 material (or skip), a small phantom folder and its cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # 2 shared cores; several test processes run in parallel

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"
NIH_DIR = Path(__file__).resolve().parents[2] / "shared" / "nih"

#: The phantom set every test shares (small: it is generated once per session in well under 2 s).
PHANTOM_IMAGES = 120
PHANTOM_SIZE = 64
PHANTOM_SEED = 0


@pytest.fixture(scope="session")
def nih_dir() -> Path:
    """The real NIH material beside the repository (metadata + 40 sample PNGs), or skip."""
    if not (NIH_DIR / "metadata" / "Data_Entry_2017_v2020.csv").is_file():
        pytest.skip(f"real ChestX-ray14 material not found at {NIH_DIR}")
    return NIH_DIR


@pytest.fixture(scope="session")
def nih_sample_dir(nih_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real ChestX-ray14 folder: the 40 sample PNGs (symlinked) with their metadata rows."""
    from thoracic.data.metadata import write_subset_folder

    return write_subset_folder(nih_dir, tmp_path_factory.mktemp("nih_sample"), nih_dir / "sample" / "images")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 phantom images at 64 px, seed 0 (NIH layout; read-only for tests: copy it before changing it)."""
    from thoracic.data.synth import generate_phantom_dataset

    return generate_phantom_dataset(
        tmp_path_factory.mktemp("phantom") / "data", PHANTOM_IMAGES, PHANTOM_SIZE, PHANTOM_SEED, progress=False
    )


@pytest.fixture(scope="session")
def phantom_cache(phantom_dir: Path) -> Path:
    """The 64 px cache of ``phantom_dir`` (its default location ``phantom_dir/cache_64``)."""
    from thoracic.data.cache_writer import prepare_cache

    return prepare_cache(phantom_dir, PHANTOM_SIZE, num_workers=1, progress=False)
