"""Localization under both registrations and at output strides 32 / 16 / 8, on two phantom families.

    python scripts/measure_localization.py run   --out /tmp/loc [--families A B] [--seeds 0 1 2] ...
    python scripts/measure_localization.py table --out /tmp/loc [--docs docs/evaluation.md]

``run`` trains, for every family x seed x output stride, the baseline CAM network (and the other models
given with ``--models``) with small CPU settings on a phantom set of that family (data seed = seed), then
runs ``thoracic evaluate`` and ``thoracic localize`` (native heatmaps; ``--extra-methods`` at stride 32).
Finished runs are kept, so an interrupted ``run`` resumes. Each localization scores the same saved
heatmaps under both registrations (``registration_<method>.csv``), so no retraining is needed for that.

``table`` reads only the output files (``measure.json``, ``auc_test.json``, ``registration_*.csv``,
``scores_*.csv``) and prints a Markdown table: mean ± sd over seeds of the accuracy at T(IoU) = 0.3 and
T(IoBB) = 0.25 at heatmap threshold 180 (the paper's) and of the false positives per image, per family,
model, heatmap method, output stride and registration, beside the random-box expectation (mean over 100
seeded draws per run) and the centre box. With ``--docs FILE`` the table replaces the text between the
markers ``<!-- localization-measurements:start -->`` and ``<!-- localization-measurements:end -->``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.commands._options import add_option

START = "<!-- localization-measurements:start -->"
END = "<!-- localization-measurements:end -->"
CRITERIA = (("IoU", 0.3), ("IoBB", 0.25))
HEADLINE_THRESHOLD = "180"


def _run_name(model: str, stride: int) -> str:
    return f"{model}_os{stride}"


def run(args: argparse.Namespace) -> int:
    import torch

    from thoracic.config import load_config
    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.synth import generate_phantom_dataset
    from thoracic.workflows.evaluate import evaluate_run
    from thoracic.workflows.localize import localize_run
    from thoracic.config import load_config_by_name
    from thoracic.training.trainer import train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = {"images": "num_images", "size": "image_size"}  # measure.json keeps its keys (older folders read alike)
    settings = {key: getattr(args, names.get(key, key)) for key in ("families", "seeds", "strides", "models", "images",
                                                                    "disk_size", "size", "epochs", "lr", "batch_size",
                                                                    "extra_methods", "threads")}
    (out / "measure.json").write_text(json.dumps(settings, indent=2))
    for seed in args.seeds:  # seed-major: every family gets its first seed before any gets a second
        for family in args.families:
            root = out / f"family{family}_seed{seed}" / "phantom"
            info = root / "phantom.json"
            if not (info.is_file() and json.loads(info.read_text()).get("num_images") == args.num_images):
                generate_phantom_dataset(root, args.num_images, args.disk_size, seed, family=family, overwrite=True,
                                         progress=False, num_workers=args.threads)
            prepare_cache(root, args.image_size, num_workers=args.threads, progress=False)
            for model in args.models:
                for stride in args.strides:
                    name = _run_name(model, stride)
                    runs = root.parent / "runs"
                    run_dir = runs / name
                    started = time.perf_counter()
                    cfg = load_config_by_name(model, {
                        "data.root": str(root), "data.image_size": args.image_size, "data.num_workers": 0,
                        "model.backbone": "resnet10", "model.pretrained": False, "model.output_stride": stride,
                        "optim.lr": args.lr, "optim.lr_step_epochs": 0, "train.batch_size": args.batch_size,
                        "train.max_epochs": args.epochs, "train.patience": 3, "train.precision": "32-true",
                        "train.accelerator": "cpu", "train.devices": "1", "train.progress_bar": False,
                        "output_dir": str(runs), "run_name": name, "seed": seed})
                    done = (run_dir / "evaluation" / "registration_native.csv").is_file()
                    if done and load_config(run_dir / "config.yaml") == cfg:
                        continue
                    if not ((run_dir / "summary.json").is_file() and load_config(run_dir / "config.yaml") == cfg):
                        if (run_dir / "checkpoints" / "last.ckpt").is_file():
                            train(None, resume=run_dir)
                        else:
                            if run_dir.exists():
                                import shutil

                                shutil.rmtree(run_dir)  # an unfinished run of this script
                            train(cfg)
                    evaluate_run(run_dir, "test", bootstrap=50, progress=False)
                    methods = ["native"] + (list(args.extra_methods) if stride == 32 else [])
                    for method in methods:
                        localize_run(run_dir, method=method, progress=False, num_examples=4)
                    print(f"family {family} seed {seed} {name}: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------


def _random_expectation(scores: pd.DataFrame, draws: int = 100) -> dict[str, float]:
    """Mean over ``draws`` seeded random-box baselines of the mean accuracy at the criteria."""
    from thoracic.evaluation.localization import localization_accuracy, random_boxes

    truth = scores.drop_duplicates("box_row")[["box_row", "image_id", "class_name", "x", "y", "w", "h",
                                               "original_width", "original_height"]].reset_index(drop=True)
    sizes = {i: (int(h), int(w)) for i, w, h in
             truth[["image_id", "original_width", "original_height"]].itertuples(index=False)}
    values: dict[str, list[float]] = {m: [] for m, _ in CRITERIA}
    for seed in range(draws):
        table = localization_accuracy(truth, random_boxes(truth, sizes, seed=seed), pooled=False,
                                      iou_thresholds=(0.3,), iobb_thresholds=(0.25,))
        for metric, _ in CRITERIA:
            values[metric].append(float(table.loc[(table["metric"] == metric) & (table["class_name"] == "Mean"),
                                                  "accuracy"].iloc[0]))
    return {metric: float(np.mean(v)) for metric, v in values.items()}


def _centre(evaluation: Path) -> dict[str, float]:
    table = pd.read_csv(evaluation / "localization_native.csv")
    result = {}
    for metric, t in CRITERIA:
        rows = table[(table["source"] == "centre box") & (table["metric"] == metric) & (table["t"].round(3) == t)
                     & (table["class_name"] == "Mean")]
        result[metric] = float(rows["accuracy"].iloc[0])
    return result


def _finished_runs(out: Path) -> list[tuple[str, int, str, int, Path]]:
    """(family, seed, model, stride, evaluation folder) of every localized run under ``out``, whatever
    invocation of ``run`` made it (e.g. more seeds at coarse strides than at stride 8)."""
    found = []
    for folder in sorted(out.glob("family*_seed*")):
        family, seed = folder.name.removeprefix("family").split("_seed")
        for run in sorted((folder / "runs").glob("*_os*")):
            model, stride = run.name.rsplit("_os", 1)
            evaluation = run / "evaluation"
            if (evaluation / "registration_native.csv").is_file() and (evaluation / "auc_test.json").is_file():
                found.append((family, int(seed), model, int(stride), evaluation))
    return found


def collect(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(method rows, baseline rows, settings) from the output files under ``out``."""
    settings = json.loads((out / "measure.json").read_text())
    rows, baselines, seen = [], [], set()
    for family, seed, model, stride, evaluation in _finished_runs(out):
        auc = json.loads((evaluation / "auc_test.json").read_text())["mean_auc"]
        for path in sorted(evaluation.glob("registration_*.csv")):
            method = path.stem.removeprefix("registration_")
            table = pd.read_csv(path, dtype={"threshold": str})
            for registration, part in table.groupby("registration"):
                row = {"family": family, "seed": seed, "model": model, "method": method,
                       "stride": stride, "registration": registration, "auc": auc}
                for metric, t in CRITERIA:
                    for threshold in (HEADLINE_THRESHOLD, "all"):
                        hit = part[(part["metric"] == metric) & (part["t"].round(3) == t)
                                   & (part["threshold"] == threshold)]
                        row[f"{metric} {threshold}"] = float(hit["accuracy"].iloc[0])
                        if metric == "IoU":
                            row[f"FP {threshold}"] = float(hit["false_positives_per_image"].iloc[0])
                rows.append(row)
        if (family, seed) not in seen:  # the ground truth is the family's and seed's, the same for every run
            seen.add((family, seed))
            scores = pd.read_csv(evaluation / "scores_native.csv")
            baselines.append({"family": family, "seed": seed,
                              **{f"random {k}": v for k, v in _random_expectation(scores).items()},
                              **{f"centre {k}": v for k, v in _centre(evaluation).items()}})
    return pd.DataFrame(rows), pd.DataFrame(baselines), settings


def _cell(values: pd.Series) -> str:
    values = values.dropna()
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f} (n = 1)"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} (n = {len(values)})"


def render(rows: pd.DataFrame, baselines: pd.DataFrame, settings: dict[str, Any]) -> str:
    lines = [
        f"Conditions: phantom families {', '.join(sorted(rows['family'].unique()))}, {settings['images']} images each "
        f"(drawn at {settings['disk_size']} px, models at {settings['size']} px), one phantom set per seed "
        f"(the seed draws the data and the training); ResNet-10 from scratch, Adam lr "
        f"{settings['lr']}, batch {settings['batch_size']}, at most {settings['epochs']} epochs with early "
        f"stopping; {settings['threads']} torch thread(s). Mean ± sd over the seeds run (n of them). "
        f"Accuracy = mean over the 8 box classes at heatmap threshold 180; `pooled` = boxes of thresholds 60 "
        f"and 180 together; FP = false positive boxes per image at T(IoU) = 0.3, threshold 180. "
        f"Produced by `scripts/measure_localization.py table` from the run folders.",
        "",
        "| family | model | heatmap | output stride | registration | mean AUC | IoU > 0.3 | IoBB > 0.25 | "
        "FP / image | IoU > 0.3 pooled | IoBB > 0.25 pooled |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"geometric": 0, "legacy": 1}
    rows = rows.assign(_r=rows["registration"].map(order))
    for (family, model, method, stride, _, registration), part in rows.groupby(
            ["family", "model", "method", "stride", "_r", "registration"], sort=True):
        lines.append(f"| {family} | {model} | {method} | {stride} | {registration} | {_cell(part['auc'])} | "
                     f"{_cell(part['IoU 180'])} | {_cell(part['IoBB 180'])} | {_cell(part['FP 180'])} | "
                     f"{_cell(part['IoU all'])} | {_cell(part['IoBB all'])} |")
    for family, part in baselines.groupby("family"):
        lines.append(f"| {family} | random box (expectation) | - | - | - | - | {_cell(part['random IoU'])} | "
                     f"{_cell(part['random IoBB'])} | - | - | - |")
        lines.append(f"| {family} | centre box | - | - | - | - | {_cell(part['centre IoU'])} | "
                     f"{_cell(part['centre IoBB'])} | - | - | - |")
    return "\n".join(lines)


def table(args: argparse.Namespace) -> int:
    rows, baselines, settings = collect(Path(args.out))
    if rows.empty:
        print(f"no finished runs under {args.out}", file=sys.stderr)
        return 1
    text = render(rows, baselines, settings)
    print(text)
    rows.to_csv(Path(args.out) / "measurements.csv", index=False, float_format="%.6f")
    if args.docs:
        path = Path(args.docs)
        doc = path.read_text()
        if START not in doc or END not in doc:
            print(f"{path} lacks the markers {START} / {END}", file=sys.stderr)
            return 1
        head, rest = doc.split(START, 1)
        _, tail = rest.split(END, 1)
        path.write_text(f"{head}{START}\n{text}\n{END}{tail}")
        print(f"updated {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="train, evaluate and localize every missing run")
    go.add_argument("--out", required=True)
    go.add_argument("--families", nargs="+", default=["A", "B"])
    go.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    go.add_argument("--strides", nargs="+", type=int, default=[32, 16, 8])
    go.add_argument("--models", nargs="+", default=["baseline"])
    go.add_argument("--extra-methods", nargs="*", default=["ig"], help="methods also localized at stride 32")
    add_option(go, "--num-images", "--images", type=int, default=1000, help="phantom images per family and seed")
    go.add_argument("--disk-size", type=int, default=192, help="side of the phantom images on disk")
    add_option(go, "--image-size", "--size", type=int, default=128, help="the models' input side (data.image_size)")
    go.add_argument("--epochs", type=int, default=6)
    go.add_argument("--lr", type=float, default=5e-4)
    go.add_argument("--batch-size", type=int, default=16)
    go.add_argument("--threads", type=int, default=1)
    show = sub.add_parser("table", help="the Markdown table from the output files")
    show.add_argument("--out", required=True)
    show.add_argument("--docs", default=None, help="also write it between the markers of this file")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    sys.exit(main())
