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
  step that would raise F (batch mean) by more than its float rounding is not taken, and alpha
  halves for the batch's remaining steps. Both decisions are taken on the device (torch.where),
  so training never waits for them. It never fires while alpha < 2 / (curvature of F),
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
input's prediction W_1 x + b_1 is computed once per batch. On a VGG-style net of max-pooled conv
layers there is one value node per block, at its pooled pre-activation (PCX, Pinchetti et al.
2025, puts one after each block's pool): mu_l = maxpool(W_l * f(x_{l-1})) + b_l, whose adjoint
goes through the switches of the current prediction (recorded with it, so a step costs one
product each way per layer).

The options, their defaults and the measurements behind them: docs/energy_based.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ngrad.nn.layers import DenseLayer, Layer
from ngrad.nn.losses import Loss
from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.base import LearningRule, StepRecord, write_layer_update
from ngrad.rules.energy_based.energy import bottom_up
from ngrad.search_space import LogUniform, Uniform, tunable

__all__ = ["Inference", "InferenceState", "PredictiveCoding", "free_energy", "prediction_errors"]


@dataclass(frozen=True)
class InferenceState:
    """Value nodes x_1..x_{L-1} with their rates f(x_l), the errors eps_1..eps_L, the output's
    prediction mu_L (a pre-activation) and, per layer, the switches of its max-pooling at its
    input (None for a layer without; empty: none recorded, found from the rates when needed)."""

    values: list[Tensor]
    rates: list[Tensor]
    errors: list[Tensor]
    top_prediction: Tensor
    switches: list[Tensor | None] = field(default_factory=list)


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
    return InferenceState(values, list(trace.activities[1:-1]), errors, top, list(trace.switches))


def _prediction(layer: Layer, rate: Tensor) -> tuple[Tensor, Tensor | None]:
    """mu = W f(x) + b and its pooling's switches (None without)."""
    if isinstance(layer, DenseLayer):
        return bottom_up(layer, rate), None
    return layer.pre_activation_and_switches(rate)


def prediction_errors(
    network: Network,
    loss: Loss,
    input_prediction: Tensor,
    values: Sequence[Tensor],
    targets: Tensor,
    clamping: float,
    input_switches: Tensor | None = None,
    previous: InferenceState | None = None,
    fixed: int = 0,
) -> InferenceState:
    """eps_l = x_l - mu_l for the hidden nodes and eps_L = -gamma dL/dmu_L (per sample);
    ``input_prediction`` = W_1 x + b_1 (with its pooling's ``input_switches``), computed once per
    batch. ``values`` stepped from ``previous``, whose first ``fixed`` nodes were still at the
    feedforward pass (zero errors: the step moved none below ``fixed`` - 1): the errors, rates and
    predictions that did not change are taken from ``previous``, not recomputed."""
    layers = network.layers
    fixed = fixed if previous is not None else 0
    kept = max(fixed - 1, 0)  # the nodes the step left alone
    rates = [*previous.rates[:kept]] if kept else []
    errors = [*previous.errors[:kept]] if kept else []
    switches = [*previous.switches[:kept]] if kept else [input_switches]
    for index in range(kept, len(values)):
        rates.append(layers[index].activation(values[index]))
        if index == 0:
            prediction = input_prediction
        elif index < fixed:  # its input never moved: mu is the feedforward value it started at
            prediction, where = previous.values[index], previous.switches[index]
            switches.append(where)
        else:
            prediction, where = _prediction(layers[index], rates[index - 1])
            switches.append(where)
        errors.append(values[index] - prediction)
    top = input_prediction
    if rates:
        top, where = _prediction(layers[-1], rates[-1])
        switches.append(where)
    errors.append(output_error_node(network, loss, top, targets, clamping))
    return InferenceState(list(values), rates, errors, top, switches)


@torch.no_grad()
def free_energy(
    state: InferenceState, network: Network, loss: Loss, targets: Tensor, clamping: float
) -> float:
    """F averaged over the batch: mean of sum_l |eps_l|^2 / 2 (hidden) + gamma L(mu_L, y)."""
    return float(_free_energy(state, network, loss, targets, clamping))


def _free_energy(
    state: InferenceState,
    network: Network,
    loss: Loss,
    targets: Tensor,
    clamping: float,
    start: int = 0,
) -> Tensor:
    """:func:`free_energy` as a 0-d tensor on the batch's device (no wait for the device); the
    hidden errors before ``start`` are known to be zero."""
    count = state.top_prediction.shape[0]
    hidden = sum(torch.dot(e.flatten(), e.flatten()) for e in state.errors[start:-1]) / (2 * count)
    output = network.layers[-1].activation(state.top_prediction)
    return hidden + clamping * loss(output, targets)


def _choose(take: Tensor, new: InferenceState, old: InferenceState) -> InferenceState:
    """``new`` where the 0-d boolean ``take`` holds, else ``old`` (on the device, no branch; on
    the CPU reading ``take`` waits for nothing, so it branches and copies nothing)."""
    if take.device.type == "cpu":
        return new if bool(take) else old

    def pick(first: Sequence[Tensor], second: Sequence[Tensor]) -> list[Tensor]:
        return [
            a if a is b else torch.where(take, a, b) for a, b in zip(first, second, strict=True)
        ]

    top = torch.where(take, new.top_prediction, old.top_prediction)
    switches = [
        a if a is None or b is None or a is b else torch.where(take, a, b)
        for a, b in zip(new.switches, old.switches, strict=False)
    ]
    return InferenceState(
        pick(new.values, old.values),
        pick(new.rates, old.rates),
        pick(new.errors, old.errors),
        top,
        switches,
    )


def state_gradients(network: Network, state: InferenceState, start: int = 0) -> list[Tensor]:
    """dF/dx_l = eps_l - f_l'(x_l) * W_{l+1}^T eps_{l+1} for the hidden value nodes from index
    ``start`` on (those before it have zero errors around them: their gradient is zero)."""
    layers, gradients = network.layers, []
    for index in range(start, len(state.values)):
        value, above = state.values[index], layers[index + 1]
        where = state.switches[index + 1] if index + 1 < len(state.switches) else None
        back = above.transpose(
            state.errors[index + 1], above.weight, value.shape, state.rates[index], switches=where
        )
        slope = layers[index].activation.derivative(value, state.rates[index])
        gradients.append(torch.addcmul(state.errors[index], slope, back, value=-1.0))
    return gradients


SETTLE_CHECK_EVERY = 16  # inference steps between the host's looks at whether all samples settled
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
    """One batch's inference: the feedforward pass it started from, the states it went through
    (index 0: the start; once settled the state stays put, so the list may run past the steps
    used), the steps it used, how often it halved the rate, and its residual: the largest
    |dF/dx| / gamma it last measured (at the final state when it stopped by the tolerance, at the
    state before its last step when the steps ran out), with the fraction of samples within the
    tolerance there. The counts are tensors on the batch's device; the properties read them."""

    trace: ForwardTrace
    states: list[InferenceState]
    steps_used: Tensor
    halvings: Tensor
    largest_residual: Tensor
    settled: Tensor

    @property
    def final(self) -> InferenceState:
        return self.states[-1]

    @property
    def visited(self) -> list[InferenceState]:
        """Every state the inference visited (index 0: the start; one per step used)."""
        return self.states[: int(self.steps_used) + 1]

    @property
    def rate_halvings(self) -> int:
        return int(self.halvings)

    @property
    def residual(self) -> float:
        return float(self.largest_residual)

    @property
    def settled_fraction(self) -> float:
        return float(self.settled)

    def scalars(self) -> dict[str, Tensor]:
        """What a StepRecord reports of the inference (0-d tensors: read once, when logged)."""
        dtype = self.largest_residual.dtype
        return {
            "inference_residual": self.largest_residual,
            "inference_settled_fraction": self.settled,
            "inference_steps_used": self.steps_used.to(dtype),
            "rate_halvings": self.halvings.to(dtype),
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
    search_space = tunable(output_clamping=LogUniform(0.01, 1.0), inference_rate=Uniform(0.05, 0.5))

    @torch.no_grad()
    def infer(self, inputs: Tensor, targets: Tensor) -> Inference:
        """Run the inference from the feedforward pass until it settles or its steps run out. A
        step that would raise F (the batch mean) beyond rounding is not taken (the state stays
        put for that step) and the rate halves for the batch's remaining steps. The decisions
        are taken on the device; the host looks only every ``SETTLE_CHECK_EVERY`` steps whether
        it may stop early (the settled state stays put meanwhile, so the result is the same)."""
        options, network, loss = self.options, self.network, self.loss
        clamping, tolerance = options.output_clamping, options.tolerance
        trace = network.trace(inputs)
        state = feedforward_state(network, trace, loss, targets, clamping)
        energy = _free_energy(state, network, loss, targets, clamping)
        rounding = ROUNDING_SLACK * torch.finfo(inputs.dtype).eps
        rate = inputs.new_tensor(options.inference_rate)
        halvings = torch.zeros((), dtype=torch.long, device=inputs.device)
        used = torch.zeros_like(halvings)
        done = torch.zeros((), dtype=torch.bool, device=inputs.device)
        largest = inputs.new_full((inputs.shape[0],), float("inf"))
        states = [state]
        fixed = len(state.values)  # leading nodes still at the feedforward pass (zero errors)
        for step in range(options.steps):
            start = max(fixed - 1, 0)  # the first node the errors above can move
            gradients = state_gradients(network, state, start)
            if tolerance > 0 or step == options.steps - 1:
                largest = torch.where(done, largest, residual(gradients, state, clamping))
                if tolerance > 0:
                    done = done | (largest.max() <= tolerance)
            values = state.values[:start] + [
                torch.addcmul(value, gradient, rate, value=-1.0)
                for value, gradient in zip(state.values[start:], gradients, strict=True)
            ]
            candidate = prediction_errors(
                network, loss, trace.pre_activations[0], values, targets, clamping,
                trace.switches_of(0), state, fixed,
            )  # fmt: skip
            fixed = start
            candidate_energy = _free_energy(candidate, network, loss, targets, clamping, start)
            accept = (candidate_energy <= energy + rounding * energy.abs()) & ~done
            rejected = ~(accept | done)
            state = _choose(accept, candidate, state)
            energy = torch.where(accept, candidate_energy, energy)
            rate = torch.where(rejected, rate / 2, rate)
            halvings += rejected
            used += ~done
            states.append(state)
            if tolerance > 0 and (step + 1) % SETTLE_CHECK_EVERY == 0 and bool(done):
                break
        settled = (largest <= tolerance).sum().to(inputs.dtype) / inputs.shape[0]
        return Inference(trace, states, used, halvings, largest.max(), settled)

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        inference = self.infer(inputs, targets)
        state = inference.final
        scale = -1.0 / (self.options.output_clamping * inputs.shape[0])
        rates = [inputs, *state.rates]
        errors = []
        layers = self.network.layers
        for index, (layer, error, rate) in enumerate(zip(layers, state.errors, rates, strict=True)):
            delta = error.mul(scale)  # the rule's estimate of dL/da_l
            where = state.switches[index] if index < len(state.switches) else None
            weight_update = layer.weight_gradient(delta, rate, switches=where)
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
