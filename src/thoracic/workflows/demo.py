"""The whole pipeline on phantom chest X-rays, sized for a CPU: what ``make demo`` runs.

Steps (each the same library call a real run makes; nothing is special-cased for the demo):

1. ``thoracic synth``: a phantom ChestX-ray14 folder (:mod:`thoracic.data.synth`), reused on the next
   run when its parameters match (``phantom.json``);
2. ``thoracic prepare``: the image cache (resumes / reuses what exists);
3. ``thoracic train``: the three paper models from their configs (``configs/*.yaml``) with the CPU-sized
   overrides of :data:`DEMO_OVERRIDES` (a ResNet-10 trained from scratch at 128 px, from phantoms stored
   at 256 px: no ImageNet weights can be downloaded here, and a ResNet-34 at 256 px would need hours on
   two cores; ``model.output_stride`` as fine as the time budget allows);
4. ``thoracic evaluate --calibrate`` (AUC, subgroups, calibration with temperature scaling fitted on
   the validation split) / ``localize`` (native heatmaps of all three models, and for the
   baseline Grad-CAM and Integrated Gradients too), ``thoracic export`` (ONNX, checked in onnxruntime
   against PyTorch);
5. ``thoracic explain`` (model randomization, faithfulness, mask metrics of the native maps of every model
   and the baseline's Grad-CAM, on :attr:`DemoSettings.explain_images` test images with boxes) and
   ``thoracic report`` over the three runs (with its explorer page).

It ends by writing ``demo_results.json`` (headline numbers, the heatmap checks' results, shortfalls, wall
time and the time of each step, torch threads, machine and library versions): the README's demo numbers
are copied from such files by ``scripts/update_readme_demo.py``.

Results on phantoms show that the code learns and localizes; they say nothing clinical.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision

from thoracic.config import Config, load_config, load_config_by_name
from thoracic.constants import BOX_CLASS_NAMES, NOT_FAITHFUL
from thoracic.data.cache_writer import prepare_cache
from thoracic.data.synth import generate_phantom_dataset
from thoracic.evaluation.protocol import headline
from thoracic.safety import OUTPUT_MANIFEST, remove_owned
from thoracic.training.run_folder import RUN_FILES
from thoracic.training.trainer import same_config, train
from thoracic.workflows.evaluate import evaluate_run
from thoracic.workflows.explain import ExplainSettings, explain_run
from thoracic.workflows.export import export_run
from thoracic.workflows.localize import localize_run
from thoracic.workflows.demo_settings import DEMO_MODEL_OVERRIDES, DEMO_MODELS, DEMO_OVERRIDES, DemoSettings
from thoracic.workflows.report import REPORT_FILES, build_report
from thoracic.io import write_text_atomic


#: The checks ``thoracic explain`` runs in the demo (repeatability needs several seeds of one model).
DEMO_CHECKS: tuple[str, ...] = ("randomization", "faithfulness", "masks")


@dataclass
class DemoResult:
    """Where the report is, the run folder of each model, the headline table and the wall time; the heatmap
    checks' verdicts (model -> method -> check -> ``thoracic explain``'s verdict) and the seconds of each step."""

    report_markdown: Path
    report_html: Path
    runs: dict[str, Path]
    headline: pd.DataFrame
    seconds: float
    checks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)


class _StepClock:
    """Wall seconds per named step (summed when a name recurs), for ``demo_results.json``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 1)


def _phantom_matches(root: Path, settings: DemoSettings) -> bool:
    info_path = root / "phantom.json"
    if not info_path.is_file():
        return False
    info = json.loads(info_path.read_text())
    return (info.get("num_images"), info.get("image_size"), info.get("seed")) == (
        settings.num_images, settings.image_size, settings.seed)


def ensure_phantom_data(settings: DemoSettings) -> Path:
    """The demo's phantom folder: generated once, reused while its parameters match."""
    root = settings.out_dir / "phantom"
    if _phantom_matches(root, settings):
        return root
    return generate_phantom_dataset(root, settings.num_images, settings.image_size, settings.seed,
                                    overwrite=True, progress=settings.progress, num_workers=settings.workers)


#: Columns of :func:`headline_numbers`: for each headline metric ``m`` (``IoU>0.3``, ``IoBB>0.25``) the
#: model at heatmap threshold 180 (the paper's) and its false positives per image, the random box (mean
#: and standard deviation over its draws), the centre box, then the model at threshold 60 and pooled;
#: then the pointing game of the model, of the random boxes' centres and of the image centre.
HEADLINE_COLUMNS: tuple[str, ...] = (
    "model", "method", "mean AUC", "classes",
    *(f"{m} {part}" for m in ("IoU>0.3", "IoBB>0.25")
      for part in ("model", "FP", "random", "random sd", "centre", "T60", "pooled")),
    "pointing model", "pointing random", "pointing centre",
)


def headline_numbers(runs: Mapping[str, Path], methods: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Mean test AUC and the localization headline per model and heatmap method
    (:data:`HEADLINE_COLUMNS`), read from each run's ``localization_<method>.csv``: accuracy at
    T(IoU)=0.3 and T(IoBB)=0.25 at heatmap threshold 180, means over the ``classes`` box classes with boxes,
    beside the random-box and centre-box baselines (see :func:`thoracic.evaluation.protocol.headline`)."""
    rows = []
    for name, run in runs.items():
        auc = json.loads((run / "evaluation" / "auc_test.json").read_text())
        for method in methods.get(name, ("native",)):
            table = pd.read_csv(run / "evaluation" / f"localization_{method}.csv", dtype={"threshold": str})
            numbers = headline(table, method)
            row: dict[str, Any] = {"model": name, "method": method, "mean AUC": auc["mean_auc"],
                                   "classes": numbers["classes"]}
            for metric in ("IoU>0.3", "IoBB>0.25"):
                row[f"{metric} model"] = numbers[metric]
                for part in ("FP", "random", "random sd", "centre", "T60", "pooled"):
                    row[f"{metric} {part}"] = numbers[f"{metric} {part}"]
            row["pointing model"] = numbers["pointing"]
            row["pointing random"] = numbers["pointing random"]
            row["pointing centre"] = numbers["pointing centre"]
            rows.append(row)
    return pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))


def demo_configs(settings: DemoSettings, root: Path) -> dict[str, Config]:
    """The config of each demo model: its paper config, then :attr:`DemoSettings.overrides`, then its own
    :attr:`DemoSettings.model_overrides`, on the phantom folder ``root``, run folders in ``<out>/runs``."""
    return {name: load_config_by_name(name, {
        **settings.overrides, **settings.model_overrides.get(name, {}), "data.root": str(root),
        "output_dir": str(settings.out_dir / "runs"), "run_name": name,
        "seed": settings.seed, "train.progress_bar": settings.progress}) for name in settings.models}


def run_demo(settings: DemoSettings = DemoSettings(), log: Callable[[str], None] = print) -> DemoResult:
    """Run the whole pipeline (see the module docstring) and return where the report is."""
    if settings.threads is not None:
        torch.set_num_threads(int(settings.threads))
    start = time.perf_counter()
    clock = _StepClock()
    out = settings.out_dir
    out.mkdir(parents=True, exist_ok=True)
    explaining = settings.explain_methods is not None
    total = 5 if explaining else 4
    log(f"[1/{total}] phantom ChestX-ray14 folder ({settings.num_images} images, {settings.image_size} px) in {out}")
    with clock("phantom"):
        root = ensure_phantom_data(settings)
    configs = demo_configs(settings, root)
    # the cache at each input size the models use (one size with the demo's overrides)
    image_sizes = sorted({cfg.data.image_size for cfg in configs.values()})
    log(f"[2/{total}] image cache at {', '.join(map(str, image_sizes))} px")
    with clock("cache"):
        for image_size in image_sizes:
            prepare_cache(root, image_size, num_workers=settings.workers, progress=settings.progress)

    runs: dict[str, Path] = {}
    for k, (name, cfg) in enumerate(configs.items(), 1):
        run_dir = Path(cfg.output_dir) / name
        log(f"[3/{total}] training {name} ({k}/{len(settings.models)}): {cfg.model.backbone}, "
            f"{cfg.data.image_size} px, up to {cfg.train.max_epochs} epochs")
        with clock(f"train {name}"):
            if (run_dir / "summary.json").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file() \
                    and same_config(load_config(run_dir / "config.yaml"), cfg):
                log(f"      {run_dir} already trained with this config: reused")
            elif (run_dir / "checkpoints" / "last.ckpt").is_file() and same_config(load_config(run_dir / "config.yaml"), cfg):
                log(f"      resuming the interrupted run {run_dir}")
                train(None, resume=run_dir)
            else:
                if run_dir.exists():  # a run of other settings: only the files a run writes are deleted
                    remove_owned(run_dir, RUN_FILES, "demo run folder", hint="Move them away or use another --out.")
                train(cfg)
        runs[name] = run_dir

    log(f"[4/{total}] evaluation, localization and export" + ("" if explaining else " and report"))
    methods: dict[str, tuple[str, ...]] = {}
    for name, run_dir in runs.items():
        with clock("evaluate"):
            evaluate_run(run_dir, "test", bootstrap=settings.n_bootstrap, progress=settings.progress,
                         calibrate="per_class")
        methods[name] = ("native", *settings.extra_methods.get(name, ()))
        for method in methods[name]:
            with clock(f"localize {method}"):
                localize_run(run_dir, method=method, progress=settings.progress)
        with clock("export"):
            exported = export_run(run_dir, "onnx")
        log(f"      {name}: exported {exported.path}; onnxruntime vs PyTorch max abs difference "
            + ", ".join(f"{k} {v:.1e}" for k, v in exported.max_abs_diff.items()))
    checks: dict[str, dict[str, dict[str, Any]]] = {}
    if explaining:
        log(f"[5/{total}] heatmap checks (thoracic explain: model randomization, faithfulness, mask metrics on "
            f"{settings.explain_images} test images with boxes) and report")
        for name, run_dir in runs.items():
            chosen = tuple((settings.explain_methods or {}).get(name, ("native",)))
            with clock("explain"):
                explanation = explain_run(run_dir, ExplainSettings(
                    method=chosen, checks=DEMO_CHECKS, num_images=settings.explain_images, seed=settings.seed,
                    bootstrap=settings.n_bootstrap), progress=settings.progress)
            checks[name] = explanation.verdicts
    report_dir = out / "report"
    with clock("report"):
        if report_dir.is_dir() and not (report_dir / OUTPUT_MANIFEST).exists():
            # the demo's own report folder, written before output folders kept a list of their files
            remove_owned(report_dir, REPORT_FILES, "demo report folder", remove_folder=False,
                         hint="Move them away or use another --out.")
        markdown, html = build_report(list(runs.values()), report_dir, title="thoracic demo (phantom data)")
    headline = headline_numbers(runs, methods)
    seconds = time.perf_counter() - start
    result = DemoResult(markdown, html, runs, headline, seconds, checks, clock.seconds)
    write_demo_record(result, settings, configs[next(iter(configs))] if configs else None)
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The file ``run_demo`` writes into its output folder (read by ``scripts/update_readme_demo.py``).
RECORD_FILE = "demo_results.json"


def write_demo_record(result: DemoResult, settings: DemoSettings, config: Any = None) -> Path:
    """``<out>/demo_results.json``: the headline table, its shortfalls (:func:`check_learning`), the wall
    time and what the numbers depend on (torch threads, CPU, library versions, the demo's settings)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    record = {
        "minutes": round(result.seconds / 60, 2),
        # CPU time of this process and its workers: what the run cost, whatever else shared the machine
        "cpu_minutes": round(sum(u.ru_utime + u.ru_stime for u in usage) / 60, 2),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "num_images": settings.num_images,
        "phantom_size": settings.image_size,
        "seed": settings.seed,
        "overrides": {k: v for k, v in settings.overrides.items()},
        "model_overrides": {name: dict(v) for name, v in settings.model_overrides.items()},
        "output_stride": getattr(getattr(config, "model", None), "output_stride", None),
        "image_size": getattr(getattr(config, "data", None), "image_size", None),
        "steps_seconds": dict(result.steps),
        "headline": json.loads(result.headline.to_json(orient="records")),
        "explain_images": settings.explain_images if result.checks else None,
        "checks": check_records(result.checks),
        "problems": check_learning(result.headline, checks=result.checks),
    }
    path = settings.out_dir / RECORD_FILE
    write_text_atomic(path, json.dumps(record, indent=2))
    return path


#: Columns of the heatmap checks' summary (:func:`check_table`), one row per model and heatmap method.
CHECK_COLUMNS: tuple[str, ...] = ("model", "method", "randomization", "faithfulness", "mIoU T180", "mIoU Otsu",
                                  "mIoU tuned", "hit rate")


def check_records(checks: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One record per model and heatmap method from ``thoracic explain``'s verdicts: the randomization result
    (``passes`` / ``FLAGGED`` and the median Spearman correlation after the deepest randomization), the
    faithfulness verdict with its deletion and insertion gains and ROAD, the mask metrics (mIoU at heatmap
    threshold 180, at Otsu's threshold, with thresholds tuned on the other half; hit rate), and each
    check's one-line text."""
    records = []
    for model, methods in checks.items():
        for method, found in methods.items():
            randomization = found.get("randomization") or {}
            faithfulness = found.get("faithfulness") or {}
            masks = found.get("masks") or {}
            records.append({
                "model": model, "method": method,
                "randomization_flagged": randomization.get("flagged"),
                "randomization_spearman": randomization.get("spearman_median"),
                "faithfulness": faithfulness.get("verdict"),
                "deletion_gain": faithfulness.get("deletion_gain"), "insertion_gain": faithfulness.get("insertion_gain"),
                "road": faithfulness.get("road"),
                "miou": masks.get("miou"), "miou_otsu": masks.get("miou_otsu"), "miou_tuned": masks.get("miou_tuned"),
                "hit_rate": masks.get("hit_rate"),
                "texts": {check: str(v.get("text", "")) for check, v in found.items() if isinstance(v, dict)},
            })
    return [{key: _finite(value) for key, value in record.items()} for record in records]


def _finite(value: Any) -> Any:
    """A JSON-safe value: a non-finite number becomes None (``null``)."""
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def check_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The heatmap checks' summary (:data:`CHECK_COLUMNS`) of :func:`check_records`, as text cells."""
    def number(value: Any, sign: bool = False) -> str:
        if value is None or not np.isfinite(value):
            return "n/a"
        return f"{value:+.2f}" if sign else f"{value:.2f}"

    rows = []
    for r in records:
        flagged = r.get("randomization_flagged")
        randomization = "not run" if flagged is None else (
            f"{'FLAGGED' if flagged else 'passes'} (rho {number(r.get('randomization_spearman'))})")
        faithfulness = "not run" if r.get("faithfulness") is None else (
            f"{r['faithfulness']} (deletion {number(r.get('deletion_gain'), True)}, "
            f"insertion {number(r.get('insertion_gain'), True)})")
        rows.append({"model": r["model"], "method": r["method"], "randomization": randomization,
                     "faithfulness": faithfulness, "mIoU T180": number(r.get("miou")),
                     "mIoU Otsu": number(r.get("miou_otsu")), "mIoU tuned": number(r.get("miou_tuned")),
                     "hit rate": number(r.get("hit_rate"))})
    return pd.DataFrame(rows, columns=list(CHECK_COLUMNS))


def format_headline(result: DemoResult) -> str:
    """The lines the demo ends with: where the report is and the headline numbers (heatmap threshold 180;
    then threshold 60, pooled and the pointing game beside it)."""
    table = result.headline

    def number(value: float) -> str:
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"

    main, beside = [], []
    for _, row in table.iterrows():
        cells = {"model": row["model"], "method": row["method"], "mean AUC": number(row["mean AUC"])}
        other = {"model": row["model"], "method": row["method"]}
        for metric in ("IoU>0.3", "IoBB>0.25"):
            cells[f"{metric} (FP/image)"] = f"{number(row[f'{metric} model'])} ({number(row[f'{metric} FP'])})"
            cells[f"{metric} random"] = f"{number(row[f'{metric} random'])} ± {number(row[f'{metric} random sd'])}"
            cells[f"{metric} centre"] = number(row[f"{metric} centre"])
            other[f"{metric} T60"] = number(row[f"{metric} T60"])
            other[f"{metric} pooled"] = number(row[f"{metric} pooled"])
        for source in ("model", "random", "centre"):
            other[f"pointing {source}"] = number(row[f"pointing {source}"])
        main.append(cells)
        beside.append(other)
    classes = sorted({int(c) for c in table["classes"] if np.isfinite(c)}) if len(table) else []
    over = " / ".join(map(str, classes)) or "n/a"
    lines = [f"demo finished in {result.seconds / 60:.1f} min",
             f"report: {result.report_html}  (Markdown: {result.report_markdown})",
             "phantom test set (synthetic; says nothing clinical). Localization at heatmap threshold 180 (the "
             f"paper's), means over {over} of {len(BOX_CLASS_NAMES)} box classes; FP/image = false positives per "
             "image; random box = mean ± sd over its seeded draws:",
             pd.DataFrame(main).to_string(index=False),
             "beside it: heatmap threshold 60, both thresholds pooled, and the pointing game (heatmap maximum "
             "inside a box of its class; random-box centres; image centre):",
             pd.DataFrame(beside).to_string(index=False)]
    if result.checks:
        lines += ["can these heatmaps be trusted? (thoracic explain; model randomization: FLAGGED when the maps stay "
                  "similar, rho = median Spearman correlation with the trained maps once every stage is randomized; "
                  "faithfulness: deletion / insertion gains over a random order; mask metrics: mIoU and hit rate; "
                  "details in the report's section of that name):",
                  check_table(check_records(result.checks)).to_string(index=False)]
    if result.steps:
        lines.append("time per step (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in result.steps.items()))
    return "\n".join(lines)


def check_learning(headline: pd.DataFrame, min_auc: float = 0.9,
                   checks: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> list[str]:
    """Plain-language shortfalls: mean AUC under ``min_auc``, localization (heatmap threshold 180) not
    above both baselines (the random box's mean over its draws, the centre box), and, from the heatmap
    checks' ``checks`` (model -> method -> check -> verdict), a method flagged by the model randomization
    test or whose maps are not more faithful than a random order."""
    problems = []
    for _, row in headline.iterrows():
        if not row["mean AUC"] >= min_auc:
            problems.append(f"{row['model']}: mean AUC {row['mean AUC']:.3f} < {min_auc}")
        for metric in ("IoU>0.3", "IoBB>0.25"):
            model, random, centre = (row[f"{metric} {k}"] for k in ("model", "random", "centre"))
            if not model > max(random, centre):
                problems.append(f"{row['model']} {row['method']}: {metric} accuracy {model:.3f} (heatmap threshold "
                                f"180) not above random {random:.3f} (mean of draws) / centre {centre:.3f}")
    for model, methods in (checks or {}).items():
        for method, found in methods.items():
            randomization = found.get("randomization") or {}
            if randomization.get("flagged"):
                problems.append(f"{model} {method}: flagged by the model randomization test ({randomization.get('text')})")
            if (found.get("faithfulness") or {}).get("verdict") == NOT_FAITHFUL:
                problems.append(f"{model} {method}: maps not more faithful than a random order "
                                f"({found['faithfulness'].get('text')})")
    return problems


__all__ = ["CHECK_COLUMNS", "DEMO_CHECKS", "DEMO_MODELS", "DEMO_MODEL_OVERRIDES", "DEMO_OVERRIDES", "HEADLINE_COLUMNS",
           "RECORD_FILE", "DemoResult", "DemoSettings", "check_learning", "check_records", "check_table", "demo_configs",
           "format_headline", "headline_numbers", "run_demo", "write_demo_record"]
