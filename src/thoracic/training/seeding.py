"""Seeding and determinism: the same seed and config give the same run, and a resumed run the same epochs.

Two mechanisms make a run reproducible *and* resumable at epoch boundaries:

* the training order comes from :class:`EpochSeededSampler`, a permutation drawn from a generator seeded
  with ``(seed, epoch)`` alone, so epoch ``e`` sees the same order whether the run started at epoch 0 or
  was resumed from the checkpoint of epoch ``e - 1``; under DDP it shards that order itself (Lightning's
  sampler replacement is off: its ``DistributedSampler`` would get its epoch only after a resumed run's
  first iterator was built);
* every global random generator (Python, NumPy, torch) is reseeded from ``(seed, epoch)`` at the start
  of each training epoch (:class:`EpochReseed`), so dropout, augmentation and the DataLoader workers'
  base seeds do not depend on what ran before, e.g. on how many epochs this process has already run.

On the CPU every operation used here is deterministic, so two runs are bit-identical. On GPUs some
kernels (cuDNN convolution backward, ``index_add``, bilinear upsampling backward, atomics in
reductions) are not; ``torch.use_deterministic_algorithms(True, warn_only=True)`` picks deterministic
kernels where torch has them and warns where it has none (see docs/training.md).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sized

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import Sampler

#: Large odd multiplier so that (seed, epoch) pairs do not collide as seed + epoch would
#: (seed 0 epoch 1 vs seed 1 epoch 0).
_SEED_STRIDE = 1_000_003


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed derived from the run seed, the epoch and a stream id (sampler 0, globals 1)."""
    return (int(seed) * _SEED_STRIDE * 4 + int(epoch) * 4 + int(stream)) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs) without touching environment variables."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def distributed_rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSeededSampler(Sampler[int]):
    """A random permutation per epoch that depends only on ``(seed, epoch)``, sharded over processes.

    Under DDP every process draws the same permutation, pads it (by repeating its first indices, as
    ``DistributedSampler`` does) to a multiple of the world size so that all processes run the same
    number of steps, and takes every ``world``-th index from its rank. The process group is looked up
    when iterating, so the sampler can be built before Lightning starts the processes.
    ``set_epoch`` is called by Lightning before every epoch (and by ``train`` before a resumed fit).
    """

    def __init__(self, data_source: Sized, seed: int = 0, epoch: int = 0) -> None:
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self) -> list[int]:
        """The whole epoch's order (before sharding)."""
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch, stream=0))
        return torch.randperm(len(self.data_source), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.permutation()
        rank, world = distributed_rank_and_world()
        if world > 1 and order:
            total = len(self) * world
            order = (order * (total // len(order) + 1))[:total]
            order = order[rank::world]
        return iter(order)

    def __len__(self) -> int:
        _, world = distributed_rank_and_world()
        return math.ceil(len(self.data_source) / world)


class ShardedSampler(Sampler[int]):
    """Sequential indices ``rank, rank + world, ...``: every image exactly once over all processes.

    Used for validation and test so that metrics gathered over processes see each image once (no
    ``DistributedSampler`` padding). Shards may differ in length by one; evaluation has no per-step
    collective operation, so this is safe.
    """

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        rank, world = distributed_rank_and_world()
        return iter(range(rank, len(self.data_source), world))

    def __len__(self) -> int:
        rank, world = distributed_rank_and_world()
        return len(range(rank, len(self.data_source), world))


class EpochReseed(Callback):
    """Reseed every global generator, and the train loader's own generator, from ``(seed, epoch)`` when a
    training epoch starts.

    The loader's generator (which draws the DataLoader workers' base seed when an iterator is created)
    is separate from the global generators, so creating an iterator consumes no global random numbers.
    That matters because Lightning creates the first iterator of a fit (fresh or resumed) *before*
    ``on_train_epoch_start`` and later ones after it: :func:`thoracic.training.trainer.train` therefore
    also calls ``reseed(start_epoch)`` just before ``fit``, and both orders give the same streams.
    """

    def __init__(self, seed: int, generator: torch.Generator | None = None) -> None:
        self.seed = int(seed)
        self.generator = generator

    def reseed(self, epoch: int) -> None:
        seed_everything(epoch_seed(self.seed, epoch, stream=1))
        if self.generator is not None:
            self.generator.manual_seed(epoch_seed(self.seed, epoch, stream=2))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.reseed(trainer.current_epoch)
