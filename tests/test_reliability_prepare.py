"""Fault injection into `thoracic prepare`: SIGKILL at random points, a killed worker, Ctrl-C, a full disk
(a file-size limit, no root needed). After each, rerunning the command gives a cache byte-identical to
an uninterrupted run, and nothing but the cache's own files is touched.

Kill points are drawn from a seeded generator over every decoded image and every ``os.replace`` (each
atomic write: manifest, resume mask, sizes, checksums, index), just before and just after the rename.
``THORACIC_FAULT_SEED=<n>`` draws other points (the seed is in every failure message).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from thoracic.data.cache_writer import prepare_cache

SRC = Path(__file__).resolve().parents[1] / "src"
SEED = int(os.environ.get("THORACIC_FAULT_SEED", "0"))
FILES = ("images.npy", "done.npy", "original_sizes.npy", "checksums.npy", "index.csv")

#: Child process: `thoracic prepare` through the command line, SIGKILLed at event number KILL_AT
#: (0: never) and/or with decoding slowed down (to leave time for a signal).
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    kill_at, where, slow, token = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    from thoracic.data import cache_writer as cache
    counts = {}
    def tick(kind):
        if where not in ("all", kind):
            return
        pid = os.getpid()  # a forked worker counts its own events from 1
        counts[pid] = counts.get(pid, 0) + 1
        if counts[pid] == kill_at:
            os.kill(pid, signal.SIGKILL)
    real_replace = os.replace
    def replace(*args, **kwargs):
        tick("replace")
        real_replace(*args, **kwargs)
        tick("replace")
    os.replace = replace
    real_decode = cache._decode_one
    def decode(path, size):
        tick("decode")
        time.sleep(slow)
        return real_decode(path, size)
    cache._decode_one = decode
    from thoracic.cli import main
    sys.exit(main(sys.argv[5:]))
""")


def _child(argv: list, kill_at: int = 0, where: str = "all", slow: float = 0.0, token: str = "x",
           limit: int | None = None, **popen) -> subprocess.Popen:
    def limit_size() -> None:
        # Ctrl-C as in a terminal, even when the test run itself was started with SIGINT ignored
        # (`cmd &` in a script): the child must not inherit the ignore
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(kill_at), where, str(slow), token, *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=limit_size, **popen)


def _finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


@pytest.fixture(scope="module")
def reference(phantom_dir, tmp_path_factory) -> Path:
    return prepare_cache(phantom_dir, 64, cache_dir=tmp_path_factory.mktemp("ref") / "c", num_workers=1, progress=False)


def _assert_same(cache: Path, reference: Path, note: str) -> None:
    for name in FILES:
        assert (cache / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs ({note})"
    assert sorted(p.name for p in cache.iterdir()) == sorted([*FILES, "manifest.json"]), note


def _alive_with(token: str) -> list[int]:
    """Processes whose command line holds ``token`` (children of a killed parent would be orphans)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes() and "Z" not in (entry / "stat").read_text().split()[2]:
                    alive.append(int(entry.name))
            except OSError:
                continue
    return alive


def test_sigkill_at_random_points_then_resume_is_byte_identical(phantom_dir, reference, tmp_path):
    """120 images, resume mask saved every 7: about 200 kill points; three kills in a row, then finish."""
    rng = random.Random(SEED)
    cache = tmp_path / "killed"
    argv = ["prepare", "--data", phantom_dir, "--size", 64, "--cache", cache, "--workers", 1, "--no-progress"]
    points = [rng.randint(1, 200) for _ in range(3)]
    for point in points:
        code, err = _finish(_child(argv, kill_at=point))
        assert code in (-signal.SIGKILL, 0), f"seed {SEED}, kill at event {point}: {err}"
    assert prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=1, progress=False) == cache
    _assert_same(cache, reference, f"seed {SEED}, kills at events {points}")


def test_parent_killed_with_workers_leaves_no_orphans_and_resumes(phantom_dir, reference, tmp_path):
    rng = random.Random(SEED + 1)
    cache = tmp_path / "pool"
    token = f"thoracic-fault-{os.getpid()}-{rng.random()}"
    point = rng.randint(4, 12)  # an os.replace in the parent: the initial saves or a resume-mask save
    process = _child(["prepare", "--data", phantom_dir, "--size", 64, "--cache", cache, "--workers", 2,
                      "--no-progress"], kill_at=point, where="replace", slow=0.01, token=token)
    code, err = _finish(process)
    assert code in (-signal.SIGKILL, 0), f"seed {SEED}, kill at {point}: {err}"
    deadline = time.monotonic() + 10
    while _alive_with(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive_with(token) == [], "pool workers outlived their killed parent"
    prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=2, progress=False)
    _assert_same(cache, reference, f"seed {SEED}, parent killed at event {point}")


def test_a_killed_worker_is_a_named_error_not_a_hang(phantom_dir, reference, tmp_path):
    cache = tmp_path / "worker"
    # the 3rd image a worker decodes kills that worker (each worker counts its own events)
    code, err = _finish(_child(["prepare", "--data", phantom_dir, "--size", 64, "--cache", cache, "--workers", 2,
                                "--no-progress"], kill_at=3, where="decode"), timeout=60)
    assert code == 2 and "a prepare worker process died" in err and "rerun the same command" in err, err
    assert "Traceback" not in err
    prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=2, progress=False)
    _assert_same(cache, reference, "after a killed worker")


def test_ctrl_c_keeps_the_work_quiet_workers_exit_130(phantom_dir, reference, tmp_path):
    cache = tmp_path / "ctrl_c"
    process = _child(["prepare", "--data", phantom_dir, "--size", 64, "--cache", cache, "--workers", 2,
                      "--no-progress"], slow=0.05, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (cache / "done.npy").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    code, err = _finish(process)
    assert code == 130, err
    assert "interrupted (Ctrl-C)" in err and f"images of the cache {cache} are finished and kept" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=2, progress=False)
    _assert_same(cache, reference, "after Ctrl-C")


def test_full_disk_is_named_with_the_bytes_and_stays_resumable(phantom_dir, reference, tmp_path):
    """A file-size limit (``ulimit -f``, set in the child) stands in for a full disk: writes past it fail
    with EFBIG exactly where ENOSPC would, and no root or small file system is needed."""
    cache = tmp_path / "full"
    argv = ["prepare", "--data", phantom_dir, "--size", 64, "--cache", cache, "--workers", 1, "--no-progress"]
    code, err = _finish(_child(argv, limit=100_000))
    assert code == 2, err
    # 120 rows of 64 x 64 bytes (the 128-byte header is already on disk)
    assert "cannot write the image cache" in err and "needs 491.5 kB (491,520 bytes)" in err and "free on the file system" in err
    assert "rerun the same command" in err and "Traceback" not in err and "Bus error" not in err
    assert sorted(p.name for p in cache.iterdir()) == ["manifest.json"]  # its own half-made file is gone
    # half the work done, then the disk fills while the file is re-reserved (a truncated file to extend)
    code, err = _finish(_child(argv, kill_at=70))
    assert code == -signal.SIGKILL, err
    with open(cache / "images.npy", "r+b") as handle:
        handle.truncate(300_000)
    code, err = _finish(_child(argv, limit=350_000))
    assert code == 2 and "the file-size limit of this process" in err, err
    prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=1, progress=False)
    _assert_same(cache, reference, "after a full disk")


def test_damaged_files_of_a_finished_cache_are_rebuilt(phantom_dir, reference, tmp_path):
    cache = Path(shutil.copytree(reference, tmp_path / "damaged"))
    # flipped bytes inside a row, a garbage checksums file, a truncated sizes file
    with open(cache / "images.npy", "r+b") as handle:
        handle.seek(128 + 37 * 64 * 64 + 100)
        handle.write(b"\xff\x00\xff")
    (cache / "original_sizes.npy").write_bytes((cache / "original_sizes.npy").read_bytes()[:200])
    prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=1, progress=False)
    _assert_same(cache, reference, "flipped bytes and a truncated sizes file")
    with open(cache / "images.npy", "r+b") as handle:
        handle.seek(128 + 5 * 64 * 64)
        handle.write(b"\x01" * 64)
    (cache / "checksums.npy").write_bytes(b"garbage")
    # without checksums the damage cannot be seen: the rows are trusted and their checksums recomputed
    prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=1, progress=False)
    assert (cache / "done.npy").read_bytes() == (reference / "done.npy").read_bytes()
    (cache / "images.npy").write_bytes(b"\x93NUMPY broken header")
    prepare_cache(phantom_dir, 64, cache_dir=cache, num_workers=1, progress=False)
    _assert_same(cache, reference, "an unreadable header")
