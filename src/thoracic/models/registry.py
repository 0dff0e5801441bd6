"""The model registry: ``create_model(name, **kwargs)`` and ``list_models()``, filled by a decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from thoracic.errors import ThoracicError

ModelFactory = TypeVar("ModelFactory", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ThoracicError, ValueError):
    """A model name that is not registered; the message lists the valid ones."""


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Class decorator: make a model constructible as ``create_model(name, **kwargs)``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def get_model_class(name: str) -> Callable[..., nn.Module]:
    """The registered constructor of ``name``; unknown names raise :class:`UnknownModelError`."""
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with constructor keyword arguments ``kwargs``."""
    return get_model_class(name)(**kwargs)
