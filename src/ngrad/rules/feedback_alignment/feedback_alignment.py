"""Feedback alignment (FA): errors travel down through fixed random matrices.

    delta_L = e = dL/da_L
    delta_l = f'(a_l) * (B_{l+1} delta_{l+1}),   B_{l+1} fixed, random, shape of W_{l+1}^T
    dW_l = delta_l h_{l-1}^T

Lillicrap, Cownden, Tweed & Akerman (2016). Random synaptic feedback weights support error
backpropagation for deep learning. Nature Communications 7, 13276.

ngrad stores B_l^T (the shape of W_l), so the same code serves dense and convolutional layers.
Properties: with B := W^T the update is backprop's exactly; during training W_l comes to align with
B_l^T and the update's angle to backprop falls below 90 degrees. Locality: no weight transport; the
feedback synapses are fixed. Notation and settings: docs/feedback_alignment.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from ngrad.nn.init import Init
from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.feedback import random_feedback
from ngrad.rules.layerwise import FeedbackPathwayRule

__all__ = ["FeedbackAlignment"]


@dataclass(frozen=True)
class FeedbackAlignmentOptions:
    init: Init = "pytorch"  # initialisation scheme B is drawn with (as the forward layers' init)
    scale: float = 1.0  # factor multiplying B after it is drawn

    def __post_init__(self) -> None:
        check_bounds(self, positive=("scale",))


class FeedbackAlignment(FeedbackPathwayRule):
    name = "fa"
    summary = "feedback alignment: errors sent down through fixed random matrices B"
    citation = "Lillicrap et al. 2016, Nat. Commun. 7:13276"
    Options = FeedbackAlignmentOptions

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        weights = [layer.weight for layer in network.layers[1:]]
        self.feedback = random_feedback(weights, self.options.init, self.options.scale)

    def feedback_matrices(self) -> list[Tensor | None]:
        return [None, *self.feedback]

    def set_feedback(self, index: int, matrix: Tensor) -> None:
        """Replace B_index^T (W-shaped, index >= 1), e.g. by W itself to recover backprop."""
        if index < 1:
            raise IndexError("layer 0 has no feedback matrix: the input needs no error")
        self.feedback[index - 1].copy_(matrix)

    def learn_feedback(self, trace: ForwardTrace, errors: Sequence[Tensor]) -> dict[str, float]:
        return {}
