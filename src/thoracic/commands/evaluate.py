"""Per-class ROC AUC of a run with seeded bootstrap 95% confidence intervals, and ROC curves (Table 1, Figs. 3-5).

Writes RUN/evaluation/predictions_<split>.csv (image_id, 14 probabilities, 14 labels), auc_<split>.csv
and .json (AUC, CI, counts, notes for undefined classes, mean over defined classes), roc_<split>.png and
table1_<split>.md / .csv (Table 1: this run beside Wang et al. 2017 and the seed paper's three columns),
operating_points.json (one threshold per class, chosen on the validation split by Youden's J or F1; used
by `thoracic predict`) and operating_points_<split>.csv (their sensitivity and specificity on the split).
subgroups_<split>.csv / .json / .png and subgroup_gaps_<split>.csv (AUC and true-positive rate per sex,
age band, view and follow-up group, with bootstrap CIs and the gaps between groups), calibration_<split>.csv /
.json and reliability_<split>.csv / .png (expected calibration error and reliability diagrams; with
--calibrate, before and after temperature scaling fitted on the validation split, stored as calibration.json
and applied by `thoracic predict`).
The data folder and cache come from the run's config (data.root, data.cache); --data overrides them.
With --dataset KIND (and --data the folder of another dataset than the run's: cross-dataset validation) the
run is scored on that dataset's test split over the labels both share (the harmonisation table of
docs/data.md; the mapping is printed and stored), at the operating points of the run's own validation
split, into RUN/evaluation/<kind>-<folder>/ (the run's own evaluation stays as it is); --shared-images FILE
(a mapping of the two datasets' image ids) lists the test images the run was trained on.
The printed table gives the positive images beside every AUC; warnings on stderr name the numbers that
rest on small samples: a class with fewer than 10 positive images (on the split, or on the validation
split its threshold was chosen on), a subgroup with fewer than 30 images, a fitted temperature at the
bound of its search interval.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from thoracic.commands._options import (
    add_checkpoint,
    add_data,
    add_dataset,
    add_device,
    add_num_workers,
    add_progress,
    add_run,
    add_shared_images,
    add_trust_checkpoint,
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by evaluate and localize."""
    add_run(parser)
    add_checkpoint(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's train.batch_size")
    add_device(parser)
    add_data(parser, "dataset folder instead of the run's data.root; with --dataset, another dataset's folder")
    add_dataset(parser, None, "the layout of --data when it is another dataset than the run's (auto: detected): "
                "the run is scored on it over the labels both share, into RUN/evaluation/<kind>-<folder>/ "
                "(default: the run's own dataset)")
    parser.add_argument("--cache", default=None, metavar="FOLDER",
                        help="image cache folder (default: the run's data.cache, or DATA/cache_SIZE)")
    add_shared_images(parser)
    add_num_workers(parser, "data loader worker processes (default: the run's data.num_workers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap / random baseline (default 0)")
    add_progress(parser)
    add_trust_checkpoint(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--split", default="test", choices=("test", "val"), help="split to evaluate (default test)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples for the 95%% CIs (0: none; default 1000)")
    parser.add_argument("--operating-point", default="youden", choices=("youden", "f1"),
                        help="how each class's threshold is chosen on the validation split: Youden's J "
                        "(sensitivity + specificity - 1) or F1 (default youden); `thoracic predict` uses them")
    parser.add_argument("--age-bands", type=int, nargs="+", default=None, metavar="AGE",
                        help="lower edges of the subgroup age bands (default 0 20 40 60 80: 0-19 ... 80+)")
    parser.add_argument("--subgroup-min-count", type=int, default=1, metavar="N",
                        help="fewest positive and negative images of a class for a subgroup AUC (default 1)")
    parser.add_argument("--no-subgroups", dest="subgroups", action="store_false", help="skip the subgroup evaluation")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit temperature scaling on the validation split, store it as "
                             "evaluation/calibration.json (applied by `thoracic predict`) and report ECE before / after")
    parser.add_argument("--calibration-mode", choices=("per_class", "single"), default="per_class",
                        help="one temperature per class or a single one for all (default: %(default)s)")
    parser.add_argument("--calibration-bins", type=int, default=None, metavar="N",
                        help="equal-width probability bins of the ECE and reliability diagrams (default 15)")


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.evaluate import evaluate_run

    result = evaluate_run(args.run, split=args.split, bootstrap=args.bootstrap, batch_size=args.batch_size,
                          device=args.device, data=args.data, cache=args.cache, num_workers=args.num_workers,
                          checkpoint=args.checkpoint, seed=args.seed, progress=args.progress,
                          operating_point=args.operating_point, subgroups=args.subgroups,
                          age_bands=args.age_bands, subgroup_min_count=args.subgroup_min_count,
                          calibrate=args.calibration_mode if args.calibrate else None,
                          calibration_bins=args.calibration_bins, trust_checkpoint=args.trust_checkpoint,
                          dataset=args.dataset, shared_images=args.shared_images)
    if result.test_set is not None:
        print(format_test_set(result.test_set, result.threshold_source, result.shared_images))
    print(format_evaluation(result, args.split, args.operating_point))
    _print_extras(result.files)
    print(f"wrote {', '.join(str(p) for p in result.files.values())}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def format_test_set(test_set: dict, threshold_source: str, shared: dict | None) -> str:
    """What a cross-dataset evaluation scored: the dataset, the label mapping, the operating points' source
    and the shared images."""
    train = test_set.get("train_dataset") or {}
    mapping = ", ".join(f"{m['run_label']} = {m['test_label']}" for m in test_set.get("label_mapping", []))
    lines = [f"scored on {test_set['kind']} {test_set['root']} (trained on {train.get('kind')} {train.get('root')}); "
             f"results in evaluation/{test_set['folder']}/",
             f"labels shared (the run's = {test_set['kind']}'s; label_mapping.csv): {mapping}",
             f"operating points: {threshold_source}"]
    if shared is not None:
        lines.append(f"shared images ({shared['mapping']}): {shared['n_mapped']} of {shared['n_test_images']} test "
                     f"images map to images of the run's dataset: {shared['n_train']} in its train split, "
                     f"{shared['n_val']} in its val split ({shared['file']})")
    return "\n".join(lines)


def format_evaluation(result: Any, split: str, method: str) -> str:
    """The per-class table evaluate prints: AUC and 95% CI, positive images (marked below
    :data:`~thoracic.evaluation.sample_size.MIN_POSITIVES`), then threshold, sensitivity, specificity."""
    from thoracic.evaluation.formatting import DECISION_DIGITS
    from thoracic.evaluation.sample_size import MIN_POSITIVES

    frame = result.auc.to_frame()
    points = result.operating_points.set_index("class_name")
    criterion = "Youden's J" if method == "youden" else "F1"
    n_images = int(frame["n_positive"].iloc[0] + frame["n_negative"].iloc[0]) if len(frame) else 0
    where = "the run's own val split" if getattr(result, "test_set", None) else "the val split"
    lines = [f"{split} split ({n_images} images); thresholds chosen on {where} by {criterion}",
             f"{'class':<20} {'AUC':>6} {'95% CI':<16} {'pos':>5} {'thresh':>6} {'sens':>5} {'spec':>5}"]

    def rate(value: float) -> str:
        return f"{value:5.2f}" if value == value else "  n/a"

    for row in frame.itertuples(index=False):
        ci = f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" if row.ci_low == row.ci_low else ""
        auc = f"{row.auc:6.4f}" if row.auc == row.auc else "   n/a"
        notes = [row.note] if row.note else []
        if row.class_name in points.index:
            p = points.loc[row.class_name]
            point = f"{p.threshold:6.{DECISION_DIGITS}f} {rate(p.sensitivity)} {rate(p.specificity)}"
            notes += [p.note] if p.note else []
            if row.n_positive < MIN_POSITIVES:
                notes.append(f"fewer than {MIN_POSITIVES} positives")
        else:
            point = ""
        lines.append(f"{row.class_name:<20} {auc} {ci:<16} {row.n_positive:>5} {point}"
                     + (f"  ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines)


def _print_extras(files: dict) -> None:
    """Mean AUC per subgroup and the mean ECE (before / after temperature scaling), when written."""
    import pandas as pd

    from thoracic.evaluation.sample_size import MIN_SUBGROUP_IMAGES

    if "subgroups_csv" in files:
        table = pd.read_csv(files["subgroups_csv"])
        means = table[table["class_name"] == "Mean"]
        print("subgroups (mean AUC over classes with a defined AUC [95% CI], n images):")
        for row in means.itertuples(index=False):
            value = f"{row.auc:.4f} [{row.auc_ci_low:.3f}, {row.auc_ci_high:.3f}]" if row.auc == row.auc else "undefined"
            few = f" (fewer than {MIN_SUBGROUP_IMAGES} images)" if 0 < row.n_images < MIN_SUBGROUP_IMAGES else ""
            print(f"  {row.attribute:<10} {row.group:<8} {value}  n={row.n_images}{few}")
    if "calibration_csv" in files:
        table = pd.read_csv(files["calibration_csv"]).set_index("class_name")
        after = table.loc["Mean", "ece_calibrated"]
        print(f"mean ECE {table.loc['Mean', 'ece']:.4f}" + (f" -> {after:.4f} after temperature scaling"
                                                             if after == after else ""))
