"""Sign symmetry: feedback that shares only the signs of the forward weights.

    delta_l = f'(a_l) * (B_{l+1} delta_{l+1}),   B_{l+1} = (sign(W_{l+1}) o M_{l+1})^T

Three magnitudes M (o is the elementwise product):
- ``usf`` uniform sign-concordant feedback: M = sqrt(2 / (fan_in + fan_out)), one number per layer
  (Liao, Leibo & Poggio 2016, AAAI; the scale of Xiao et al. 2018 keeps the errors' size bounded);
- ``brsf`` batchwise-random magnitude: M redrawn at every batch, uniform on (0, b] with
  b = sqrt(6 / (fan_in + fan_out)) the Xavier bound, in 256 levels (cheap to draw; see
  ``ngrad.rules.noise``) (Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018,
  arXiv:1812.06488);
- ``frsf`` fixed-random magnitude: M = |R|, R drawn once (Liao et al. 2016; Xiao, Chen, Liao &
  Poggio 2018, arXiv:1811.03567).

Property: sign(B) = sign(W^T) at every step, whatever W becomes. Locality: the feedback synapse
needs the sign of its forward partner, not its value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ngrad.nn.init import fans, random_like
from ngrad.nn.network import ForwardTrace, Network
from ngrad.rules.layerwise import FeedbackPathwayRule
from ngrad.rules.noise import uniform_levels

__all__ = ["BatchRandomSignSymmetry", "FixedRandomSignSymmetry", "UniformSignSymmetry"]


def uniform_magnitude(weight: Tensor) -> float:
    fan_in, fan_out = fans(weight)
    return math.sqrt(2.0 / (fan_in + fan_out))


def random_magnitude(weight: Tensor) -> Tensor:
    """|R| with R Xavier-uniform: uniform on (0, sqrt(6 / (fan_in + fan_out)))."""
    return random_like(weight, "xavier").abs_()


def fresh_random_magnitude(weight: Tensor) -> Tensor:
    """Uniform on (0, Xavier bound] in 256 levels, drawn at a quarter of the generator's cost."""
    fan_in, fan_out = fans(weight)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_levels(weight.shape, bound, weight.dtype, weight.device)


class SignSymmetry(FeedbackPathwayRule):
    """Feedback sign(W) o magnitude(W); subclasses choose the magnitude."""

    summary: ClassVar[str]

    def learn_feedback(self, trace: ForwardTrace, errors: Sequence[Tensor]) -> dict[str, float]:
        return {}


class UniformSignSymmetry(SignSymmetry):
    name = "usf"
    summary = "sign symmetry, uniform magnitude: B = sign(W)^T * sqrt(2/(fan_in+fan_out))"
    citation = "Liao, Leibo & Poggio 2016, AAAI; Xiao et al. 2018, arXiv:1811.03567"

    def feedback_matrices(self) -> list[Tensor | None]:
        return [None] + [
            torch.sign(layer.weight) * uniform_magnitude(layer.weight)
            for layer in self.network.layers[1:]
        ]


class BatchRandomSignSymmetry(SignSymmetry):
    name = "brsf"
    summary = "sign symmetry, random magnitude redrawn every batch: B = sign(W)^T o |R_t|"
    citation = "Liao, Leibo & Poggio 2016, AAAI; Moskovitz et al. 2018, arXiv:1812.06488"

    def feedback_matrices(self) -> list[Tensor | None]:
        return [None] + [
            fresh_random_magnitude(layer.weight).mul_(torch.sign(layer.weight))
            for layer in self.network.layers[1:]
        ]


class FixedRandomSignSymmetry(SignSymmetry):
    name = "frsf"
    summary = "sign symmetry, fixed random magnitude: B = sign(W)^T o |R|"
    citation = "Liao, Leibo & Poggio 2016, AAAI; Xiao et al. 2018, arXiv:1811.03567"

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        for index, layer in enumerate(network.layers):
            if index > 0:
                self.register_buffer(f"magnitude_{index}", random_magnitude(layer.weight.detach()))

    def feedback_matrices(self) -> list[Tensor | None]:
        return [None] + [
            torch.sign(layer.weight) * getattr(self, f"magnitude_{index}")
            for index, layer in enumerate(self.network.layers)
            if index > 0
        ]
