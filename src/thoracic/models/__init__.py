"""Models: a registry of the paper's three networks on torchvision backbones.

``create_model(name, **kwargs)`` builds a registered model (``list_models()``: ``attention_gated``,
``baseline``, ``space_attention``); ``build_model(ModelConfig)`` does the same from a config. Every
model's ``forward(x, return_maps=False)`` returns a :class:`ModelOutput` with raw logits.

Shapes, for ``x`` of ``(B, 3, H, W)`` ImageNet-normalised images (256 x 256 in the paper):

========================  ===================  ==============================================
model                     ``logits``           ``class_maps`` (``return_maps=True``)
========================  ===================  ==============================================
``baseline``              ``(B, 14)``          ``(B, 14, H/32, W/32)``: CAM, 8 x 8 at 256 px
``space_attention``       ``(B, 14)``          ``(B, 14, H/32, W/32)``: class maps
``attention_gated``       ``(B, 14)``          ``(B, 14, H/8, W/8)`` in [0, 1]: 32 x 32 at 256 px
========================  ===================  ==============================================

Logits are raw scores (``torch.sigmoid`` gives the 14 probabilities); maps are at the model's native
resolution (:mod:`thoracic.heatmaps` normalises them, :mod:`thoracic.heatmaps.boxes` resizes them
to the original image).

>>> import torch
>>> from thoracic.models import create_model, list_models
>>> images = torch.zeros(1, 3, 256, 256)
>>> for name in list_models():
...     model = create_model(name, backbone="resnet10").eval()
...     with torch.no_grad():
...         output = model(images, return_maps=True)
...     print(name, tuple(output.logits.shape), tuple(output.class_maps.shape), len(output.attention))
attention_gated (1, 14) (1, 14, 32, 32) 2
baseline (1, 14) (1, 14, 8, 8) 0
space_attention (1, 14) (1, 14, 8, 8) 0
"""

from __future__ import annotations

import dataclasses
import inspect

from torch import nn

from thoracic.config import ModelConfig
from thoracic.models import attention_gated as _attention_gated  # noqa: F401 - registers the model
from thoracic.models import baseline as _baseline  # noqa: F401 - registers the model
from thoracic.models import space_attention as _space_attention  # noqa: F401 - registers the model
from thoracic.models.attention_gated import AttentionGate, AttentionGated
from thoracic.models.backbones import Backbone, UnknownBackboneError, create_backbone, list_backbones
from thoracic.models.base import ThoracicModel
from thoracic.models.baseline import BaselineCAM
from thoracic.models.output import ModelOutput
from thoracic.models.registry import UnknownModelError, create_model, get_model_class, list_models, register_model
from thoracic.models.space_attention import SpaceAttention


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build ``cfg.name`` passing the :class:`~thoracic.config.ModelConfig` fields its constructor takes.

    Fields a model does not use (e.g. ``pooling`` for the attention-gated network) are not passed. This
    is how ``thoracic train`` builds the model of a YAML config (``model:`` section).

    >>> from thoracic.config import ModelConfig
    >>> from thoracic.models import build_model
    >>> model = build_model(ModelConfig(name="attention_gated", backbone="resnet10", pretrained=False))
    >>> type(model).__name__, model.num_classes, model.aggregation
    ('AttentionGated', 14, 'concat')
    """
    factory = get_model_class(cfg.name)
    accepted = inspect.signature(factory).parameters
    kwargs = {
        field.name: getattr(cfg, field.name)
        for field in dataclasses.fields(cfg)
        if field.name != "name" and field.name in accepted
    }
    return factory(**kwargs)


__all__ = [
    "AttentionGate",
    "AttentionGated",
    "Backbone",
    "BaselineCAM",
    "ModelOutput",
    "SpaceAttention",
    "ThoracicModel",
    "UnknownBackboneError",
    "UnknownModelError",
    "build_model",
    "create_backbone",
    "create_model",
    "get_model_class",
    "list_backbones",
    "list_models",
    "register_model",
]
