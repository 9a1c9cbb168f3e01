"""Predictive coding with inference learning (PC): value nodes settle, errors train the weights.

Value nodes x_l (l = 1..L-1) stand for the pre-activations a_l; x_0 = x (the input, clamped).
    mu_l = W_l f_{l-1}(x_{l-1}) + b_l          prediction of layer l from below (f_0 = identity)
    eps_l = x_l - mu_l                          prediction error, l = 1..L-1
    F(x) = sum_{l<L} |eps_l|^2 / 2 + gamma L(mu_L, y)        (free energy, per sample)
The output is clamped to the target through the loss with strength gamma (``output_clamping``):
its error node holds eps_L = -gamma dL/dmu_L; with the squared error and gamma = 1 that is
Whittington & Bogacz's eps_L = y - mu_L, the output value node clamped to y.
- inference, at most T = ``steps`` gradient steps of size alpha = ``inference_rate`` on every
  hidden node at once, from the feedforward pass (x_l = mu_l, so eps_l = 0 below the output):
    x_l <- x_l - alpha dF/dx_l,      dF/dx_l = eps_l - f_l'(x_l) * (W_{l+1}^T eps_{l+1})
  stopping once max |dF/dx| / gamma <= ``tolerance`` for every sample (settled; / gamma makes the
  residual an error in the loss's own units, as the errors scale with gamma). Backtracking: a
  step that would raise F (batch mean) by more than its float rounding is retried with alpha / 2
  (and the halved rate kept for the batch). It never fires while alpha < 2 / (curvature of F),
  so it changes neither the dynamics there nor the equilibrium; it stops the divergence that
  otherwise sets in once training has grown the weights past that bound.
- learning, with the errors at the state the inference reached (Hebbian: post error x pre rate):
    grad W_l = dF/dW_l / (gamma N) = -(1/(gamma N)) sum_n eps_l f_{l-1}(x_{l-1})^T
    grad b_l = -(1/(gamma N)) sum_n eps_l
At the equilibrium dF/dx = 0, eps_l = f_l'(x_l) * W_{l+1}^T eps_{l+1}: backprop's recursion, but
evaluated at the settled state rather than the feedforward one. As gamma -> 0 the state stays at
the feedforward pass, eps_l / gamma -> -dL/da_l, and the update tends to BP's gradient; at
gamma = 1 it differs (and the fixed-prediction variant is not what this rule does). Prediction:
a plain feedforward pass.

Whittington & Bogacz (2017). An approximation of the error backpropagation algorithm in a
predictive coding network with local Hebbian synaptic plasticity. Neural Comput. 29, 1229-1262.
Rao & Ballard (1999). Predictive coding in the visual cortex. Nat. Neurosci. 2, 79-87.

Locality: an error node compares its value node with the prediction from below; a value node
moves by its own error and the errors above, sent back through W^T (symmetric feedback, so weight
transport remains); each weight updates from its postsynaptic error and presynaptic rate. Runs on
dense and convolutional layers (through each layer's linear map and its adjoint), no autograd; the
input's prediction W_1 x + b_1 is computed once per batch.

The options, their defaults and the measurements behind them: docs/energy_based.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.losses import Loss
from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.base import LearningRule, StepRecord, write_layer_update
from ngrad.rules.energy_based.energy import bottom_up

__all__ = ["Inference", "InferenceState", "PredictiveCoding", "free_energy", "prediction_errors"]


@dataclass(frozen=True)
class InferenceState:
    """Value nodes x_1..x_{L-1} with their rates f(x_l), the errors eps_1..eps_L and the output's
    prediction mu_L (a pre-activation)."""

    values: list[Tensor]
    rates: list[Tensor]
    errors: list[Tensor]
    top_prediction: Tensor


def output_error_node(
    network: Network, loss: Loss, prediction: Tensor, targets: Tensor, clamping: float
) -> Tensor:
    """eps_L = -gamma dL/dmu_L for each sample (the losses give the batch mean: times N)."""
    top = network.layers[-1]
    gradient = loss.output_error(prediction, top.activation(prediction), targets, top.activation)
    return gradient.mul_(-clamping * prediction.shape[0])


def feedforward_state(
    network: Network, trace: ForwardTrace, loss: Loss, targets: Tensor, clamping: float
) -> InferenceState:
    """The inference's start: x_l = mu_l = a_l, so eps_l = 0 below the output."""
    values = list(trace.pre_activations[:-1])
    errors = [torch.zeros_like(value) for value in values]
    top = trace.pre_activations[-1]
    errors.append(output_error_node(network, loss, top, targets, clamping))
    return InferenceState(values, list(trace.activities[1:-1]), errors, top)


def prediction_errors(
    network: Network,
    loss: Loss,
    input_prediction: Tensor,
    values: Sequence[Tensor],
    targets: Tensor,
    clamping: float,
) -> InferenceState:
    """eps_l = x_l - mu_l for the hidden nodes and eps_L = -gamma dL/dmu_L (per sample);
    ``input_prediction`` = W_1 x + b_1, computed once per batch."""
    layers = network.layers
    rates = [layer.activation(value) for layer, value in zip(layers, values, strict=False)]
    errors = [values[0] - input_prediction] if values else []
    for index in range(1, len(values)):
        errors.append(values[index] - bottom_up(layers[index], rates[index - 1]))
    below = rates[-1] if rates else None
    top = input_prediction if below is None else bottom_up(layers[-1], below)
    errors.append(output_error_node(network, loss, top, targets, clamping))
    return InferenceState(list(values), rates, errors, top)


@torch.no_grad()
def free_energy(
    state: InferenceState, network: Network, loss: Loss, targets: Tensor, clamping: float
) -> float:
    """F averaged over the batch: mean of sum_l |eps_l|^2 / 2 (hidden) + gamma L(mu_L, y)."""
    count = state.top_prediction.shape[0]
    hidden = sum(float((e * e).sum()) for e in state.errors[:-1]) / (2 * count)
    output = network.layers[-1].activation(state.top_prediction)
    return hidden + clamping * float(loss(output, targets))


def state_gradients(network: Network, state: InferenceState) -> list[Tensor]:
    """dF/dx_l = eps_l - f_l'(x_l) * W_{l+1}^T eps_{l+1} for the hidden value nodes."""
    layers, gradients = network.layers, []
    for index, value in enumerate(state.values):
        above = layers[index + 1]
        back = above.transpose(state.errors[index + 1], above.weight, value.shape)
        slope = layers[index].activation.derivative(value, state.rates[index])
        gradients.append(torch.addcmul(state.errors[index], slope, back, value=-1.0))
    return gradients


MAX_HALVINGS = 8  # of the inference rate within one step
ROUNDING_SLACK = 64  # F may rise by this many machine epsilons x |F| (its float rounding) unchecked


@dataclass(frozen=True)
class PredictiveCodingOptions:
    steps: int = 8  # T, the most inference steps
    inference_rate: float = 0.2  # alpha, the inference step size (stable below 2 / curvature of F)
    output_clamping: float = 0.1  # gamma, the output's pull to the target: 1 clamps it fully,
    #     -> 0 is weak clamping, where the update tends to backprop's gradient
    tolerance: float = 1e-3  # the inference stops once no |dF/dx| / gamma exceeds this
    #     (0: it runs all its steps)

    def __post_init__(self) -> None:
        check_bounds(
            self,
            positive=("inference_rate", "output_clamping"),
            non_negative=("steps", "tolerance"),
        )


@dataclass(frozen=True)
class Inference:
    """One batch's inference: the feedforward pass it started from, every state it visited
    (index 0: the start), how often it halved the rate, and its residual: the largest
    |dF/dx| / gamma it last measured (at the final state when it stopped by the tolerance, at the
    state before its last step when the steps ran out), with the fraction of samples within the
    tolerance there."""

    trace: ForwardTrace
    visited: list[InferenceState]
    rate_halvings: int
    residual: float
    settled_fraction: float

    def scalars(self) -> dict[str, float]:
        """What a StepRecord reports of the inference."""
        return {
            "inference_residual": self.residual,
            "inference_settled_fraction": self.settled_fraction,
            "inference_steps_used": float(len(self.visited) - 1),
            "rate_halvings": float(self.rate_halvings),
        }


def residual(gradients: Sequence[Tensor], state: InferenceState, clamping: float) -> Tensor:
    """max |dF/dx_l| / gamma over every hidden node, per sample (``gradients``: the state's)."""
    largest = state.top_prediction.new_zeros(state.top_prediction.shape[0])
    for gradient in gradients:
        largest = torch.maximum(largest, gradient.abs().flatten(1).amax(1))
    return largest.div_(clamping)


class PredictiveCoding(LearningRule):
    name = "pc"
    summary = "predictive coding, inference learning: settle value nodes, Hebbian error updates"
    citation = "Whittington & Bogacz 2017, Neural Comput.; Rao & Ballard 1999"
    Options = PredictiveCodingOptions

    @torch.no_grad()
    def infer(self, inputs: Tensor, targets: Tensor) -> Inference:
        """Run the inference from the feedforward pass until it settles or its steps run out. A
        step that would raise F (the batch mean) beyond rounding is retried with half the rate,
        for the rest of the batch too (at most ``MAX_HALVINGS`` times per step; then the state
        stays put)."""
        options, network, loss = self.options, self.network, self.loss
        clamping, rate = options.output_clamping, options.inference_rate
        trace = network.trace(inputs)
        state = feedforward_state(network, trace, loss, targets, clamping)
        energy = free_energy(state, network, loss, targets, clamping)
        rounding = ROUNDING_SLACK * torch.finfo(inputs.dtype).eps
        visited, halvings = [state], 0
        largest = inputs.new_full((inputs.shape[0],), float("inf"))
        for step in range(options.steps):
            gradients = state_gradients(network, state)
            if options.tolerance > 0 or step == options.steps - 1:
                largest = residual(gradients, state, clamping)
                if options.tolerance > 0 and float(largest.max()) <= options.tolerance:
                    break
            for _attempt in range(MAX_HALVINGS + 1):
                values = [
                    value.sub(gradient, alpha=rate)
                    for value, gradient in zip(state.values, gradients, strict=True)
                ]
                candidate = prediction_errors(
                    network, loss, trace.pre_activations[0], values, targets, clamping
                )
                candidate_energy = free_energy(candidate, network, loss, targets, clamping)
                if candidate_energy <= energy + rounding * abs(energy):
                    state, energy = candidate, candidate_energy
                    break
                rate, halvings = rate / 2, halvings + 1
            visited.append(state)
        settled = float((largest <= options.tolerance).sum()) / inputs.shape[0]
        return Inference(trace, visited, halvings, float(largest.max()), settled)

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        inference = self.infer(inputs, targets)
        state = inference.visited[-1]
        scale = -1.0 / (self.options.output_clamping * inputs.shape[0])
        rates = [inputs, *state.rates]
        errors = []
        for layer, error, rate in zip(self.network.layers, state.errors, rates, strict=True):
            delta = error.mul(scale)  # the rule's estimate of dL/da_l
            weight_update = layer.weight_gradient(delta, rate)
            write_layer_update(layer, weight_update, layer.bias_gradient(delta))
            errors.append(delta)
        output = inference.trace.output
        loss = self.loss(output, targets)
        return StepRecord(loss, output, tuple(errors), inference.scalars())

    def diagnose(self, inputs: Tensor, targets: Tensor) -> dict[str, float | list[float]]:
        """Free energy and the largest |dF/dx| / gamma at every inference step (index 0: the
        start)."""
        clamping = self.options.output_clamping
        with torch.no_grad():
            visited = self.infer(inputs, targets).visited
            energies = [
                free_energy(state, self.network, self.loss, targets, clamping) for state in visited
            ]
            residuals = [
                float(residual(state_gradients(self.network, state), state, clamping).max())
                for state in visited
            ]
        return {"energy_by_step": energies, "residual_by_step": residuals}
