"""The paper's learning-rate grid search: 10 log-spaced values from 1e-3 to 1e-6, a short run each,
chosen by validation loss (section 4.1: "we ran grid search over 10 different values ranging from 0.001 to
1e-6, and based on the validation loss evaluation, we decided to choose 1e-4").

Each learning rate gets an ordinary run folder inside the sweep folder; the sweep writes ``sweep.csv``,
``sweep.md``, ``sweep.json`` (the chosen value) and ``sweep.png``. Rerunning the same sweep skips the
learning rates whose run already finished, resumes a run that stopped after an epoch and restarts (in the
same folder) one that died before its first checkpoint, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from thoracic.config import Config, replace
from thoracic.deprecation import renamed_keywords
from thoracic.errors import Interrupted, ThoracicError, UnsafeDeleteError
from thoracic.io import save_figure_atomic, write_csv_atomic, write_text_atomic
from thoracic.safety import ensure_output_dir, folder_entries, folder_lock
from thoracic.training.module import NonFiniteLossError
from thoracic.training.trainer import train_or_resume

#: 1e-3, 4.6e-4, 2.2e-4, 1e-4, 4.6e-5, 2.2e-5, 1e-5, 4.6e-6, 2.2e-6, 1e-6.
PAPER_LR_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-3, -6, 10))


@dataclass(frozen=True)
class SweepResult:
    folder: Path
    table: pd.DataFrame
    """One row per learning rate: lr, best_val_loss, best_epoch, val_auc_mean, status, run."""
    best_lr: float | None


def choose_learning_rate(table: pd.DataFrame) -> float | None:
    """The learning rate with the lowest finite validation loss (None if every run failed)."""
    finite = table[np.isfinite(table["best_val_loss"].astype(float))]
    if finite.empty:
        return None
    return float(finite.loc[finite["best_val_loss"].astype(float).idxmin(), "lr"])


@renamed_keywords(folder="out")
def lr_sweep(
    cfg: Config,
    lrs: Sequence[float] = PAPER_LR_GRID,
    epochs: int = 2,
    *,
    out: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    command_line: Sequence[str] | None = None,
    trust_checkpoint: bool = False,
) -> SweepResult:
    """Train ``cfg`` once per learning rate for ``epochs`` epochs and pick the lowest validation loss.

    Args:
        cfg: base config (its ``optim.lr`` and ``train.max_epochs`` are replaced per run).
        lrs: the grid (default: the paper's 10 values).
        epochs: length of each short run (early stopping still applies).
        out: the sweep folder; default ``<output_dir>/<run_name or lr_sweep-<model>-<time>>``.
        trust_checkpoint: read interrupted runs' checkpoints with full pickle (they may run code).

    The sweep folder is locked for the whole call (a second sweep into it gets a named error).
    """
    if not lrs:
        raise ThoracicError("lr sweep: no learning rates given")
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ThoracicError(f"lr sweep: learning rates must be positive numbers, got {list(lrs)}")
    if out is None:
        name = cfg.run_name or f"lr_sweep-{cfg.model.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        out = Path(cfg.output_dir) / name
    folder = Path(out)
    check_sweep_folder(folder)
    ensure_output_dir(folder, "sweep folder")
    command = " ".join(command_line) if command_line else "thoracic lr-sweep"
    with folder_lock(folder, "sweep folder", command) if rank_zero_only.rank == 0 else nullcontext():
        return _sweep(cfg, lrs, epochs, folder, callbacks, command_line, trust_checkpoint)


def _sweep(cfg: Config, lrs: Sequence[float], epochs: int, folder: Path, callbacks: Sequence[Callback],
           command_line: Sequence[str] | None, trust_checkpoint: bool) -> SweepResult:
    """The body of :func:`lr_sweep`, under the sweep folder's lock."""
    rows = []
    for lr in lrs:
        run_name = f"lr_{lr:.2e}"
        run_dir = folder / run_name
        status = "ok"
        if not (run_dir / "summary.json").is_file():
            run_cfg = replace(cfg, **{"optim.lr": float(lr), "train.max_epochs": int(epochs),
                                      "output_dir": str(folder), "run_name": run_name})
            try:
                # resumes a run stopped after an epoch, restarts one that died before its first checkpoint
                run_dir = train_or_resume(run_cfg, callbacks=callbacks, command_line=command_line,
                                          trust_checkpoint=trust_checkpoint)
            except NonFiniteLossError as exc:
                status = f"diverged: {exc}"
            except Interrupted as exc:
                raise Interrupted(f"{exc}; or rerun the same lr-sweep command: finished learning rates are kept "
                                  "and this one continues") from None
        rows.append(_row(lr, run_dir, status))
    table = pd.DataFrame(rows)
    best_lr = choose_learning_rate(table)
    write_sweep_outputs(folder, table, best_lr)
    return SweepResult(folder=folder, table=table, best_lr=best_lr)


def check_sweep_folder(folder: Path) -> None:
    """Refuse a folder that is neither new, empty nor a sweep folder (``sweep.json`` or ``lr_*`` runs),
    listing what it holds: the sweep writes (and on a restart clears) its own files there."""
    if folder.exists() and not folder.is_dir():
        raise ThoracicError(f"sweep folder {folder} is an existing file; expected a folder (new or empty)")
    if not folder.is_dir() or not folder_entries(folder):  # empty, or only a lock of a process that died
        return
    if (folder / "sweep.json").is_file() or any(p.is_dir() and p.name.startswith("lr_") for p in folder.iterdir()):
        return
    entries = folder_entries(folder)
    raise UnsafeDeleteError(
        f"sweep folder {folder} is not empty and is not a learning-rate sweep (no sweep.json, no lr_* runs); it "
        f"holds {len(entries)} file(s): {', '.join(entries[:12])}{' ...' if len(entries) > 12 else ''}. Choose a "
        "new folder (output_dir / run_name)")


def _row(lr: float, run_dir: Path, status: str) -> dict:
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    metrics = summary.get("metrics") or {}
    best_loss = summary.get("best_val_loss")
    return {
        "lr": float(lr),
        "best_val_loss": float("nan") if best_loss is None else float(best_loss),
        "best_epoch": summary.get("best_epoch"),
        "val_auc_mean": metrics.get("val_auc_mean"),
        "epochs": summary.get("epochs_completed"),
        "status": status if summary or status != "ok" else "no summary",
        "run": run_dir.name,
    }


def write_sweep_outputs(folder: Path, table: pd.DataFrame, best_lr: float | None) -> None:
    """``sweep.csv``, ``sweep.md``, ``sweep.json`` and the plot ``sweep.png``."""
    write_csv_atomic(folder / "sweep.csv", table, index=False)
    write_text_atomic(folder / "sweep.json", json.dumps({"best_lr": best_lr, "criterion": "lowest validation loss",
                                                    "runs": table.to_dict(orient="records")}, indent=2, default=str))
    lines = ["| lr | best val loss | best epoch | val AUC (mean) | status |", "|---|---|---|---|---|"]
    for row in table.itertuples():
        mark = " **(chosen)**" if best_lr is not None and row.lr == best_lr else ""
        auc = "" if row.val_auc_mean is None or pd.isna(row.val_auc_mean) else f"{row.val_auc_mean:.4f}"
        loss = "" if pd.isna(row.best_val_loss) else f"{row.best_val_loss:.4f}"
        lines.append(f"| {row.lr:.2e}{mark} | {loss} | {'' if pd.isna(row.best_epoch) else int(row.best_epoch)} "
                     f"| {auc} | {str(row.status).splitlines()[0][:80]} |")
    write_text_atomic(folder / "sweep.md", "\n".join(lines) + "\n")
    plot_sweep(table, best_lr, folder / "sweep.png")


def plot_sweep(table: pd.DataFrame, best_lr: float | None, path: Path) -> None:
    """Validation loss against learning rate (log axis), the chosen value marked."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    figure = Figure(figsize=(5, 3.5))
    axis = figure.subplots()
    finite = table[np.isfinite(table["best_val_loss"].astype(float))].sort_values("lr")
    axis.plot(finite["lr"], finite["best_val_loss"], marker="o")
    if best_lr is not None:
        chosen = finite[finite["lr"] == best_lr]
        axis.plot(chosen["lr"], chosen["best_val_loss"], marker="*", markersize=14, linestyle="none",
                  label=f"chosen {best_lr:.1e}")
        axis.legend()
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("best validation loss")
    axis.set_title("Learning-rate sweep")
    figure.tight_layout()
    save_figure_atomic(figure, path, dpi=120)
