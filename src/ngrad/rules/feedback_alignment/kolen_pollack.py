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
update plus the weight decay, so the optimiser moves both alike. That holds only when the optimiser
takes the same linear step on both: plain SGD (with or without momentum, dampening, Nesterov and
weight decay) with the same settings for W_l and B_l. An adaptive optimiser (Adam, RMSprop)
rescales each entry by its own history, and a separate feedback learning rate scales B's step
alone; either way B - W^T no longer decays, and the rule is no longer Kolen-Pollack, so
:meth:`KolenPollack.check_optimizer` and :meth:`KolenPollack.param_groups` refuse them. Locality:
the feedback synapse sees the same pre- and post-synaptic signals as its forward partner, read in
the other direction. In a general ``torch.nn.Module`` every nn.Linear and nn.Conv1d/2d/3d has
its B, and the decay lambda W applies to those layers' weights. Notation and settings:
docs/feedback_alignment.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ngrad.errors import ConfigError
from ngrad.nn.init import Init
from ngrad.options import check_bounds
from ngrad.rules.base import assign_gradient
from ngrad.rules.layerwise import LearnedFeedbackRule
from ngrad.search_space import LogUniform, tunable

__all__ = ["KolenPollack", "step_settings_mismatch"]

# SGD's settings that enter its (linear) step; W_l and B_l must share every one of them
SGD_STEP_SETTINGS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")


def step_settings_mismatch(
    optimizer: torch.optim.Optimizer, pairs: Sequence[tuple[str, Tensor, Tensor]]
) -> str | None:
    """Why ``optimizer`` would not move each (name, W, B) pair by the same step, or None."""
    if not isinstance(optimizer, torch.optim.SGD):
        return f"{type(optimizer).__name__} does not take the same step on W and B (use SGD)"
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for name, weight, feedback in pairs:
        weight_group, feedback_group = group_of.get(id(weight)), group_of.get(id(feedback))
        if weight_group is None or feedback_group is None:
            return f"the optimiser does not train both {name} and its feedback B"
        for setting in SGD_STEP_SETTINGS:
            if weight_group.get(setting) != feedback_group.get(setting):
                return (
                    f"{setting} differs between {name} ({weight_group.get(setting)!r}) "
                    f"and its feedback ({feedback_group.get(setting)!r})"
                )
    return None


@dataclass(frozen=True)
class KolenPollackOptions:
    weight_decay: float = (
        1e-4  # lambda, decay of every W_l and B_l; B - W^T shrinks by 1 - lr*lambda
    )
    init: Init = "pytorch"  # scheme the feedback B is drawn with at the start

    def __post_init__(self) -> None:
        check_bounds(self, non_negative=("weight_decay",))


class KolenPollack(LearnedFeedbackRule):
    name = "kp"
    summary = "Kolen-Pollack: feedback learns the transposed forward update; B - W^T decays"
    citation = "Kolen & Pollack 1994, ICNN; Akrout et al. 2019, NeurIPS"
    Options = KolenPollackOptions
    scales_with_loss = False  # the feedback's decay does not scale with the loss
    search_space = tunable(weight_decay=LogUniform(1e-5, 1e-2))

    def forward_weight_decay(self) -> float:
        return self.options.weight_decay

    def learn_feedback(self, batch_size: int, carried: Sequence[int]) -> dict[str, float]:
        decay = self.options.weight_decay
        for weight, feedback in zip(self.fed_weights(), self.feedback, strict=True):
            if weight.grad is None:  # a layer the batch did not reach: neither W nor B moves
                feedback.grad = None
                continue
            # grad B = (delta h^T + lambda W) + lambda (B - W) = delta h^T + lambda B
            update = weight.grad.clone()
            if decay:
                update.add_(feedback - weight, alpha=decay)
            assign_gradient(feedback, update)
        return {}

    def param_groups(self, feedback_lr: float | None = None) -> list[dict[str, Any]]:
        """One group holding W and B alike: B must take W's step, so no feedback_lr."""
        if feedback_lr is not None:
            raise ConfigError(
                "rule 'kp' takes no feedback learning rate: B - W^T decays only when B takes "
                "the same step as W (drop feedback_lr)"
            )
        return [{"params": list(self.parameters())}]

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        names = [name for _, name in self.feedback_layers()]
        pairs = list(zip(names, self.fed_weights(), self.feedback, strict=True))
        reason = step_settings_mismatch(optimizer, pairs)
        if reason is not None:
            raise ConfigError(
                f"rule 'kp' needs plain SGD with the same settings for W and B, so that "
                f"B - W^T decays: {reason}"
            )

    @torch.no_grad()
    def feedback_mismatch(self) -> list[float]:
        """|B_l - W_l^T|_F per layer with feedback (the quantity that decays geometrically)."""
        return [
            float(torch.linalg.vector_norm(feedback - weight))
            for weight, feedback in zip(self.fed_weights(), self.feedback, strict=True)
        ]
