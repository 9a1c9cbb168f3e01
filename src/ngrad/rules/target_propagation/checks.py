"""Reference properties of the target-propagation family (docs/target_propagation.md).

Oracles: exact layer inverses built here with ``torch.linalg.inv``, per-sample Jacobians from
``torch.autograd.functional.jacobian`` and ``jvp``, and autograd's backprop. Each
property fails for a sign-flipped update; DTP's also fail without the difference correction and
for feedback trained without noise.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from ngrad.nn.network import Network, mlp
from ngrad.numeric import angle_degrees, mean_angle_degrees
from ngrad.rules import LearningRule, make_rule
from ngrad.rules.checking import (
    CheckResult,
    bp_gradients,
    check_of,
    dense_network,
    max_relative_error,
    random_batch,
    weight_updates,
)
from ngrad.rules.reference import angles_to_backprop
from ngrad.rules.target_propagation import conv_checks  # noqa: F401  (registers the conv checks)
from ngrad.rules.target_propagation.difference_target_propagation import DifferenceTargetPropagation
from ngrad.rules.target_propagation.direct_difference_target_propagation import (
    DirectDifferenceTargetPropagation,
)
from ngrad.rules.target_propagation.local_difference_reconstruction import (
    LocalDifferenceReconstruction,
)
from ngrad.rules.target_propagation.target_propagation import TargetPropagation
from ngrad.rules.target_propagation.targets import output_gradient

__all__ = [
    "autograd_output_jacobians",
    "damped_gauss_newton",
    "inverse_mismatch",
    "square_network",
    "train_feedback",
]


def square_network(activation: str = "tanh", width: int = 5, depth: int = 3, seed: int = 0):
    """width -> width -> ... (depth layers), hidden ``activation``, identity output; float64."""
    torch.manual_seed(seed)
    return mlp([width] * (depth + 1), activation=activation).double()


def autograd_output_jacobians(network: Network, inputs: Tensor) -> list[Tensor]:
    """dh_L/dh_i for every layer output i (shape N x n_L x n_i), sample by sample, by autograd."""
    with torch.no_grad():
        activities = network.trace(inputs).activities[1:]
    jacobians = []
    for index, activity in enumerate(activities):

        def upper(h: Tensor, start: int = index + 1) -> Tensor:
            for layer in network.layers[start:]:
                h = layer(h)
            return h

        rows = [torch.autograd.functional.jacobian(upper, row.unsqueeze(0)) for row in activity]
        jacobians.append(torch.stack([row.squeeze(2).squeeze(0) for row in rows]))
    return jacobians


def damped_gauss_newton(jacobian: Tensor, top: Tensor, damping: float) -> Tensor:
    """(J^T J + lambda I)^{-1} J^T Delta_L per sample (the normal equations, solved directly)."""
    width = jacobian.shape[2]
    eye = torch.eye(width, dtype=jacobian.dtype)
    normal = jacobian.transpose(1, 2) @ jacobian + damping * eye
    rhs = jacobian.transpose(1, 2) @ top.unsqueeze(-1)
    return torch.linalg.solve(normal, rhs).squeeze(-1)


def train_feedback(rule: LearningRule, inputs: Tensor, labels: Tensor, steps: int, lr: float):
    """Plain SGD on the rule's feedback parameters only, through ``backward`` (forward weights
    stay fixed)."""
    optimiser = torch.optim.SGD(rule.feedback_parameters(), lr=lr)
    for _ in range(steps):
        rule.backward(inputs, labels)
        optimiser.step()


def inverse_mismatch(rule: DifferenceTargetPropagation, inputs: Tensor) -> list[float]:
    """Per feedback g_l: mean over samples of |J_g(h_l) J_f(h_{l-1}) - I|_F / sqrt(n_{l-1}), the
    round trip h_{l-1} -> f_l -> g_l differentiated by autograd."""
    with torch.no_grad():
        activities = rule.network.trace(inputs).activities
    mismatch = []
    for index in rule.feedback_layers:
        layer = rule.network.layers[index]

        def round_trip(below: Tensor, index: int = index, layer=layer) -> Tensor:
            return rule.feedback_map(index, layer(below)).sum(dim=0)  # rows are independent

        jacobian = torch.autograd.functional.jacobian(
            round_trip, activities[index], vectorize=True
        ).transpose(0, 1)  # N x n x n
        width = jacobian.shape[-1]
        gap = jacobian - torch.eye(width, dtype=jacobian.dtype)
        mismatch.append(float(gap.flatten(1).norm(dim=1).mean()) / math.sqrt(width))
    return mismatch


def _differences(rule, inputs: Tensor, labels: Tensor) -> list[Tensor]:
    with torch.no_grad():
        trace = rule.network.trace(inputs)
        return rule.propagate_targets(trace, rule.top_difference(trace, labels))


@check_of(TargetPropagation)
def check_exact_inverse_round_trip(rule_name: str, **options) -> list[CheckResult]:
    """With no top step, inverting from the top reproduces every lower activity."""
    results = []
    for activation in ("tanh", "leaky_relu"):
        rule = make_rule(rule_name, square_network(activation), **options)
        inputs, _ = random_batch((5,), 5)
        with torch.no_grad():
            trace = rule.network.trace(inputs)
            differences = rule.propagate_targets(trace, torch.zeros_like(trace.output))
        error = max(float(d.abs().max()) for d in differences)
        results.append(
            CheckResult(
                rule_name,
                f"round trip h_L -> h_1 by exact inverses ({activation})",
                error,
                1e-10,
                "<",
            )
        )
    return results


@check_of(TargetPropagation)
def check_first_order_update(rule_name: str, **options) -> list[CheckResult]:
    """eta -> 0: grad W_l = sum_n f'(a_l) * (J_l^{-1} dl_n/dh_L) h_{l-1}^T / N (J_l by autograd)."""
    network = square_network("tanh")
    rule = make_rule(rule_name, network, **{**options, "target_step": 1e-7})
    inputs, labels = random_batch((5,), 5)
    rule.backward(inputs, labels)
    with torch.no_grad():
        trace = network.trace(inputs)
        top_gradient = output_gradient(rule.loss, trace, labels)
    expected = []
    jacobians = autograd_output_jacobians(network, inputs)
    for index, layer in enumerate(network.layers):
        step = torch.linalg.solve(jacobians[index], top_gradient.unsqueeze(-1)).squeeze(-1)
        slope = layer.activation.derivative(
            trace.pre_activations[index], trace.activities[index + 1]
        )
        delta = slope * step / inputs.shape[0]
        expected.append(delta.t() @ trace.activities[index])
    error = max_relative_error(weight_updates(rule), expected)
    return [
        CheckResult(
            rule_name, "update at eta=1e-7 vs f'(a) J^-1 dl/dh_L h^T (rel.)", error, 1e-4, "<"
        )
    ]


@check_of(DifferenceTargetPropagation)
def check_exact_inverse_feedback_gives_tp(rule_name: str, **options) -> list[CheckResult]:
    """Linear square network, g_l := the exact inverse (V = W^-1, c = -W^-1 b): DTP's update is
    TP's (and so, with g exact, DTP reduces to TP)."""
    network = square_network("identity")
    inputs, labels = random_batch((5,), 5)
    rule = make_rule(rule_name, copy.deepcopy(network), **{**options, "target_step": 0.3})
    with torch.no_grad():
        for slot, index in enumerate(rule.feedback_layers):
            layer = rule.network.layers[index]
            inverse_t = torch.linalg.inv(layer.weight).t()  # u M + c = (u - b) W^-T
            rule.feedback_weights[slot].copy_(inverse_t)
            rule.feedback_biases[slot].copy_(-layer.bias @ inverse_t)
    rule.backward(inputs, labels)
    reference = make_rule("tp", network, target_step=0.3)
    reference.backward(inputs, labels)
    error = max_relative_error(weight_updates(rule), weight_updates(reference))
    return [
        CheckResult(
            rule_name, "g := exact inverse (linear net) gives TP's update (rel.)", error, 1e-10, "<"
        )
    ]


@check_of(
    DifferenceTargetPropagation, DirectDifferenceTargetPropagation, LocalDifferenceReconstruction
)
def check_zero_loss_no_update(rule_name: str, **options) -> list[CheckResult]:
    """Output exactly on its target (zero loss): every target equals its activity, no update."""
    network = dense_network(sizes=(6, 8, 7, 3))
    with torch.no_grad():
        network.layers[-1].weight.zero_()
        network.layers[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    rule = make_rule(rule_name, network, loss="mse", **options)
    inputs, _ = random_batch((6,), 3)
    rule.backward(inputs, torch.zeros(inputs.shape[0], dtype=torch.long))
    largest = max(float(layer.weight.grad.abs().max()) for layer in network.layers)
    return [CheckResult(rule_name, "zero loss: largest forward update", largest, 1e-12, "<")]


@check_of(DifferenceTargetPropagation)
def check_feedback_learns_inverse(rule_name: str, **options) -> list[CheckResult]:
    """Training the feedback alone shrinks the reconstruction error |g(f(h)) - h|^2."""
    rule = make_rule(rule_name, dense_network(sizes=(6, 8, 8, 3)), **options)
    inputs, labels = random_batch((6,), 3, n=64)

    def reconstruction_error() -> float:
        with torch.no_grad():
            trace = rule.network.trace(inputs)
            return sum(
                float(
                    (
                        rule.feedback_map(index, trace.activities[index + 1])
                        - trace.activities[index]
                    )
                    .pow(2)
                    .mean()
                )
                for index in rule.feedback_layers
            )

    before = reconstruction_error()
    train_feedback(rule, inputs, labels, steps=200, lr=0.5)
    ratio = reconstruction_error() / before
    return [
        CheckResult(
            rule_name, "reconstruction error after / before 200 feedback steps", ratio, 0.5, "<"
        )
    ]


@check_of(DifferenceTargetPropagation)
def check_targets_are_the_feedback_linearisation(rule_name: str, **options) -> list[CheckResult]:
    """eta -> 0, untrained g: the difference correction makes Delta_{l-1} = J_g(h_l) Delta_l
    (J_g by autograd), so the update is -f'(a_l) * (Delta_l / eta) h_{l-1}^T / N.
    Without the correction (h^_{l-1} = g(h^_l)) the targets keep g's reconstruction error."""
    network = dense_network(sizes=(6, 8, 7, 3))
    rule = make_rule(rule_name, network, **{**options, "target_step": 1e-6})
    inputs, labels = random_batch((6,), 3)
    rule.backward(inputs, labels)
    with torch.no_grad():
        trace = network.trace(inputs)
    signals = [-output_gradient(rule.loss, trace, labels)]  # Delta_l / eta, from the top
    for index in range(len(network.layers) - 1, 0, -1):
        above, layer = trace.activities[index + 1], network.layers[index]
        if index in rule.feedback_layers:
            _, signal = torch.autograd.functional.jvp(
                lambda h, index=index: rule.feedback_map(index, h), above, signals[-1]
            )
        else:  # Lee et al.'s variant: a gradient step through W_L
            slope = layer.activation.derivative(trace.pre_activations[index], above)
            signal = (signals[-1] * slope) @ layer.weight
        signals.append(signal.detach())
    signals.reverse()
    expected = []
    for index, layer in enumerate(network.layers):
        slope = layer.activation.derivative(
            trace.pre_activations[index], trace.activities[index + 1]
        )
        expected.append(-(slope * signals[index]).t() @ trace.activities[index] / len(inputs))
    error = max_relative_error(weight_updates(rule), expected)
    return [
        CheckResult(
            rule_name, "update at eta=1e-6 vs g's linearisation J_g Delta (rel.)", error, 1e-4, "<"
        )
    ]


@check_of(DifferenceTargetPropagation)
def check_noise_trains_a_local_inverse(rule_name: str, **options) -> list[CheckResult]:
    """Inputs on a line, so each layer's activities span few directions: the noise in the
    reconstruction loss trains J_g J_f -> I around the data, not only along it (worst layer's
    |J_g J_f - I| after / before 100 feedback steps; without noise it barely moves)."""
    network = square_network("tanh", width=6)
    rule = make_rule(rule_name, network, **{"noise": 0.3, **options})
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(1, 6, generator=generator, dtype=torch.float64)
    inputs = torch.randn(32, 1, generator=generator, dtype=torch.float64) @ direction
    labels = torch.randint(0, 6, (32,), generator=generator)
    before = inverse_mismatch(rule, inputs)
    train_feedback(rule, inputs, labels, steps=100, lr=1.0)
    after = inverse_mismatch(rule, inputs)
    ratio = max(a / b for a, b in zip(after, before, strict=True))
    return [
        CheckResult(
            rule_name,
            "rank-1 inputs: |J_g J_f - I| after / before feedback training",
            ratio,
            0.8,
            "<",
        )
    ]


@check_of(DirectDifferenceTargetPropagation)
def check_targets_align_with_gauss_newton(rule_name: str, **options) -> list[CheckResult]:
    """After DRL training on one input, each hidden target difference is the damped Gauss-Newton
    one (J^T J + lambda I)^{-1} J^T Delta_L, J = dh_L/dh_l by autograd (worst angle, degrees)."""
    network = dense_network(sizes=(6, 8, 7, 3))
    rule = make_rule(rule_name, network, **{"noise": 1e-3, **options})
    sample, label = random_batch((6,), 3, n=1)
    inputs, labels = sample.expand(128, -1).clone(), label.expand(128).clone()
    for lr in (0.5, 0.1, 0.02):  # an annealed step averages the gradient noise out
        train_feedback(rule, inputs, labels, steps=100, lr=lr)
    differences = _differences(rule, sample, label)
    jacobians = autograd_output_jacobians(network, sample)
    worst = max(
        mean_angle_degrees(
            differences[index],
            damped_gauss_newton(jacobians[index], differences[-1], rule.options.damping),
        )
        for index in range(len(network.layers) - 1)
    )
    return [
        CheckResult(
            rule_name, "angle of trained targets to damped Gauss-Newton (deg)", worst, 2.0, "<"
        )
    ]


@check_of(DirectDifferenceTargetPropagation)
def check_gauss_newton_feedback_update(rule_name: str, **options) -> list[CheckResult]:
    """Linear network, Q_l := J_l^T (J_l J_l^T + lambda I)^-1: the update is the damped
    Gauss-Newton target's local update, f'(a) = 1: -(GN difference) h^T / (eta N)."""
    network = dense_network(activation="identity", sizes=(6, 8, 7, 3))
    rule = make_rule(rule_name, network, **options)
    inputs, labels = random_batch((6,), 3)
    jacobians = autograd_output_jacobians(network, inputs[:1])  # the same for every sample
    damping = rule.options.damping
    with torch.no_grad():
        for block, jacobian in zip(rule.feedback_matrices(), jacobians, strict=False):
            eye = torch.eye(jacobian.shape[1], dtype=jacobian.dtype)
            gram = jacobian[0] @ jacobian[0].t() + damping * eye
            block.copy_(torch.linalg.solve(gram, jacobian[0]))  # (J J^T + lambda)^-1 J = Q^T
        trace = network.trace(inputs)
    rule.backward(inputs, labels)
    step, count = rule.options.target_step, inputs.shape[0]
    top = -step * output_gradient(rule.loss, trace, labels)
    expected = []
    for index, jacobian in enumerate(jacobians):
        difference = damped_gauss_newton(jacobian.expand(count, -1, -1), top, damping)
        if index == len(jacobians) - 1:
            difference = top
        expected.append(-difference.t() @ trace.activities[index] / (step * count))
    error = max_relative_error(weight_updates(rule), expected)
    return [
        CheckResult(
            rule_name, "linear net, Q := damped pseudo-inverse: GN update (rel.)", error, 1e-10, "<"
        )
    ]


@check_of(LocalDifferenceReconstruction)
def check_transposed_feedback_is_backprop(rule_name: str, **options) -> list[CheckResult]:
    """Linear network, V_l := W_l^T: g(h^) - g(h) = W^T Delta exactly, so the update is BP's
    for any beta."""
    network = dense_network(activation="identity", sizes=(6, 8, 7, 3))
    rule = make_rule(rule_name, network, **{**options, "target_step": 0.5})
    with torch.no_grad():
        for weight, layer in zip(rule.feedback_weights, network.layers[1:], strict=True):
            weight.copy_(layer.weight)
    inputs, labels = random_batch((6,), 3)
    rule.backward(inputs, labels)
    reference = bp_gradients(network, inputs, labels)
    error = max_relative_error(weight_updates(rule), reference.weight_gradients)
    return [
        CheckResult(rule_name, "linear net, V := W^T gives the BP update (rel.)", error, 1e-10, "<")
    ]


@check_of(LocalDifferenceReconstruction)
def check_trained_feedback_approaches_backprop(rule_name: str, **options) -> list[CheckResult]:
    """Small beta, feedback trained on the L-DRL alone: the update is close to BP's (worst layer
    angle, degrees); V also turns toward W^T."""
    network = dense_network(sizes=(6, 12, 10, 3))
    rule = make_rule(rule_name, network, **{"target_step": 1e-3, "feedback_rate": 1.0, **options})
    inputs, labels = random_batch((6,), 3, n=64)
    before = max(angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs())
    train_feedback(rule, inputs, labels, steps=300, lr=0.05)
    worst = max(angles_to_backprop(rule, inputs, labels))
    after = max(angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs())
    return [
        CheckResult(
            rule_name,
            "beta=1e-3, trained feedback: worst update angle to BP (deg)",
            worst,
            10.0,
            "<",
        ),
        CheckResult(
            rule_name, "angle(V, W^T) after / before feedback training", after / before, 0.5, "<"
        ),
    ]
