"""Reference properties of dtp, ddtp and ldrl on convolutional networks with max-pooling
(docs/target_propagation.md), registered beside the dense ones of ``checks``.

The network: two 3x3 conv blocks, each max-pooled 2x2 (a pooled map's feedback unpools at the
forward pass's switches, then convolves transposed), a dense hidden layer and a linear
classifier, float64. Oracles: autograd's backprop through torch's own max-pool, Jacobian-vector
products of the feedback by autograd, and closed-form feedback for linear networks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ngrad.nn.network import Network, convnet
from ngrad.numeric import angle_degrees
from ngrad.rules import LearningRule, make_rule
from ngrad.rules.checking import (
    CheckResult,
    bp_gradients,
    check_of,
    max_relative_error,
    random_batch,
    weight_updates,
)
from ngrad.rules.reference import angles_to_backprop
from ngrad.rules.target_propagation.difference_target_propagation import DifferenceTargetPropagation
from ngrad.rules.target_propagation.direct_difference_target_propagation import (
    DirectDifferenceTargetPropagation,
)
from ngrad.rules.target_propagation.local_difference_reconstruction import (
    LocalDifferenceReconstruction,
)
from ngrad.rules.target_propagation.pathways import output_jacobians
from ngrad.rules.target_propagation.targets import output_gradient

__all__ = ["CONV_INPUT", "pooled_conv_network", "train_feedback_only"]

CONV_INPUT = (2, 8, 8)
LEARNED = (
    DifferenceTargetPropagation,
    DirectDifferenceTargetPropagation,
    LocalDifferenceReconstruction,
)


def pooled_conv_network(
    activation: str = "tanh", pool: int = 2, stride: int = 1, seed: int = 0
) -> Network:
    """2x8x8 -> conv 3x3 (3 maps) [pool] -> conv 3x3 (4 maps) [pool] -> 6 -> 3, float64."""
    torch.manual_seed(seed)
    network = convnet(
        CONV_INPUT,
        (3, 4),
        num_classes=3,
        kernel_size=3,
        stride=stride,
        activation=activation,
        hidden=(6,),
        pool=pool,
    )
    return network.double()


def train_feedback_only(rule: LearningRule, inputs: Tensor, steps: int, lr: float) -> None:
    """Plain SGD on the rule's feedback parameters through feedback-only steps."""
    optimiser = torch.optim.SGD(rule.feedback_parameters(), lr=lr)
    for _ in range(steps):
        rule.train_feedback(inputs)
        optimiser.step()


@check_of(*LEARNED)
def check_conv_zero_loss_no_update(rule_name: str, **options) -> list[CheckResult]:
    """Conv net, output exactly on its target: g(h^) - g(h) = 0 at every layer (the difference
    correction cancels g's reconstruction error), so no layer learns."""
    network = pooled_conv_network()
    with torch.no_grad():
        network.layers[-1].weight.zero_()
        network.layers[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    rule = make_rule(rule_name, network, loss="mse", **options)
    inputs, _ = random_batch(CONV_INPUT, 3)
    rule.backward(inputs, torch.zeros(inputs.shape[0], dtype=torch.long))
    largest = max(float(layer.weight.grad.abs().max()) for layer in network.layers)
    return [
        CheckResult(rule_name, "pooled conv net, zero loss: largest update", largest, 1e-12, "<")
    ]


@check_of(DifferenceTargetPropagation)
def check_conv_targets_are_the_feedback_linearisation(
    rule_name: str, **options
) -> list[CheckResult]:
    """Pooled conv net, eta -> 0: Delta_{l-1} = J_g(h_l) Delta_l through the reversed blocks
    (unpool at the switches, transposed conv, J_g by autograd), so the update is
    -f'(a_l) * (Delta_l / eta) h_{l-1}^T / N."""
    network = pooled_conv_network()
    rule = make_rule(rule_name, network, **{**options, "target_step": 1e-6})
    inputs, labels = random_batch(CONV_INPUT, 3)
    rule.backward(inputs, labels)
    with torch.no_grad():
        trace = network.trace(inputs)
    signals = [-output_gradient(rule.loss, trace, labels)]  # Delta_l / eta, from the top
    for index in range(len(network.layers) - 1, 0, -1):
        shape, switches = trace.activities[index].shape, trace.switches_of(index)

        def feedback(h: Tensor, index=index, shape=shape, switches=switches) -> Tensor:
            return rule.feedback_map(index, h, shape, switches)

        _, signal = torch.autograd.functional.jvp(
            feedback, trace.activities[index + 1], signals[-1]
        )
        signals.append(signal.detach())
    signals.reverse()
    expected = []
    for index, layer in enumerate(network.layers):
        slope = layer.activation.derivative(
            trace.pre_activations[index], trace.activities[index + 1]
        )
        delta = -(slope * signals[index]) / len(inputs)
        expected.append(
            layer.weight_gradient(delta, trace.activities[index], switches=trace.switches_of(index))
        )
    error = max_relative_error(weight_updates(rule), expected)
    return [
        CheckResult(
            rule_name, "pooled conv, eta=1e-6: update vs J_g Delta (rel.)", error, 1e-4, "<"
        )
    ]


@check_of(DifferenceTargetPropagation)
def check_conv_feedback_learns_inverse(rule_name: str, **options) -> list[CheckResult]:
    """Pooled conv net: feedback-only training shrinks |g(f(h)) - h|^2 of the reversed blocks."""
    rule = make_rule(rule_name, pooled_conv_network(), **options)
    inputs, _ = random_batch(CONV_INPUT, 3, n=32)

    def reconstruction_error() -> float:
        with torch.no_grad():
            trace = rule.network.trace(inputs)
            return sum(
                float(
                    (
                        rule.feedback_map(
                            index,
                            trace.activities[index + 1],
                            trace.activities[index].shape,
                            trace.switches_of(index),
                        )
                        - trace.activities[index]
                    )
                    .pow(2)
                    .mean()
                )
                for index in rule.feedback_layers
            )

    before = reconstruction_error()
    train_feedback_only(rule, inputs, steps=200, lr=0.1)
    ratio = reconstruction_error() / before
    return [
        CheckResult(rule_name, "pooled conv: reconstruction error after / before", ratio, 0.5, "<")
    ]


@check_of(DirectDifferenceTargetPropagation)
def check_conv_gauss_newton_feedback_update(rule_name: str, **options) -> list[CheckResult]:
    """Linear strided conv net, Q_l := J_l^T (J_l J_l^T + lambda I)^-1 (J_l = dh_L/dh_l, the same
    for every sample): the update is the damped Gauss-Newton target's local update."""
    network = pooled_conv_network("identity", pool=1, stride=2)
    rule = make_rule(rule_name, network, **options)
    inputs, labels = random_batch(CONV_INPUT, 3)
    damping, step, count = rule.options.damping, rule.options.target_step, inputs.shape[0]
    with torch.no_grad():
        trace = network.trace(inputs)
        jacobians = output_jacobians(network, trace)
        for block, jacobian in zip(rule.feedback_matrices(), jacobians, strict=False):
            gram = jacobian[0] @ jacobian[0].t()
            gram.diagonal().add_(damping)
            block.copy_(torch.linalg.solve(gram, jacobian[0]))  # (J J^T + lambda)^-1 J = Q^T
    rule.backward(inputs, labels)
    top = -step * output_gradient(rule.loss, trace, labels)
    expected = []
    for index, (layer, jacobian) in enumerate(zip(network.layers, jacobians, strict=True)):
        difference = top
        if index < len(jacobians) - 1:
            normal = jacobian[0].t() @ jacobian[0]
            normal.diagonal().add_(damping)
            difference = torch.linalg.solve(normal, jacobian[0].t() @ top.t()).t()
        delta = -difference.view(trace.pre_activations[index].shape) / (step * count)
        expected.append(layer.weight_gradient(delta, trace.activities[index]))
    error = max_relative_error(weight_updates(rule), expected)
    return [
        CheckResult(
            rule_name, "linear conv net, Q := damped pseudo-inverse: GN update", error, 1e-9, "<"
        )
    ]


@check_of(LocalDifferenceReconstruction)
def check_conv_transposed_feedback_is_backprop(rule_name: str, **options) -> list[CheckResult]:
    """Linear pooled conv net, V_l := W_l: g(h^) - g(h) = W^T U(Delta) exactly (transposed
    conv after unpooling at the switches), so the update is BP's (autograd through torch's
    max-pool) for any beta."""
    network = pooled_conv_network("identity")
    rule = make_rule(rule_name, network, **{**options, "target_step": 0.5})
    with torch.no_grad():
        for weight, layer in zip(rule.feedback_weights, network.layers[1:], strict=True):
            weight.copy_(layer.weight)
    inputs, labels = random_batch(CONV_INPUT, 3)
    rule.backward(inputs, labels)
    reference = bp_gradients(network, inputs, labels)
    error = max_relative_error(weight_updates(rule), reference.weight_gradients)
    return [
        CheckResult(rule_name, "linear pooled conv, V := W: BP's update (rel.)", error, 1e-10, "<")
    ]


@check_of(LocalDifferenceReconstruction)
def check_conv_trained_feedback_approaches_backprop(rule_name: str, **options) -> list[CheckResult]:
    """Pooled conv net, small beta, feedback trained on the L-DRL alone: the feedback loss falls,
    V turns toward W and the update comes close to BP's (worst layer angle, degrees)."""
    network = pooled_conv_network()
    rule = make_rule(rule_name, network, **{"target_step": 1e-3, "feedback_rate": 1.0, **options})
    inputs, labels = random_batch(CONV_INPUT, 3, n=64)
    first = sum(rule.train_feedback(inputs).values())
    before = max(angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs())
    train_feedback_only(rule, inputs, steps=300, lr=0.05)
    last = sum(rule.train_feedback(inputs).values())
    worst = max(angles_to_backprop(rule, inputs, labels))
    after = max(angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs())
    return [
        CheckResult(rule_name, "pooled conv: L-DRL after - before training", last - first, 0, "<"),
        CheckResult(rule_name, "pooled conv: angle(V, W) after / before", after / before, 0.5, "<"),
        CheckResult(
            rule_name, "pooled conv, beta=1e-3: worst update angle to BP (deg)", worst, 10.0, "<"
        ),
    ]
