"""Can these heatmaps be trusted? The checks of ``thoracic explain``, one module each.

* :mod:`~thoracic.evaluation.trust.randomization`: the cascading model randomization test (Adebayo et
  al. 2018): how similar the maps stay as the network's weights are re-initialised from the classifier
  down to the stem;
* :mod:`~thoracic.evaluation.trust.faithfulness`: deletion and insertion curves (Petsiuk et al. 2018)
  against a random order, and ROAD (Rong et al. 2022, pytorch-grad-cam's implementation);
* :mod:`~thoracic.evaluation.trust.masks`: mask metrics beside the box metrics (mIoU and hit rate of
  CheXlocalize, Saporta et al. 2022) at the fixed heatmap thresholds, at Otsu's and at per-class
  thresholds tuned on the other half of the patients;
* :mod:`~thoracic.evaluation.trust.repeatability`: the maps of several training seeds of one experiment
  compared image by image, and the spread of their localization;
* :mod:`~thoracic.evaluation.trust.common`: what they share (which box images, maps at the model input's
  resolution, map similarity, bootstrap CIs), :mod:`~thoracic.evaluation.trust.figures` their figures.

Each check is a pure function of maps, images and a model that returns tables; the ``explain`` workflow
(:mod:`thoracic.workflows.explain`) runs them on a run folder and writes the tables. Nothing here is
imported by ``thoracic.evaluation`` itself (torch and scikit-image load on use).
"""

from thoracic.constants import EXPLAIN_CHECKS as CHECKS
from thoracic.constants import EXPLAIN_NUM_IMAGES as DEFAULT_NUM_IMAGES

__all__ = ["CHECKS", "DEFAULT_NUM_IMAGES"]
