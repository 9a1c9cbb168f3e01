"""Float64 reference tests of the feedback-alignment family against autograd and closed forms."""

import math

import pytest
import torch

import ngrad
from ngrad.numeric import angle_degrees
from ngrad.rules.checking import max_relative_error, run_checks
from ngrad.rules.reference import backprop_reference

RULES = ngrad.available_rules()


def _network(kind: str):
    torch.manual_seed(3)
    if kind == "dense":
        return ngrad.mlp([10, 8, 7, 3], activation="tanh").double(), (10,)
    return ngrad.convnet(
        (1, 6, 6), (2, 3), num_classes=3, hidden=(5,), activation="sigmoid"
    ).double(), (1, 6, 6)


def _batch(shape, n=12, classes=3, seed=5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


@pytest.mark.parametrize("rule_name", RULES)
def test_every_reference_property_holds(rule_name):
    results = run_checks(rule_name)
    assert results, f"rule {rule_name} has no reference property"
    for result in results:
        assert result.passed, f"{result.name}: measured {result.measured} vs {result.tolerance}"


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce"])
def test_fa_with_transposed_feedback_is_backprop(kind, loss):
    network, shape = _network(kind)
    x, y = _batch(shape)
    rule = ngrad.make_rule("fa", network, loss=loss)
    for index, layer in enumerate(network.layers):
        if index:
            rule.set_feedback(index, layer.weight.detach())
    record = rule.backward(x, y)
    reference = backprop_reference(network, rule.loss, x, y)
    updates = [layer.weight.grad for layer in network.layers]
    assert max_relative_error(updates, reference.weight_gradients) < 1e-12
    assert max_relative_error(list(record.layer_errors), reference.errors) < 1e-12
    # biases too: autograd's bias gradient is the summed error
    for layer, error in zip(network.layers, reference.errors, strict=True):
        expected = error.sum(dim=[0, *range(2, error.dim())])
        torch.testing.assert_close(layer.bias.grad, expected, rtol=1e-12, atol=1e-14)
    assert math.isclose(float(record.loss), reference.loss, rel_tol=1e-12)


def test_random_feedback_differs_from_backprop():
    network, shape = _network("dense")
    x, y = _batch(shape)
    rule = ngrad.make_rule("fa", network)
    rule.backward(x, y)
    reference = backprop_reference(network, rule.loss, x, y)
    # the top layer's update is BP's (it sees e directly), the hidden ones are not
    assert (
        max_relative_error([network.layers[-1].weight.grad], reference.weight_gradients[-1:])
        < 1e-12
    )
    assert (
        max_relative_error([network.layers[0].weight.grad], reference.weight_gradients[:1]) > 1e-2
    )


def test_dfa_linear_network_with_product_feedback_is_backprop():
    torch.manual_seed(1)
    network = ngrad.mlp([9, 7, 6, 5, 4], activation="identity").double()
    x, y = _batch((9,), classes=4)
    rule = ngrad.make_rule("dfa", network, loss="mse")
    weights = [layer.weight.detach() for layer in network.layers]
    blocks = rule.feedback_blocks()
    with torch.no_grad():
        for index, block in enumerate(blocks):
            product = weights[-1]
            for w in reversed(weights[index + 1 : -1]):
                product = product @ w
            block.copy_(product)  # (W_L ... W_{l+1}), i.e. B_l^T
    rule.backward(x, y)
    reference = backprop_reference(network, rule.loss, x, y)
    assert (
        max_relative_error(
            [layer.weight.grad for layer in network.layers], reference.weight_gradients
        )
        < 1e-12
    )


def test_dfa_uses_one_fused_product(monkeypatch):
    """All hidden errors come from a single matmul of e with the stacked feedback."""
    torch.manual_seed(1)
    network = ngrad.mlp([9, 7, 6, 5, 4], activation="tanh").double()
    rule = ngrad.make_rule("dfa", network)
    x, y = _batch((9,), classes=4)
    widths = [b.shape[1] for b in rule.feedback_blocks()]
    assert widths == [7, 6, 5]
    assert rule.feedback_stack.shape == (4, 18)
    record = rule.backward(x, y)
    top = record.layer_errors[-1]
    for index, block in enumerate(rule.feedback_blocks()):
        h = network.trace(x).activities[index + 1]
        expected = (top @ block) * (1 - h * h)
        torch.testing.assert_close(record.layer_errors[index], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rule_name", ["usf", "brsf", "frsf"])
def test_sign_symmetric_feedback_has_sign_of_w_transpose(rule_name):
    network, shape = _network("conv")
    rule = ngrad.make_rule(rule_name, network)
    optimiser = torch.optim.SGD(rule.parameters(), lr=0.5)
    for step in range(15):
        x, y = _batch(shape, seed=step)
        rule.backward(x, y)
        optimiser.step()
        for pair in rule.feedback_pairs():
            assert torch.equal(torch.sign(pair.feedback), torch.sign(pair.forward))
            assert pair.feedback.abs().min() > 0 or pair.forward.abs().min() == 0


def test_batchwise_random_magnitude_is_redrawn_and_fixed_one_is_not():
    network, _ = _network("dense")
    brsf = ngrad.make_rule("brsf", network)
    first, second = brsf.feedback_matrices()[1], brsf.feedback_matrices()[1]
    assert not torch.equal(first, second)
    frsf = ngrad.make_rule("frsf", network)
    assert torch.equal(frsf.feedback_matrices()[1], frsf.feedback_matrices()[1])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_kolen_pollack_mismatch_decays_geometrically(momentum):
    lr, decay = 0.05, 0.2
    network, shape = _network("dense")
    rule = ngrad.make_rule("kp", network, weight_decay=decay)
    optimiser = torch.optim.SGD(rule.parameters(), lr=lr, momentum=momentum)
    mismatches = [rule.feedback_mismatch()]
    for step in range(40):
        x, y = _batch(shape, seed=step)
        rule.backward(x, y)
        optimiser.step()
        mismatches.append(rule.feedback_mismatch())
    history = torch.tensor(mismatches, dtype=torch.float64)
    first, last = history[0], history[-1]
    if momentum == 0.0:
        ratios = history[1:] / history[:-1]
        torch.testing.assert_close(
            ratios, torch.full_like(ratios, 1 - lr * decay), rtol=1e-10, atol=0
        )
    # with momentum the difference obeys a linear recurrence without the data term: it still shrinks
    assert torch.all(last < 0.7 * first)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_weight_mirror_converges_to_positive_multiple_of_w_transpose(noise):
    torch.manual_seed(2)
    network = ngrad.mlp([10, 30, 20, 5]).double()
    rule = ngrad.make_rule("wm", network, decay=0.5, noise=noise)
    x, _ = _batch((10,), n=64)
    before = [angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs()]
    assert min(before) > 60
    rule.mirror(x, steps=400, learning_rate=0.05)
    for pair in rule.feedback_pairs():
        assert angle_degrees(pair.feedback, pair.forward) < 10
        ratio = pair.feedback.detach().norm() / pair.forward.detach().norm()
        assert 1.5 < float(ratio) < 2.5  # fixed point W^T / decay = 2 W^T


def test_weight_mirror_during_training_keeps_feedback_aligned():
    torch.manual_seed(2)
    network = ngrad.mlp([10, 30, 20, 5]).double()
    rule = ngrad.make_rule("wm", network, rate=1.0)
    optimiser = torch.optim.SGD(rule.param_groups(feedback_lr=0.1), lr=0.1)
    for step in range(150):
        x, y = _batch((10,), n=32, classes=5, seed=step)
        rule.backward(x, y)
        optimiser.step()
    assert max(angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs()) < 15
