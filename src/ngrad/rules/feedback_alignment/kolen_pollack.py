"""Kolen-Pollack (KP): forward and feedback weights receive transposed copies of one update.

    delta_l = f'(a_l) * (B_{l+1} delta_{l+1})
    Delta W_l = -eta (delta_l h_{l-1}^T + lambda W_l)
    Delta B_l = -eta (h_{l-1} delta_l^T + lambda B_l)      (the same update, transposed)

so Delta (B_l - W_l^T) = -eta lambda (B_l - W_l^T): the difference decays geometrically, by
(1 - eta lambda) per SGD step, and the feedback becomes the transpose of the forward weights.

Kolen & Pollack (1994). Backpropagation without weight transport. Proc. IEEE ICNN.
Akrout, Wilson, Humphreys, Lillicrap & Tweed (2019). Deep learning without weight transport.
NeurIPS 32.

ngrad stores B_l^T (W_l's shape) as a trained parameter; its ``.grad`` is the forward weight's
update plus the weight decay, so the optimiser moves both alike. Locality: the feedback synapse sees
the same pre- and post-synaptic signals as its forward partner, read in the other direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.network import ForwardTrace
from ngrad.options import check_bounds
from ngrad.rules.base import assign_gradient
from ngrad.rules.layerwise import LearnedFeedbackRule

__all__ = ["KolenPollack"]


@dataclass(frozen=True)
class KolenPollackOptions:
    weight_decay: float = 1e-4  # lambda, applied to every W_l and B_l alike
    init: str = "pytorch"

    def __post_init__(self) -> None:
        check_bounds(self, non_negative=("weight_decay",))


class KolenPollack(LearnedFeedbackRule):
    name = "kp"
    summary = "Kolen-Pollack: feedback learns the transposed forward update; B - W^T decays"
    citation = "Kolen & Pollack 1994, ICNN; Akrout et al. 2019, NeurIPS"
    Options = KolenPollackOptions

    def learn_feedback(self, trace: ForwardTrace, errors: Sequence[Tensor]) -> dict[str, float]:
        decay = self.options.weight_decay
        if decay:
            for layer in self.network.layers:
                layer.weight.grad.add_(layer.weight, alpha=decay)
        for layer, feedback in zip(self.network.layers[1:], self.feedback, strict=True):
            # grad B = (delta h^T + lambda W) + lambda (B - W) = delta h^T + lambda B
            update = layer.weight.grad.clone()
            if decay:
                update.add_(feedback - layer.weight, alpha=decay)
            assign_gradient(feedback, update)
        return {}

    @torch.no_grad()
    def feedback_mismatch(self) -> list[float]:
        """|B_l - W_l^T|_F per layer with feedback (the quantity that decays geometrically)."""
        return [
            float(torch.linalg.vector_norm(feedback - layer.weight))
            for layer, feedback in zip(self.network.layers[1:], self.feedback, strict=True)
        ]
