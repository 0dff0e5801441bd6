"""Where and how quietly things run: ``--device auto``, data-loader worker counts, library noise.

- :func:`resolve_device` turns ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``; every command
  that runs a network (evaluate, localize, predict, experiment's evaluation) takes ``--device auto`` by
  default, and training's ``train.accelerator: auto`` does the same through Lightning.
- :func:`resolve_num_workers` turns ``data.num_workers: auto`` into ``min(8, usable cores)``.
- :func:`quiet_libraries` switches off what Lightning and PyTorch print that a user cannot act on
  (device banners, the logger "Tip", model summaries, worker-count hints, deprecation notices of
  Lightning's own internals); the CLI calls it unless ``--verbose`` is given.
"""

from __future__ import annotations

import logging
import os
import warnings

from thoracic.errors import ThoracicError

#: Upper bound of ``data.num_workers: auto``: decoding from the uint8 cache is cheap, and more workers
#: than this only cost memory (benchmarks: one worker feeds thousands of samples per second).
MAX_AUTO_WORKERS = 8

#: Lightning/PyTorch warnings hidden unless ``--verbose`` (regular expressions on the message).
NOISY_WARNINGS: tuple[str, ...] = (
    r".*does not have many workers.*",                    # Lightning: consider more num_workers
    r".*worker processes in total.*",                     # torch DataLoader: more workers than cores
    r".*is smaller than the logging interval.*",          # Lightning: few batches per epoch
    r".*LeafSpec.*",                                      # Lightning's own use of a torch deprecation
    r".*`Trainer\(limit_\w+_batches=1\.0\)` was configured.*",
    r".*GPU available but not used.*",
)

#: Loggers whose INFO messages (device banners, "Tip", model summaries, "Trainer.fit stopped") are hidden.
#: The modules' own loggers are named because ``import lightning.pytorch`` resets its package logger to
#: INFO, while a level set on a child logger stays.
NOISY_LOGGERS: tuple[str, ...] = (
    "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.callbacks.model_summary", "lightning.pytorch.accelerators.cuda",
    "lightning.fabric.accelerators.cuda", "lightning.pytorch.trainer.connectors.signal_connector",
)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_num_workers(value: int | str) -> int:
    """``data.num_workers``: an integer >= 0 as given, or ``auto`` = ``min(8, usable cores)``."""
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            raise ThoracicError(f"data.num_workers: expected an integer >= 0 or auto, got {value!r}")
        return min(MAX_AUTO_WORKERS, usable_cores())
    if int(value) < 0:
        raise ThoracicError(f"data.num_workers: expected an integer >= 0 or auto, got {value!r}")
    return int(value)


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else is checked and kept.

    Raises:
        ThoracicError: not a torch device string, or a CUDA device asked for on a machine without one.
    """
    import torch

    name = "auto" if device is None else str(device).strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise ThoracicError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ThoracicError(f"--device {name}: no CUDA GPU is visible on this machine (use --device auto or cpu)")
    return name


def quiet_libraries(verbose: bool = False) -> None:
    """Hide Lightning's and PyTorch's noise (see :data:`NOISY_WARNINGS`, :data:`NOISY_LOGGERS`).

    With ``verbose`` nothing is hidden (the libraries' defaults). Warnings and errors of thoracic
    itself, and every exception, are never hidden.
    """
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


__all__ = ["MAX_AUTO_WORKERS", "NOISY_LOGGERS", "NOISY_WARNINGS", "quiet_libraries", "resolve_device",
           "resolve_num_workers", "usable_cores"]
