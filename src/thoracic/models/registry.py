"""The model registry: ``create_model(name, **kwargs)`` and ``list_models()``, filled by a decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from thoracic.errors import ThoracicError

ModelFactory = TypeVar("ModelFactory", bound=Callable[..., nn.Module])
Factory = TypeVar("Factory", bound=Callable[..., Any])


class Registry:
    """Names -> factories, filled by a decorator; an unknown name raises ``error`` listing the valid ones.

    Args:
        kind: what is registered, for messages (``"model"``, ``"backbone"``).
        error: the exception type raised for an unknown name.
    """

    def __init__(self, kind: str, error: type[Exception]) -> None:
        self.kind = kind
        self.error = error
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        """Decorator: register ``factory`` under ``name`` (a name registered twice is an error)."""

        def decorator(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory of ``name``; unknown names raise ``error`` with the valid names."""
        try:
            return self._factories[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}") from None


class UnknownModelError(ThoracicError, ValueError):
    """A model name that is not registered; the message lists the valid ones."""


MODELS = Registry("model", UnknownModelError)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Class decorator: make a model constructible as ``create_model(name, **kwargs)``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Registered model names, sorted (what ``create_model`` and ``model.name`` in a config accept).

    >>> from thoracic.models import list_models
    >>> list_models()
    ['attention_gated', 'baseline', 'space_attention']
    """
    return MODELS.names()


def get_model_class(name: str) -> Callable[..., nn.Module]:
    """The registered constructor of ``name``; unknown names raise :class:`UnknownModelError`."""
    return MODELS.get(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with constructor keyword arguments ``kwargs``.

    Common arguments: ``backbone`` (a :func:`~thoracic.models.list_backbones` name, default
    ``resnet34``), ``pretrained`` (ImageNet weights), ``weights`` (a local state dict), ``freeze_backbone``,
    ``num_classes`` (14); model-specific ones are those of its class (:class:`~thoracic.models.BaselineCAM`,
    :class:`~thoracic.models.SpaceAttention`, :class:`~thoracic.models.AttentionGated`). Raises
    :class:`UnknownModelError` (listing the valid names) for an unknown ``name``.

    The model takes ``(B, 3, H, W)`` float images (ImageNet-normalised) and returns a
    :class:`~thoracic.models.ModelOutput`: raw logits ``(B, 14)`` (apply a sigmoid for probabilities) and,
    with ``return_maps=True``, class maps ``(B, 14, H/32, W/32)`` (``H/8, W/8`` for ``attention_gated``).

    >>> import torch
    >>> from thoracic.models import create_model
    >>> model = create_model("baseline", backbone="resnet10").eval()
    >>> with torch.no_grad():
    ...     output = model(torch.zeros(2, 3, 128, 128), return_maps=True)
    >>> tuple(output.logits.shape), tuple(output.class_maps.shape)
    ((2, 14), (2, 14, 4, 4))
    >>> create_model("resnet_attention")
    Traceback (most recent call last):
    thoracic.models.registry.UnknownModelError: unknown model 'resnet_attention'; valid models: attention_gated, baseline, space_attention
    """
    return get_model_class(name)(**kwargs)
