"""Float64 reference tests of EP and CHL against independent oracles, and the options of the
energy-based rules (predictive coding: test_predictive_coding.py).

Oracles: autograd through the relaxation (BPTT on the primitive Phi, written here from the
equations, not with the package's dynamics), autograd's backprop and closed forms (the delta rule).
"""

import itertools
import math

import pytest
import torch
from energy_cases import (
    min_cosine,
    relative_error,
    small_batch,
    small_conv_network,
    small_network,
    small_pooled_network,
)

import ngrad
from ngrad.errors import ConfigError
from ngrad.nn.losses import get_loss
from ngrad.rules import get_rule_class
from ngrad.rules.energy_based.energy import hopfield_energy, relax
from ngrad.rules.energy_based.fixed_point import fixed_point_gradient
from ngrad.rules.energy_based.relaxation import relax_groups
from ngrad.rules.reference import backprop_reference

SETTLED = {"free_steps": 200, "nudged_steps": 200, "tolerance": 0.0}  # fixed points (1e-15)


def _parameters(network):
    return [layer.weight for layer in network.layers] + [layer.bias for layer in network.layers]


def _grads(network):
    return [p.grad.clone() for p in _parameters(network)]


def bptt_gradient(network, x, y, loss, readout, gamma, steps=200):
    """dC(s_T)/dtheta by autograd through T synchronous steps from zero of
    s_l <- f_l(dPhi/ds_l / gamma^{l-1}), Phi = sum_l gamma^{l-1} s_l . (W_l s_{l-1} + b_l)."""
    layers = list(network.layers)
    relaxed = len(layers) - int(readout)
    with torch.enable_grad():
        shapes = [a.shape for a in network.trace(x).pre_activations[:relaxed]]
        states = [torch.zeros(s, dtype=x.dtype, requires_grad=True) for s in shapes]
        for _ in range(steps):
            below = [x, *states[:-1]]
            phi = sum(
                gamma**i * (states[i] * layers[i].pre_activation(below[i])).sum()
                for i in range(relaxed)
            )
            drives = torch.autograd.grad(phi, states, create_graph=True)
            states = [layers[i].activation(d / gamma**i) for i, d in enumerate(drives)]
        output = layers[-1](states[-1]) if readout else states[-1]
        cost = get_loss(loss)(output, y)
        return list(torch.autograd.grad(cost, _parameters(network)))


# ---------------------------------------------------------------- equilibrium propagation ----


@pytest.mark.parametrize(
    ("loss", "gamma"), [("cross_entropy", 1.0), ("mse", 1.0), ("cross_entropy", 0.25), ("mse", 0.5)]
)
def test_ep_update_converges_to_the_bptt_gradient_as_beta_shrinks(loss, gamma):
    network = small_network()
    x, y = small_batch()
    oracle = bptt_gradient(network, x, y, loss, loss != "mse", gamma)
    errors = {}
    for nudging in ("symmetric", "one_sided"):
        for beta in (1e-1, 1e-2, 1e-3):
            rule = ngrad.make_rule(
                "ep", network, loss, nudging_strength=beta, nudging=nudging,
                feedback_strength=gamma, **SETTLED,
            )  # fmt: skip
            rule.backward(x, y)
            errors[nudging, beta] = relative_error(_grads(network), oracle)
            if beta == 1e-3:
                assert min_cosine(_grads(network), oracle) > 0.999
    # symmetric nudging: error O(beta^2), one-sided: O(beta)
    for coarse, fine in ((1e-1, 1e-2), (1e-2, 1e-3)):
        assert errors["symmetric", fine] < errors["symmetric", coarse] / 50
        assert errors["one_sided", fine] < errors["one_sided", coarse] / 5
    assert errors["symmetric", 1e-3] < 1e-4


@pytest.mark.parametrize(("loss", "gamma"), [("cross_entropy", 1.0), ("mse", 0.25)])
def test_implicit_fixed_point_gradient_equals_bptt(loss, gamma):
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("ep", network, loss, feedback_strength=gamma, **SETTLED)
    states = rule.free_phase(rule.input_drive(x)).states
    weights, biases = rule.fixed_point_gradients(x, y, states)
    oracle = bptt_gradient(network, x, y, loss, loss != "mse", gamma)
    assert relative_error([*weights, *biases], oracle) < 1e-9


def test_ep_on_a_convolutional_network_matches_the_bptt_gradient():
    network = small_conv_network()
    x, y = small_batch((1, 6, 6))
    rule = ngrad.make_rule("ep", network, nudging_strength=1e-3, feedback_strength=0.5, **SETTLED)
    rule.backward(x, y)
    oracle = bptt_gradient(network, x, y, "cross_entropy", True, 0.5)
    assert relative_error(_grads(network), oracle) < 1e-5


# (units, loss, gamma, the two betas): a +-beta phase that pushes a unit across a kink of the hard
# sigmoid breaks the O(beta^2) cancellation, so its betas are small enough that none does
POOLED_UNITS = [("sigmoid", "cross_entropy", 1.0, (1e-2, 1e-3)), ("relu", "mse", 0.5, (1e-2, 1e-3)),
                ("hard_sigmoid", "cross_entropy", 1.0, (1e-4, 1e-5))]  # fmt: skip


@pytest.mark.parametrize(("activation", "loss", "gamma", "betas"), POOLED_UNITS)
def test_ep_on_a_max_pooled_conv_energy_converges_to_the_bptt_gradient(
    activation, loss, gamma, betas
):
    """Laborieux et al.'s conv + max-pool couplings: autograd through the relaxation (through
    max_pool2d) against the implicit gradient at the switches of the fixed point, and EP."""
    network = small_pooled_network(activation)
    x, y = small_batch((1, 8, 8), n=6)
    oracle = bptt_gradient(network, x, y, loss, loss != "mse", gamma, steps=100)
    rule = ngrad.make_rule("ep", network, loss, feedback_strength=gamma, **SETTLED)
    states = rule.free_phase(rule.input_drive(x)).states
    weights, biases = rule.fixed_point_gradients(x, y, states)
    assert relative_error([*weights, *biases], oracle) < 1e-8
    errors = {}
    large, small = betas
    for nudging in ("symmetric", "one_sided"):
        for beta in betas:
            rule = ngrad.make_rule("ep", network, loss, nudging_strength=beta, nudging=nudging,
                                   feedback_strength=gamma, **SETTLED)  # fmt: skip
            rule.backward(x, y)
            errors[nudging, beta] = relative_error(_grads(network), oracle)
    assert errors["symmetric", small] < 1e-5
    floor = 1e-9  # the relaxation's precision: below it, no ratio
    assert errors["symmetric", small] < max(errors["symmetric", large] / 50, floor)  # O(beta^2)
    assert errors["one_sided", small] < errors["one_sided", large] / 5  # O(beta)


@pytest.mark.parametrize(("rule_name", "activation"), [("ep", "sigmoid"), ("chl", "sigmoid"),
                                                     ("ep", "hard_sigmoid")])  # fmt: skip
def test_pooled_relaxation_never_raises_the_energy_and_both_schedules_agree(rule_name, activation):
    network = small_pooled_network(activation)
    x, y = small_batch((1, 8, 8), n=8)
    rule = ngrad.make_rule(rule_name, network, "mse", feedback_strength=1.0, free_steps=1)
    drive = rule.input_drive(x)
    states = rule.initial_states(drive)
    energies = [hopfield_energy(network, x, states, 1.0)]
    for _ in range(60):
        states = relax(network, drive, states, 1, rule.free_update(), 1.0).states
        energies.append(hopfield_energy(network, x, states, 1.0))
    rises = torch.stack([b - a for a, b in itertools.pairwise(energies)])
    assert float(rises.max()) <= 1e-12 * float(energies[0].abs().max())
    phase = "nudged_steps" if rule_name == "ep" else "clamped_steps"
    updates = []
    for schedule in ("alternating", "synchronous"):
        rule = ngrad.make_rule(rule_name, network, "mse", schedule=schedule, free_steps=300,
                               tolerance=1e-13, **{phase: 300})  # fmt: skip
        rule.backward(x, y)
        updates.append(_grads(network))
    assert relative_error(updates[1], updates[0]) < 1e-9


def test_hopfield_rules_refuse_max_pooling_of_signed_units():
    network = small_pooled_network("tanh")
    for rule_name in ("ep", "chl"):
        reason = get_rule_class(rule_name).unsupported_reason(network)
        assert "non-negative" in reason and "layer 1" in reason


def test_ep_layer_errors_are_the_adjoint_of_the_fixed_point():
    """-(s+ - s-) / (2 beta N), scaled, estimates v = H^{-1} dC/ds (the error angles use it)."""
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("ep", network, "mse", nudging_strength=1e-4, feedback_strength=1.0,
                           **SETTLED)  # fmt: skip
    record = rule.backward(x, y)
    states = rule.free_phase(rule.input_drive(x)).states
    cost = [torch.zeros_like(s) for s in states]
    cost[-1] = (states[-1] - torch.nn.functional.one_hot(y, 3).double()) / x.shape[0]
    adjoint, _, _ = fixed_point_gradient(network, x, states, cost, 1.0)
    assert relative_error(list(record.layer_errors), adjoint) < 1e-6


def test_ep_predicts_from_the_free_fixed_point_and_tends_to_feedforward_as_gamma_vanishes():
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("ep", network, feedback_strength=1.0, **SETTLED)
    record = rule.backward(x, y)
    torch.testing.assert_close(rule(x), record.output, rtol=0, atol=0)
    assert (rule(x) - network(x)).abs().max() > 1e-2  # feedback moves the fixed point
    weak = ngrad.make_rule("ep", network, feedback_strength=1e-7, **SETTLED)
    torch.testing.assert_close(weak(x), network(x), rtol=0, atol=1e-5)
    shallow = small_network(sizes=(10, 8, 3))  # readout on one hidden layer: no feedback at all
    torch.testing.assert_close(ngrad.make_rule("ep", shallow)(x), shallow(x), rtol=0, atol=1e-14)


# ---------------------------------------------------------------- the free phase ----------


@pytest.mark.parametrize(
    ("rule_name", "activation", "loss"),
    [
        ("ep", "tanh", "mse"),
        ("ep", "sigmoid", "cross_entropy"),
        ("ep", "relu", "mse"),
        ("chl", "tanh", "cross_entropy"),  # softmax output group
        ("chl", "sigmoid", "bce"),  # sigmoid output units
    ],
)
def test_alternating_relaxation_never_raises_the_energy_and_settles(rule_name, activation, loss):
    network = small_network(sizes=(10, 12, 12, 3), activation=activation)
    x, _ = small_batch(n=20)
    rule = ngrad.make_rule(rule_name, network, loss, feedback_strength=0.5, free_steps=1)
    units = rule.unit_activations()
    drive = rule.input_drive(x)
    states = rule.initial_states(drive)
    energies = [hopfield_energy(network, x, states, 0.5, units)]
    for _ in range(120):
        states = relax(network, drive, states, 1, rule.free_update(), 0.5).states
        energies.append(hopfield_energy(network, x, states, 0.5, units))
    rises = torch.stack([b - a for a, b in itertools.pairwise(energies)])
    assert float(rises.max()) <= 1e-12 * float(energies[0].abs().max())
    assert float(energies[0].mean() - energies[-1].mean()) > 1e-3  # it did relax
    settled = relax(network, drive, states, 1, rule.free_update(), 0.5)
    assert settled.residual < 1e-10
    synchronous = relax(network, drive, rule.initial_states(drive), 400, rule.free_update(), 0.5,
                        "synchronous")  # fmt: skip
    for a, b in zip(synchronous.states, settled.states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_tolerance_stops_a_phase_once_it_has_settled():
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("ep", network, free_steps=500, nudged_steps=500, tolerance=1e-9)
    record = rule.backward(x, y)
    assert 5 < record.scalars["free_steps_used"] < 500
    for phase in ("free", "nudged"):
        assert record.scalars[f"{phase}_residual"] <= 1e-9
        assert record.scalars[f"{phase}_settled_fraction"] == 1.0


def test_a_phase_cut_short_reports_its_residual_and_the_samples_that_settled():
    network = small_network()
    x, y = small_batch()
    short = ngrad.make_rule("ep", network, free_steps=3, nudged_steps=2, tolerance=1e-6)
    record = short.backward(x, y)
    assert record.scalars["free_steps_used"] == 3 and record.scalars["nudged_steps_used"] == 2
    assert record.scalars["free_residual"] > 1e-6
    assert 0.0 <= record.scalars["free_settled_fraction"] < 1.0
    # the residual is the largest change of the phase's last step, per sample and overall
    drive = short.input_drive(x)
    two = relax(network, drive, short.initial_states(drive), 2, short.free_update(), 0.25)
    three = relax(network, drive, two.states, 1, short.free_update(), 0.25)
    change = torch.stack(
        [(a - b).abs().amax(1) for a, b in zip(three.states, two.states, strict=True)]
    ).amax(0)
    assert record.scalars["free_residual"] == pytest.approx(float(change.max()), rel=1e-12)
    settled = float((change <= 1e-6).double().mean())
    assert record.scalars["free_settled_fraction"] == pytest.approx(settled)
    fixed = ngrad.make_rule("ep", network, free_steps=7, nudged_steps=4, tolerance=0.0)
    record = fixed.backward(x, y)  # tolerance 0: every phase runs all its steps
    assert record.scalars["free_steps_used"] == 7 and record.scalars["nudged_steps_used"] == 4


@pytest.mark.parametrize("schedule", ["alternating", "synchronous"])
@pytest.mark.parametrize("kind", ["dense", "pooled"])
def test_stacked_nudged_phases_each_stop_as_if_run_alone(kind, schedule):
    """Symmetric EP runs its +beta and -beta phases as one batch of 2N; each block stops at its
    own step (held there after), read every step or only every 16 (as off the CPU). Pooled: the
    top relaxed layer is a max-pooled conv layer nudged through a readout."""
    if kind == "dense":
        network, (x, y), loss = small_network(), small_batch(), "mse"
    else:
        torch.manual_seed(3)
        network = ngrad.convnet((1, 8, 8), (2, 3), 3, stride=1, pool=2, activation="relu")
        network, (x, y), loss = network.double(), small_batch((1, 8, 8), n=8), "cross_entropy"
    beta = 0.3 if kind == "dense" else 1.0  # the two blocks settle at different steps
    rule = ngrad.make_rule("ep", network, loss, nudging_strength=beta, feedback_strength=0.5,
                           tolerance=1e-7, schedule=schedule)  # fmt: skip
    drive = rule.input_drive(x)
    free = rule.free_phase(drive).states
    alone = [rule.phase(drive, free, 300, rule.nudged_update(y, sign)) for sign in (1.0, -1.0)]
    assert alone[0].steps_used != alone[1].steps_used  # one block is held while the other runs
    stacked = [torch.cat([state, state]) for state in free]
    update = rule.nudged_update(y.repeat(2), (1.0, -1.0))
    for every in (1, 16):
        blocks = relax_groups(network, torch.cat([drive, drive]), stacked, 300, update, 0.5,
                              schedule, 1e-7, 2, check_every=every)  # fmt: skip
        for block, single in zip(blocks, alone, strict=True):
            assert block.steps_used == single.steps_used
            assert block.residual == pytest.approx(single.residual, rel=1e-9)
            assert block.settled_fraction == single.settled_fraction == 1.0
            for a, b in zip(block.states, single.states, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("rule_name", "phase"), [("ep", "nudged_steps"), ("chl", "clamped_steps")])
def test_synchronous_schedule_reaches_the_alternating_fixed_points(rule_name, phase):
    """Both schedules settle to the same states in every phase (the clamped one included)."""
    network = small_network()
    x, y = small_batch()
    updates = []
    for schedule in ("alternating", "synchronous"):
        rule = ngrad.make_rule(rule_name, network, "mse", schedule=schedule, feedback_strength=0.5,
                               free_steps=400, tolerance=1e-13, **{phase: 400})  # fmt: skip
        rule.backward(x, y)
        updates.append(_grads(network))
    assert relative_error(updates[1], updates[0]) < 1e-9


def test_ep_diagnose_reports_energy_residual_and_angle_to_the_fixed_point_gradient():
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("ep", network, nudging_strength=1e-3, **SETTLED)
    report = rule.diagnose(x, y)
    energy = report["energy_by_step"]
    assert len(energy) == 201 and all(b <= a + 1e-12 for a, b in itertools.pairwise(energy))
    assert report["residual_by_step"][-1] < 1e-10
    assert max(report["angle_to_fixed_point_gradient_deg_by_layer"]) < 0.1
    assert len(report["fixed_point_gradient_angle_to_bp_deg_by_layer"]) == 3


# ---------------------------------------------------------------- contrastive Hebbian -----


@pytest.mark.parametrize("gamma", [1.0, 0.25])
def test_beta_times_ep_tends_to_chl_as_nudging_grows(gamma):
    network = small_network()
    x, y = small_batch()
    chl = ngrad.make_rule("chl", network, "mse", feedback_strength=gamma, free_steps=200,
                          clamped_steps=200, tolerance=0.0)  # fmt: skip
    chl.backward(x, y)
    expected = _grads(network)
    errors = []
    for beta in (1e1, 1e2, 1e3, 1e4):
        ep = ngrad.make_rule("ep", network, "mse", nudging_strength=beta, nudging="one_sided",
                             feedback_strength=gamma, **SETTLED)  # fmt: skip
        ep.backward(x, y)
        errors.append(relative_error([beta * g for g in _grads(network)], expected))
    for coarse, fine in itertools.pairwise(errors):
        assert fine < 0.15 * coarse  # O(1 / beta)
    assert errors[-1] < 1e-3


@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "bce"])
@pytest.mark.parametrize("update", ["chl", "generec"])
def test_chl_on_one_layer_is_the_gradient_of_the_loss(loss, update):
    """Output units with the loss's link (linear, softmax, sigmoid) clamped to the target: the
    contrast (y - s^-) x^T is the delta rule, -dL/dW."""
    network = small_network(sizes=(10, 3), activation="tanh")
    x, y = small_batch()
    rule = ngrad.make_rule("chl", network, loss, update=update)
    record = rule.backward(x, y)
    reference = backprop_reference(network, rule.loss, x, y)
    torch.testing.assert_close(network.layers[0].weight.grad, reference.weight_gradients[0],
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    torch.testing.assert_close(record.output, network(x), rtol=0, atol=1e-14)


def test_generec_uses_the_minus_phase_presynaptic_activity():
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("chl", network, update="generec", feedback_strength=0.5)
    rule.backward(x, y)
    drive = rule.input_drive(x)
    free = rule.free_phase(drive).states
    clamped = rule.clamped_phase(drive, free, y).states
    below = [x, *free[:-1]]
    for index, layer in enumerate(network.layers):
        scale = 0.5 ** (index - 2) / x.shape[0]
        expected = -scale * (clamped[index] - free[index]).t() @ below[index]
        torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-12, atol=1e-15)


def test_weak_feedback_chl_approaches_backprop():
    """Xie & Seung (2003): as gamma -> 0 the normalised CHL update tends to BP's gradient."""
    network = small_network()
    x, y = small_batch()
    reference = backprop_reference(network, get_loss("cross_entropy"), x, y).weight_gradients
    angles = []
    for gamma in (0.1, 0.01):
        rule = ngrad.make_rule("chl", network, feedback_strength=gamma, free_steps=100,
                               clamped_steps=100, tolerance=0.0)  # fmt: skip
        rule.backward(x, y)
        updates = [layer.weight.grad for layer in network.layers]
        angles.append(math.degrees(math.acos(min(1.0, min_cosine(updates, reference)))))
    assert angles[1] < angles[0] / 5 and angles[1] < 1.0


# ---------------------------------------------------------------- options -----------------


@pytest.mark.parametrize(
    ("rule_name", "options", "fragment"),
    [
        ("ep", {"nudging_strength": 0.0}, "nudging_strength"),
        ("ep", {"feedback_strength": 1.5}, "feedback_strength"),
        ("ep", {"free_steps": 0}, "free_steps"),
        ("ep", {"nudging": "both"}, "nudging"),
        ("ep", {"schedule": "random"}, "schedule"),
        ("chl", {"update": "hebb"}, "update"),
        ("chl", {"clamped_steps": 0}, "clamped_steps"),
        ("pc", {"inference_rate": 0.0}, "inference_rate"),
        ("pc", {"output_clamping": -1.0}, "output_clamping"),
        ("pc", {"steps": -1}, "steps"),
        ("ep", {"tolerance": -1e-3}, "tolerance"),
        ("pc", {"tolerance": -1e-3}, "tolerance"),
    ],
)
def test_bad_options_are_named(rule_name, options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ngrad.make_rule(rule_name, small_network(), **options)


def test_ep_refuses_settings_without_a_nudged_minimum():
    with pytest.raises(ConfigError, match="nudging_strength < 1"):
        ngrad.make_rule("ep", small_network(), "mse", nudging_strength=1.5)
    with pytest.raises(ConfigError, match="hidden layer"):
        ngrad.make_rule("ep", small_network(sizes=(10, 3)))
    assert not ngrad.rules.get_rule_class("ep").supports(small_network(activation="gelu"))
    with pytest.raises(ConfigError, match="layer 1's activation 'gelu' has no Hopfield energy"):
        ngrad.make_rule("chl", small_network(activation="gelu"))


def test_relaxed_rules_represent_inputs_by_their_free_fixed_point():
    """Similarity analyses see what EP predicts from, not the feedforward pass."""
    torch.manual_seed(0)
    network = ngrad.mlp([6, 8, 7, 3]).double()
    rule = ngrad.make_rule("ep", network)
    inputs = torch.randn(5, 6, dtype=torch.float64)
    relaxed = rule.representations(inputs)
    assert [tuple(h.shape) for h in relaxed] == [(5, 8), (5, 7), (5, 3)]
    torch.testing.assert_close(relaxed[-1], rule(inputs))
    feedforward = network.trace(inputs).activities[1:]
    assert not torch.allclose(relaxed[0], feedforward[0])
    chl = ngrad.make_rule("chl", network)  # softmax output units: represented by logits
    torch.testing.assert_close(chl.representations(inputs)[-1], chl(inputs))
    bp_view = ngrad.make_rule("bp", network).representations(inputs)
    for mine, expected in zip(bp_view, feedforward, strict=True):
        torch.testing.assert_close(mine, expected)
