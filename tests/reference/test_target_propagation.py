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
from ngrad.rules.checking import max_relative_error, run_checks
from ngrad.rules.reference import backprop_reference
from ngrad.rules.target_propagation import checks
from ngrad.rules.target_propagation.checks import autograd_output_jacobians, square_network
from ngrad.rules.target_propagation.difference_target_propagation import (
    DifferenceTargetPropagation,
)
from ngrad.rules.target_propagation.target_propagation import invert_layer
from ngrad.rules.target_propagation.targets import (
    TargetPropagationRule,
    TrainedFeedbackRule,
    output_gradient,
)

FAMILY = [name for name, cls in rules.REGISTRY.items() if issubclass(cls, TargetPropagationRule)]
LEARNED = [name for name in FAMILY if issubclass(rules.REGISTRY[name], TrainedFeedbackRule)]


def _net(sizes=(6, 8, 7, 3), activation="tanh", seed=0):
    torch.manual_seed(seed)
    return ngrad.mlp(list(sizes), activation=activation).double()


def _batch(width, classes, n=12, seed=5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def _net_and_batch(name):
    """The default small network, or a square one where the rule needs exact inverses."""
    network = _net() if rules.REGISTRY[name].supports(_net()) else square_network(width=4)
    return network, _batch(network.layers[0].weight.shape[1], network.layers[-1].weight.shape[0])


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
    network, (x, y) = _net_and_batch(name)
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
    convnet = ngrad.convnet((1, 6, 6), (2,), num_classes=3)
    with pytest.raises(ConfigError, match="dense"):
        rules.REGISTRY["tp"](convnet)
    assert all(rules.REGISTRY[name].supports(convnet) for name in LEARNED)


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

    def difference(self, index, activity, difference, pre=None, **_):
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


class _NoDifferenceCorrectionDTP(DifferenceTargetPropagation):
    """A wrong DTP: h^_{l-1} = g(h^_l) instead of h_{l-1} + g(h^_l) - g(h_l)."""

    def propagate_targets(self, trace, top_difference, reuse=None):
        differences = [top_difference]
        for index in range(len(self.network.layers) - 1, 0, -1):
            target, below = trace.activities[index + 1] + differences[-1], trace.activities[index]
            rebuilt = self.feedback_map(index, target, below.shape, trace.switches_of(index))
            differences.append(rebuilt - below)
        differences.reverse()
        return differences


class _NoiselessFeedbackDTP(DifferenceTargetPropagation):
    """A wrong DTP: its feedback learns without noise (sigma = 0, below the option's bound)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self.options, "noise", 0.0)


@pytest.mark.parametrize(
    ("mutant", "check"),
    [
        (_NoDifferenceCorrectionDTP, checks.check_targets_are_the_feedback_linearisation),
        (_NoiselessFeedbackDTP, checks.check_noise_trains_a_local_inverse),
    ],
    ids=["no_difference_correction", "noiseless_feedback"],
)
def test_dtp_check_fails_for_its_mutant_and_holds_for_dtp(mutant, check, monkeypatch):
    (real,) = check("dtp")
    assert real.passed, real
    monkeypatch.setitem(rules.REGISTRY, "dtp", mutant)
    (wrong,) = check("dtp")
    assert not wrong.passed, wrong
    assert not all(result.passed for result in run_checks("dtp"))  # and so does `ngrad check`


# -- shared machinery, series, API -------------------------------------------------------------


@pytest.mark.parametrize("name", LEARNED)
def test_extra_feedback_iterations_are_internal_sgd_steps(name):
    network = _net()
    x, y = _batch(6, 3)
    several = ngrad.make_rule(
        name, copy.deepcopy(network), feedback_iterations=3, feedback_step=0.2
    )
    single = ngrad.make_rule(name, network)
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


@pytest.mark.parametrize("name", LEARNED)
def test_feedback_only_step_trains_the_feedback_as_backward_does(name):
    network = _net()
    x, y = _batch(6, 3)
    rule = ngrad.make_rule(name, network)
    torch.manual_seed(4)
    record = rule.backward(x, y)
    expected = [p.grad.clone() for p in rule.feedback_parameters()]
    torch.manual_seed(4)
    losses = rule.train_feedback(x)
    assert all(p.grad is None for p in network.parameters())  # an optimiser step skips them
    for parameter, gradient in zip(rule.feedback_parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, gradient, rtol=0, atol=0)
    logged = record.series[rule.feedback_loss_name]
    assert [logged[index] for index in sorted(losses)] == [losses[i] for i in sorted(losses)]


@pytest.mark.parametrize("name", FAMILY)
def test_rules_keep_no_per_batch_state(name):
    network, (x, y) = _net_and_batch(name)
    rule = ngrad.make_rule(name, network)
    before = set(vars(rule))
    rule.backward(x, y)
    rule.diagnose(x, y)
    assert set(vars(rule)) == before


# -- diagnostics, series, API ------------------------------------------------------------------


@pytest.mark.parametrize("name", LEARNED)
def test_series_and_diagnoses_are_per_layer(name):
    network = _net()
    x, y = _batch(6, 3)
    rule = ngrad.make_rule(name, network)
    record = rule.backward(x, y)
    assert len(record.series["target_difference_by_layer"]) == 3
    feedback = record.series[rule.feedback_loss_name]  # one layer has no feedback to learn
    assert len(feedback) == 3 and sum(math.isnan(v) for v in feedback) == 1
    assert sum(math.isfinite(v) for v in feedback) == 2
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


@pytest.mark.parametrize("name", LEARNED)
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
    network, _ = _net_and_batch(name)
    with pytest.raises(ConfigError, match=message):
        ngrad.make_rule(name, network, **{option: value})


def test_rules_learn_on_a_teacher_task_with_sgd_momentum():
    """The default options learn with the compare harness's optimiser (SGD, momentum 0.9)."""
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    x = torch.randn(256, 10, generator=generator, dtype=torch.float64)
    y = (x @ teacher).argmax(dim=1)
    for name in LEARNED:
        torch.manual_seed(0)
        rule = ngrad.make_rule(name, ngrad.mlp([10, 32, 32, 4]).double())
        optimiser = torch.optim.SGD(rule.parameters(), lr=0.05, momentum=0.9)
        for _ in range(4):
            for batch in torch.randperm(256).split(32):
                rule.backward(x[batch], y[batch])
                optimiser.step()
        accuracy = float((rule(x).argmax(dim=1) == y).double().mean())
        assert accuracy > 0.85, (name, accuracy)
