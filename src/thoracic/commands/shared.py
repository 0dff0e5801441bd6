"""Options several subcommands share, defined once."""

from __future__ import annotations

import argparse

#: Help of ``--trust-checkpoint`` (docs/reliability.md, "Security").
TRUST_CHECKPOINT_HELP = (
    "open checkpoints with full pickle, as PyTorch did before 2.6. RISK: a .ckpt file is a pickle, and "
    "unpickling runs any code hidden in it; only for a checkpoint from a source you trust that thoracic "
    "refused to open (by default checkpoints are read with torch.load(weights_only=True): tensors and plain "
    "data only, which is all a checkpoint of thoracic train holds)")


def add_trust_checkpoint(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint`` (every command that reads checkpoints)."""
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_CHECKPOINT_HELP)
