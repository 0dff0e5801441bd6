"""Boxes drawn by several readers: which boxes are the ground truth (the policy), and how well the readers
agree with each other (the human row).

VinDr-CXR's training images were each read by three of 17 radiologists, independently: an image carries
every reader's boxes (``reader_id``), and the readers disagree. What a model's heatmap is scored against
must then be said (``--ground-truth``, :data:`GROUND_TRUTH_POLICIES`):

``each``
    Every reader's box is a ground-truth row of its own (the default): accuracy is the share of the
    readers' boxes the model localizes, every reader counting as the reference in turn.
``any``
    One row per finding that at least one reader boxed: boxes of one image and class drawn by different
    readers are the same finding when their IoU exceeds :data:`READER_MATCH_IOU` (linked boxes form one
    finding, also through a chain of links), and the finding's box is the mean of its boxes' corners
    (the readers' boxes fused with equal weights, as Weighted Boxes Fusion does with equal scores).
``consensus``
    The findings of ``any`` that more than half of the image's readers boxed (2 of 3): a majority of
    the readers, after matching. An image whose boxes are the dataset's own consensus (VinDr-CXR's test
    set: reader ``consensus``) keeps them as they are under every policy.

The **human row** (:func:`human_agreement`) scores each reader's boxes against the other readers' boxes of
the same image with the model's metrics: the other readers' boxes, under the same policy (the majority
of the others for ``consensus``), are the ground-truth rows, the reader's own boxes of the same (image,
class) pairs are the predicted boxes, and the centre of the reader's largest box of the class is its
pointing-game point (a reader who boxed nothing there misses). Like the model, which is asked only about
the (image, class) pairs that have ground truth, a reader's boxes count only on pairs the others boxed.
Rows are pooled over every (image, reader) pair, so false positives are per image *and reader*.
Defined only where an image has boxes of at least two named readers.

Matching is written here: ``ensemble-boxes``' Weighted Boxes Fusion clusters greedily by confidence and
does not report which readers formed a cluster, which the majority rule needs; the IoU is
:func:`~thoracic.evaluation.localization.iou` and the linked boxes are joined by
``scipy.sparse.csgraph.connected_components``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from thoracic.constants import GROUND_TRUTH_POLICIES
from thoracic.errors import DataError
from thoracic.evaluation.localization import (
    ACCURACY_COLUMNS,
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    iou,
    localization_accuracy,
    pointing_accuracy,
    pointing_game,
    score_localization,
)
from thoracic.heatmaps.upsampling import expand_runs

#: Two readers' boxes of one image and class are the same finding when their IoU exceeds this: the match
#: criterion of the VinBigData Chest X-ray Abnormalities Detection challenge on VinDr-CXR (mAP at IoU > 0.4).
READER_MATCH_IOU = 0.4
#: The reader id of a dataset's own consensus boxes (VinDr-CXR's test set).
CONSENSUS_READER = "consensus"
#: ``source`` of the human row in accuracy tables.
HUMAN_SOURCE = "human readers"
#: Columns of :func:`ground_truth_rows` (``ground_truth_<method>.csv``), before any extra columns kept.
GROUND_TRUTH_COLUMNS: list[str] = ["box_row", "image_id", "class_name", "x", "y", "w", "h", "original_width",
                                   "original_height", "reader_id", "n_readers", "n_marked", "source_rows"]
#: Columns of :attr:`HumanAgreement.scores` (``human_scores_<method>.csv``).
HUMAN_SCORE_COLUMNS: list[str] = ["reader_id", "image_id", "class_name", "box_row", "x", "y", "w", "h",
                                  "n_predicted", "best_iou", "best_iobb", "pointing"]
_NEEDED = ["image_id", "class_name", "x", "y", "w", "h", "reader_id"]
_KEY = "\t"  # joins an image id and a reader id into the key of one (image, reader) pair


def check_policy(policy: str) -> str:
    """``policy`` itself when it is one of :data:`GROUND_TRUTH_POLICIES`."""
    if policy not in GROUND_TRUTH_POLICIES:
        raise DataError(f"ground-truth policy {policy!r} unknown; expected one of {', '.join(GROUND_TRUTH_POLICIES)} "
                        "(--ground-truth)")
    return policy


def _check(boxes: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _NEEDED if c not in boxes.columns]
    if missing:
        raise DataError(f"reader box table lacks columns {missing} (has {list(boxes.columns)})")
    boxes = boxes.reset_index(drop=True).copy()
    boxes["reader_id"] = boxes["reader_id"].fillna("").astype(str)
    if "source_row" not in boxes.columns:
        boxes["source_row"] = np.arange(len(boxes))
    return boxes


def image_readers(boxes: pd.DataFrame, table: pd.DataFrame | None = None) -> dict[str, tuple[str, ...]]:
    """The readers of every image of ``boxes``: the dataset table's ``reader_ids`` (space-separated: every
    reader of the image, also one who drew no box; VinDr-CXR) where it has them, together with the readers
    named by the image's boxes; ``("",)`` for an image whose boxes name no reader."""
    listed: dict[str, set[str]] = {}
    if table is not None and "reader_ids" in table.columns:
        for image_id, names in zip(table["image_id"].astype(str), table["reader_ids"].fillna("").astype(str)):
            listed[image_id] = set(names.split())
    for image_id, reader in zip(boxes["image_id"].astype(str), boxes["reader_id"].fillna("").astype(str)):
        listed.setdefault(image_id, set()).add(reader)
    return {image_id: tuple(sorted(names - {""})) or ("",) for image_id, names in listed.items()}


def match_findings(boxes: pd.DataFrame, match_iou: float = READER_MATCH_IOU) -> np.ndarray:
    """A finding number per box row: boxes of one image and class whose IoU exceeds ``match_iou`` and whose
    readers differ are linked; each connected group of linked boxes is one finding (numbered 0, 1, ... in
    the order of its first row)."""
    boxes = _check(boxes)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys, _ = pd.factorize(boxes["image_id"].astype(str) + _KEY + boxes["class_name"].astype(str))
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    end = np.searchsorted(ordered, ordered, side="right")
    position = np.arange(n)
    owner, partner = expand_runs(position + 1, end - position - 1)  # every pair (p, q > p) of one group
    a, b = order[owner], order[partner]
    coords = boxes[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    readers = boxes["reader_id"].to_numpy(dtype=object)
    linked = (iou(coords[a], coords[b]) > match_iou) & (readers[a] != readers[b]) if len(a) else np.zeros(0, bool)
    graph = coo_matrix((np.ones(int(linked.sum())), (a[linked], b[linked])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber in the order of each finding's first row
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[labels]


def ground_truth_rows(boxes: pd.DataFrame, policy: str, readers: Mapping[str, Sequence[str]],
                      match_iou: float = READER_MATCH_IOU) -> pd.DataFrame:
    """The ground-truth box rows of ``boxes`` under ``policy`` (module docs).

    Args:
        boxes: one row per reader's box: ``image_id, class_name, x, y, w, h, reader_id`` (original pixels;
            ``reader_id`` empty when the dataset names none), optionally ``source_row`` (the row in the
            dataset's box table), ``original_width`` / ``original_height`` and any other columns (kept from
            a finding's first box).
        readers: image id -> its readers (:func:`image_readers`); the majority of ``consensus`` is over them.

    Returns:
        :data:`GROUND_TRUTH_COLUMNS` plus the other columns of ``boxes``: ``box_row`` numbers the rows
        0, 1, ...; ``reader_id`` is the reader of the box (``each``) or the readers who boxed the finding,
        space-separated; ``n_readers`` the readers of the image; ``n_marked`` how many of them boxed the
        finding (1 under ``each``); ``source_rows`` the ``source_row`` values of its boxes.
    """
    check_policy(policy)
    boxes = _check(boxes)
    extra = [c for c in boxes.columns if c not in (*GROUND_TRUTH_COLUMNS, "source_row", "box_row")]
    n_readers = np.array([len(readers.get(i) or ("",)) for i in boxes["image_id"].astype(str)], dtype=np.int64)
    if policy == "each":
        out = boxes.assign(n_readers=n_readers, n_marked=1, source_rows=boxes["source_row"].astype(str))
    else:
        finding = match_findings(boxes, match_iou)
        corners = boxes.assign(x1=boxes["x"] + boxes["w"], y1=boxes["y"] + boxes["h"], finding=finding,
                               n_readers=n_readers, source_rows=boxes["source_row"].astype(str))
        grouped = corners.groupby("finding", sort=True)
        out = grouped[["image_id", "class_name", "n_readers", *extra,
                       *[c for c in ("original_width", "original_height") if c in corners]]].first()
        means = grouped[["x", "y", "x1", "y1"]].mean()
        out["x"], out["y"] = means["x"], means["y"]
        out["w"], out["h"] = means["x1"] - means["x"], means["y1"] - means["y"]
        named = grouped["reader_id"].agg(lambda r: sorted(set(r)))
        out["reader_id"] = named.map(" ".join)
        out["n_marked"] = named.map(len).astype(np.int64)
        out["source_rows"] = grouped["source_rows"].agg(" ".join)
        if policy == "consensus":
            out = out[out["n_marked"] * 2 > out["n_readers"]]
        out = out.reset_index(drop=True)
    out = out.reset_index(drop=True)
    out["box_row"] = np.arange(len(out), dtype=np.int64)
    columns = [c for c in GROUND_TRUTH_COLUMNS if c in out.columns]
    return out[columns + [c for c in extra if c in out.columns]]


@dataclass(frozen=True)
class HumanAgreement:
    """The human row: each reader's boxes scored against the other readers' (:func:`human_agreement`)."""

    accuracy: pd.DataFrame
    """The accuracy table (``source`` = :data:`HUMAN_SOURCE`, then :data:`ACCURACY_COLUMNS`; ``threshold``
    empty): IoU and IoBB accuracy with false positives per image and reader, and the pointing game."""
    scores: pd.DataFrame
    """:data:`HUMAN_SCORE_COLUMNS`: every ground-truth row of the other readers with the scored reader's best
    IoU / IoBB, its boxes on the pair and its pointing-game hit."""
    n_pairs: int
    """(image, reader) pairs scored: those where the other readers' boxes leave ground truth."""
    readers: tuple[str, ...]
    """The readers scored."""
    reason: str = ""
    """Why the row is not defined (empty when it is)."""

    @property
    def defined(self) -> bool:
        return not self.reason


def _undefined(reason: str) -> HumanAgreement:
    return HumanAgreement(pd.DataFrame(columns=["source", *ACCURACY_COLUMNS]),
                          pd.DataFrame(columns=HUMAN_SCORE_COLUMNS), 0, (), reason)


def human_agreement(boxes: pd.DataFrame, policy: str, readers: Mapping[str, Sequence[str]],
                    class_names: Sequence[str], match_iou: float = READER_MATCH_IOU,
                    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
                    iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS) -> HumanAgreement:
    """Each reader's boxes against the other readers' boxes of the same images (module docs), with the
    metrics of :func:`~thoracic.evaluation.localization.localization_accuracy` and the pointing game.

    Args:
        boxes: every reader's boxes (as :func:`ground_truth_rows` takes them), in original pixels.
        policy: what the other readers' boxes become (:data:`GROUND_TRUTH_POLICIES`).
        readers: image id -> its readers (:func:`image_readers`).
        class_names: the classes of the tables (and their ``Mean``).
    """
    check_policy(policy)
    boxes = _check(boxes)
    named = {image: tuple(r for r in names if r and r != CONSENSUS_READER) for image, names in readers.items()}
    if not (boxes["reader_id"] != "").any():
        return _undefined("the boxes name no readers (one reference per image, e.g. RSNA Pneumonia's adjudicated "
                          "boxes): no reader to compare with another")
    if not (boxes["reader_id"].replace(CONSENSUS_READER, "") != "").any():
        return _undefined("the boxes are the dataset's consensus (one reference per image; VinDr-CXR's training "
                          "images, three readers each, are scored with --split all)")
    pairs = pd.DataFrame([(image, reader) for image, names in named.items() if len(names) >= 2 for reader in names],
                         columns=["image_id", "scored"])
    if pairs.empty:
        return _undefined("no image has two or more readers (e.g. VinDr-CXR's test set holds the consensus only; "
                          "its training images, three readers each, are scored with --split all)")
    pairs = pairs[pairs["image_id"].isin(set(boxes["image_id"].astype(str)))]
    with_boxes = boxes.assign(image_id=boxes["image_id"].astype(str))
    # the other readers' boxes of every (image, scored reader) pair, keyed by the pair
    others = with_boxes.merge(pairs, on="image_id")
    others = others[others["reader_id"] != others["scored"]]
    others = others.assign(image_id=others["image_id"] + _KEY + others["scored"]).drop(columns="scored")
    keyed_readers = {f"{image}{_KEY}{reader}": tuple(r for r in named[image] if r != reader)
                     for image, reader in pairs.itertuples(index=False)}
    truth = ground_truth_rows(others, policy, keyed_readers, match_iou)
    if truth.empty:
        return _undefined("the other readers' boxes leave no ground truth under this policy")
    # the scored reader's own boxes on the pairs (image, class) the others boxed
    own = with_boxes.assign(image_id=with_boxes["image_id"] + _KEY + with_boxes["reader_id"])
    wanted = pd.MultiIndex.from_frame(truth[["image_id", "class_name"]]).unique()
    own = own[pd.MultiIndex.from_frame(own[["image_id", "class_name"]]).isin(wanted)].reset_index(drop=True)
    predicted = own[["image_id", "class_name", "x", "y", "w", "h"]].assign(threshold="reader", score=1.0)
    largest = own.assign(area=own["w"] * own["h"]).sort_values("area", ascending=False, kind="stable")
    largest = largest.drop_duplicates(["image_id", "class_name"])
    points = largest[["image_id", "class_name"]].assign(x=largest["x"] + largest["w"] / 2,
                                                        y=largest["y"] + largest["h"] / 2)
    hits = pointing_game(truth, points)
    accuracy = pd.concat([localization_accuracy(truth, predicted, class_names, iou_thresholds, iobb_thresholds,
                                                pooled=False),
                          pointing_accuracy(truth, hits, class_names)], ignore_index=True)
    accuracy = accuracy.assign(threshold="", source=HUMAN_SOURCE)[["source", *ACCURACY_COLUMNS]]
    scored = score_localization(truth, predicted, pooled=False)[["box_row", "n_predicted", "best_iou", "best_iobb"]]
    scores = truth[["box_row", "image_id", "class_name", "x", "y", "w", "h"]].merge(scored, on="box_row")
    scores = scores.merge(hits[["box_row", "hit"]].rename(columns={"hit": "pointing"}), on="box_row")
    split = scores["image_id"].str.split(_KEY, n=1, expand=True)
    scores = scores.assign(image_id=split[0], reader_id=split[1], pointing=scores["pointing"].astype(int))
    scored_pairs = scores[["image_id", "reader_id"]].drop_duplicates()  # the pairs with ground truth
    return HumanAgreement(accuracy.reset_index(drop=True), scores[HUMAN_SCORE_COLUMNS], int(len(scored_pairs)),
                          tuple(sorted(set(scored_pairs["reader_id"]))))


__all__ = ["CONSENSUS_READER", "GROUND_TRUTH_COLUMNS", "GROUND_TRUTH_POLICIES", "HUMAN_SCORE_COLUMNS", "HUMAN_SOURCE",
           "HumanAgreement", "READER_MATCH_IOU", "check_policy", "ground_truth_rows", "human_agreement",
           "image_readers", "match_findings"]
