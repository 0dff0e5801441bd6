"""Old names that keep working for one release: the one wording of their warning, and renamed keywords.

thoracic uses one name per meaning across its commands, its config and its Python API (the table in
docs/cli.md). When a name changes, the old spelling keeps working for one release and says which name
replaces it: on the command line a warning on stderr (:mod:`thoracic.commands._options`), in the Python
API a :class:`FutureWarning` (shown by default, unlike ``DeprecationWarning``, to the users of a library
as well as to its developers) raised by :func:`renamed_keywords`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from thoracic.errors import ThoracicError

F = TypeVar("F", bound=Callable[..., Any])


def deprecation_message(old: str, new: str) -> str:
    """``'OLD is deprecated: use NEW (OLD will be removed in the next release)'``, the one wording."""
    return f"{old} is deprecated: use {new} ({old} will be removed in the next release)"


def renamed_keywords(**renamed: str) -> Callable[[F], F]:
    """Accept the old keyword names of a function (``old="new"``) with a :class:`FutureWarning` naming the
    new one; giving both names is an error.

    >>> @renamed_keywords(which="checkpoint")
    ... def load(run, checkpoint="best"):
    ...     return checkpoint
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     load("runs/a", which="last")
    'last'
    >>> str(caught[0].message)
    "load(which=...) is deprecated: use load(checkpoint=...) (load(which=...) will be removed in the next release)"
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renamed.items():
                if old not in kwargs:
                    continue
                name = function.__name__
                if new in kwargs:
                    raise ThoracicError(f"{name}(): give {new}=... only ({old}=... is its old name)")
                warnings.warn(deprecation_message(f"{name}({old}=...)", f"{name}({new}=...)"), FutureWarning,
                              stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        wrapper.__deprecated_keywords__ = dict(renamed)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


__all__ = ["deprecation_message", "renamed_keywords"]
