"""Models: a registry of the paper's three networks on torchvision backbones.

``create_model(name, **kwargs)`` builds a registered model (``list_models()``: ``attention_gated``,
``baseline``, ``space_attention``); ``build_model(ModelConfig)`` does the same from a config, refusing an
option the chosen model does not take (``model_options(name)`` lists those it takes). Every
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

from thoracic.config import ConfigError, ModelConfig
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


def model_options(name: str) -> tuple[str, ...]:
    """The :class:`~thoracic.config.ModelConfig` fields (besides ``name``) that model ``name`` takes, in
    config order: the fields its constructor has a parameter for.

    >>> from thoracic.models import model_options
    >>> model_options("space_attention")
    ('backbone', 'pretrained', 'weights', 'freeze_backbone', 'num_classes', 'output_stride')
    """
    accepted = inspect.signature(get_model_class(name)).parameters
    return tuple(field.name for field in dataclasses.fields(ModelConfig)
                 if field.name != "name" and field.name in accepted)


def check_model_config(cfg: ModelConfig) -> None:
    """Refuse an option that ``cfg.name`` does not take, set to another value than its default.

    An option of another model left at its default (as in every packaged config) is fine; set to anything
    else, it would silently do nothing (e.g. ``model.pooling=avg`` for ``attention_gated``).

    Raises:
        ConfigError: naming each such option and the model, and listing the options the model takes.
    """
    taken = set(model_options(cfg.name))
    misplaced = [f"model.{field.name}={getattr(cfg, field.name)!r}" for field in dataclasses.fields(cfg)
                 if field.name != "name" and field.name not in taken and getattr(cfg, field.name) != field.default]
    if misplaced:
        options = ", ".join(f"model.{option}" for option in model_options(cfg.name))
        raise ConfigError(f"{', '.join(misplaced)}: model {cfg.name!r} does not take "
                          f"{'this option' if len(misplaced) == 1 else 'these options'}; it takes {options}")


def build_model(cfg: ModelConfig, *, strict: bool = True) -> nn.Module:
    """Build ``cfg.name`` passing the :class:`~thoracic.config.ModelConfig` fields its constructor takes.

    ``strict`` (default): an option the model does not take, set to a non-default value, is a
    :class:`~thoracic.config.ConfigError` (:func:`check_model_config`). ``strict=False`` builds it anyway,
    without the option: for the config stored in a checkpoint written before options were checked, whose
    model was built that way. This is how ``thoracic train`` builds the model of a YAML config
    (``model:`` section).

    >>> from thoracic.config import ConfigError, ModelConfig
    >>> from thoracic.models import build_model
    >>> model = build_model(ModelConfig(name="attention_gated", backbone="resnet10", pretrained=False))
    >>> type(model).__name__, model.num_classes, model.aggregation
    ('AttentionGated', 14, 'concat')
    >>> build_model(ModelConfig(name="attention_gated", pooling="avg"))
    Traceback (most recent call last):
    thoracic.config.ConfigError: model.pooling='avg': model 'attention_gated' does not take this option; it takes model.backbone, model.pretrained, model.weights, model.freeze_backbone, model.num_classes, model.output_stride, model.gating, model.attention_normalization, model.aggregation, model.attention_pooling
    """
    if strict:
        check_model_config(cfg)
    # num_classes None (not resolved from the data yet): the model's own default, ChestX-ray14's 14
    kwargs = {option: getattr(cfg, option) for option in model_options(cfg.name)
              if not (option == "num_classes" and cfg.num_classes is None)}
    return get_model_class(cfg.name)(**kwargs)


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
    "check_model_config",
    "create_backbone",
    "create_model",
    "get_model_class",
    "list_backbones",
    "list_models",
    "model_options",
    "register_model",
]
