"""Cheap random tensors for rules that draw fresh randomness every batch.

PyTorch's CPU generator costs about 2 ns per drawn number, which for a 256 x 256 feedback matrix
per batch is 10-20 % of a whole backprop step. These helpers draw 64 random bits at a time and
spend them 8 (bytes) per number, so a batch's noise costs about a quarter as much. All draws come
from torch's generator, so ``torch.manual_seed`` makes them reproducible.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["NoiseDistribution", "rademacher", "random_bytes", "uniform_levels"]

NoiseDistribution = Literal["rademacher", "gaussian"]
"""Zero-mean, unit-variance noise a rule can inject; options declare ``noise_distribution:
NoiseDistribution``."""


def random_bytes(shape: tuple[int, ...] | torch.Size, device: torch.device | str = "cpu") -> Tensor:
    """Independent uniform bytes (uint8) of the given shape."""
    count = math.prod(shape)
    words = torch.randint(
        -(2**63), 2**63 - 1, ((count + 7) // 8,), dtype=torch.int64, device=device
    )
    return words.view(torch.uint8)[:count].view(shape)


def rademacher(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> Tensor:
    """Independent +1 / -1 entries with equal probability (mean 0, variance 1)."""
    return (random_bytes(shape, device) & 1).to(dtype).mul_(2).sub_(1)


def uniform_levels(
    shape: tuple[int, ...] | torch.Size,
    high: float | Tensor,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Uniform on (0, high] in 256 equal levels: (k + 1/2) high / 256, k uniform in 0..255
    (``high`` a number or a 0-dim tensor, e.g. a buffer, which then needs no host round trip)."""
    return random_bytes(shape, device).to(dtype).add_(0.5).mul_(high / 256)
