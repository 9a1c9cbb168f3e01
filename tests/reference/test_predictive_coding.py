"""Reference tests of predictive coding (inference learning) against independent oracles.

Oracles: an exact quadratic minimisation of PC's free energy on a linear network (autograd
Hessian), autograd's backprop in the weak-clamping limit, and BP's output-layer gradient without
inference. Float64, except where float32 rounding is the point.
"""

import itertools

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
from ngrad.nn.losses import get_loss
from ngrad.rules.energy_based.predictive_coding import (
    feedforward_state,
    free_energy,
    prediction_errors,
    state_gradients,
)
from ngrad.rules.reference import backprop_reference


def _weight_grads(network):
    return [layer.weight.grad.clone() for layer in network.layers]


def _exact_linear_equilibrium(network, x, y, clamping):
    """Minimise PC's quadratic free energy of one sample at a time exactly (autograd Hessian)."""
    layers = list(network.layers)
    trace = network.trace(x)
    errors_by_sample = []
    for n in range(x.shape[0]):
        start = torch.cat([a[n] for a in trace.pre_activations[:-1]])
        sizes = [a.shape[1] for a in trace.pre_activations[:-1]]
        goal = torch.nn.functional.one_hot(y[n], 3).double()

        def energy(flat, n=n, sizes=sizes, goal=goal):
            values = list(torch.split(flat, sizes))
            below = [x[n], *values]
            hidden = sum(
                0.5 * (values[i] - layers[i].weight @ below[i] - layers[i].bias).pow(2).sum()
                for i in range(len(values))
            )
            top = layers[-1].weight @ below[-1] + layers[-1].bias
            return hidden + clamping * 0.5 * (top - goal).pow(2).sum()

        with torch.enable_grad():
            gradient = torch.autograd.functional.jacobian(energy, start)
            hessian = torch.autograd.functional.hessian(energy, start)
        settled = start - torch.linalg.solve(hessian, gradient)
        values = list(torch.split(settled, sizes))
        below = [x[n], *values]
        errors = [
            values[i] - layers[i].weight @ below[i] - layers[i].bias for i in range(len(values))
        ]
        errors.append(clamping * (goal - layers[-1].weight @ below[-1] - layers[-1].bias))
        errors_by_sample.append(errors)
    return [torch.stack(e) for e in zip(*errors_by_sample, strict=True)]


@pytest.mark.parametrize("clamping", [1.0, 0.1])
def test_pc_settles_to_the_exact_equilibrium_of_a_linear_network(clamping):
    network = small_network(sizes=(10, 8, 7, 3), activation="identity")
    x, y = small_batch(n=6)
    rule = ngrad.make_rule("pc", network, "mse", steps=800, inference_rate=0.3,
                           output_clamping=clamping, tolerance=0.0)  # fmt: skip
    visited = rule.infer(x, y).visited
    expected = _exact_linear_equilibrium(network, x, y, clamping)
    for actual, wanted in zip(visited[-1].errors, expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "conv", "pooled"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_pc_with_weak_output_clamping_approaches_backprop(kind, loss):
    networks = {"dense": small_network, "conv": small_conv_network, "pooled": small_pooled_network}
    network = networks[kind]()
    shapes = {"dense": (10,), "conv": (1, 6, 6), "pooled": (1, 8, 8)}
    x, y = small_batch(shapes[kind])
    reference = backprop_reference(network, get_loss(loss), x, y)
    errors = []
    for clamping in (1e-1, 1e-2, 1e-3):
        rule = ngrad.make_rule("pc", network, loss, steps=300, inference_rate=0.3,
                               output_clamping=clamping, tolerance=0.0)  # fmt: skip
        rule.backward(x, y)
        errors.append(relative_error(_weight_grads(network),
                                      reference.weight_gradients))  # fmt: skip
    assert min_cosine(_weight_grads(network), reference.weight_gradients) > 0.999
    for coarse, fine in itertools.pairwise(errors):
        assert fine < 0.15 * coarse  # O(gamma)


def test_pc_without_inference_updates_only_the_output_layer_as_bp_does():
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("pc", network, steps=0)
    record = rule.backward(x, y)
    reference = backprop_reference(network, rule.loss, x, y)
    torch.testing.assert_close(network.layers[-1].weight.grad, reference.weight_gradients[-1],
                               rtol=1e-12, atol=1e-15)  # fmt: skip
    for layer in network.layers[:-1]:
        assert float(layer.weight.grad.abs().max()) == 0.0
    torch.testing.assert_close(record.output, network(x), rtol=0, atol=0)  # feedforward prediction


@pytest.mark.parametrize("kind", ["dense", "pooled"])
def test_pc_skips_only_the_products_of_errors_that_are_provably_zero(kind):
    """From the feedforward start, step t moves only the top t + 1 value nodes, and the inference
    skips the products below them; the oracle recomputes every error and prediction each step."""
    network = small_network() if kind == "dense" else small_pooled_network("relu")
    x, y = small_batch() if kind == "dense" else small_batch((1, 8, 8), n=8)
    rule = ngrad.make_rule("pc", network, steps=5, inference_rate=0.3, tolerance=0.0)
    inference = rule.infer(x, y)
    assert inference.rate_halvings == 0  # plain gradient steps, as the oracle's
    trace = network.trace(x)
    state = feedforward_state(network, trace, rule.loss, y, 0.1)
    for step, visited in enumerate(inference.visited[1:]):
        with torch.no_grad():
            gradients = state_gradients(network, state)
            values = [v - 0.3 * g for v, g in zip(state.values, gradients, strict=True)]
            state = prediction_errors(network, rule.loss, trace.pre_activations[0], values, y,
                                      0.1, trace.switches_of(0))  # fmt: skip
        moved = [float((a - b).abs().max()) > 0 for a, b in
                 zip(state.values, inference.visited[0].values, strict=True)]  # fmt: skip
        assert moved == [index >= len(moved) - 1 - step for index in range(len(moved))]
        for a, b in zip(visited.errors + visited.values, state.errors + state.values, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_pc_default_inference_lowers_the_free_energy_at_every_step():
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("pc", network)
    report = rule.diagnose(x, y)
    record = rule.backward(x, y)
    energy = report["energy_by_step"]
    assert len(energy) == record.scalars["inference_steps_used"] + 1
    assert 1 <= record.scalars["inference_steps_used"] <= rule.options.steps
    assert all(b < a for a, b in itertools.pairwise(energy))
    assert record.scalars["rate_halvings"] == 0


def test_pc_stops_once_settled_and_reports_its_residual():
    network = small_network()
    x, y = small_batch()
    clamping = 0.1
    rule = ngrad.make_rule("pc", network, steps=2000, inference_rate=0.3,
                           output_clamping=clamping, tolerance=1e-8)  # fmt: skip
    inference = rule.infer(x, y)
    assert 10 < len(inference.visited) - 1 < 2000
    assert inference.residual <= 1e-8 and inference.settled_fraction == 1.0
    with torch.no_grad():
        gradients = state_gradients(network, inference.visited[-1])
    largest = max(float(g.abs().max()) for g in gradients) / clamping
    assert inference.residual == pytest.approx(largest, rel=1e-12)  # |dF/dx| / gamma, final state
    short = ngrad.make_rule("pc", network, steps=3, inference_rate=0.3, output_clamping=clamping)
    record = short.backward(x, y)
    assert record.scalars["inference_steps_used"] == 3
    assert record.scalars["inference_residual"] > short.options.tolerance
    assert record.scalars["inference_settled_fraction"] < 1.0


def test_pc_backtracking_stops_an_inference_rate_beyond_the_curvature_from_raising_f():
    network = small_network()
    x, y = small_batch()
    rule = ngrad.make_rule("pc", network, steps=6, inference_rate=3.0, output_clamping=1.0)
    trace = network.trace(x)
    start = feedforward_state(network, trace, rule.loss, y, 1.0)
    plain = [
        v - 3.0 * g for v, g in zip(start.values, state_gradients(network, start), strict=True)
    ]
    after = prediction_errors(network, rule.loss, trace.pre_activations[0], plain, y, 1.0)
    energy = free_energy(start, network, rule.loss, y, 1.0)
    assert free_energy(after, network, rule.loss, y, 1.0) > energy  # plain descent overshoots
    inference = rule.infer(x, y)
    energies = [free_energy(s, network, rule.loss, y, 1.0) for s in inference.visited]
    assert inference.rate_halvings > 0
    assert rule.backward(x, y).scalars["rate_halvings"] == inference.rate_halvings
    assert all(b <= a for a, b in itertools.pairwise(energies)) and energies[-1] < energies[0]


@pytest.mark.parametrize("clamping", [1.0, 0.1])
def test_pc_does_not_halve_its_rate_on_float32_rounding_near_equilibrium(clamping):
    """Near equilibrium F's steps fall below its float32 rounding: no halving may fire there
    (it used to, freezing the inference), and F never rises beyond that rounding."""
    torch.manual_seed(0)
    network = ngrad.mlp([64, 128, 128, 10])
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    rule = ngrad.make_rule("pc", network, steps=300, output_clamping=clamping, tolerance=0.0)
    inference = rule.infer(x, y)
    assert inference.rate_halvings == 0
    energies = [free_energy(s, network, rule.loss, y, clamping) for s in inference.visited]
    rounding = 64 * torch.finfo(torch.float32).eps
    assert all(b <= a + rounding * abs(a) for a, b in itertools.pairwise(energies))
    assert inference.residual < 1e-3  # it kept moving to equilibrium


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_pc_between_max_pooled_blocks_never_raises_the_free_energy(activation):
    """Value nodes between VGG-style blocks: the default inference descends F, and the switches
    it records are those of the state's own predictions."""
    network = small_pooled_network(activation)
    x, y = small_batch((1, 8, 8), n=8)
    rule = ngrad.make_rule("pc", network, steps=20, tolerance=0.0)
    visited = rule.infer(x, y).visited
    energies = [free_energy(state, network, rule.loss, y, 0.1) for state in visited]
    assert max(b - a for a, b in itertools.pairwise(energies)) <= 1e-12 * abs(energies[0])
    assert energies[-1] < energies[0]
    final = visited[-1]
    expected = network.layers[1].switches(final.rates[0])  # layer 2 (index 1): the second conv
    assert torch.equal(final.switches[1], expected)
    assert final.switches[2] is None  # a dense layer has none
