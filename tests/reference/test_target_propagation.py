"""Float64 reference tests of the target-propagation family (tp, dtp, ddtp, ldrl).

Oracles: autograd (losses of the feedback pathways, Jacobians, backprop), exact inverses built
with torch.linalg, and closed-form minimisers.
"""

import copy
import math

import pytest
import torch

import ngrad
from ngrad import rules
from ngrad.errors import ConfigError
from ngrad.nn.losses import get_loss
from ngrad.numeric import mean_angle_degrees
from ngrad.rules.checking import max_relative_error, run_checks
from ngrad.rules.reference import angles_to_backprop, backprop_reference
from ngrad.rules.target_propagation.checks import (
    autograd_output_jacobians,
    check_trained_feedback_approaches_backprop,
    damped_gauss_newton,
    square_network,
    train_feedback,
)
from ngrad.rules.target_propagation.difference_target_propagation import (
    DifferenceTargetPropagation,
    reconstruction_gradients,
)
from ngrad.rules.target_propagation.direct_difference_target_propagation import (
    difference_reconstruction_gradient,
    noise_responses,
)
from ngrad.rules.target_propagation.local_difference_reconstruction import (
    LocalDifferenceReconstruction,
    local_difference_gradients,
)
from ngrad.rules.target_propagation.target_propagation import invert_layer
from ngrad.rules.target_propagation.targets import (
    gauss_newton_differences,
    output_gradient,
    output_jacobians,
)

FAMILY = ["tp", "dtp", "ddtp", "ldrl"]


def _net(sizes=(6, 8, 7, 3), activation="tanh", seed=0):
    torch.manual_seed(seed)
    return ngrad.mlp(list(sizes), activation=activation).double()


def _batch(width, classes, n=12, seed=5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def _targets(rule, x, y):
    with torch.no_grad():
        trace = rule.network.trace(x)
        return trace, rule.propagate_targets(trace, rule.top_difference(trace, y))


@pytest.mark.parametrize("name", FAMILY)
def test_reference_properties_hold(name):
    results = run_checks(name)
    assert len(results) >= 2
    for result in results:
        assert result.passed, f"{result.name}: {result.measured} vs {result.tolerance}"


@pytest.mark.parametrize("name", FAMILY)
def test_output_layer_update_is_backprop(name):
    """Delta_L = -eta dl/dh_L and the 1/eta local loss give the output layer BP's gradient."""
    network = square_network("tanh", width=4) if name == "tp" else _net()
    x, y = _batch(network.layers[0].weight.shape[1], 3 if name != "tp" else 4)
    rule = ngrad.make_rule(name, network)
    record = rule.backward(x, y)
    reference = backprop_reference(network, rule.loss, x, y)
    top = network.layers[-1]
    torch.testing.assert_close(top.weight.grad, reference.weight_gradients[-1], rtol=1e-12, atol=0)
    torch.testing.assert_close(record.layer_errors[-1], reference.errors[-1], rtol=1e-12, atol=0)
    assert math.isclose(float(record.loss), reference.loss, rel_tol=1e-12)


# -- exact-inverse TP -------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu", "sigmoid"])
def test_tp_update_equals_the_one_built_from_exact_inverses_by_hand(activation):
    network = square_network(activation)
    x, y = _batch(5, 5)
    step = 0.05
    rule = ngrad.make_rule("tp", network, target_step=step)
    record = rule.backward(x, y)
    assert record.scalars["clipped_target_fraction"] == 0.0
    with torch.no_grad():
        trace = network.trace(x)
        probabilities = torch.softmax(trace.output, dim=1)
        target = trace.output - step * (probabilities - torch.eye(5, dtype=x.dtype)[y])
        inverse = {"tanh": torch.atanh, "sigmoid": torch.logit}.get(
            activation, lambda h: torch.where(h > 0, h, h / 0.1)
        )
        targets = [target]
        for layer in reversed(network.layers[1:]):
            pre = inverse(targets[-1]) if layer is not network.layers[-1] else targets[-1]
            targets.append((pre - layer.bias) @ torch.linalg.inv(layer.weight).t())
        targets.reverse()
    for index, layer in enumerate(network.layers):
        h, a = trace.activities[index + 1], trace.pre_activations[index]
        slope = layer.activation.derivative(a, h)
        expected = ((h - targets[index]) * slope).t() @ trace.activities[index] / (step * 12)
        torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-10, atol=1e-13)


def test_tp_first_order_error_shrinks_linearly_with_the_step():
    """|update(eta) - hand-derived first-order update| = O(eta): the derivation is the limit."""
    network = square_network("tanh")
    x, y = _batch(5, 5)
    with torch.no_grad():
        trace = network.trace(x)
    jacobians = autograd_output_jacobians(network, x)
    top_gradient = output_gradient(get_loss("cross_entropy"), trace, y)
    first_order = []
    for index, layer in enumerate(network.layers):
        step = torch.linalg.solve(jacobians[index], top_gradient.unsqueeze(-1)).squeeze(-1)
        slope = layer.activation.derivative(
            trace.pre_activations[index], trace.activities[index + 1]
        )
        first_order.append((slope * step).t() @ trace.activities[index] / 12)
    errors = []
    for eta in (1e-2, 1e-3, 1e-4):
        rule = ngrad.make_rule("tp", network, target_step=eta)
        rule.backward(x, y)
        errors.append(
            max_relative_error([layer.weight.grad for layer in network.layers], first_order)
        )
    assert 5 < errors[0] / errors[1] < 20 and 5 < errors[1] / errors[2] < 20, errors


def test_tp_targets_are_exact_gauss_newton_to_first_order():
    """TP's diagnostic angle to the (undamped) Gauss-Newton targets vanishes as eta -> 0."""
    network = square_network("leaky_relu")
    x, y = _batch(5, 5)
    rule = ngrad.make_rule("tp", network, target_step=1e-6)
    angles = rule.diagnose(x, y)["gauss_newton_angle_by_layer"]
    assert max(angles) < 1e-3, angles


def test_tp_refuses_networks_without_exact_inverses():
    assert not ngrad.rules.get_rule_class("tp").supports(ngrad.mlp([64, 128, 128, 10]))
    assert ngrad.rules.get_rule_class("tp").supports(ngrad.mlp([64, 10, 10, 10]))
    with pytest.raises(ConfigError, match=r"rule 'tp' cannot train this network"):
        ngrad.make_rule("tp", ngrad.mlp([6, 8, 3]))
    with pytest.raises(ConfigError, match="square weights above the first layer; layer 2"):
        rules.REGISTRY["tp"](ngrad.mlp([6, 8, 3]))
    with pytest.raises(ConfigError, match="activation 'relu' has no inverse"):
        rules.REGISTRY["tp"](ngrad.mlp([6, 4, 4, 4], activation="relu"))
    with pytest.raises(ConfigError, match="dense"):
        rules.REGISTRY["dtp"](ngrad.convnet((1, 6, 6), (2,), num_classes=3))


def test_tp_clips_targets_into_the_tanh_range():
    network = square_network("tanh")
    x, y = _batch(5, 5)
    rule = ngrad.make_rule("tp", network, target_step=50.0)
    record = rule.backward(x, y)
    assert record.scalars["clipped_target_fraction"] > 0
    assert all(torch.isfinite(layer.weight.grad).all() for layer in network.layers)


# -- DTP -------------------------------------------------------------------------------------


class _ExactInverseDTP(DifferenceTargetPropagation):
    """DTP whose g_l is the exact inverse of layer l (used through g(h + Delta) - g(h))."""

    def difference(self, index, activity, difference, pre=None):
        layer = self.network.layers[index]
        return invert_layer(layer, activity + difference) - invert_layer(layer, activity)


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_dtp_with_exact_inverse_feedback_gives_tp_targets_and_update(activation):
    network = square_network(activation)
    x, y = _batch(5, 5)
    dtp = _ExactInverseDTP(copy.deepcopy(network), target_step=0.01)
    tp = ngrad.make_rule("tp", network, target_step=0.01)
    _, mine = _targets(dtp, x, y)
    _, reference = _targets(tp, x, y)
    assert max_relative_error(mine, reference) < 1e-10
    dtp.backward(x, y)
    tp.backward(x, y)
    assert (
        max_relative_error(
            [layer.weight.grad for layer in dtp.network.layers],
            [layer.weight.grad for layer in network.layers],
        )
        < 1e-10
    )


def test_dtp_reconstruction_gradient_matches_autograd():
    network = _net()
    rule = ngrad.make_rule("dtp", network)
    x, _ = _batch(6, 3)
    layer = network.layers[1]
    with torch.no_grad():
        below, above = network.trace(x).activities[1:3]
    noise = 0.3 * torch.randn_like(below)
    weight = rule.feedback_weights[0].detach().clone().requires_grad_()
    bias = torch.randn_like(rule.feedback_biases[0]).requires_grad_()
    with torch.no_grad():
        loss, grad_weight, grad_bias, pre = reconstruction_gradients(
            layer, weight, bias, below, above, noise, network.layers[0].activation
        )
        torch.testing.assert_close(pre, above @ weight + bias, rtol=1e-12, atol=1e-15)
    reconstruction = torch.tanh(layer(below + noise) @ weight + bias)
    expected = 0.5 * (reconstruction - below - noise).pow(2).sum() / below.shape[0]
    grads = torch.autograd.grad(expected, [weight, bias])
    assert math.isclose(loss, float(expected.detach()), rel_tol=1e-12)
    torch.testing.assert_close(grad_weight, grads[0], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad_bias, grads[1], rtol=1e-10, atol=1e-14)


def test_dtp_lee_variant_sends_the_gradient_to_the_penultimate_layer():
    network = _net()
    x, y = _batch(6, 3)
    rule = ngrad.make_rule("dtp", network, penultimate_target="gradient", target_step=0.2)
    assert rule.feedback_layers == [1]  # no feedback from the output
    trace, differences = _targets(rule, x, y)
    with torch.enable_grad():
        hidden = trace.activities[2].clone().requires_grad_()
        loss = rule.loss(network.layers[2](hidden), y)
        (gradient,) = torch.autograd.grad(loss * x.shape[0], hidden)
    torch.testing.assert_close(differences[1], -0.2 * gradient, rtol=1e-12, atol=1e-15)


def test_dtp_lee_variant_on_one_hidden_layer_is_backprop():
    """No feedback to learn: the hidden target is a gradient step, so the update is BP's."""
    network = _net(sizes=(6, 8, 3))
    x, y = _batch(6, 3)
    rule = ngrad.make_rule("dtp", network, penultimate_target="gradient", target_step=1e-3)
    assert not rule.feedback_parameters()
    rule.backward(x, y)
    reference = backprop_reference(network, rule.loss, x, y)
    updates = [layer.weight.grad for layer in network.layers]
    assert max_relative_error(updates, reference.weight_gradients) < 1e-2  # O(eta) nonlinearity


def test_dtp_extra_feedback_iterations_are_internal_sgd_steps():
    network = _net()
    x, y = _batch(6, 3)
    several = ngrad.make_rule(
        "dtp", copy.deepcopy(network), feedback_iterations=3, feedback_step=0.2
    )
    single = ngrad.make_rule("dtp", network)
    single.load_state_dict(several.state_dict())
    torch.manual_seed(7)
    several.backward(x, y)
    torch.manual_seed(7)
    for _ in range(2):
        single.backward(x, y)
        with torch.no_grad():
            for parameter in single.feedback_parameters():
                parameter.sub_(0.2 * parameter.grad)
    single.backward(x, y)
    for a, b in zip(several.parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)


# -- DDTP ------------------------------------------------------------------------------------


def test_ddtp_difference_reconstruction_gradient_matches_autograd():
    network = _net(sizes=(6, 8, 7, 5, 3))
    rule = ngrad.make_rule("ddtp", network, damping=0.3)
    x, _ = _batch(6, 3)
    with torch.no_grad():
        trace = network.trace(x)
    noises = [0.2 * torch.randn_like(h) for h in trace.activities[1:-1]]
    blocks = [b.detach().clone().requires_grad_() for b in rule.feedback_blocks()]
    with torch.no_grad():
        responses = noise_responses(network, trace, noises)
        losses, gradients = difference_reconstruction_gradient(
            responses, noises, blocks, 0.2, 0.3, normalised=False
        )
    for index, (noise, block) in enumerate(zip(noises, blocks, strict=True)):
        output = trace.activities[index + 1] + noise  # each layer's noise on its own, by hand
        for layer in network.layers[index + 1 :]:
            output = layer(output)
        residual = (output - trace.output) @ block - noise
        loss = 0.5 * residual.pow(2).sum() / (0.04 * 12) + 0.15 * block.pow(2).sum()
        (expected,) = torch.autograd.grad(loss, block)
        assert math.isclose(losses[index], float(loss.detach()), rel_tol=1e-12)
        torch.testing.assert_close(gradients[index], expected, rtol=1e-10, atol=1e-14)


def test_ddtp_feedback_converges_to_the_damped_pseudo_inverse():
    """Linear network (J the same for every sample): DRL training drives Q_l to the closed-form
    minimiser J^T (J J^T + lambda I)^{-1}."""
    network = _net(activation="identity")
    damping = 0.05
    rule = ngrad.make_rule("ddtp", network, damping=damping)
    x, y = _batch(6, 3, n=128)
    for lr in (0.5, 0.1, 0.02):
        train_feedback(rule, x, y, steps=100, lr=lr)
    jacobians = autograd_output_jacobians(network, x[:1])
    for block, jacobian in zip(rule.feedback_blocks(), jacobians, strict=False):
        j = jacobian[0]
        closed_form = torch.linalg.solve(j @ j.t() + damping * torch.eye(3, dtype=j.dtype), j)
        assert float((block.detach() - closed_form).norm() / closed_form.norm()) < 0.02


def test_ddtp_damping_interpolates_to_gradient_targets():
    """Q = J^T (J J^T + lambda)^{-1}: lambda large gives the gradient direction J^T Delta_L."""
    network = _net()
    x, y = _batch(6, 3, n=1)
    jacobians = autograd_output_jacobians(network, x)
    top = -0.1 * output_gradient(get_loss("cross_entropy"), network.trace(x), y)
    angles = []
    for damping in (1e-6, 1e6):
        differences = gauss_newton_differences(jacobians, top.detach(), damping)
        gradient_steps = [
            (j.transpose(1, 2) @ top.detach().unsqueeze(-1)).squeeze(-1) for j in jacobians
        ]
        angles.append(mean_angle_degrees(differences[0], gradient_steps[0]))
    assert angles[1] < 1e-3 < angles[0]


# -- L-DRL -----------------------------------------------------------------------------------


def test_ldrl_gradient_matches_autograd():
    network = _net()
    rule = ngrad.make_rule("ldrl", network)
    x, _ = _batch(6, 3)
    with torch.no_grad():
        trace = network.trace(x)
    layer = network.layers[1]
    below, above = trace.activities[1], trace.activities[2]
    eps, eta = 0.1 * torch.randn_like(below), 0.1 * torch.randn_like(above)
    weight = rule.feedback_weights[0].detach().clone().requires_grad_()
    with torch.no_grad():
        loss, gradient = local_difference_gradients(
            layer, weight, below, above, torch.tanh(above), eps, eta, 0.1
        )

    def g(h):
        return torch.tanh(h) @ weight

    r = g(above)
    expected = (
        -(eps * (g(layer(below + eps)) - r)).sum() + 0.5 * (g(above + eta) - r).pow(2).sum()
    ) / (0.01 * 12)
    (reference,) = torch.autograd.grad(expected, weight)
    assert math.isclose(loss, float(expected.detach()), rel_tol=1e-12)
    torch.testing.assert_close(gradient, reference, rtol=1e-10, atol=1e-14)


class _NoDifferenceCorrection(LocalDifferenceReconstruction):
    """A wrong L-DRL: h^_{l-1} = g(h^_l) instead of h_{l-1} + g(h^_l) - g(h_l)."""

    def propagate_targets(self, trace, top_difference, reuse=None):
        differences = [top_difference]
        for index in range(len(self.network.layers) - 1, 0, -1):
            target = trace.activities[index + 1] + differences[-1]
            layer = self.network.layers[index]
            reconstruction = layer.activation(target) @ self.feedback_weights[index - 1]
            differences.append(reconstruction - trace.activities[index])
        differences.reverse()
        return differences


def test_ldrl_angle_bound_fails_without_the_difference_correction(monkeypatch):
    monkeypatch.setitem(rules.REGISTRY, "ldrl", _NoDifferenceCorrection)
    angle, _ = check_trained_feedback_approaches_backprop("ldrl")
    assert not angle.passed and angle.measured > 45


def test_ldrl_with_transposed_feedback_tends_to_backprop_as_beta_shrinks():
    """Leaky-ReLU net (f'(h_l) = f'(a_l)), V := W^T: the update -> BP with error O(beta)."""
    network = _net(activation="leaky_relu")
    x, y = _batch(6, 3)
    reference = backprop_reference(network, get_loss("cross_entropy"), x, y)
    errors = []
    for beta in (1e-1, 1e-2, 1e-3):
        rule = ngrad.make_rule("ldrl", network, target_step=beta)
        with torch.no_grad():
            for weight, layer in zip(rule.feedback_weights, network.layers[1:], strict=True):
                weight.copy_(layer.weight)
        rule.backward(x, y)
        errors.append(
            max_relative_error(
                [layer.weight.grad for layer in network.layers], reference.weight_gradients
            )
        )
    assert errors[2] < 1e-8 or (errors[0] > errors[1] > errors[2]), errors
    assert errors[2] < 1e-3


def test_ldrl_trained_feedback_jacobian_approaches_forward_transpose():
    network = _net(sizes=(6, 12, 10, 3))
    rule = ngrad.make_rule("ldrl", network, feedback_rate=1.0)
    x, y = _batch(6, 3, n=64)
    before = rule.diagnose(x, y)["jacobian_mismatch_by_layer"]
    train_feedback(rule, x, y, steps=300, lr=0.05)
    after = rule.diagnose(x, y)["jacobian_mismatch_by_layer"]
    assert math.isnan(before[0]) and math.isnan(after[0])
    assert all(a < 0.5 * b for a, b in zip(after[1:], before[1:], strict=True)), (before, after)
    assert max(angles_to_backprop(rule, x, y)) < 30


# -- diagnostics, series, API ------------------------------------------------------------------


def test_output_jacobians_and_gauss_newton_forms_match_autograd():
    network = _net(sizes=(6, 8, 7, 3))
    x, _ = _batch(6, 3, n=5)
    with torch.no_grad():
        mine = output_jacobians(network, network.trace(x))
    reference = autograd_output_jacobians(network, x)
    assert max_relative_error(mine, reference) < 1e-12
    top = torch.randn(5, 3, dtype=torch.float64)
    # damped: J^T (J J^T + lambda)^-1 (ngrad) against (J^T J + lambda)^-1 J^T (the form)
    fast = gauss_newton_differences(mine, top, 0.3)
    slow = [damped_gauss_newton(j, top, 0.3) for j in reference]
    assert max_relative_error(fast, slow) < 1e-10
    # undamped: the pseudo-inverse, J^+ Delta; J J^+ = I on these wide Jacobians
    undamped = gauss_newton_differences(mine, top, 0.0)
    for jacobian, difference in zip(reference, undamped, strict=True):
        back = (jacobian @ difference.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(back, top, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "feedback_key", "missing"),
    [
        ("dtp", "reconstruction_loss_by_layer", 0),
        ("ddtp", "reconstruction_loss_by_layer", 2),
        ("ldrl", "feedback_loss_by_layer", 0),
    ],
)
def test_series_and_diagnoses_are_per_layer(name, feedback_key, missing):
    network = _net()
    x, y = _batch(6, 3)
    rule = ngrad.make_rule(name, network)
    record = rule.backward(x, y)
    assert len(record.series["target_difference_by_layer"]) == 3
    feedback = record.series[feedback_key]
    assert len(feedback) == 3 and math.isnan(feedback[missing])
    assert all(math.isfinite(v) for i, v in enumerate(feedback) if i != missing)
    diagnosis = rule.diagnose(x, y)
    for key in ("gauss_newton_angle_by_layer", "gradient_step_by_layer"):
        assert len(diagnosis[key]) == 3
    # at the top the target difference is the gradient step itself, the GN target too
    assert math.isclose(
        diagnosis["gradient_step_by_layer"][-1],
        record.series["target_difference_by_layer"][-1],
        rel_tol=1e-12,
    )
    assert diagnosis["gauss_newton_angle_by_layer"][-1] < 1e-5


@pytest.mark.parametrize("name", ["dtp", "ddtp", "ldrl"])
def test_feedback_is_trained_checkpointed_and_grouped(name):
    network = _net()
    rule = ngrad.make_rule(name, network)
    feedback = rule.feedback_parameters()
    assert feedback and all(p.grad is None for p in feedback)
    x, y = _batch(6, 3)
    rule.backward(x, y)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in feedback)
    groups = rule.param_groups(feedback_lr=0.01)
    assert len(groups) == 2 and groups[1]["lr"] == 0.01
    twin = ngrad.make_rule(name, _net(seed=9))
    twin.load_state_dict(rule.state_dict())
    torch.manual_seed(3)
    rule.backward(x, y)
    torch.manual_seed(3)
    twin.backward(x, y)
    for a, b in zip(rule.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "option", "value", "message"),
    [
        ("tp", "target_step", 0.0, "'target_step' must be positive"),
        ("dtp", "feedback_iterations", 0, "'feedback_iterations' must be >= 1"),
        ("dtp", "penultimate_target", "output", "'penultimate_target' must be one of"),
        ("ddtp", "damping", -1.0, "'damping' must be >= 0"),
        ("ldrl", "noise", -0.1, "'noise' must be positive"),
        ("ldrl", "feedback_rate", 0.0, "'feedback_rate' must be positive"),
    ],
)
def test_bad_options_are_named(name, option, value, message):
    network = square_network() if name == "tp" else _net()
    with pytest.raises(ConfigError, match=message):
        ngrad.make_rule(name, network, **{option: value})


def test_rules_learn_on_a_teacher_task_with_sgd_momentum():
    """The default options learn with the compare harness's optimiser (SGD, momentum 0.9)."""
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    x = torch.randn(256, 10, generator=generator, dtype=torch.float64)
    y = (x @ teacher).argmax(dim=1)
    for name in ("dtp", "ddtp", "ldrl"):
        torch.manual_seed(0)
        rule = ngrad.make_rule(name, ngrad.mlp([10, 32, 32, 4]).double())
        optimiser = torch.optim.SGD(rule.parameters(), lr=0.05, momentum=0.9)
        for _ in range(4):
            for batch in torch.randperm(256).split(32):
                rule.backward(x[batch], y[batch])
                optimiser.step()
        accuracy = float((rule(x).argmax(dim=1) == y).double().mean())
        assert accuracy > 0.85, (name, accuracy)
