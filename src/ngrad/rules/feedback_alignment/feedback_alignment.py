"""Feedback alignment (FA): errors travel down through fixed random matrices.

    delta_L = e = dL/da_L
    delta_l = f'(a_l) * (B_{l+1} delta_{l+1}),   B_{l+1} fixed, random, shape of W_{l+1}^T
    dW_l = delta_l h_{l-1}^T

Lillicrap, Cownden, Tweed & Akerman (2016). Random synaptic feedback weights support error
backpropagation for deep learning. Nature Communications 7, 13276.

ngrad stores B_l^T (the shape of W_l), so the same code serves dense and convolutional layers.
Properties: with B := W^T the update is backprop's exactly; during training W_l comes to align with
B_l^T and the update's angle to backprop falls below 90 degrees. Locality: no weight transport; the
feedback synapses are fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.layerwise import (
    FeedbackPathwayRule,
    register_random_feedback,
    registered_feedback,
)

__all__ = ["FeedbackAlignment"]

Initialisation = Literal["pytorch", "xavier", "kaiming", "gaussian"]


@dataclass(frozen=True)
class FeedbackAlignmentOptions:
    init: Initialisation = "pytorch"  # distribution of B (the forward layers' schemes)
    scale: float = 1.0  # multiplies B after drawing it

    def __post_init__(self) -> None:
        check_bounds(self, positive=("scale",))


class FeedbackAlignment(FeedbackPathwayRule):
    name = "fa"
    summary = "feedback alignment: errors sent down through fixed random matrices B"
    citation = "Lillicrap et al. 2016, Nat. Commun. 7:13276"
    Options = FeedbackAlignmentOptions

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        register_random_feedback(self, network, self.options.init, self.options.scale)

    def feedback_matrices(self) -> list[Tensor | None]:
        return [None, *registered_feedback(self, self.network)]

    def set_feedback(self, index: int, matrix: Tensor) -> None:
        """Replace B_index^T (W-shaped), e.g. by W itself to recover backprop in a test."""
        getattr(self, f"feedback_{index}").copy_(matrix)

    def learn_feedback(self, trace: ForwardTrace, errors: Sequence[Tensor]) -> dict[str, float]:
        return {}
