"""Models: a registry of the paper's three networks on torchvision backbones.

``create_model(name, **kwargs)`` builds a registered model (``list_models()``: ``attention_gated``,
``baseline``, ``space_attention``); ``build_model(ModelConfig)`` does the same from a config. Every
model's ``forward(x, return_maps=False)`` returns a :class:`ModelOutput` with raw logits.
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

    Fields a model does not use (e.g. ``pooling`` for the attention-gated network) are not passed.
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
