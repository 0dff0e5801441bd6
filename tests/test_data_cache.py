"""The image cache: round trip, resume after an interruption or a kill, refusals, bad images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from thoracic.cli import main as cli_main
from thoracic.constants import CLASS_NAMES
from thoracic.data import cache_writer as cache_module
from thoracic.data.cache import ImageCache
from thoracic.data.cache_writer import prepare_cache
from thoracic.data.images import read_image, resize_image
from thoracic.data.metadata import load_chestxray14
from thoracic.data.synth import render_phantom
from thoracic.errors import CacheMismatchError, DataError, Interrupted


def _copy(phantom_dir: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(phantom_dir, tmp_path / name, ignore=shutil.ignore_patterns("cache_*")))


def test_round_trip_equals_direct_decoding(phantom_dir, phantom_cache):
    cache = ImageCache.open(phantom_cache, expected_root=phantom_dir, expected_size=64)
    dataset = load_chestxray14(phantom_dir)
    assert cache.images.shape == (120, 64, 64) and cache.images.dtype == np.uint8
    assert list(cache.image_ids) == list(dataset.table["image_id"]) and cache.available.all()
    assert (cache.original_sizes == 64).all()
    for row, (image_id, path) in enumerate(zip(dataset.table["image_id"], dataset.table["path"])):
        np.testing.assert_array_equal(cache.images[cache.index_of(image_id)], read_image(path))
    # RGBA and 16-bit files hold exactly the generator's gray pixels
    from PIL import Image

    for mode in ("RGBA", "I;16"):
        row = next(i for i, p in enumerate(dataset.table["path"]) if Image.open(p).mode == mode)
        item = dataset.table.iloc[row]
        pixels = render_phantom(64, 0, row, int(item["patient_id"])).pixels
        np.testing.assert_array_equal(cache.images[row], pixels)
    manifest = cache.manifest
    assert manifest["class_names"] == list(CLASS_NAMES) and manifest["image_size"] == 64
    assert manifest["num_images"] == 120 and manifest["status"] == "complete" and "BILINEAR" in manifest["resize"]
    assert Path(manifest["source"]) == phantom_dir.resolve()


def test_resized_cache_with_workers_equals_direct(phantom_dir, tmp_path):
    cache_dir = prepare_cache(phantom_dir, 32, cache_dir=tmp_path / "c32", num_workers=2, progress=False)
    cache = ImageCache.open(cache_dir, expected_size=32)
    dataset = load_chestxray14(phantom_dir)
    for row, path in enumerate(dataset.table["path"]):
        np.testing.assert_array_equal(cache.images[row], resize_image(read_image(path), 32))
    assert (cache.original_sizes == 64).all()


def test_resume_after_interrupt_redoes_nothing(phantom_dir, phantom_cache, tmp_path, monkeypatch):
    calls = []
    original = cache_module._decode_one

    def interrupted(path, size):
        if len(calls) == 50:
            raise KeyboardInterrupt
        calls.append(path)
        return original(path, size)

    monkeypatch.setattr(cache_module, "_decode_one", interrupted)
    target = tmp_path / "resume"
    with pytest.raises(Interrupted, match="50 of 120 images"):
        prepare_cache(phantom_dir, 64, cache_dir=target, num_workers=1, progress=False, checkpoint_every=7)
    assert np.load(target / "done.npy").sum() == 50  # progress saved on the way out
    with pytest.raises(CacheMismatchError, match="in_progress"):
        ImageCache.open(target)
    calls.clear()
    monkeypatch.setattr(cache_module, "_decode_one", lambda p, s: (calls.append(p), original(p, s))[1])
    prepare_cache(phantom_dir, 64, cache_dir=target, num_workers=1, progress=False)
    assert len(calls) == 70
    _assert_same_cache(target, phantom_cache)


def _assert_same_cache(a: Path, b: Path) -> None:
    for name in ("images.npy", "original_sizes.npy", "done.npy", "index.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_resume_after_sigkill_equals_uninterrupted(phantom_dir, phantom_cache, tmp_path):
    """A real SIGKILL at image 45 (checkpoints every 10): the rerun finishes bit-identically."""
    target = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        from thoracic.data import cache_writer as cache
        original, seen = cache._decode_one, []
        def decode(path, size):
            if len(seen) == 45:
                os.kill(os.getpid(), signal.SIGKILL)
            seen.append(path)
            return original(path, size)
        cache._decode_one = decode
        cache.prepare_cache({str(phantom_dir)!r}, 64, cache_dir={str(target)!r}, workers=1, progress=False,
                            checkpoint_every=10)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    assert np.load(target / "done.npy").sum() == 40
    assert json.loads((target / "manifest.json").read_text())["status"] == "in_progress"
    prepare_cache(phantom_dir, 64, cache_dir=target, num_workers=2, progress=False)
    _assert_same_cache(target, phantom_cache)


def test_refuses_mismatched_caches(phantom_dir, phantom_cache, tmp_path):
    with pytest.raises(CacheMismatchError, match="64 px images, 32 px requested"):
        ImageCache.open(phantom_cache, expected_size=32)
    other = tmp_path / "other"
    from thoracic.data.synth import generate_phantom_dataset

    generate_phantom_dataset(other, 20, 64, 5, progress=False)
    with pytest.raises(CacheMismatchError, match="other metadata"):
        ImageCache.open(phantom_cache, expected_root=other)
    with pytest.raises(CacheMismatchError, match="differs in"):
        prepare_cache(other, 64, cache_dir=phantom_cache, num_workers=1, progress=False)
    with pytest.raises(DataError, match="thoracic prepare --data"):
        ImageCache.open(tmp_path / "nothing", expected_root=other, expected_size=64)
    rebuilt = prepare_cache(other, 64, cache_dir=tmp_path / "reuse", num_workers=1, progress=False)
    prepare_cache(other, 32, cache_dir=rebuilt, num_workers=1, progress=False, overwrite=True)
    assert ImageCache.open(rebuilt, expected_root=other, expected_size=32).images.shape == (20, 32, 32)


def test_bad_images_are_listed_and_the_rest_finished(phantom_dir, tmp_path):
    """Missing, corrupt and truncated PNGs: prepare finishes the rest, lists them, fails unless skip_bad."""
    root = _copy(phantom_dir, tmp_path)
    images = sorted((root / "images").iterdir())
    images[3].unlink()
    images[10].write_bytes(b"garbage, not a png")
    data = images[20].read_bytes()
    images[20].write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as error:
        prepare_cache(root, 64, num_workers=1, progress=False)
    message = str(error.value)
    assert "3 of 120 images could not be cached" in message and "--skip-bad" in message
    for path in (images[3], images[10], images[20]):
        assert path.name in message
    assert "not on disk" in message and "truncated or corrupt" in message and "not an image" in message
    done = np.load(root / "cache_64" / "done.npy")
    assert done.sum() == 117
    with pytest.raises(CacheMismatchError, match="incomplete"):
        ImageCache.open(root / "cache_64")
    assert cli_main(["prepare", "--data", str(root), "--size", "64", "--workers", "1", "--no-progress"]) == 2
    assert cli_main(["prepare", "--data", str(root), "--size", "64", "--workers", "1", "--no-progress",
                     "--skip-bad"]) == 0
    cache = ImageCache.open(root / "cache_64", expected_root=root, expected_size=64)
    assert cache.available.sum() == 117 and not cache.available[[3, 10, 20]].any()
    assert [b["image_id"] for b in cache.manifest["bad_images"]] == [images[i].name for i in (3, 10, 20)]
    with pytest.raises(DataError, match="unreadable"):
        cache.image(images[10].name)


def test_cli_synth_and_prepare(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["synth", "--out", str(out), "--images", "12", "--size", "32", "--seed", "3",
                     "--workers", "1", "--no-progress"]) == 0
    assert cli_main(["prepare", "--data", str(out), "--size", "16", "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "wrote 12 phantom images" in text and "12 of 12 images at 16 px" in text
    # the options reached the generator and the cache: 12 images of 32 px drawn with seed 3, cached at 16 px
    assert {k: json.loads((out / "phantom.json").read_text())[k] for k in ("num_images", "image_size", "seed")} \
        == {"num_images": 12, "image_size": 32, "seed": 3}
    cache = ImageCache.open(out / "cache_16", expected_root=out, expected_size=16)
    dataset = load_chestxray14(out)
    assert cache.images.shape == (12, 16, 16) and list(cache.image_ids) == list(dataset.table["image_id"])
    first = dataset.table.iloc[0]
    np.testing.assert_array_equal(read_image(first["path"]), render_phantom(32, 3, 0, int(first["patient_id"])).pixels)
    for row, path in enumerate(dataset.table["path"]):
        np.testing.assert_array_equal(cache.images[row], resize_image(read_image(path), 16))


@pytest.mark.nih
def test_real_sample_folder_cache(nih_sample_dir, tmp_path):
    cache_dir = prepare_cache(nih_sample_dir, 64, cache_dir=tmp_path / "nih64", num_workers=2, progress=False)
    cache = ImageCache.open(cache_dir, expected_root=nih_sample_dir, expected_size=64)
    assert len(cache) == 40 and (cache.original_sizes == 1024).all()
    path = nih_sample_dir / "images" / "00002578_000.png"  # RGBA
    np.testing.assert_array_equal(cache.image("00002578_000.png"), resize_image(read_image(path), 64))
