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


@pytest.fixture(scope="session")
def chromium() -> str:
    """A Chromium binary for the browser tests (Playwright drives it through ``executable_path``), or skip
    (before anything is built) saying what is missing."""
    from helpers import chromium_binary

    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary found (Debian: apt-get install -y chromium; or set THORACIC_CHROMIUM)")
    return binary


@pytest.fixture(scope="session")
def trained_run(phantom_dir: Path, phantom_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Lightning run folder (resnet10 at 64 px, one short epoch: best.ckpt, last.ckpt, logs,
    summary.json); read-only for tests: copy it before changing it."""
    from thoracic.config import load_config_by_name
    from thoracic.training.trainer import train

    overrides = ["model.backbone=resnet10", "--no-model.pretrained", "data.image_size=64", f"data.root={phantom_dir}",
                 "data.num_workers=0", "train.batch_size=16", "train.max_epochs=1", "train.limit_train_batches=2",
                 "train.limit_val_batches=1", "train.log_every_n_steps=1", "--no-train.progress_bar",
                 "train.accelerator=cpu", "train.devices=1", f"output_dir={tmp_path_factory.mktemp('trained')}",
                 "run_name=tiny"]
    return train(load_config_by_name("baseline", overrides))
