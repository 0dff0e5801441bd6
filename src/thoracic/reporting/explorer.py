"""The explorer page: every scored box row of one or more runs, browsable offline in one page.

``thoracic report`` writes it into ``<out>/explorer/`` (``--no-explorer`` skips it) and links it from the
report's Localization section; :func:`build_explorer` writes it from Python. The folder::

    index.html             the page (Jinja2 template ``explorer.html.j2``: markup, style and script inline)
    data.js                every scored box row as data (``window.THORACIC_EXPLORER = {...}``): the
                           ground-truth boxes, each (run, heatmap method)'s best IoU / IoBB and number of
                           predicted boxes per heatmap threshold, its predicted boxes, the pointing game,
                           the class probability
    images/<k>.jpg         one grayscale thumbnail per image (from the image cache the run was trained on,
                           else the original file), written once whatever the number of rows and methods
    heatmaps/<source>/<k>  one small colour image per (run, method, image, class): the heatmap as drawn
                           over its image (:func:`thoracic.evaluation.figures.display_heatmap`: upsampled
                           with the registration localization used, min-max normalised, jet)
    thoracic_outputs.json  the files above (what a rerun may replace or delete: thoracic.safety.output_folder)

Everything shown comes from the files ``thoracic localize`` writes into ``RUN/evaluation/``
(``scores_<method>.csv``, ``boxes_<method>.csv``, ``heatmaps_<method>.npz``, ``localization_<method>.json``
for the registration), ``predictions_test.csv`` of ``thoracic evaluate`` (the probabilities), ``explain.json`` and ``masks.csv``
of ``thoracic explain`` when the run was explained (each method's check results, and per box row of its
draw the mask IoU and hit), and the image cache. Heatmap methods are discovered from the ``scores_<method>.csv`` files present, so every
method localize can write appears without a list to update.

In the browser the boxes are SVG rectangles in original-image pixels over the thumbnail and the heatmap
image (CSS opacity), so nothing is re-encoded per row; the list is rendered in batches as it is scrolled
and every image has ``loading="lazy"``: the NIH scale (984 rows x 6 methods) opens in well under a
second (BENCHMARKS.md, benchmark "explorer"). No network, no CDN: the page works from ``file://``.

Every file is written atomically, in an output folder (:func:`thoracic.safety.output_folder`, the one
mechanism for the files thoracic wrote in a folder): a rerun replaces the files its previous run listed in
``thoracic_outputs.json`` and deletes those it no longer writes, and refuses (naming them) to overwrite files
of the same names that it did not write.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.constants import CLASS_INDEX, METHOD_LABELS, NOT_FAITHFUL
from thoracic.data.cache import ImageCache, default_cache_dir
from thoracic.data.images import read_image
from thoracic.errors import OutputPathError, RunError, ThoracicError
from thoracic.evaluation.figures import HEATMAP_CMAP, WHOLE_IMAGE_FRACTION, display_heatmap
from thoracic.evaluation.localization import HEADLINE_THRESHOLD, IOBB_THRESHOLDS, IOU_THRESHOLDS, POOLED
from thoracic.evaluation.protocol import HEADLINE_METRICS, load_registration
from thoracic.io import write_bytes_atomic, write_text_atomic
from thoracic.reporting.runs import RunSummary, expand_runs, group_runs, image_paths, load_run_summary
from thoracic.reporting.trust import CHECK_COLUMNS
from thoracic.safety import OUTPUT_MANIFEST, OutputSource, output_folder, read_json

#: The explorer's folder inside a report's output folder.
EXPLORER_FOLDER = "explorer"
PAGE_FILE = "index.html"
DATA_FILE = "data.js"
#: The files a build wrote (what the next build may replace or delete).
MANIFEST_FILE = OUTPUT_MANIFEST
#: Longest side of an image thumbnail (pixels); the page shows them at most this large.
THUMBNAIL_SIDE = 256
#: Longest side of a heatmap image (pixels): the browser scales it smoothly over the thumbnail.
HEATMAP_SIDE = 128
JPEG_QUALITY = 85
HEATMAP_QUALITY = 80
#: Columns the page needs from ``scores_<method>.csv`` (``peak_x``, ``peak_y`` and ``pointing`` are shown
#: when present).
REQUIRED_SCORE_COLUMNS = ("box_row", "image_id", "class_name", "threshold", "n_predicted", "best_iou", "best_iobb",
                          "x", "y", "w", "h", "original_width", "original_height")
BOX_FILE_COLUMNS = ("image_id", "class_name", "threshold", "x", "y", "w", "h")
#: The split whose predictions hold the box images' probabilities (localization scores the test images).
PROBABILITY_SPLIT = "test"

#: ``thoracic explain``'s files the page reads (when present); the checks it shows and their titles are the
#: report's (:data:`thoracic.reporting.trust.CHECK_COLUMNS`).
EXPLAIN_FILE = "explain.json"
MASKS_FILE = "masks.csv"

_METHOD_FILE = re.compile(r"scores_(?P<method>.+)\.csv")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------------------------------
# What the page shows (data) and the image files it needs (assets)
# --------------------------------------------------------------------------------------------------


@dataclass
class ExplorerContent:
    """What :func:`explorer_content` collects: the page's data and the image files to write.

    ``data`` is the JSON document of ``data.js`` (see :func:`explorer_content`); ``assets`` maps each
    image file's path relative to the explorer folder to a function that encodes it (called once, when
    the folder is written).
    """

    data: dict[str, Any]
    assets: dict[str, Callable[[], bytes]] = field(default_factory=dict)
    archives: list[HeatmapArchive] = field(default_factory=list)
    """The heatmap files the assets read from (closed by :meth:`close`)."""

    def close(self) -> None:
        for archive in self.archives:
            archive.close()


class HeatmapArchive:
    """The maps of one ``heatmaps_<method>.npz``, read one at a time when they are drawn.

    A method at input resolution holds hundreds of megabytes of maps at NIH scale, and a page of six
    methods should not hold all of them at once. Keys are ``save_heatmaps``'s ``<image_id>|<class_name>``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with np.load(self.path) as data:
                self.keys = frozenset(data.files)
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.path}: unreadable ({exc}); rerun `thoracic localize` for this run") from None
        self._file: Any = None

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return f"{pair[0]}|{pair[1]}" in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, pair: tuple[str, str]) -> np.ndarray:
        if self._file is None:
            self._file = np.load(self.path)
        return np.asarray(self._file[f"{pair[0]}|{pair[1]}"], dtype=np.float64)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def discover_methods(evaluation: Path) -> list[str]:
    """Heatmap methods localized in an evaluation folder: every ``scores_<method>.csv`` beside its
    ``boxes_<method>.csv``, in name order."""
    methods = []
    for path in sorted(Path(evaluation).glob("scores_*.csv")):
        match = _METHOD_FILE.fullmatch(path.name)
        if match and (path.parent / f"boxes_{match['method']}.csv").is_file():
            methods.append(match["method"])
    return methods


def _threshold_text(value: Any) -> str:
    """``60`` for 60 / 60.0 / "60.0"; the pooled label unchanged."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:g}" if math.isfinite(number) else text


def _threshold_order(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _number(value: Any) -> float | int | None:
    """A JSON-ready number: integers stay integers, floats keep every digit (JSON writes the shortest
    repr that reads back the same double), NaN becomes null."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def _read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"image_id": str, "class_name": str, "threshold": str},
                            keep_default_na=False, na_values=[""])
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunError(f"{path}: unreadable ({exc}); rerun `thoracic localize` for this run") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise RunError(f"{path}: columns {missing} missing; expected the file thoracic localize writes (rerun it)")
    table["threshold"] = table["threshold"].map(_threshold_text)
    return table


def _checkpoint_sha(summary: RunSummary, name: str) -> str | None:
    info = summary.checkpoints.get(name) or {}
    return info.get("sha256")


def _probabilities(summary: RunSummary, methods: Sequence[str]) -> tuple[pd.DataFrame | None, list[str]]:
    """``predictions_test.csv`` of the run (None with a note when missing or of another checkpoint than
    the localization files)."""
    path = summary.path / "evaluation" / f"predictions_{PROBABILITY_SPLIT}.csv"
    if not path.is_file():
        return None, [f"no class probabilities: evaluation/{path.name} is missing (run `thoracic evaluate`)"]
    evaluated = _checkpoint_sha(summary, f"auc_{PROBABILITY_SPLIT}.json")
    localized = {_checkpoint_sha(summary, f"localization_{m}.json") for m in methods} - {None}
    if evaluated and localized and localized != {evaluated}:
        return None, [f"no class probabilities: evaluation/{path.name} is of another checkpoint than the "
                      "localization files (rerun `thoracic evaluate`)"]
    try:
        table = pd.read_csv(path, dtype={"image_id": str})
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunError(f"{path}: unreadable ({exc}); rerun `thoracic evaluate` for this run") from None
    if "image_id" not in table.columns:
        raise RunError(f"{path}: no image_id column; expected the predictions file thoracic evaluate writes")
    return table.set_index("image_id"), []


@dataclass
class _Checks:
    """What ``thoracic explain`` found for one run (empty when it was not run, or on other weights)."""

    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    masks: pd.DataFrame | None = None
    thresholds: list[str] = field(default_factory=list)
    """The fixed heatmap thresholds of ``masks.csv``'s ``iou_<T>`` columns."""

    def of(self, method: str) -> list[dict[str, Any]]:
        """The method's check results: title, one-line text and whether the check flags the method."""
        found = self.verdicts.get(method) or {}
        results = []
        for check, title in CHECK_COLUMNS.items():
            verdict = found.get(check)
            if not isinstance(verdict, dict):
                continue
            if check == "randomization":
                flagged: bool | None = bool(verdict.get("flagged"))
            elif check == "faithfulness":
                flagged = verdict.get("verdict") == NOT_FAITHFUL
            else:
                flagged = None
            results.append({"check": check, "title": title, "text": str(verdict.get("text", "")), "flagged": flagged})
        return results


def _explain_checks(summary: RunSummary, methods: Sequence[str]) -> tuple[_Checks, list[str]]:
    """``explain.json`` and ``masks.csv`` of a run (see :data:`EXPLAIN_FILE`), with notes; nothing when the
    files are missing, damaged or of another checkpoint than the localization files (a note says so)."""
    evaluation = summary.path / "evaluation"
    path = evaluation / EXPLAIN_FILE
    if not path.is_file():
        return _Checks(), []
    try:
        document = read_json(path, "thoracic explain's results", RunError)
    except RunError as exc:
        return _Checks(), [f"heatmap checks not shown ({exc})"]
    if not isinstance(document, dict):
        return _Checks(), [f"heatmap checks not shown: {path} is not a JSON object (rerun `thoracic explain`)"]
    explained = (document.get("checkpoint") or {}).get("sha256")
    localized = {_checkpoint_sha(summary, f"localization_{m}.json") for m in methods} - {None}
    if explained and localized and localized != {explained}:
        return _Checks(), [f"heatmap checks not shown: {EXPLAIN_FILE} checked another checkpoint than the "
                           "localization files (rerun `thoracic explain`)"]
    verdicts = document.get("verdicts") if isinstance(document.get("verdicts"), dict) else {}
    checks = _Checks(verdicts)
    masks_path = evaluation / MASKS_FILE
    if masks_path.is_file():
        try:
            table = pd.read_csv(masks_path, dtype={"image_id": str, "class_name": str, "method": str},
                                keep_default_na=False, na_values=[""])
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            return checks, [f"mask metrics per row not shown: {masks_path} unreadable ({exc}); rerun `thoracic explain`"]
        needed = {"method", "image_id", "class_name", "iou_otsu", "hit"}
        if not needed <= set(table.columns):
            return checks, [f"mask metrics per row not shown: {masks_path} lacks columns "
                            f"{sorted(needed - set(table.columns))} (rerun `thoracic explain`)"]
        checks.masks = table.drop_duplicates(["method", "image_id", "class_name"]).set_index(
            ["method", "image_id", "class_name"])
        fixed = [c[len("iou_"):] for c in table.columns if re.fullmatch(r"iou_\d+(\.\d+)?", c)]
        checks.thresholds = sorted((_threshold_text(t) for t in fixed), key=_threshold_order)
    return checks, []


def _mask_rows(checks: _Checks, method: str, pairs: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """Per row (aligned with ``pairs``) the mask metrics of ``thoracic explain``: IoU at each fixed heatmap
    threshold, at Otsu's threshold and hit; null for a row outside the explained draw (None: no row in it)."""
    if checks.masks is None:
        return None
    table = checks.masks
    keys = [(method, i, c) for i, c in pairs]
    present = [key in table.index for key in keys]
    if not any(present):
        return None

    def column(name: str) -> list[float | int | None]:
        return [_number(table.at[key, name]) if inside else None for key, inside in zip(keys, present)]

    return {"iou": {t: column(f"iou_{t}") for t in checks.thresholds}, "iou_otsu": column("iou_otsu"),
            "hit": column("hit"), "explained": sum(present)}


class _ImageSource:
    """The images of one data folder: the run's image cache, else the original files, else none."""

    def __init__(self, summary: RunSummary) -> None:
        data = summary.config.get("data", {}) or {}
        self.root = data.get("root")
        self.notes: list[str] = []
        self.cache: ImageCache | None = None
        size = summary.image_size or data.get("image_size")
        cache_dir = data.get("cache") or (default_cache_dir(self.root, int(size)) if self.root and size else None)
        if cache_dir and Path(cache_dir).is_dir():
            try:
                root = self.root if self.root and Path(self.root).is_dir() else None
                self.cache = ImageCache.open(cache_dir, expected_root=root)
            except ThoracicError as exc:  # a missing or foreign cache must not stop the page: files instead
                self.notes.append(f"image cache not used ({exc})")
        self.paths: dict[str, str] = {} if self.cache is not None else image_paths(summary)
        if self.cache is None and not self.paths:
            self.notes.append(f"no images: neither the image cache nor the data folder {self.root} is readable "
                              "here (boxes and heatmaps are drawn on a grey canvas)")

    def has(self, image_id: str) -> bool:
        if self.cache is not None:
            position = int(self.cache.indices_of([image_id])[0])
            return position >= 0 and bool(self.cache.available[position])
        return image_id in self.paths

    def image(self, image_id: str) -> np.ndarray:
        """The image (cache pixels or the file's); a grey square when it cannot be read after all (a
        thumbnail must not stop the page, as in the report's overlay figures)."""
        try:
            if self.cache is not None:
                return self.cache.image(image_id)
            return read_image(self.paths[image_id])
        except (ThoracicError, OSError, ValueError):
            return np.full((64, 64), 128, dtype=np.uint8)


def thumbnail_bytes(image: np.ndarray, size: tuple[int, int], side: int = THUMBNAIL_SIDE,
                    quality: int = JPEG_QUALITY) -> bytes:
    """A grayscale JPEG of ``image`` with the aspect of ``size = (width, height)`` (the original image's; a
    cache image is a square), its longest side at most ``side``."""
    from PIL import Image

    width, height = (max(1, int(v)) for v in size)
    scale = min(1.0, side / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("L")
    if picture.size != target:
        picture = picture.resize(target, Image.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def heatmap_format() -> str:
    """``webp`` when Pillow can write it (several times smaller than PNG for smooth maps), else ``png``."""
    from PIL import features

    return "webp" if features.check("webp") else "png"


@functools.lru_cache(maxsize=1)
def _colour_table() -> np.ndarray:
    """``(N, 3)`` uint8 colours of the overlays' colour map (looked up once: a matplotlib colour map object
    is re-initialised on every copy)."""
    import matplotlib

    colormap = matplotlib.colormaps[HEATMAP_CMAP]
    return np.asarray(colormap(np.arange(colormap.N), bytes=True)[:, :3])


def heatmap_bytes(heatmap: np.ndarray, size: tuple[int, int], registration: Any = None, side: int = HEATMAP_SIDE,
                  kind: str = "webp", quality: int = HEATMAP_QUALITY) -> bytes:
    """The heatmap as drawn over an image of ``size = (width, height)``: :func:`display_heatmap` at a
    longest side of at most ``side``, coloured with the overlays' colour map, as WebP or PNG."""
    from PIL import Image

    width, height = (max(1, int(v)) for v in size)
    scale = min(1.0, side / max(width, height))
    display = (max(1, round(height * scale)), max(1, round(width * scale)))
    values = display_heatmap(heatmap, display, registration)
    table = _colour_table()
    # the colour map's own quantisation (matplotlib: index int(value * N), the top value in the last bin)
    colours = table[np.minimum((values * len(table)).astype(np.int64), len(table) - 1)]
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(colours), "RGB")
    if kind == "webp":
        # method 2: within 5% of the smallest file at half the encoding time of the default (4)
        picture.save(buffer, format="WEBP", quality=quality, method=2)
    else:
        picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "method"


def _criteria() -> tuple[list[dict[str, Any]], int]:
    criteria = [{"label": f"IoU > {t:g}", "metric": "best_iou", "t": t} for t in IOU_THRESHOLDS]
    criteria += [{"label": f"IoBB > {t:g}", "metric": "best_iobb", "t": t} for t in IOBB_THRESHOLDS]
    criteria.append({"label": "pointing game (heatmap maximum in the box)", "metric": "pointing", "t": None})
    metric, t = HEADLINE_METRICS[0]
    default = next(i for i, c in enumerate(criteria) if c["label"] == f"{metric} > {t:g}")
    return criteria, default


class _Collector:
    """Accumulates the page's images, ground-truth rows and sources, and the image files to write."""

    def __init__(self) -> None:
        self.images: list[dict[str, Any]] = []
        self.image_index: dict[tuple[str, str], int] = {}
        self.rows: list[dict[str, Any]] = []
        self.row_index: dict[tuple, int] = {}
        self.sources: list[dict[str, Any]] = []
        self.thresholds: set[str] = set()
        self.assets: dict[str, Callable[[], bytes]] = {}
        self.archives: list[HeatmapArchive] = []
        self.kind = heatmap_format()

    def image(self, data_key: str, images: _ImageSource, image_id: str, size: tuple[int, int]) -> int:
        """The index of an image (one thumbnail per image of a data folder, whatever the rows and methods)."""
        key = (data_key, image_id)
        if key not in self.image_index:
            self.image_index[key] = len(self.images)
            src = None
            if images.has(image_id):
                src = f"images/{len(self.images):05d}.jpg"
                self.assets[src] = _thumbnail_job(images, image_id, size)
            self.images.append({"id": image_id, "width": size[0], "height": size[1], "src": src})
        return self.image_index[key]

    def row(self, image: int, class_name: str, box: list) -> int:
        """The index of a ground-truth box row (the same box of the same image in two runs is one row)."""
        key = (image, class_name, *box)
        if key not in self.row_index:
            self.row_index[key] = len(self.rows)
            self.rows.append({"image": image, "class": class_name, "box": box})
        return self.row_index[key]

    def add_method(self, run_number: int, evaluation: Path, method: str, data_key: str, images: _ImageSource,
                   probabilities: pd.DataFrame | None, notes: list[str], checks: _Checks | None = None) -> None:
        """One source: the scores, boxes and heatmaps of ``method`` in an evaluation folder."""
        scores = _read_table(evaluation / f"scores_{method}.csv", REQUIRED_SCORE_COLUMNS)
        boxes = _read_table(evaluation / f"boxes_{method}.csv", BOX_FILE_COLUMNS)
        heatmap_path = evaluation / f"heatmaps_{method}.npz"
        heatmaps = HeatmapArchive(heatmap_path) if heatmap_path.is_file() else None
        if heatmaps is not None:
            self.archives.append(heatmaps)
        if not heatmaps:
            notes.append(f"{method}: no heatmaps_{method}.npz (boxes and scores only)")
        registration = load_registration(evaluation, method)
        source = _source(scores, boxes, evaluation / f"scores_{method}.csv")
        first = source.pop("first")
        folder = f"heatmaps/r{run_number}_{_safe(method)}"
        written: dict[tuple[str, str], str] = {}
        source_rows, heatmap_files, probability = [], [], []
        for record in first.itertuples():
            pair = (str(record.image_id), str(record.class_name))
            size = (int(record.original_width), int(record.original_height))
            image = self.image(data_key, images, pair[0], size)
            source_rows.append(self.row(image, pair[1], [_number(getattr(record, c)) for c in ("x", "y", "w", "h")]))
            if heatmaps is not None and pair in heatmaps and pair not in written:
                written[pair] = f"{folder}/{len(written):05d}.{self.kind}"
                self.assets[written[pair]] = _heatmap_job(heatmaps, pair, size, registration, self.kind)
            heatmap_files.append(written.get(pair))
            column = f"prob_{pair[1]}"
            known = probabilities is not None and pair[0] in probabilities.index and column in probabilities.columns
            probability.append(_number(probabilities.at[pair[0], column]) if known else None)  # type: ignore[union-attr]
        self.thresholds.update(source["scores"])
        checks = checks or _Checks()
        pairs = [(str(i), str(c)) for i, c in zip(first["image_id"], first["class_name"])]
        self.sources.append({"run": run_number, "method": method, "label": METHOD_LABELS.get(method, method),
                             "heatmaps": bool(heatmaps), "rows": source_rows, **source, "probability": probability,
                             "heatmap": heatmap_files, "checks": checks.of(method),
                             "mask": _mask_rows(checks, method, pairs)})


def explorer_content(summaries: Sequence[RunSummary], labels: Mapping[int, str] | None = None,
                     title: str = "thoracic explorer: every scored box row") -> ExplorerContent:
    """The explorer's data and image files for the localized runs among ``summaries``.

    ``labels`` names each run (by ``id(summary)``; default: its folder name). Runs without
    ``scores_<method>.csv`` are left out; with none localized, :class:`RunError`.

    The data (``data.js``) holds ``images`` (id, original width / height, thumbnail or null), ``rows``
    (one per distinct ground-truth box: image, class, ``box`` = x, y, w, h in original pixels), ``runs``
    and ``sources``: one per (run, heatmap method), with, aligned with its ``rows`` (indices into
    ``rows``) and ``box_rows`` (the CSV's ``box_row``), the CSV's ``n_predicted``, ``best_iou`` and
    ``best_iobb`` per heatmap threshold (``scores``), ``pointing`` and ``peak`` (when the file has them),
    ``probability`` (of the row's class on its image; null without predictions), the predicted ``boxes``
    per threshold and the ``heatmap`` image; from ``thoracic explain`` when the run was explained,
    ``checks`` (per check: title, one-line ``text``, ``flagged``: the check flags the method, null when it
    has no pass/fail) and ``mask`` (per row: ``iou`` per fixed heatmap threshold, ``iou_otsu``, ``hit``;
    null outside the explained draw; ``mask`` is null when no row was explained).
    """
    collected = _Collector()
    runs: list[dict[str, Any]] = []
    image_sources: dict[str, _ImageSource] = {}
    for summary in summaries:
        evaluation = summary.path / "evaluation"
        methods = discover_methods(evaluation)
        if not methods:
            continue
        # images are shared by the runs of one data folder (side by side: the same box in two runs)
        data_key = str(Path((summary.config.get("data", {}) or {}).get("root") or summary.path).resolve())
        if data_key not in image_sources:
            image_sources[data_key] = _ImageSource(summary)
        images = image_sources[data_key]
        probabilities, notes = _probabilities(summary, methods)
        checks, check_notes = _explain_checks(summary, methods)
        runs.append({"label": (labels or {}).get(id(summary), summary.path.name), "path": str(summary.path),
                     "probabilities": probabilities is not None, "explained": bool(checks.verdicts),
                     "notes": notes + check_notes + images.notes})
        for method in methods:
            collected.add_method(len(runs) - 1, evaluation, method, data_key, images, probabilities,
                                 runs[-1]["notes"], checks)
    if not collected.sources:
        names = ", ".join(str(s.path) for s in summaries)
        raise RunError(f"no localized run among {names}: the explorer needs evaluation/scores_<method>.csv "
                       "(run `thoracic localize RUN` first)")
    criteria, default_criterion = _criteria()
    thresholds = sorted(collected.thresholds, key=_threshold_order)
    data = {
        "format": 2, "title": title, "generated": datetime.now().isoformat(timespec="seconds"),
        "thresholds": thresholds,
        "default_threshold": HEADLINE_THRESHOLD if HEADLINE_THRESHOLD in thresholds else thresholds[0],
        "pooled_threshold": POOLED, "criteria": criteria, "default_criterion": default_criterion,
        "whole_image_fraction": WHOLE_IMAGE_FRACTION,
        "classes": sorted({row["class"] for row in collected.rows},
                          key=lambda c: (CLASS_INDEX.get(c, len(CLASS_INDEX)), c)),
        "images": collected.images, "rows": collected.rows, "runs": runs, "sources": collected.sources,
    }
    return ExplorerContent(data, collected.assets, collected.archives)


def _source(scores: pd.DataFrame, boxes: pd.DataFrame, path: Path) -> dict[str, Any]:
    """The per-row arrays of one scores file (aligned on the box rows of its first threshold) and the
    predicted boxes of each row's image and class."""
    order = sorted(scores["threshold"].unique(), key=_threshold_order)
    if not order:
        raise RunError(f"{path}: no scored box row; rerun `thoracic localize`")
    box_rows = scores.loc[scores["threshold"] == order[0], "box_row"].astype(int).tolist()
    if len(set(box_rows)) != len(box_rows):
        raise RunError(f"{path}: box_row repeated within heatmap threshold {order[0]}; the file is damaged "
                       "(rerun `thoracic localize`)")
    per_threshold: dict[str, dict[str, list]] = {}
    for threshold in order:
        part = scores[scores["threshold"] == threshold].set_index("box_row")
        if sorted(part.index.astype(int)) != sorted(box_rows):
            raise RunError(f"{path}: heatmap threshold {threshold} scores other box rows than threshold "
                           f"{order[0]}; the file is damaged (rerun `thoracic localize`)")
        part = part.loc[box_rows]
        per_threshold[threshold] = {column: [_number(v) for v in part[column]]
                                    for column in ("n_predicted", "best_iou", "best_iobb")}
    first = scores[scores["threshold"] == order[0]].set_index("box_row").loc[box_rows]
    pointing = [_number(v) for v in first["pointing"]] if "pointing" in first.columns else None
    peak = ([[_number(x), _number(y)] for x, y in zip(first["peak_x"], first["peak_y"])]
            if {"peak_x", "peak_y"} <= set(first.columns) else None)
    grouped: dict[tuple[str, str], dict[str, list]] = {}
    for record in boxes.itertuples(index=False):
        entry = grouped.setdefault((str(record.image_id), str(record.class_name)), {})
        entry.setdefault(record.threshold, []).append([_number(v) for v in (record.x, record.y, record.w, record.h)])
    predicted = [grouped.get((str(i), str(c)), {}) for i, c in zip(first["image_id"], first["class_name"])]
    return {"first": first, "box_rows": box_rows, "scores": per_threshold, "pointing": pointing, "peak": peak,
            "boxes": predicted}


def _thumbnail_job(source: _ImageSource, image_id: str, size: tuple[int, int]) -> Callable[[], bytes]:
    return lambda: thumbnail_bytes(source.image(image_id), size)


def _heatmap_job(archive: HeatmapArchive, pair: tuple[str, str], size: tuple[int, int], registration: Any,
                 kind: str) -> Callable[[], bytes]:
    return lambda: heatmap_bytes(archive.get(pair), size, registration, kind=kind)


# --------------------------------------------------------------------------------------------------
# Writing the folder
# --------------------------------------------------------------------------------------------------


def render_page(title: str) -> str:
    """``index.html`` (template ``explorer.html.j2``; it loads ``data.js`` beside it)."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("thoracic.reporting", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.get_template("explorer.html.j2").render(title=title, data_file=DATA_FILE)


def data_script(data: Mapping[str, Any]) -> str:
    """``data.js``: the data as one JavaScript assignment (a page opened from ``file://`` cannot fetch JSON)."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return f"window.THORACIC_EXPLORER = {text};\n"


def read_data_script(path: str | Path) -> dict[str, Any]:
    """The data of a ``data.js`` (inverse of :func:`data_script`)."""
    text = Path(path).read_text()
    prefix = "window.THORACIC_EXPLORER = "
    if not text.startswith(prefix):
        raise RunError(f"{path}: not an explorer data file")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


def _progress(items: Sequence[str], enabled: bool) -> Iterator[str]:
    if not enabled:
        return iter(items)
    from tqdm.auto import tqdm

    return iter(tqdm(items, desc="explorer images", unit="image"))


#: What the explorer folder's files come from (one source: each build replaces the previous one).
EXPLORER_SOURCE = OutputSource("explorer", "thoracic report's explorer page")


def write_explorer(content: ExplorerContent, out: str | Path, progress: bool = False) -> Path:
    """Write the explorer folder ``out`` (see the module docstring); returns the page's path.

    Raises:
        OutputPathError: ``out`` holds a file of a name the explorer writes that an earlier build did not
            write (nothing is written), or a damaged file list.
    """
    out = Path(out)
    files = [*sorted(content.assets), DATA_FILE, PAGE_FILE]
    with output_folder(out, "explorer", EXPLORER_SOURCE, option="explorer folder") as outputs:
        # every name first, before anything is written: a foreign file refuses the build, and an
        # interrupted build leaves only names a rerun owns
        outputs.claim(*files)
        try:
            for name in _progress(sorted(content.assets), progress):
                target = out / name
                target.parent.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(target, content.assets[name]())
        finally:
            content.close()
        write_text_atomic(out / DATA_FILE, data_script(content.data), encoding="utf-8")
        write_text_atomic(out / PAGE_FILE, render_page(str(content.data.get("title", "explorer"))), encoding="utf-8")
        for name in outputs.remove_previous():  # files of the previous build that this one does not write
            _remove_empty_parents((out / name).parent, out)
    return out / PAGE_FILE


def _remove_empty_parents(folder: Path, top: Path) -> None:
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def build_explorer(runs: Sequence[str | Path] | Sequence[RunSummary], out: str | Path,
                   labels: Mapping[int, str] | None = None, title: str = "thoracic explorer: every scored box row",
                   progress: bool = False) -> Path:
    """Write the explorer page of ``runs`` (run or experiment folders, or their :class:`RunSummary`) into
    ``out``; returns ``out/index.html``.

    ``labels`` (by ``id(summary)``) names the runs; by default the report's column labels (model,
    backbone and input size; inside a group of seeds, the run folder with the model beside it).
    """
    if all(isinstance(r, RunSummary) for r in runs):
        summaries = list(runs)
    else:
        summaries = [load_run_summary(p) for p in expand_runs([Path(r) for r in runs])]  # type: ignore[arg-type]
    if labels is None:
        labels = {id(r): g.run_label(r) for g in group_runs(summaries) for r in g.runs}
    return write_explorer(explorer_content(summaries, labels, title), out, progress)  # type: ignore[arg-type]


__all__ = ["DATA_FILE", "EXPLORER_FOLDER", "ExplorerContent", "HeatmapArchive", "MANIFEST_FILE", "PAGE_FILE", "build_explorer",
           "data_script", "discover_methods", "explorer_content", "heatmap_bytes", "read_data_script", "render_page",
           "thumbnail_bytes", "write_explorer"]
