"""The command-line vocabulary: every option that several commands share is defined here, once.

One name per meaning (the table in docs/cli.md): a run folder is the first positional argument,
``--checkpoint best|last|PATH`` picks its checkpoint, ``--out`` is where a command writes, ``--data`` the
data folder, ``--image-size`` an image side, ``--num-images`` / ``--num-workers`` / ``--num-devices``
counts, ``--device`` the device. An old spelling keeps working for one release: :func:`add_option` registers
it beside the new one, hidden from ``--help``, and using it prints a warning on stderr that names the new
one (:func:`thoracic.deprecation.deprecation_message`).

Config overrides (``section.key=value``, ``--section.key``, ``--no-section.key``) may stand anywhere on
the line: :func:`split_overrides` takes them out before argparse sees the rest, so an option with
several values (``--seeds 0 1 2``) cannot swallow them.

Hand-written on argparse because argparse has no old spelling that acts as another option: its
``deprecated=True`` (Python 3.13 and newer, docs.python.org/3/library/argparse.html#deprecated; thoracic
runs on 3.10) prints "option '--x' is deprecated" without naming the replacement and leaves a second
option with its own ``dest``; and no library offers overrides that may stand between an option's values.

This module imports neither torch nor any module that does: ``thoracic --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from typing import Any

from thoracic.config import Config
from thoracic.constants import DATASET_KINDS
from thoracic.deprecation import deprecation_message

#: Help of ``--device`` wherever one network runs (evaluate, localize, predict).
DEVICE_HELP = "auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N (default auto)"


class _DeprecatedOption(argparse.Action):
    """An old option without a one-to-one new option: warns on stderr, saying what replaces it, and
    stores its value under ``dest``."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        kwargs.update(default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        warn_deprecated(option_string or self.option_strings[0], self.replacement)
        setattr(namespace, self.dest, values)


_WARNING_ACTIONS: dict[type, type] = {}


def _warning_action(base: type) -> type:
    """``base`` (an argparse action class) that, invoked through one of its ``old_spellings``, first warns."""
    if base not in _WARNING_ACTIONS:
        def __call__(self: Any, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
            if option_string in self.old_spellings:
                warn_deprecated(option_string, self.option_strings[0])
            base.__call__(self, parser, namespace, values, option_string)

        _WARNING_ACTIONS[base] = type(f"Renamed{base.__name__}", (base,), {"__call__": __call__, "old_spellings": ()})
    return _WARNING_ACTIONS[base]


def warn_deprecated(old: str, new: str) -> None:
    """The warning of an old spelling, on stderr (commands print messages there, results on stdout)."""
    print(f"warning: {deprecation_message(old, new)}", file=sys.stderr)


def add_option(parser: argparse.ArgumentParser | Any, new: str, *old: str, **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(new, **kwargs)`` plus its old spellings ``old``: each one is the same option
    for one release (so ``required`` counts either), hidden from ``--help``, and prints a warning naming
    ``new`` when used."""
    base = parser._registry_get("action", kwargs.get("action"), kwargs.get("action"))
    action = parser.add_argument(new, **{**kwargs, "action": _warning_action(base) if old else base})
    action.old_spellings = tuple(old)
    for spelling in old:
        if spelling in parser._option_string_actions:
            raise ValueError(f"{spelling} is already an option of {parser.prog}")
        parser._option_string_actions[spelling] = action
    return action


def add_deprecated(parser: argparse.ArgumentParser | Any, old: str, replacement: str, **kwargs: Any) -> None:
    """An old option without a one-to-one new option (e.g. a path that became a positional argument):
    stores its value (``kwargs`` as argparse's: ``dest``, ``nargs``, ``type``, ``metavar``) and prints a
    warning that says what replaces it (``replacement``, in words)."""
    parser.add_argument(old, action=_DeprecatedOption, replacement=replacement, **kwargs)


# --------------------------------------------------------------------------------------------------
# The shared options
# --------------------------------------------------------------------------------------------------


def add_run(parser: argparse.ArgumentParser, help: str = "run folder (or a .ckpt file)") -> None:
    """The run folder: always the first positional argument."""
    parser.add_argument("run", metavar="RUN", help=help)


def add_checkpoint(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint best|last|PATH``: which checkpoint of the run (the same meaning in every command)."""
    parser.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                        help="which checkpoint of RUN: best (lowest validation loss; default), last, or the path "
                             "of a .ckpt file")


def add_device(parser: argparse.ArgumentParser, help: str = DEVICE_HELP, default: str | None = "auto") -> None:
    """``--device``: which device runs the network."""
    parser.add_argument("--device", default=default, help=help)


def add_num_workers(parser: argparse.ArgumentParser, help: str) -> None:
    """``--num-workers`` (old: ``--workers``): worker processes."""
    add_option(parser, "--num-workers", "--workers", type=int, default=None, metavar="N", help=help)


def add_image_size(parser: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """``--image-size`` (old: ``--size``): an image side in pixels."""
    add_option(parser, "--image-size", "--size", type=int, default=default, metavar="PIXELS",
               help=help if default is None else f"{help} (default: %(default)s)")


def add_num_images(parser: argparse.ArgumentParser, default: int, help: str) -> None:
    """``--num-images`` (old: ``--images N``): a number of images."""
    add_option(parser, "--num-images", "--images", type=int, default=default, metavar="N",
               help=f"{help} (default: %(default)s)")


def add_data(parser: argparse.ArgumentParser, help: str, *old: str, required: bool = False) -> None:
    """``--data``: the dataset folder (``data.root`` in a config)."""
    add_option(parser, "--data", *old, required=required, default=None, metavar="FOLDER", help=help)




def add_dataset(parser: argparse.ArgumentParser, default: str | None, help: str, *old: str) -> None:
    """``--dataset``: the layout of a dataset folder (``data.dataset`` in a config); ``auto`` where the
    command may detect it; ``default`` None: the help says what stands without it."""
    choices = ("auto", *DATASET_KINDS) if default in ("auto", None) else DATASET_KINDS
    add_option(parser, "--dataset", *old, default=default, choices=choices, metavar="|".join(choices),
               help=help if default is None else f"{help} (default: %(default)s)")


def add_shared_images(parser: argparse.ArgumentParser) -> None:
    """``--shared-images FILE``: a mapping between two datasets' image ids (scoring a run on another dataset)."""
    parser.add_argument("--shared-images", default=None, metavar="FILE",
                        help="a file mapping the test dataset's image ids to those of the run's dataset (RSNA's "
                             "pneumonia-challenge-dataset-mappings_2018.json, a CSV subset_img_id,img_id, or a CSV "
                             "whose header names the two dataset kinds): the test images the run was trained on "
                             "are counted, listed (shared_images.csv) and warned about")


def add_progress(parser: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help=help)


#: Help of ``--trust-checkpoint`` (docs/reliability.md, "Security").
TRUST_CHECKPOINT_HELP = (
    "open checkpoints with full pickle, as PyTorch did before 2.6. RISK: a .ckpt file is a pickle, and "
    "unpickling runs any code hidden in it; only for a checkpoint from a source you trust that thoracic "
    "refused to open (by default checkpoints are read with torch.load(weights_only=True): tensors and plain "
    "data only, which is all a checkpoint of thoracic train holds)")


def add_trust_checkpoint(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint`` (every command that reads checkpoints; API ``trust_checkpoint``)."""
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_CHECKPOINT_HELP)


# --------------------------------------------------------------------------------------------------
# Config overrides anywhere on the line
# --------------------------------------------------------------------------------------------------

_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
#: Top-level config keys that are not sections (``seed=3``, ``--run_name=x``).
_TOP_KEYS = tuple(f.name for f in dataclasses.fields(Config) if f.default is not dataclasses.MISSING)
_ASSIGNMENT = re.compile(rf"{_KEY}(\.{_KEY})*=")
_FLAG = re.compile(rf"--(no-)?(?P<key>{_KEY}(\.{_KEY})*)(=|$)")


def is_override(token: str, parser: argparse.ArgumentParser) -> bool:
    """Whether ``token`` is a config override: ``key=value`` (a dotted config key, not a path), or
    ``--section.key[=value]`` / ``--no-section.key`` (or a top-level key such as ``--seed=3``) that is not
    an option of ``parser``."""
    if not token.startswith("-"):
        return _ASSIGNMENT.match(token) is not None
    match = _FLAG.match(token)
    if match is None or token.split("=", 1)[0] in parser._option_string_actions:
        return False
    key = match.group("key")
    return "." in key or key in _TOP_KEYS


def split_overrides(parser: argparse.ArgumentParser, tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(the other tokens, the config overrides)`` of a command line, in order, wherever the overrides
    stand. The value of an option that takes exactly one (``--run-name a=b``) stays the option's; after
    ``--`` nothing is an override."""
    rest: list[str] = []
    overrides: list[str] = []
    values_left = 0
    for index, token in enumerate(tokens):
        if token == "--":
            rest.extend(tokens[index:])
            break
        if values_left:
            values_left -= 1
            rest.append(token)
            continue
        if is_override(token, parser):
            overrides.append(token)
            continue
        rest.append(token)
        action = parser._option_string_actions.get(token)
        if action is not None and (action.nargs is None or isinstance(action.nargs, int)):
            values_left = 1 if action.nargs is None else int(action.nargs)
    return rest, overrides


__all__ = [
    "DEVICE_HELP", "add_checkpoint", "add_data", "add_dataset", "add_deprecated", "add_device", "add_image_size",
    "add_num_images", "add_num_workers", "add_option", "add_progress", "add_run", "add_shared_images", "is_override",
    "split_overrides", "warn_deprecated",
]
