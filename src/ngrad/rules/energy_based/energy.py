"""Layered Hopfield networks for the energy-based rules (EP, CHL): energy, relaxation, gradient.

The network's layers are the Hopfield network: states s_1..s_M (activities, in the range of each
layer's activation f_l), the input s_0 = x clamped, and the layers' weights as symmetric couplings,
with a feedback strength gamma (Xie & Seung 2003; gamma = 1 is Scellier & Bengio's energy):

    E(s) = sum_{l=1}^{M} gamma^{l-1} [ sum_i G_l(s_{l,i}) - s_l . (W_l s_{l-1} + b_l) ],
    G_l' = f_l^{-1};   dE/ds_l = gamma^{l-1} (f_l^{-1}(s_l) - u_l),
    u_l = W_l s_{l-1} + b_l + gamma W_{l+1}^T s_{l+1}          (no feedback term for l = M)

so a state is a fixed point of the discrete-time dynamics s_l <- f_l(u_l) (Laborieux et al. 2021's
s <- f(dPhi/ds), Phi = sum_l s_l . (W_l s_{l-1} + b_l), at gamma = 1) exactly when dE/ds = 0. G_l
integrates f_l^{-1} (Hopfield 1984): (1+s)log(1+s)/2 + (1-s)log(1-s)/2 for tanh, s log s +
(1-s) log(1-s) for the sigmoid, s^2/2 for the identity and relu. Given its neighbours, E is
separable and convex in one layer's states and f_l(u_l) is the exact minimiser: updating the odd
layers, then the even ones (``schedule="alternating"``) is block coordinate descent and never
raises E; updating every layer from the old state (``"synchronous"``, Laborieux et al.'s code)
costs the same without that guarantee. As gamma -> 0 the free fixed point is the feedforward pass.

M = L when the output units relax (squared-error variant), M = L - 1 when the last layer is a
readout of s_{L-1} outside the energy (Laborieux et al. 2021's cross-entropy variant). The top
relaxed layer takes a ``top_update(u_M, s_M)``: f_M(u_M) in the free phase, the nudged or clamped
rule otherwise.

:func:`fixed_point_gradient` is the oracle EP is measured against: the gradient of a cost C(s*) at
the free fixed point s*(theta) by implicit differentiation (what recurrent backprop computes):
    v = H^{-1} dC/ds,  H = d^2E/ds^2,   dC/dW_l = (dC/dW_l)_direct + gamma^{l-1} (v_l s_{l-1}^T +
    s_l v_{l-1}^T),   dC/db_l = (dC/db_l)_direct + gamma^{l-1} v_l,
solved per sample by conjugate gradients on I - sqrt(gamma) D^{1/2} K D^{1/2} (D = f'(u), K the
symmetric layer coupling): H = Gamma^{1/2} D^{-1/2} (that matrix) D^{-1/2} Gamma^{1/2}. The same
v is -ds/dbeta at beta = 0, the activity difference EP measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ngrad.nn.activations import LEAKY_RELU_SLOPE, Activation
from ngrad.nn.layers import DenseLayer, Layer
from ngrad.nn.losses import Loss
from ngrad.nn.network import Network
from ngrad.options import check_bounds
from ngrad.rules.base import LearningRule, assign_gradient

__all__ = [
    "ENERGY_INTEGRALS",
    "SOFTMAX_GROUP",
    "HopfieldRule",
    "Relaxation",
    "TopUpdate",
    "bottom_up",
    "fixed_point_gradient",
    "hopfield_energy",
    "relax",
    "write_contrastive_gradients",
]

TopUpdate = Callable[[Tensor, Tensor], Tensor]  # (drive u_M, current s_M) -> new s_M


def _tanh_integral(s: Tensor) -> Tensor:
    return 0.5 * (torch.xlogy(1 + s, 1 + s) + torch.xlogy(1 - s, 1 - s))


def _sigmoid_integral(s: Tensor) -> Tensor:
    return torch.xlogy(s, s) + torch.xlogy(1 - s, 1 - s)


def _quadratic_integral(s: Tensor) -> Tensor:
    return 0.5 * s * s


def _leaky_integral(s: Tensor) -> Tensor:
    return 0.5 * s * torch.where(s > 0, s, s / LEAKY_RELU_SLOPE)


def _not_elementwise(_pre: Tensor, _activity: Tensor) -> Tensor:
    raise NotImplementedError("the softmax group's derivative is not elementwise")


# A group of output units with p = softmax(u): the minimiser of sum_i p_i log p_i - u . p on the
# simplex (negative entropy is the Legendre dual of log-sum-exp), so it relaxes like any layer.
SOFTMAX_GROUP = Activation("softmax", lambda pre: torch.softmax(pre, dim=1), _not_elementwise)


# G_l = integral of f_l^{-1} per activation; gelu (not monotone) has none: no Hopfield energy.
ENERGY_INTEGRALS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": _tanh_integral,
    "sigmoid": _sigmoid_integral,
    "identity": _quadratic_integral,
    "relu": _quadratic_integral,
    "leaky_relu": _leaky_integral,
    "softmax": lambda p: torch.xlogy(p, p),  # summed over the group: its negative entropy
}


def bottom_up(layer: Layer, below: Tensor) -> Tensor:
    """W_l s_{l-1} + b_l (one fused product for dense layers)."""
    if isinstance(layer, DenseLayer) and layer.bias is not None:
        return torch.addmm(layer.bias, below.flatten(1), layer.weight.t())
    return layer.pre_activation(below)


def add_top_down(
    drive: Tensor, layer_above: Layer, above: Tensor, strength: float, in_place: bool
) -> Tensor:
    """drive + strength W_{l+1}^T s_{l+1}; ``in_place`` only where ``drive`` is a fresh tensor."""
    if isinstance(layer_above, DenseLayer) and drive.dim() == 2:
        if in_place:
            return drive.addmm_(above, layer_above.weight, alpha=strength)
        return torch.addmm(drive, above, layer_above.weight, alpha=strength)
    back = layer_above.transpose(above, layer_above.weight, drive.shape)
    return drive.add(back, alpha=strength)


@dataclass(frozen=True)
class Relaxation:
    """States s_1..s_M after ``steps_used`` steps; ``residual``: max |s^t - s^{t-1}| of the last
    step (the violation of the fixed-point equation at the previous state)."""

    states: list[Tensor]
    residual: float
    steps_used: int


@torch.no_grad()
def relax(
    network: Network,
    input_drive: Tensor,
    states: Sequence[Tensor],
    steps: int,
    top_update: TopUpdate | None,
    feedback_strength: float = 1.0,
    schedule: str = "alternating",
    tolerance: float = 0.0,
) -> Relaxation:
    """Run ``steps`` steps of s_l <- f_l(u_l) (the top layer through ``top_update``, or held
    where it is None: clamped) from ``states``; ``input_drive`` = W_1 x + b_1 is computed once per
    batch by the caller. With a positive ``tolerance`` it stops once no state moves by more."""
    if not states:
        return Relaxation([], 0.0, 0)
    top = len(states) - 1
    order = _order(top + 1, schedule)
    if top_update is None:
        order = [index for index in order if index != top]
    layers = list(network.layers)
    # bind each layer's pieces once per phase: the loop below runs per step
    ascend = [_bottom_up_of(layer) for layer in layers[: top + 1]]
    descend = [_top_down_of(layer, feedback_strength) for layer in layers[1 : top + 1]]
    functions = [layer.activation.function for layer in layers[:top]]
    current = list(states)

    def update(index: int) -> Tensor:
        drive = input_drive if index == 0 else ascend[index](current[index - 1])
        if index < top:
            drive = descend[index](drive, current[index + 1], index > 0)
            return functions[index](drive)
        return top_update(drive, current[index])

    residual, used = float("inf"), 0
    for step in range(steps):
        previous = list(current)
        if schedule == "synchronous":
            current = [update(index) for index in order]
        else:
            for index in order:
                current[index] = update(index)
        used = step + 1
        if tolerance > 0 or step == steps - 1:
            residual = max(
                float((new - old).abs().max()) for new, old in zip(current, previous, strict=True)
            )
            if residual <= tolerance:
                break
    return Relaxation(current, residual, used)


def _bottom_up_of(layer: Layer) -> Callable[[Tensor], Tensor]:
    if isinstance(layer, DenseLayer) and layer.bias is not None:
        bias, weight_t = layer.bias, layer.weight.t()
        return lambda below: torch.addmm(bias, below.flatten(1), weight_t)
    return layer.pre_activation


def _top_down_of(layer_above: Layer, strength: float) -> Callable[[Tensor, Tensor, bool], Tensor]:
    if isinstance(layer_above, DenseLayer):
        weight = layer_above.weight

        def dense(drive: Tensor, above: Tensor, in_place: bool) -> Tensor:
            if drive.dim() != 2:
                return add_top_down(drive, layer_above, above, strength, in_place)
            if in_place:
                return drive.addmm_(above, weight, alpha=strength)
            return torch.addmm(drive, above, weight, alpha=strength)

        return dense
    return lambda drive, above, in_place: add_top_down(drive, layer_above, above, strength, False)


def _order(count: int, schedule: str) -> list[int]:
    if schedule == "synchronous":
        return list(range(count))
    if schedule == "alternating":
        return [*range(0, count, 2), *range(1, count, 2)]
    raise ValueError(f"unknown schedule {schedule!r}; choose alternating or synchronous")


def feedforward_states(
    network: Network, input_drive: Tensor, activations: Sequence[Activation]
) -> list[Tensor]:
    """s_l = f_l(W_l s_{l-1} + b_l) for the relaxed layers: the relaxation's start without
    feedback (``activations[l]``: the units' nonlinearity, usually the layer's own)."""
    states = [activations[0](input_drive)] if activations else []
    for index in range(1, len(activations)):
        states.append(activations[index](bottom_up(network.layers[index], states[-1])))
    return states


@torch.no_grad()
def hopfield_energy(
    network: Network,
    inputs: Tensor,
    states: Sequence[Tensor],
    feedback_strength: float = 1.0,
    activations: Sequence[Activation] | None = None,
) -> Tensor:
    """E(s) per sample (shape: batch), the relaxed layers being the first ``len(states)``, their
    units' nonlinearities ``activations`` (default: the layers' own)."""
    energy = torch.zeros(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
    below = inputs
    for index, (layer, state) in enumerate(zip(network.layers, states, strict=False)):
        activation = layer.activation if activations is None else activations[index]
        integral = ENERGY_INTEGRALS[activation.name](state)
        term = integral - state * layer.pre_activation(below)
        energy = energy + feedback_strength**index * term.flatten(1).sum(1)
        below = state
    return energy


def _per_sample_dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))


def _broadcast(per_sample: Tensor, like: Tensor) -> Tensor:
    return per_sample.view(-1, *([1] * (like.dim() - 1)))


def _conjugate_gradients(operator, rhs: list[Tensor], iterations: int, tolerance: float):
    """Solve A z = rhs for each sample (A symmetric positive definite), batched."""
    z = [torch.zeros_like(r) for r in rhs]
    residual, direction = list(rhs), list(rhs)
    norm = _per_sample_dot(residual, residual)
    target = tolerance**2 * float(norm.max())
    for _ in range(iterations):
        if float(norm.max()) <= target:
            break
        product = operator(direction)
        curvature = _per_sample_dot(direction, product)
        step = torch.where(curvature > 0, norm / curvature, torch.zeros_like(norm))
        z = [v + _broadcast(step, v) * p for v, p in zip(z, direction, strict=True)]
        residual = [r - _broadcast(step, r) * q for r, q in zip(residual, product, strict=True)]
        new_norm = _per_sample_dot(residual, residual)
        ratio = torch.where(norm > 0, new_norm / norm, torch.zeros_like(norm))
        direction = [r + _broadcast(ratio, p) * p for r, p in zip(residual, direction, strict=True)]
        norm = new_norm
    return z


@torch.no_grad()
def fixed_point_gradient(
    network: Network,
    inputs: Tensor,
    states: Sequence[Tensor],
    cost_gradient: Sequence[Tensor],
    feedback_strength: float = 1.0,
    iterations: int = 300,
    tolerance: float | None = None,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """At the fixed point ``states``, v = H^{-1} dC/ds and the implicit part of dC/dW_l and
    dC/db_l for the relaxed layers (batch sums); the caller adds C's direct dependence. CG stops
    at ``tolerance`` x the first residual (default: 100 x the dtype's machine epsilon)."""
    layers, gamma, count = list(network.layers), feedback_strength, len(states)
    below = [inputs, *states[:-1]]
    roots = []  # D^{1/2} = sqrt(f'(u)) per relaxed layer
    for index, state in enumerate(states):
        drive = layers[index].pre_activation(below[index])
        if index < count - 1:
            drive = add_top_down(drive, layers[index + 1], states[index + 1], gamma, False)
        roots.append(layers[index].activation.derivative(drive, state).clamp_min(0).sqrt())

    def operator(z: Sequence[Tensor]) -> list[Tensor]:  # (I - sqrt(gamma) D^1/2 K D^1/2) z
        scaled = [d * v for d, v in zip(roots, z, strict=True)]
        result = []
        for index in range(count):
            coupled = torch.zeros_like(scaled[index])
            if index > 0:
                coupled = coupled + layers[index].linear(scaled[index - 1], layers[index].weight)
            if index < count - 1:
                coupled = add_top_down(coupled, layers[index + 1], scaled[index + 1], 1.0, False)
            result.append(z[index] - gamma**0.5 * roots[index] * coupled)
        return result

    weights = [gamma ** (-index / 2) for index in range(count)]  # Gamma^{-1/2}
    rhs = [w * d * c for w, d, c in zip(weights, roots, cost_gradient, strict=True)]
    if tolerance is None:
        tolerance = 100 * torch.finfo(inputs.dtype).eps
    z = _conjugate_gradients(operator, rhs, iterations, tolerance)
    adjoint = [w * d * v for w, d, v in zip(weights, roots, z, strict=True)]
    weight_gradients, bias_gradients = [], []
    for index, layer in enumerate(layers[:count]):
        gradient = layer.weight_gradient(adjoint[index], below[index])
        if index > 0:
            gradient = gradient + layer.weight_gradient(states[index], adjoint[index - 1])
        weight_gradients.append(gamma**index * gradient)
        bias_gradients.append(gamma**index * layer.bias_gradient(adjoint[index]))
    return adjoint, weight_gradients, bias_gradients


def write_contrastive_gradients(
    network: Network,
    inputs: Tensor,
    positive: Sequence[Tensor],
    negative: Sequence[Tensor],
    scales: Sequence[float],
) -> list[Tensor]:
    """grad W_l = -c_l sum_n (s+_l s+_{l-1}^T - s-_l s-_{l-1}^T), grad b_l = -c_l sum_n (s+_l -
    s-_l), c_l = ``scales[l]``, for the relaxed layers (s_0 = x in both states, so the first layer
    needs one product). Returns the scaled activity differences -c_l (s+_l - s-_l)."""
    differences = []
    for index, (plus, minus, scale) in enumerate(zip(positive, negative, scales, strict=True)):
        layer = network.layers[index]
        difference = (plus - minus).mul_(-scale)
        if index == 0:
            gradient = layer.weight_gradient(difference, inputs)
        else:
            gradient = layer.weight_gradient(plus, positive[index - 1])
            gradient = gradient.sub_(layer.weight_gradient(minus, negative[index - 1]))
            gradient = gradient.mul_(-scale)
        assign_gradient(layer.weight, gradient)
        if layer.bias is not None:
            assign_gradient(layer.bias, layer.bias_gradient(difference))
        differences.append(difference)
    return differences


def one_hot_like(targets: Tensor, like: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(targets, like.shape[1]).to(like.dtype)


def readout_error(loss: Loss, readout: Layer, state: Tensor, targets: Tensor) -> Tensor:
    """e = dL/da_L of the readout a_L = W_L s_{L-1} + b_L (with the losses' 1/N)."""
    activation: Activation = readout.activation
    pre = bottom_up(readout, state)
    return loss.output_error(pre, activation(pre), targets, activation)


@dataclass(frozen=True)
class RelaxationOptions:
    """The free-phase options every Hopfield rule shares (subclassed by each rule's options)."""

    free_steps: int = 15  # T1
    feedback_strength: float = 0.25  # gamma; 1 = the plain layered Hopfield energy
    schedule: Literal["alternating", "synchronous"] = "alternating"
    initial_state: Literal["feedforward", "zeros"] = "feedforward"
    tolerance: float = 0.0  # > 0: a phase stops once no state changes by more than this

    def __post_init__(self) -> None:
        if not 0 < self.feedback_strength <= 1:
            raise ValueError(
                f"option 'feedback_strength' must be in (0, 1], got {self.feedback_strength}"
            )
        check_bounds(self, non_negative=("tolerance",), at_least_one=("free_steps",))


class HopfieldRule(LearningRule):
    """A rule on the layered Hopfield network; it predicts from the free fixed point.

    Subclasses give options ``free_steps``, ``feedback_strength``, ``schedule``, ``initial_state``
    and ``tolerance``, and may change ``relaxed_layers`` (M) and ``predict(states)``."""

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        for number, layer in enumerate(network.layers, start=1):
            if layer.activation.name not in ENERGY_INTEGRALS:
                return (
                    f"layer {number}'s activation {layer.activation.name!r} has no Hopfield "
                    f"energy (it needs a monotone one: {', '.join(ENERGY_INTEGRALS)})"
                )
        return None

    @property
    def relaxed_layers(self) -> int:
        return len(self.network.layers)

    def input_drive(self, inputs: Tensor) -> Tensor:
        return bottom_up(self.network.layers[0], inputs)

    def unit_activations(self) -> list[Activation]:
        """The nonlinearity of each relaxed layer's units (the layers' own by default)."""
        return [layer.activation for layer in list(self.network.layers)[: self.relaxed_layers]]

    def initial_states(self, input_drive: Tensor) -> list[Tensor]:
        """The feedforward pass (``initial_state="feedforward"``) or zeros."""
        units = self.unit_activations()
        layers = list(self.network.layers)[: len(units)]
        if self.options.initial_state == "feedforward":
            return feedforward_states(self.network, input_drive, units)
        if all(isinstance(layer, DenseLayer) for layer in layers[1:]):
            count = input_drive.shape[0]
            return [torch.zeros_like(input_drive)] + [
                input_drive.new_zeros(count, layer.out_features) for layer in layers[1:]
            ]
        states = feedforward_states(self.network, input_drive, units)  # for the shapes
        return [torch.zeros_like(state) for state in states]

    def phase(
        self,
        input_drive: Tensor,
        states: Sequence[Tensor],
        steps: int,
        top_update: TopUpdate | None,
    ) -> Relaxation:
        options = self.options
        return relax(
            self.network,
            input_drive,
            states,
            steps,
            top_update,
            options.feedback_strength,
            options.schedule,
            options.tolerance,
        )

    def free_update(self) -> TopUpdate:
        top = self.unit_activations()[-1]
        return lambda drive, _state: top(drive)

    def free_phase(self, input_drive: Tensor) -> Relaxation:
        """Relax from the initial state with the input clamped and the output free."""
        start = self.initial_states(input_drive)
        return self.phase(input_drive, start, self.options.free_steps, self.free_update())

    def predict(self, inputs: Tensor, states: Sequence[Tensor]) -> Tensor:
        """The network's output given relaxed states (the top state by default)."""
        return states[-1]

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> Tensor:
        return self.predict(inputs, self.free_phase(self.input_drive(inputs)).states)

    @torch.no_grad()
    def representations(self, inputs: Tensor) -> list[Tensor]:
        """The free fixed point's hidden states (what the rule predicts from), then its output
        as ``forward`` gives it (logits where the output units use a link or a readout)."""
        states = list(self.free_phase(self.input_drive(inputs)).states)
        output = self.predict(inputs, states)
        hidden = states[: len(self.network.layers) - 1]
        return [*hidden, output]

    @torch.no_grad()
    def relaxation_trace(self, inputs: Tensor) -> dict[str, Any]:
        """Energy and residual at every step of the free phase (diagnostics, step by step)."""
        gamma, units = self.options.feedback_strength, self.unit_activations()
        drive = self.input_drive(inputs)
        states = self.initial_states(drive)
        energies = [float(hopfield_energy(self.network, inputs, states, gamma, units).mean())]
        residuals = []
        for _ in range(self.options.free_steps):
            step = relax(
                self.network, drive, states, 1, self.free_update(), gamma, self.options.schedule
            )
            states = step.states
            energy = hopfield_energy(self.network, inputs, states, gamma, units)
            energies.append(float(energy.mean()))
            residuals.append(step.residual)
        return {"energy_by_step": energies, "residual_by_step": residuals, "states": states}
