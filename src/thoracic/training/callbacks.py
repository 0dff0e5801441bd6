"""Lightning callbacks of a training run: Ctrl-C between batches, progress bars on stderr."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

from thoracic.errors import Interrupted


class InterruptGuard(Callback):
    """Ctrl-C during ``fit``: finish the current batch, then raise :class:`~thoracic.errors.Interrupted`.

    Lightning's own handling of KeyboardInterrupt prints "attempting graceful shutdown" and calls
    ``sys.exit(1)``; a flag checked between batches instead stops at a point where the run's state is
    consistent (``last.ckpt`` of the last finished epoch, logs flushed) and lets :func:`train` say where
    the run is and how to resume it. A second Ctrl-C stops at once. Only in a single process (under DDP
    every rank would stop at a different batch and the others would wait in a collective forever).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._pid = os.getpid()

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            # a forked DataLoader worker inherits this handler: it keeps loading, quietly, and the
            # main process stops the run between batches
            return
        if self.requested:
            raise Interrupted("interrupted twice: stopped at once")
        self.requested = True
        print("\nCtrl-C: stopping at the end of this batch (press Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def on_fit_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._pid = os.getpid()
        if (trainer.world_size == 1 and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):  # e.g. `nohup`, `cmd &` in scripts
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def _check(self) -> None:
        if self.requested:
            raise Interrupted("interrupted (Ctrl-C)")

    def on_train_batch_end(self, *args: Any) -> None:
        self._check()

    def on_validation_batch_end(self, *args: Any) -> None:
        self._check()

    def on_train_epoch_start(self, *args: Any) -> None:
        self._check()

    def restore(self) -> None:
        """Give SIGINT back to the handler it had before the fit. Called at the end of the fit and again
        by :func:`train` after it: Lightning's teardown re-installs the handlers it saw at fit start."""
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._handler:
            signal.signal(signal.SIGINT, self._previous)

    def on_fit_end(self, *args: Any) -> None:
        self.restore()

    def on_exception(self, *args: Any) -> None:
        self.restore()


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars on stderr (Lightning writes them to stdout, where results go), without the
    logger's ``v_num`` entry."""

    def _on_stderr(self, factory: Any) -> Any:
        # Lightning's init_*_tqdm pass file=sys.stdout, read when they are called.
        with contextlib.redirect_stdout(sys.stderr):
            return factory()

    def init_sanity_tqdm(self) -> Any:
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Any:
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self) -> Any:
        return self._on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self) -> Any:
        return self._on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self) -> Any:
        return self._on_stderr(super().init_predict_tqdm)

    def get_metrics(self, trainer: Trainer, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def progress_callbacks(enabled: bool) -> list[Callback]:
    return [StderrProgressBar()] if enabled else []


__all__ = ["InterruptGuard", "StderrProgressBar", "progress_callbacks"]
