"""Models: a registry of the paper's three networks on torchvision backbones."""

from thoracic.models.output import ModelOutput

__all__ = ["ModelOutput"]
