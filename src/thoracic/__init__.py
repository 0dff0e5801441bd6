"""thoracic: thoracic disease classification and weakly supervised localization on ChestX-ray14."""

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["BOX_CLASS_NAMES", "CLASS_NAMES", "NUM_CLASSES", "__version__"]
