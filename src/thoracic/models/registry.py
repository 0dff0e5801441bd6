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
    """Registered model names, sorted."""
    return MODELS.names()


def get_model_class(name: str) -> Callable[..., nn.Module]:
    """The registered constructor of ``name``; unknown names raise :class:`UnknownModelError`."""
    return MODELS.get(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with constructor keyword arguments ``kwargs``."""
    return get_model_class(name)(**kwargs)
