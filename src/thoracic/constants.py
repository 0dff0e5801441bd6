"""Dataset-wide constants: the one canonical class order and image normalisation.

The class order is the order of the columns of every label matrix, logit vector, heatmap stack,
predictions file and metrics table in this project. It is stored with every artefact
(cache manifest, checkpoint, predictions) and checked when an artefact is read back.
It follows the order of Wang et al. (2017), Table 1, and the seed paper's Table 1.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NUM_CLASSES: int = len(CLASS_NAMES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

#: The 8 classes that carry radiologist boxes in BBox_List_2017.csv, in canonical order.
BOX_CLASS_NAMES: tuple[str, ...] = CLASS_NAMES[:8]

#: Label spellings found in the NIH files that map to a canonical class.
LABEL_ALIASES: dict[str, str] = {"Infiltrate": "Infiltration"}

#: The label NIH uses for an image with none of the 14 findings.
NO_FINDING: str = "No Finding"

#: The dataset layouts thoracic reads (``--dataset`` / ``data.dataset``; ``auto`` detects the layout):
#: NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG, PadChest, VinDr-CXR, RSNA Pneumonia
#: (:mod:`thoracic.data.datasets`, docs/data.md).
DATASET_KINDS: tuple[str, ...] = ("chestxray14", "chexpert", "mimic", "padchest", "vindr", "rsna")

#: What an uncertain label (CheXpert's and MIMIC-CXR's -1) becomes (``data.uncertain``): missing (NaN,
#: skipped by the loss and the metrics), 0 or 1: Irvin et al. 2019's U-Ignore, U-Zeros and U-Ones.
UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "zeros", "ones")

#: How images are normalised before the network (``data.normalize``): ``(x / 255 - mean) / std`` with
#: ImageNet's statistics, or ``x / 255`` (``none``).
NORMALIZATIONS: tuple[str, ...] = ("imagenet", "none")

#: ImageNet channel statistics (torchvision), used because the backbones are ImageNet-pretrained.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Side of the original NIH images, in pixels.
NIH_IMAGE_SIZE: int = 1024

#: Readable names of the models and heatmap methods in figures and reports.
MODEL_LABELS: dict[str, str] = {"baseline": "baseline (CAM)", "space_attention": "space attention",
                                "attention_gated": "attention-gated"}
METHOD_LABELS: dict[str, str] = {"native": "native heatmap", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++",
                                 "smoothgrad": "SmoothGrad", "occlusion": "occlusion"}

#: Heatmap thresholds on the 0-255 scale (Wang et al. 2017); ``thoracic.heatmaps.boxes`` re-exports them.
HEATMAP_THRESHOLDS: tuple[int, ...] = (60, 180)

#: Where heatmap cells sit in the image (``--registration``; ``thoracic.geometry``), the default first.
REGISTRATIONS: tuple[str, ...] = ("geometric", "legacy")

#: ``--checkpoint`` values that name a checkpoint of a run folder; any other value is a ``.ckpt`` path.
CHECKPOINT_NAMES: tuple[str, ...] = ("best", "last")

#: The checks of ``thoracic explain``, in the order they run (repeatability only for an experiment folder).
EXPLAIN_CHECKS: tuple[str, ...] = ("randomization", "faithfulness", "masks", "repeatability")
#: Box images the checks use by default (``thoracic explain --num-images``; 0: all).
EXPLAIN_NUM_IMAGES: int = 16
#: The faithfulness verdict that flags a method (no gain over a random order; see
#: ``thoracic.evaluation.trust.faithfulness.faithfulness_verdicts``): the explorer and the demo flag it.
NOT_FAITHFUL: str = "not better than a random order"

#: ``localize --ground-truth``: what the boxes of several readers of an image become (the default first;
#: ``thoracic.evaluation.readers``).
GROUND_TRUTH_POLICIES: tuple[str, ...] = ("each", "any", "consensus")
#: ``localize --split``: the box rows of the test images, or of every image (another dataset than the run's).
BOX_SPLITS: tuple[str, ...] = ("test", "all")
#: The record of a dataset a run was scored on, in its sub-folder of ``<run>/evaluation/`` (cross-dataset
#: validation; ``thoracic.workflows.common``), which the report reads.
TEST_SET_FILE: str = "test_set.json"
