"""Weight initialisation shared by forward layers and feedback pathways.

``initialise_`` fills a weight in place by scheme name (pytorch, xavier, kaiming, gaussian) from its
fan-in and fan-out; ``random_like`` draws a fresh matrix of a weight's shape the same way, which is
how fixed random feedback matrices get their scale.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = ["INITIALISATIONS", "Init", "fans", "initialise_", "random_like"]

Init = Literal["pytorch", "xavier", "kaiming", "gaussian"]
"""Names of the initialisation schemes; rule options declare ``init: Init``."""
INITIALISATIONS: tuple[str, ...] = get_args(Init)


def initialise_(weight: Tensor, scheme: str, fan_in: int, fan_out: int) -> Tensor:
    """Fill ``weight`` in place with one of the named schemes; returns it."""
    with torch.no_grad():
        if scheme == "pytorch":  # nn.Linear / nn.Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            return weight.uniform_(-bound, bound)
        if scheme == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            return weight.uniform_(-bound, bound)
        if scheme == "kaiming":
            return weight.normal_(0.0, math.sqrt(2.0 / fan_in))
        if scheme == "gaussian":  # Akrout et al.: N(0, 1/(fan_in + fan_out))
            return weight.normal_(0.0, math.sqrt(1.0 / (fan_in + fan_out)))
    raise ValueError(
        f"unknown initialisation {scheme!r}; choose one of: {', '.join(INITIALISATIONS)}"
    )


def fans(weight: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense (out, in) or convolutional (out, in, k, k) weight."""
    receptive_field = weight[0, 0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive_field, weight.shape[0] * receptive_field


def random_like(weight: Tensor, scheme: str = "pytorch", scale: float = 1.0) -> Tensor:
    """A fresh random tensor of ``weight``'s shape drawn with ``scheme`` (for feedback matrices)."""
    fresh = initialise_(torch.empty_like(weight), scheme, *fans(weight))
    return fresh.mul_(scale) if scale != 1.0 else fresh
