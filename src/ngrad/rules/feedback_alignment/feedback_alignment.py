"""Feedback alignment (FA): errors travel down through fixed random matrices.

    delta_L = e = dL/da_L
    delta_l = f'(a_l) * (B_{l+1} delta_{l+1}),   B_{l+1} fixed, random, shape of W_{l+1}^T
    dW_l = delta_l h_{l-1}^T

Lillicrap, Cownden, Tweed & Akerman (2016). Random synaptic feedback weights support error
backpropagation for deep learning. Nature Communications 7, 13276.

ngrad stores B_l^T (the shape of W_l), so the same code serves dense and convolutional layers, in an
ngrad Network and in any ``torch.nn.Module`` (whose every nn.Linear and nn.Conv1d/2d/3d gets a B).
Properties: with B := W^T the update is backprop's exactly; during training W_l comes to align with
B_l^T and the update's angle to backprop falls below 90 degrees. Locality: no weight transport; the
feedback synapses are fixed. Notation and settings: docs/feedback_alignment.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ngrad.nn.init import Init
from ngrad.options import check_bounds
from ngrad.rules.feedback import random_feedback
from ngrad.rules.layerwise import FeedbackPathwayRule
from ngrad.search_space import LogUniform, tunable

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
    search_space = tunable(scale=LogUniform(0.1, 10.0))

    def __init__(self, network: nn.Module, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        self.feedback = random_feedback(self.fed_weights(), self.options.init, self.options.scale)

    def feedback_matrix(self, index: int) -> Tensor:
        return self.feedback[index]

    def set_feedback(self, layer: int | str, matrix: Tensor) -> None:
        """Replace B^T (W-shaped) of ``layer``: its position (1..L-1 in a Network, whose layer 0
        needs none; 0.. among a module's layers) or its qualified name, e.g. by W itself to
        recover backprop."""
        self.feedback[self.feedback_position(layer)].copy_(matrix)

    def learn_feedback(self, batch_size: int, carried: Sequence[int]) -> dict[str, float]:
        return {}
