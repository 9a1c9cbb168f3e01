"""Batches streamed from a split with ``torch.utils.data.DataLoader``.

The splits stay where :func:`~ngrad.data.load_dataset` put them (CPU memory); each batch is
gathered with one indexing operation (the sampler hands the dataset a whole list of indices) and
moved to the training device by the caller. No worker processes are used: the data is already in
memory, and gathering a batch is a single copy.

Training order: every pass over the training split draws one permutation
``torch.randperm(n, generator=generator)`` and cuts it into batches of ``batch_size`` (the last
one smaller), the order ngrad has always trained in; so a seeded generator gives the same batches
on every run, and restoring the generator's state (a checkpoint) continues the same sequence.

Data-parallel training (``rank`` and ``world`` of :func:`training_batches`): every process draws
the same permutation and cuts the same global batches, then keeps its own contiguous share of
each, ``batch_size / world`` samples, so the union over the processes of one step's samples is
the batch one process would train on. A final batch that does not split evenly loses its last
``len % world`` samples (at most ``world - 1`` per pass).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

__all__ = [
    "EVALUATION_BATCH",
    "BatchedTensors",
    "EpochPermutation",
    "ShardedBatches",
    "batches",
    "training_batches",
]

EVALUATION_BATCH = 2048
"""Samples per forward pass when a split is evaluated (no gradients, so large)."""


class BatchedTensors(Dataset):
    """Inputs and labels indexed by a whole list of sample indices at once."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"{inputs.shape[0]} inputs but {targets.shape[0]} labels: they must pair up"
            )
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.inputs[index], self.targets[index]


class EpochPermutation(Sampler[int]):
    """A fresh ``torch.randperm(size, generator=generator)`` for every pass."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=self.generator).tolist())


class ShardedBatches(Sampler[list[int]]):
    """Process ``rank``'s share of each batch of ``batches``: of every batch, cut to a multiple
    of ``world`` samples, the ``rank``-th of ``world`` equal contiguous parts (a batch of fewer
    than ``world`` samples is skipped)."""

    def __init__(self, batches: BatchSampler, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} processes")
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        size, batch = len(self.batches.sampler), self.batches.batch_size
        return size // batch + (size % batch >= self.world)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            share = len(batch) // self.world
            if share:
                yield batch[self.rank * share : (self.rank + 1) * share]


def _loader(data: BatchedTensors, batch_sampler: Sampler[list[int]], pin: bool) -> DataLoader:
    return DataLoader(
        data,
        sampler=batch_sampler,
        batch_size=None,  # the sampler yields whole batches of indices
        num_workers=0,
        pin_memory=pin,
        # the loader draws a seed for worker processes from this generator on every pass; a
        # private one keeps that draw from consuming torch's global random state
        generator=torch.Generator(),
    )


def training_batches(
    inputs: Tensor,
    targets: Tensor,
    batch_size: int,
    generator: torch.Generator,
    pin_memory: bool = False,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """Shuffled batches of (inputs, labels), a new order drawn from ``generator`` every pass;
    with ``world`` > 1, process ``rank``'s share of each (``batch_size`` is the global batch)."""
    data = BatchedTensors(inputs, targets)
    order = BatchSampler(EpochPermutation(len(data), generator), batch_size, drop_last=False)
    if world > 1:
        return _loader(data, ShardedBatches(order, rank, world), pin_memory)
    return _loader(data, order, pin_memory)


def batches(
    inputs: Tensor, targets: Tensor, batch_size: int = EVALUATION_BATCH, pin_memory: bool = False
) -> DataLoader:
    """Batches of (inputs, labels) in order (for evaluation)."""
    data = BatchedTensors(inputs, targets)
    order = BatchSampler(SequentialSampler(data), batch_size, drop_last=False)
    return _loader(data, order, pin_memory)
