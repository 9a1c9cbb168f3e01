"""Equilibrium propagation (EP): the gradient from two nudged equilibria of a Hopfield network.

Energy of the layered network (``energy.py``; states s_l in the range of f_l, s_0 = x clamped,
feedback strength gamma: 1 in the energy of Scellier & Bengio and Laborieux et al., 0.25 by
default here):
    E(s) = sum_l gamma^{l-1} [ sum_i G_l(s_{l,i}) - s_l . (W_l s_{l-1} + b_l) ],  G_l' = f_l^{-1}
Total energy with the cost C nudging the state: F = E + beta C. Dynamics (discrete time,
Laborieux et al. 2021): s_l <- f_l(W_l s_{l-1} + b_l + gamma W_{l+1}^T s_{l+1}), whose fixed
points are the stationary points of F.
- free phase: beta = 0, from the feedforward state (or from zeros) to s^0, at most
  ``free_steps`` steps (a phase stops once no state moves by more than ``tolerance``);
- nudged phases: from s^0, at most ``nudged_steps`` steps with +beta (and -beta when symmetric)
  to s^{+-};
- update (Scellier & Bengio 2017, eq. 10; symmetric form of Laborieux et al. 2021):
    grad W_l = -(gamma^{l-M} / ((beta_+ - beta_-) N)) sum_n (s+_l s+_{l-1}^T - s-_l s-_{l-1}^T)
    grad b_l = -(gamma^{l-M} / ((beta_+ - beta_-) N)) sum_n (s+_l - s-_l)
  with (beta_+, beta_-) = (beta, -beta) (symmetric: error O(beta^2)) or (beta, 0) with s^- = s^0
  (one-sided: error O(beta)). As beta -> 0 this is dC/dtheta at the free fixed point. beta
  (``nudging_strength``) is the nudge the top relaxed layer M feels, i.e. F = E / gamma^{M-1} +
  beta C, Laborieux et al.'s beta at gamma = 1 (hence gamma^{l-M}: dE/dW_l carries gamma^{l-1}).
Output variants (chosen by the rule's loss):
- ``mse``: the output units are states (M = L) and C = |s_L - y|^2 / 2 (identity outputs: exact
  minimiser s_L = (u_L + beta y) / (1 + beta), so symmetric nudging needs beta < 1; others:
  s_L <- f_L(u_L + beta (y - s_L)), Laborieux et al.'s form).
- ``cross_entropy`` / ``bce``: the last layer is a readout a_L = W_L s_{L-1} + b_L outside the
  energy (Laborieux et al. 2021, Sec. 2.3); C = L(a_L, y) nudges s_{L-1} by -beta W_L^T dL/da_L;
  the readout's own update is (beta_+ dC/dW_L(s+) - beta_- dC/dW_L(s-)) / (beta_+ - beta_-), the
  mean of the two for symmetric nudging.
The prediction is the free fixed point's output (``forward``), not a feedforward pass.

Scellier & Bengio (2017). Equilibrium propagation: bridging the gap between energy-based models
and backpropagation. Front. Comput. Neurosci. 11:24.
Laborieux, Ernoult, Scellier, Bengio, Grollier & Querlioz (2021). Scaling equilibrium propagation
to deep ConvNets by drastically reducing its gradient estimator bias. Front. Neurosci. 15:633674.
Xie & Seung (2003). Equivalence of backpropagation and contrastive Hebbian learning in a layered
network. Neural Comput. 15, 441-454 (the feedback strength gamma).

Locality: each synapse W_l,ij updates from the product of its own pre- and post-synaptic
activities in two phases; the feedback is the same synapse read backwards (symmetric weights, so
weight transport remains); the nudge enters at the output only. Cost per batch: the input's drive
W_1 x + b_1 once, then per step one product per coupling in each direction, no autograd.

The options, their defaults and the measurements behind them: docs/energy_based.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ngrad.errors import ConfigError
from ngrad.nn.network import Network
from ngrad.options import check_bounds
from ngrad.rules.base import StepRecord, write_layer_update
from ngrad.rules.energy_based.energy import (
    TopUpdate,
    bottom_up,
    one_hot_like,
    readout_error,
    write_contrastive_gradients,
)
from ngrad.rules.energy_based.fixed_point import fixed_point_gradient
from ngrad.rules.energy_based.hopfield import HopfieldRule, RelaxationOptions, phase_scalars
from ngrad.rules.energy_based.relaxation import in_place
from ngrad.search_space import LogUniform, Uniform, tunable

__all__ = ["EquilibriumPropagation"]


def _add_scaled(drive: Tensor, other: Tensor, scale: Tensor | float) -> Tensor:
    """drive += scale x other, in place (``scale``: a number, or a column: one per sample)."""
    if isinstance(scale, Tensor):
        return drive.addcmul_(other, scale.view(-1, *([1] * (drive.dim() - 1))))
    return drive.add_(other, alpha=scale)


@dataclass(frozen=True)
class EquilibriumPropagationOptions(RelaxationOptions):
    """RelaxationOptions plus the nudged phases."""

    nudging_strength: float = 0.1  # beta, how strongly the cost nudges the top relaxed layer
    nudging: Literal["symmetric", "one_sided"] = "symmetric"  # +beta and -beta (bias O(beta^2))
    #     or +beta against the free state (bias O(beta))
    nudged_steps: int = 20  # T2, the most steps of each nudged phase

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bounds(self, positive=("nudging_strength",), at_least_one=("nudged_steps",))


class EquilibriumPropagation(HopfieldRule):
    name = "ep"
    summary = "equilibrium propagation: Hebbian difference of two nudged fixed points (+-beta)"
    citation = "Scellier & Bengio 2017, Front. Comput. Neurosci.; Laborieux et al. 2021"
    Options = EquilibriumPropagationOptions
    search_space = tunable(
        nudging_strength=LogUniform(0.01, 1.0), feedback_strength=Uniform(0.05, 1.0)
    )

    def __init__(self, network: Network, loss="cross_entropy", **options: Any) -> None:
        super().__init__(network, loss, **options)
        if self.uses_readout and len(network.layers) < 2:
            raise ConfigError("rule 'ep' with a readout (non-mse loss) needs a hidden layer")
        linear_output = network.layers[-1].activation.name == "identity"
        symmetric = self.options.nudging == "symmetric"
        beta = self.options.nudging_strength
        if not self.uses_readout and linear_output and symmetric and beta >= 1:
            raise ConfigError(
                "rule 'ep': symmetric nudging of linear output units needs nudging_strength < 1 "
                "(at -beta the nudged energy has no minimum)"
            )

    @property
    def uses_readout(self) -> bool:
        return self.loss.name != "mse"

    @property
    def relaxed_layers(self) -> int:
        return len(self.network.layers) - int(self.uses_readout)

    def predict(self, inputs: Tensor, states: Sequence[Tensor]) -> Tensor:
        if self.uses_readout:
            readout = self.network.layers[-1]
            return readout.activation(bottom_up(readout, states[-1]))
        return states[-1]

    def nudged_update(self, targets: Tensor, signs: float | Sequence[float]) -> TopUpdate:
        """The top relaxed layer's update in the phase nudged with strength sign x beta; with
        several ``signs``, the batch stacks one block of samples per sign (``targets`` holds each
        block's targets)."""
        units = self.unit_activations()[-1]
        top = in_place(units)
        signs = [signs] if isinstance(signs, (int, float)) else list(signs)
        beta, count = self.options.nudging_strength, targets.shape[0]
        if len(signs) == 1:
            nudge: Tensor | float = signs[0] * beta
        else:  # sign x beta per sample, as a column
            column = torch.tensor(signs).repeat_interleave(count // len(signs))[:, None]
            nudge = column.to(self.network.layers[-1].weight).mul_(beta)
        nudge_neg = -nudge
        if self.uses_readout:
            readout, loss = self.network.layers[-1], self.loss
            pull = nudge_neg * count  # the losses' dL/da_L carry 1/N: the nudge acts per sample

            def nudge_hidden(drive: Tensor, state: Tensor) -> Tensor:
                error = readout_error(loss, readout, state, targets)  # dL/da_L, mean over batch
                force = readout.transpose(error, readout.weight, state.shape, state)
                return top(_add_scaled(drive, force, pull))

            return nudge_hidden
        weight = self.network.layers[-1].weight  # the output units' one-hot target, x beta
        target = torch.nn.functional.one_hot(targets, weight.shape[0]).to(weight.dtype).mul_(nudge)
        if units.name == "identity":  # exact minimiser of G + beta |s - y|^2 / 2 - u s
            scale = 1.0 + nudge

            def nudge_linear_output(drive: Tensor, _state: Tensor) -> Tensor:
                return drive.add_(target).div_(scale)

            return nudge_linear_output

        def nudge_output(drive: Tensor, state: Tensor) -> Tensor:  # f(u + beta (y - s))
            return top(_add_scaled(drive.add_(target), state, nudge_neg))

        return nudge_output

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        options, beta = self.options, self.options.nudging_strength
        drive = self.input_drive(inputs)
        free = self.free_phase(drive)
        steps = options.nudged_steps
        if options.nudging == "symmetric" and options.tolerance == 0:
            # both phases run every step from s^0: as one batch of 2N (one product where there
            # were two); with a tolerance each runs alone, so neither computes a settled block
            stacked = [torch.cat([state, state]) for state in free.states]
            update = self.nudged_update(targets.repeat(2), (1.0, -1.0))
            nudged = self.phases(torch.cat([drive, drive]), stacked, steps, update, 2)
            plus, low, minus_states = nudged[0], -beta, nudged[1].states
        elif options.nudging == "symmetric":
            nudged = [
                self.phase(drive, free.states, steps, self.nudged_update(targets, sign))
                for sign in (1.0, -1.0)
            ]
            plus, low, minus_states = nudged[0], -beta, nudged[1].states
        else:
            nudged = [self.phase(drive, free.states, steps, self.nudged_update(targets, 1.0))]
            plus, low, minus_states = nudged[0], 0.0, free.states
        base = 1.0 / ((beta - low) * inputs.shape[0])
        gamma, top = options.feedback_strength, self.relaxed_layers - 1
        scales = [base * gamma ** (index - top) for index in range(top + 1)]
        errors = write_contrastive_gradients(
            self.network, inputs, plus.states, minus_states, scales
        )
        if self.uses_readout:
            errors.append(self._write_readout_gradient(plus.states, minus_states, targets, low))
        output = self.predict(inputs, free.states)
        scalars = {**phase_scalars("free", free), **phase_scalars("nudged", *nudged)}
        return StepRecord(self.loss(output, targets), output, tuple(errors), scalars)

    def _write_readout_gradient(self, plus, minus, targets: Tensor, low: float) -> Tensor:
        """(beta+ dC/dW_L(s+) - beta- dC/dW_L(s-)) / (beta+ - beta-): the readout's EP update."""
        readout, beta = self.network.layers[-1], self.options.nudging_strength
        weights = [(plus[-1], beta / (beta - low))]
        if low != 0.0:
            weights.append((minus[-1], -low / (beta - low)))
        weight_grad, error_sum = None, None
        for state, weight in weights:
            error = readout_error(self.loss, readout, state, targets).mul_(weight)
            grad = readout.weight_gradient(error, state)
            weight_grad = grad if weight_grad is None else weight_grad.add_(grad)
            error_sum = error if error_sum is None else error_sum.add_(error)
        write_layer_update(readout, weight_grad, readout.bias_gradient(error_sum))
        return error_sum

    @torch.no_grad()
    def fixed_point_gradients(
        self, inputs: Tensor, targets: Tensor, states: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """dC/dW_l and dC/db_l at the free fixed point ``states`` by implicit differentiation
        (what recurrent backprop computes): the oracle EP's update tends to as beta -> 0."""
        layers = self.network.layers
        cost_gradient = [torch.zeros_like(s) for s in states]
        direct_weight, direct_bias = [], []
        if self.uses_readout:
            error = readout_error(self.loss, layers[-1], states[-1], targets)
            top = states[-1]
            cost_gradient[-1] = layers[-1].transpose(error, layers[-1].weight, top.shape, top)
            direct_weight = [layers[-1].weight_gradient(error, states[-1])]
            direct_bias = [layers[-1].bias_gradient(error)]
        else:
            output = states[-1]
            cost_gradient[-1] = (output - one_hot_like(targets, output)) / output.shape[0]
        _, weights, biases = fixed_point_gradient(
            self.network, inputs, states, cost_gradient, self.options.feedback_strength
        )
        return [*weights, *direct_weight], [*biases, *direct_bias]

    def diagnose(self, inputs: Tensor, targets: Tensor) -> dict[str, float | list[float]]:
        """Free-phase energy and residual per step; the angle of the EP update to the gradient
        at the free fixed point (recurrent backprop), and of that gradient to feedforward BP."""
        from ngrad.numeric import angle_degrees
        from ngrad.rules.reference import backprop_reference

        with torch.no_grad():
            trace = self.relaxation_trace(inputs)
            self.backward(inputs, targets)
            updates = [layer.weight.grad.clone() for layer in self.network.layers]
            exact, _ = self.fixed_point_gradients(inputs, targets, trace["states"])
        feedforward = backprop_reference(self.network, self.loss, inputs, targets)
        return {
            "energy_by_step": trace["energy_by_step"],
            "residual_by_step": trace["residual_by_step"],
            "angle_to_fixed_point_gradient_deg_by_layer": [
                angle_degrees(u, g) for u, g in zip(updates, exact, strict=True)
            ],
            "fixed_point_gradient_angle_to_bp_deg_by_layer": [
                angle_degrees(g, b)
                for g, b in zip(exact, feedforward.weight_gradients, strict=True)
            ],
        }
