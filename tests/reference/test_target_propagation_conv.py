"""Float64 reference tests of dtp, ddtp and ldrl on convolutional networks with max-pooling: the
feedback losses' closed-form gradients through the reversed blocks (unpooling at the forward
switches, transposed convolution) against autograd, the diagnostics against autograd Jacobians,
L-DRL -> BP as beta -> 0, and the conv checks failing for wrong rules."""

import math

import pytest
import torch
from torch.nn import functional as F

import ngrad
from ngrad import rules
from ngrad.nn.losses import get_loss
from ngrad.numeric import mean_angle_degrees
from ngrad.rules.checking import max_relative_error, random_batch, run_checks
from ngrad.rules.reference import backprop_reference
from ngrad.rules.target_propagation import conv_checks
from ngrad.rules.target_propagation.checks import autograd_output_jacobians
from ngrad.rules.target_propagation.conv_checks import CONV_INPUT, pooled_conv_network
from ngrad.rules.target_propagation.difference_target_propagation import (
    DifferenceTargetPropagation,
    reconstruction_gradients,
)
from ngrad.rules.target_propagation.local_difference_reconstruction import (
    LocalDifferenceReconstruction,
    local_difference_gradients,
)
from ngrad.rules.target_propagation.targets import (
    TrainedFeedbackRule,
    gauss_newton_differences,
    output_gradient,
    output_jacobians,
)

LEARNED = [name for name, cls in rules.REGISTRY.items() if issubclass(cls, TrainedFeedbackRule)]


def _trace(network, x):
    with torch.no_grad():
        return network.trace(x)


def _unpool(signal, switches, size):
    """Max-unpooling by hand: each value back at its window's maximum, zeros elsewhere."""
    return F.max_unpool2d(signal, switches, 2, output_size=size)


def _forward_at(layer, inputs, switches, shape):
    """The layer's output with its maxima read at given switches (the block's linearisation)."""
    convolved = F.conv2d(inputs, layer.weight, padding=layer.padding)
    picked = convolved.flatten(2).gather(2, switches.flatten(2)).view(shape)
    return layer.activation(picked + layer.bias.view(1, -1, 1, 1))


def _feedback(layer, weight, signal, switches, size):
    """M^T U(signal): unpool, then the transposed convolution of torch."""
    return F.conv_transpose2d(_unpool(signal, switches, size), weight, padding=layer.padding)


@pytest.fixture
def case():
    network = pooled_conv_network()
    x, y = random_batch(CONV_INPUT, 3, n=6)
    return network, x, y, _trace(network, x)


def test_ldrl_conv_gradient_matches_autograd(case):
    network, x, _, trace = case
    rule = ngrad.make_rule("ldrl", network)
    layer, switches = network.layers[1], trace.switches_of(1)
    below, above = trace.activities[1], trace.activities[2]
    size = layer.convolved_size(*below.shape[2:])
    eps, eta = 0.1 * torch.randn_like(below), 0.1 * torch.randn_like(above)
    weight = rule.feedback_weights[0].detach().clone().requires_grad_()
    with torch.no_grad():
        loss, gradient = local_difference_gradients(
            layer, weight, below, above, torch.tanh(above), eps, eta, 0.1, switches
        )

    def g(h):
        return _feedback(layer, weight, torch.tanh(h), switches, size)

    r = g(above)
    noisy = _forward_at(layer, below + eps, switches, above.shape)
    expected = (-(eps * (g(noisy) - r)).sum() + 0.5 * (g(above + eta) - r).pow(2).sum()) / (
        0.01 * len(x)
    )
    (reference,) = torch.autograd.grad(expected, weight)
    assert math.isclose(loss, float(expected.detach()), rel_tol=1e-10)
    torch.testing.assert_close(gradient, reference, rtol=1e-10, atol=1e-13)


def test_dtp_conv_reconstruction_gradient_matches_autograd(case):
    network, x, _, trace = case
    rule = ngrad.make_rule("dtp", network)
    layer, switches = network.layers[1], trace.switches_of(1)
    below, above = trace.activities[1], trace.activities[2]
    size = layer.convolved_size(*below.shape[2:])
    noise = 0.3 * torch.randn_like(below)
    weight = rule.feedback_weights[0].detach().clone().requires_grad_()
    bias = torch.randn_like(rule.feedback_biases[0]).requires_grad_()
    with torch.no_grad():
        loss, grad_weight, grad_bias, pre = reconstruction_gradients(
            layer, weight, bias, below, above, noise, network.layers[0].activation, switches
        )
    up = _forward_at(layer, below + noise, switches, above.shape)
    rebuilt = torch.tanh(_feedback(layer, weight, up, switches, size) + bias.view(1, -1, 1, 1))
    expected = 0.5 * (rebuilt - below - noise).pow(2).sum() / len(x)
    reference = torch.autograd.grad(expected, [weight, bias])
    assert math.isclose(loss, float(expected.detach()), rel_tol=1e-10)
    torch.testing.assert_close(grad_weight, reference[0], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(grad_bias, reference[1], rtol=1e-10, atol=1e-13)
    clean = _feedback(layer, weight, above, switches, size) + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(pre, clean.detach(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("pool", "stride"), [(2, 1), (1, 2)])
def test_conv_jacobians_and_diagnostics_match_autograd(pool, stride):
    network = pooled_conv_network(pool=pool, stride=stride)
    x, y = random_batch(CONV_INPUT, 3, n=4)
    with torch.no_grad():
        mine = output_jacobians(network, network.trace(x))
    reference = [j.flatten(2) for j in autograd_output_jacobians(network, x)]
    assert max_relative_error(mine, reference) < 1e-12
    rule = ngrad.make_rule("ldrl", network)
    diagnosis = rule.diagnose(x, y)
    trace = _trace(network, x)
    top = rule.top_difference(trace, y)
    steps = [float((j.transpose(1, 2) @ top.unsqueeze(-1)).norm(dim=1).mean()) for j in reference]
    assert (
        max(abs(a - b) for a, b in zip(diagnosis["gradient_step_by_layer"], steps, strict=True))
        < 1e-12
    )
    mine_targets = rule.propagate_targets(trace, top)
    angles = [
        mean_angle_degrees(d, g)
        for d, g in zip(mine_targets, gauss_newton_differences(reference, top, 0.0), strict=True)
    ]
    assert diagnosis["gauss_newton_angle_by_layer"] == pytest.approx(angles, abs=1e-9)
    # |J_g - J_f^T|_F / |J_f|_F per sample, J_g and J_f of layer 1 by autograd
    layer, weight = network.layers[1], rule.feedback_weights[0].detach()
    ratios = []
    for n in range(len(x)):
        below, above = trace.activities[1][n : n + 1], trace.activities[2][n : n + 1]
        switches = trace.switches_of(1)
        switches = None if switches is None else switches[n : n + 1]

        def g(h, below=below, switches=switches):
            return layer.transpose(torch.tanh(h), weight, below.shape, switches=switches)

        j_f = torch.autograd.functional.jacobian(layer, below).reshape(above.numel(), -1)
        j_g = torch.autograd.functional.jacobian(g, above).reshape(below.numel(), -1)
        ratios.append(float((j_g - j_f.t()).norm() / j_f.norm()))
    measured = diagnosis["jacobian_mismatch_by_layer"][1]
    assert math.isclose(measured, sum(ratios) / len(ratios), rel_tol=1e-10)


def test_ldrl_conv_with_transposed_feedback_tends_to_backprop_as_beta_shrinks():
    """Leaky-ReLU pooled conv net (f'(h) = f'(a)), V := W: the update -> BP, error O(beta)."""
    network = pooled_conv_network("leaky_relu")
    x, y = random_batch(CONV_INPUT, 3, n=6)
    reference = backprop_reference(network, get_loss("cross_entropy"), x, y)
    errors = []
    for beta in (1e-1, 1e-2, 1e-3):
        rule = ngrad.make_rule("ldrl", network, target_step=beta)
        with torch.no_grad():
            for weight, layer in zip(rule.feedback_weights, network.layers[1:], strict=True):
                weight.copy_(layer.weight)
        rule.backward(x, y)
        updates = [layer.weight.grad for layer in network.layers]
        errors.append(max_relative_error(updates, reference.weight_gradients))
    assert errors[2] < 1e-8 or (errors[0] > errors[1] > errors[2]), errors
    assert errors[2] < 1e-3


@pytest.mark.parametrize("name", LEARNED)
def test_rules_train_a_pooled_conv_net(name):
    """Each learned-feedback rule lowers the loss of a fixed batch on the pooled conv net, and
    its series and diagnostics have one entry per layer."""
    network = pooled_conv_network()
    x, y = random_batch(CONV_INPUT, 3, n=32, seed=3)
    rule = ngrad.make_rule(name, network, feedback_iterations=2)
    optimiser = torch.optim.SGD(rule.param_groups(0.03), lr=0.3)
    first = float(rule.backward(x, y).loss)
    for _ in range(60):
        optimiser.zero_grad()
        record = rule.backward(x, y)
        optimiser.step()
    assert float(record.loss) < 0.5 * first
    assert all(len(v) == len(network.layers) for v in record.series.values())
    diagnosis = rule.diagnose(x, y)
    assert all(len(v) == len(network.layers) for v in diagnosis.values())
    assert not any(math.isnan(v) for v in diagnosis["gauss_newton_angle_by_layer"])


def test_ddtp_conv_targets_are_shaped_like_the_activities(case):
    network, _, y, trace = case
    rule = ngrad.make_rule("ddtp", network)
    differences = rule.propagate_targets(trace, rule.top_difference(trace, y))
    assert [d.shape for d in differences] == [a.shape for a in trace.activities[1:]]
    top = -rule.options.target_step * output_gradient(rule.loss, trace, y)
    torch.testing.assert_close(differences[-1], top)


class _NoDifferenceCorrectionDTP(DifferenceTargetPropagation):
    """A wrong DTP: h^_{l-1} = g(h^_l) instead of h_{l-1} + g(h^_l) - g(h_l)."""

    def propagate_targets(self, trace, top_difference, reuse=None):
        differences = [top_difference]
        for index in range(len(self.network.layers) - 1, 0, -1):
            target = trace.activities[index + 1] + differences[-1]
            below = trace.activities[index]
            rebuilt = self.feedback_map(index, target, below.shape, trace.switches_of(index))
            differences.append(rebuilt - below)
        differences.reverse()
        return differences


class _UnswitchedLDRL(LocalDifferenceReconstruction):
    """A wrong L-DRL: its feedback ignores the forward switches (unpools everything to the
    window's first entry)."""

    def propagate_targets(self, trace, top_difference, reuse=None):
        switches = [trace.switches_of(i) for i in range(len(self.network.layers))]
        trace.switches = [None if s is None else torch.zeros_like(s) for s in switches]
        try:
            return super().propagate_targets(trace, top_difference, reuse)
        finally:
            trace.switches = switches


@pytest.mark.parametrize(
    ("name", "mutant", "check"),
    [
        ("dtp", _NoDifferenceCorrectionDTP, conv_checks.check_conv_zero_loss_no_update),
        ("ldrl", _UnswitchedLDRL, conv_checks.check_conv_transposed_feedback_is_backprop),
    ],
    ids=["dtp_no_difference_correction", "ldrl_ignores_switches"],
)
def test_conv_checks_fail_for_mutants(name, mutant, check, monkeypatch):
    assert all(result.passed for result in check(name))
    monkeypatch.setitem(rules.REGISTRY, name, mutant)
    assert not all(result.passed for result in check(name))
    assert not all(result.passed for result in run_checks(name))
