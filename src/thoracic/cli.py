"""The ``thoracic`` command line: a thin dispatcher.

Each subcommand lives in ``thoracic.commands.<module>`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``; it parses its arguments, loads a config and calls one library function. A command
module imports what it runs only inside ``run``, so ``thoracic --help`` imports no torch and a broken
optional part never breaks the others. Options shared by several commands, their old spellings and the
config overrides accepted anywhere on the line are in :mod:`thoracic.commands._options` (docs/cli.md).

Conventions of every subcommand: results (tables, the files written) on stdout, progress bars and
messages on stderr; Lightning's and PyTorch's own messages are hidden unless ``--verbose``
(:func:`thoracic.runtime.quiet_libraries`); ``ThoracicError`` messages without a traceback, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

#: subcommand -> (module under thoracic.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "write a phantom ChestX-ray14 folder with known lesion boxes"),
    "prepare": ("prepare", "decode and resize every image once into a memory-mapped cache"),
    "subset": ("subset", "a small real ChestX-ray14 folder from complete metadata and some of its images"),
    "train": ("train", "train a model from a YAML config (Lightning; one or many GPUs)"),
    "lr-sweep": ("lr_sweep", "the paper's learning-rate grid search"),
    "experiment": ("experiment", "one run per seed, then mean +- std of every metric"),
    "evaluate": ("evaluate", "per-class ROC AUC with bootstrap CIs and ROC curves"),
    "localize": ("localize", "weakly supervised localization accuracy (IoU / IoBB) on the boxes"),
    "explain": ("explain", "can the heatmaps be trusted? randomization, faithfulness, masks, repeatability"),
    "report": ("report", "Markdown + HTML report of one or more runs beside the published numbers"),
    "predict": ("predict", "probabilities and heatmaps for new PNG/JPEG/DICOM images"),
    "export": ("export", "export a run's model to ONNX or TorchScript (logits + class maps, with metadata)"),
    "demo": ("demo", "the whole pipeline on phantom data, CPU-sized (what `make demo` runs)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``thoracic`` parser with one subparser per command. Prefix matching is off everywhere
    (``--threshold`` must never run as another option that starts the same); building it imports no
    torch (the commands import what they run when they run)."""
    parser = argparse.ArgumentParser(
        prog="thoracic", allow_abbrev=False,
        description="Thoracic disease classification and weakly supervised localization on ChestX-ray14.",
        epilog="Options share one vocabulary across commands (docs/cli.md); `thoracic COMMAND --help` for each.",
    )
    from thoracic import __version__

    parser.add_argument("--version", action="version", version=f"thoracic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(f"thoracic.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"thoracic.commands.{module_name}":
                raise
            continue
        sp = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                            allow_abbrev=False)
        module.add_arguments(sp)
        sp.add_argument("--verbose", action="store_true",
                        help="also show Lightning's and PyTorch's own messages and warnings (hidden by default)")
        sp.set_defaults(_run=module.run)
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; for a command that takes config overrides (an ``overrides`` argument), the overrides
    are taken out first, wherever they stand (:func:`thoracic.commands._options.split_overrides`)."""
    from thoracic.commands._options import split_overrides

    argv = list(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    position = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    overrides: list[str] = []
    if position is not None and argv[position] in commands:
        command = commands[argv[position]]
        if any(action.dest == "overrides" for action in command._actions):
            rest, overrides = split_overrides(command, argv[position + 1:])
            argv = argv[:position + 1] + rest
    args = parser.parse_args(argv)
    if overrides:
        args.overrides = overrides + list(getattr(args, "overrides", None) or [])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parse_command_line(parser, argv)
    args.command_line = ["thoracic", *argv]  # recorded in run_info.json
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from thoracic.errors import ThoracicError
    from thoracic.runtime import quiet_libraries

    quiet_libraries(verbose=bool(getattr(args, "verbose", False)))
    try:
        return int(args._run(args) or 0)
    except ThoracicError as exc:
        prefix = "" if exc.exit_code == 130 else "error: "  # Ctrl-C is no error: it says where things are
        print(f"{prefix}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except OSError as exc:
        message = _os_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def _os_error_message(exc: OSError) -> str | None:
    """A one-line message for the file-system errors a user can fix (a full disk, a folder without write
    permission, a file where a folder was expected); None for anything else (a bug: traceback)."""
    import errno

    from thoracic.safety import DISK_FULL_ERRNOS, disk_full_error

    where = exc.filename or "a file"
    if exc.errno in DISK_FULL_ERRNOS:
        folder = os.path.dirname(os.path.abspath(where)) if exc.filename else "."
        return str(disk_full_error(exc, "a file", folder, None,
                                   "Free some space and rerun the same command: finished work is kept."))
    reasons = {
        errno.EACCES: "permission denied: choose a location this user can write to",
        errno.EPERM: "operation not permitted: choose a location this user can write to",
        errno.EROFS: "the file system is read-only: choose another location",
        errno.ENOTDIR: "a path component is a file, expected a folder",
        errno.EISDIR: "is a folder, expected a file",
        errno.EEXIST: "already exists",
    }
    if exc.errno in reasons:
        return f"{where}: {reasons[exc.errno]}"
    return None


if __name__ == "__main__":
    sys.exit(main())
