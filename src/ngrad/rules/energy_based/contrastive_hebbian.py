"""Contrastive Hebbian learning (CHL) and GeneRec: free phase against a clamped phase.

The same layered Hopfield network as EP (``energy.py``), every layer relaxed (the outputs too):
    E(s) = sum_l gamma^{l-1} [ sum_i G_l(s_{l,i}) - s_l . (W_l s_{l-1} + b_l) ],  G_l' = f_l^{-1}
- free (minus) phase: input clamped, at most ``free_steps`` steps of s_l <- f_l(W_l s_{l-1} +
  b_l + gamma W_{l+1}^T s_{l+1}) to s^- (a phase stops once no state moves by more than
  ``tolerance``);
- clamped (plus) phase: from s^-, the output held at the target, s_L = onehot(y), and at most
  ``clamped_steps`` steps of the hidden dynamics to s^+;
- output units: the loss's canonical link on u_L = W_L s_{L-1} + b_L when the last layer is
  linear: linear units for ``mse``, a softmax group for ``cross_entropy`` (energy sum p log p,
  whose minimiser given u is softmax(u)), sigmoid units for ``bce``; so the top layer's update,
  (onehot(y) - s^-_L) s_{L-1}^T with equal hidden states, is the loss's gradient; the prediction
  is s_L (mse) or the logits u_L at the free fixed point;
- update, CHL (Movellan 1991), normalised as Xie & Seung (2003) so its size does not depend on
  gamma (the clamp's effect reaches layer l attenuated by gamma^{L-l}):
    grad W_l = -(gamma^{l-L} / N) sum_n (s+_l s+_{l-1}^T - s-_l s-_{l-1}^T)
  GeneRec (O'Reilly 1996, ``update="generec"``): s+_l s+_{l-1}^T - s-_l s-_{l-1}^T becomes
  (s+_l - s-_l) s-_{l-1}^T; both: grad b_l = -(gamma^{l-L} / N) sum_n (s+_l - s-_l).
CHL is EP's one-sided rule in the limit of infinite nudging: with linear outputs the nudged
minimiser (u_L + beta y) / (1 + beta) tends to y as the output nudge beta grows, and beta x (EP's
update) tends to CHL's. On a single linear layer CHL is the delta rule (LMS), the
gradient of the squared error; in a layered net with small gamma it approaches backprop (Xie &
Seung 2003). In general CHL descends no cost (the phases may settle in different basins).

Movellan (1991). Contrastive Hebbian learning in the continuous Hopfield model. Connectionist
Models: Proc. 1990 Summer School, 10-17.
O'Reilly (1996). Biologically plausible error-driven learning using local activation
differences: the generalized recirculation algorithm. Neural Comput. 8, 895-938.
Xie & Seung (2003). Equivalence of backpropagation and contrastive Hebbian learning in a layered
network. Neural Comput. 15, 441-454.

Locality: each synapse updates from its own pre- and post-synaptic activities in the two phases
(GeneRec: the presynaptic minus-phase activity); the feedback is the same synapse read backwards
(symmetric weights); the target enters only by clamping the output units. The prediction is the
free phase's output. The options, their defaults and the measurements behind them:
docs/energy_based.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ngrad.nn.activations import Activation, get_activation
from ngrad.options import check_bounds
from ngrad.rules.base import StepRecord, write_layer_update
from ngrad.rules.energy_based.energy import (
    SOFTMAX_GROUP,
    Relaxation,
    bottom_up,
    one_hot_like,
    write_contrastive_gradients,
)
from ngrad.rules.energy_based.hopfield import HopfieldRule, RelaxationOptions, phase_scalars
from ngrad.search_space import Uniform, tunable

__all__ = ["ContrastiveHebbian"]

LINKS = {"cross_entropy": SOFTMAX_GROUP, "bce": get_activation("sigmoid")}  # mse: linear units


@dataclass(frozen=True)
class ContrastiveHebbianOptions(RelaxationOptions):
    """RelaxationOptions plus the clamped phase."""

    clamped_steps: int = 20  # the most steps of the clamped phase (output held at the target)
    update: Literal["chl", "generec"] = "chl"  # CHL's co-activity difference, or GeneRec's
    #     (presynaptic activity of the free phase)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bounds(self, at_least_one=("clamped_steps",))


class ContrastiveHebbian(HopfieldRule):
    name = "chl"
    summary = "contrastive Hebbian learning: clamped-phase minus free-phase co-activity"
    citation = "Movellan 1991; O'Reilly 1996, Neural Comput. (GeneRec)"
    Options = ContrastiveHebbianOptions
    search_space = tunable(feedback_strength=Uniform(0.05, 1.0))

    def unit_activations(self) -> list[Activation]:
        units = super().unit_activations()
        if self.network.layers[-1].activation.name == "identity" and self.loss.name in LINKS:
            units[-1] = LINKS[self.loss.name]
        return units

    def predict(self, inputs: Tensor, states: Sequence[Tensor]) -> Tensor:
        if self.unit_activations()[-1].name == "identity":
            return states[-1]
        below = states[-2] if len(states) > 1 else inputs
        return bottom_up(self.network.layers[-1], below)  # logits at the free fixed point

    def clamped_phase(self, drive: Tensor, free: Sequence[Tensor], targets: Tensor) -> Relaxation:
        """Hold s_L at onehot(y) and relax the hidden layers from the free state."""
        goal = one_hot_like(targets, free[-1])
        start = [*free[:-1], goal]
        return self.phase(drive, start, self.options.clamped_steps, None)

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        options = self.options
        drive = self.input_drive(inputs)
        free = self.free_phase(drive)
        clamped = self.clamped_phase(drive, free.states, targets)
        gamma, top = options.feedback_strength, self.relaxed_layers - 1
        scales = [gamma ** (index - top) / inputs.shape[0] for index in range(top + 1)]
        if options.update == "chl":
            errors = write_contrastive_gradients(
                self.network, inputs, clamped.states, free.states, scales
            )
        else:
            errors = self._write_generec(inputs, clamped.states, free.states, scales)
        output = self.predict(inputs, free.states)
        scalars = {**phase_scalars("free", free), **phase_scalars("clamped", clamped)}
        return StepRecord(self.loss(output, targets), output, tuple(errors), scalars)

    def _write_generec(self, inputs: Tensor, plus, minus, scales) -> list[Tensor]:
        """grad W_l = -c_l (s+_l - s-_l) s-_{l-1}^T: presynaptic activity of the minus phase."""
        differences = []
        below = [inputs, *minus[:-1]]
        layers = self.network.layers
        for layer, high, low, pre, scale in zip(layers, plus, minus, below, scales, strict=True):
            difference = (high - low).mul_(-scale)
            weight_update = layer.weight_gradient(difference, pre)
            write_layer_update(layer, weight_update, layer.bias_gradient(difference))
            differences.append(difference)
        return differences

    def diagnose(self, inputs: Tensor, targets: Tensor) -> dict[str, float | list[float]]:
        """Free-phase energy and residual per relaxation step."""
        with torch.no_grad():
            trace = self.relaxation_trace(inputs)
        return {
            "energy_by_step": trace["energy_by_step"],
            "residual_by_step": trace["residual_by_step"],
        }
