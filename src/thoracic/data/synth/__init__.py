"""Phantom chest X-rays: a ChestX-ray14-shaped folder with known, exact lesion boxes.

:func:`generate_phantom_dataset` writes a folder in exactly the NIH layout (``images/`` or the tarballs'
``images_0XX/images/``, ``Data_Entry_2017_v2020.csv`` and ``BBox_List_2017.csv`` with the real headers,
``train_val_list.txt`` / ``test_list.txt`` without trailing newline, patient-disjoint, patients with
several follow-ups), so every command runs on it unchanged.

What an image is. A frontal "radiograph" drawn with vectorised numpy in normalised coordinates: body,
two lung fields with vascular markings, mediastinum and heart, diaphragm domes, ribs and clavicles; then
blur, noise and random contrast / brightness / gamma / small shifts. Per patient the anatomy (body and
lung size, heart size, diaphragm level, rib spacing) is fixed; follow-ups differ in acquisition.

Findings. All 14 classes, each with its own shape, texture, intensity and anatomical prior, chosen to be
visible and distinct at 128 px (so a small CNN learns them from image labels alone and its class maps
point at them):

=====================  ======================================================================
Atelectasis            thin oblique plate-like band in a lower lung zone
Cardiomegaly           heart enlarged 1.4-1.6x (box: the heart)
Effusion               basal homogeneous opacity with a meniscus rising towards the chest wall
Infiltration           5-8 ill-defined small patches scattered in a mid/upper zone
Mass                   large (r 6.5-9.5% of width) lobulated sharp round opacity in a lung
Nodule                 small (r 2.5-3.5%) very dense round opacity in a lung
Pneumonia              large fluffy lower-zone opacity with dark radial air bronchograms
Pneumothorax           lucent apical/lateral crescent without lung markings, bright pleural line
Consolidation          dense homogeneous upper-zone opacity with one straight (fissure) border
Edema                  bilateral symmetric perihilar haze (bat wing)
Emphysema              larger, darker lungs, flat diaphragm, a few bullae (box: both lungs)
Fibrosis               reticular net (rotated grid of fine lines) in both lower lateral zones
Pleural_Thickening     dense band along the lateral chest wall of one lung
Hernia                 retrocardiac round shadow with an air-fluid level
=====================  ======================================================================

Families (``family``, :data:`FAMILIES`). ``A`` is the table above. ``B`` is a second family designed
differently for the box classes (other shapes, positions and sizes; the other classes and the anatomy
are shared), so that a localization result can be checked on findings the first design did not shape:

=====================  ======================================================================
Atelectasis            wedge (triangle) in an upper zone, apex at the hilum, base on the chest wall
Cardiomegaly           as in A (the heart is anatomy)
Effusion               bilateral: thin basal layers under both lungs (a wide, flat box)
Infiltration           3-5 thin linear streaks beside the heart border (medial lower zone)
Mass                   cavitating: bright square-ish rim (superellipse) around a dark centre, upper
                       zone or near the hilum (r 5-8% of width)
Nodule                 tiny (r 1.6-2.4%) spiculated dense star in the lateral third of a lung
Pneumonia              lobar: the whole lung above a horizontal fissure, mottled (a tall box)
Pneumothorax           deep sulcus: lucent crescent at the lateral costophrenic angle (basal)
=====================  ======================================================================

Every instance has an exact box: the bounding box of the pixels where its own mask exceeds 0.5. All of
them go to ``phantom_findings.csv`` (beside the NIH files); ``BBox_List_2017.csv`` gets rows for the 8
box classes on a subset of the test images, mostly one row per image and all rows on some, like the
real file.

Prevalence (:data:`PREVALENCE`): roughly like NIH, in NIH's order of frequency (Infiltration 8% ...
Hernia 3%) and with most images (about 54%, NIH: 54%) without finding, but compressed so that every
class is positive in at least 3% of images (NIH's rarest, Hernia, is 0.2%): a set of ~2,000 images
then has about 60 positives of the rarest class, enough to learn it and to measure an AUC. Classes
are drawn from equidistributed sequences (:func:`finding_draws`), so counts are within one or two of
``N * p`` even in tiny sets, and co-occur as if independent.

Determinism: the patient structure comes from ``seed``; each image is drawn from its own generator
seeded with ``(seed, index)`` (and its patient's anatomy from ``(seed, patient)``), so an image does not
depend on the order of generation or on the number of workers.

Phantom results say nothing clinical: the findings are drawn to be learnable and localizable, not to
resemble disease; a model's score on phantoms only shows that the pipeline works.

Modules (every public name is importable from here):

=====================================  ==============================================================
:mod:`~thoracic.data.synth.shapes`     drawing primitives, the anatomy, the ``Scene`` a finding is
                                       drawn on and the ``Drawer`` type of a draw function
:mod:`~thoracic.data.synth.family_a`   one draw function per finding, in the table ``FAMILY_A``
:mod:`~thoracic.data.synth.family_b`   family B's draw functions, in the table ``FAMILY_B``
:mod:`~thoracic.data.synth.render`     one image: :func:`render_phantom` draws each present finding
                                       with its family's table (:data:`FAMILIES`); :data:`PREVALENCE`
:mod:`~thoracic.data.synth.folder`     the folder: :func:`generate_phantom_dataset`, its marker,
                                       :func:`folder_kind`
=====================================  ==============================================================

Adding a finding's design is one draw function and one entry in a family's table.
"""

from __future__ import annotations

from thoracic.data.synth.folder import (
    GENERATOR_VERSION,
    INFO_FILE,
    MARKER_FILE,
    TRUTH_FILE,
    folder_kind,
    generate_phantom_dataset,
    synth_owned_files,
)
from thoracic.data.synth.layouts import LAYOUTS, PHANTOM_LABELS, generate_layout
from thoracic.data.synth.render import FAMILIES, PREVALENCE, PhantomImage, finding_draws, render_phantom, save_png
from thoracic.data.synth.shapes import Drawer

__all__ = [
    "FAMILIES",
    "GENERATOR_VERSION",
    "INFO_FILE",
    "LAYOUTS",
    "MARKER_FILE",
    "PHANTOM_LABELS",
    "PREVALENCE",
    "TRUTH_FILE",
    "Drawer",
    "PhantomImage",
    "finding_draws",
    "folder_kind",
    "generate_layout",
    "generate_phantom_dataset",
    "render_phantom",
    "save_png",
    "synth_owned_files",
]
