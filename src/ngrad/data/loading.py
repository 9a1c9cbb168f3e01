"""Batches streamed from a split with ``torch.utils.data.DataLoader``.

The splits stay where :func:`~ngrad.data.load_dataset` put them (CPU memory); each batch is
gathered with one indexing operation (the sampler hands the dataset a whole list of indices) and
moved to the training device by the caller. No worker processes are used: the data is already in
memory, and gathering a batch is a single copy.

Training order: every pass over the training split draws one permutation
``torch.randperm(n, generator=generator)`` and cuts it into batches of ``batch_size`` (the last
one smaller), the order ngrad has always trained in; so a seeded generator gives the same batches
on every run, and restoring the generator's state (a checkpoint) continues the same sequence.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

__all__ = ["EVALUATION_BATCH", "BatchedTensors", "EpochPermutation", "batches", "training_batches"]

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


def _loader(data: BatchedTensors, sampler: Sampler[int], batch_size: int, pin: bool) -> DataLoader:
    return DataLoader(
        data,
        sampler=BatchSampler(sampler, batch_size, drop_last=False),
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
) -> DataLoader:
    """Shuffled batches of (inputs, labels), a new order drawn from ``generator`` every pass."""
    data = BatchedTensors(inputs, targets)
    return _loader(data, EpochPermutation(len(data), generator), batch_size, pin_memory)


def batches(
    inputs: Tensor, targets: Tensor, batch_size: int = EVALUATION_BATCH, pin_memory: bool = False
) -> DataLoader:
    """Batches of (inputs, labels) in order (for evaluation)."""
    data = BatchedTensors(inputs, targets)
    return _loader(data, SequentialSampler(data), batch_size, pin_memory)
