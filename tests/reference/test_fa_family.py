"""Float64 reference tests of the feedback-alignment family against autograd and closed forms."""

import dataclasses
import math

import pytest
import torch

import ngrad
from ngrad.errors import ConfigError
from ngrad.nn.init import INITIALISATIONS
from ngrad.numeric import angle_degrees, root_mean_square
from ngrad.rules import REGISTRY
from ngrad.rules.checking import max_relative_error, run_checks
from ngrad.rules.reference import angles_to_backprop, backprop_reference
from ngrad.train.config import make_config
from ngrad.train.loop import run_training

RULES = ngrad.available_rules()  # the reference properties of every registered rule hold
FAMILY = [
    name
    for name, cls in REGISTRY.items()
    if cls.__module__.startswith("ngrad.rules.feedback_alignment.")
]
WITH_INIT_OPTION = [
    name
    for name in FAMILY
    if "init" in {field.name for field in dataclasses.fields(REGISTRY[name].Options)}
]
SIGN_SYMMETRY = [name for name in FAMILY if REGISTRY[name].__module__.endswith(".sign_symmetry")]


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
    blocks = rule.feedback_matrices()
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
    widths = [b.shape[1] for b in rule.feedback_matrices()]
    assert widths == [7, 6, 5]
    assert rule.feedback_stack.shape == (4, 18)
    record = rule.backward(x, y)
    top = record.layer_errors[-1]
    for index, block in enumerate(rule.feedback_matrices()):
        h = network.trace(x).activities[index + 1]
        expected = (top @ block) * (1 - h * h)
        torch.testing.assert_close(record.layer_errors[index], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rule_name", SIGN_SYMMETRY)
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


@pytest.mark.parametrize(
    ("momentum", "weight_decay", "nesterov"),
    [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 0.01, False), (0.9, 0.01, True)],
)
def test_kolen_pollack_mismatch_decays_under_sgd(momentum, weight_decay, nesterov):
    lr, decay = 0.05, 0.2
    network, shape = _network("dense")
    rule = ngrad.make_rule("kp", network, weight_decay=decay)
    optimiser = torch.optim.SGD(
        rule.param_groups(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )
    rule.check_optimizer(optimiser)  # accepted: the same linear step on W and B
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
        expected = 1 - lr * (decay + weight_decay)
        torch.testing.assert_close(ratios, torch.full_like(ratios, expected), rtol=1e-10, atol=0)
    # with momentum the difference obeys a linear recurrence without the data term: it still shrinks
    assert torch.all(last < 0.7 * first)


@pytest.mark.parametrize(
    ("optimiser", "message"),
    [
        (lambda groups: torch.optim.Adam(groups, lr=0.01), "Adam does not take the same step"),
        (lambda groups: torch.optim.RMSprop(groups, lr=0.01), "RMSprop"),
        (
            lambda groups: torch.optim.SGD(
                [groups[0], {"params": groups[1]["params"], "lr": 0.005}], lr=0.05
            ),
            "lr differs",
        ),
        (
            lambda groups: torch.optim.SGD(
                [groups[0], {"params": groups[1]["params"], "momentum": 0.0}], lr=0.05, momentum=0.9
            ),
            "momentum differs",
        ),
        (lambda groups: torch.optim.SGD(groups[:1], lr=0.05), "does not train both"),
    ],
    ids=["adam", "rmsprop", "feedback_lr", "momentum", "feedback_untrained"],
)
def test_kolen_pollack_refuses_an_optimiser_that_breaks_its_decay(optimiser, message):
    rule = ngrad.make_rule("kp", ngrad.mlp([6, 5, 4, 3]))
    network_parameters = list(rule.network.parameters())
    groups = [{"params": network_parameters}, {"params": rule.feedback_parameters()}]
    with pytest.raises(ConfigError, match=message):
        rule.check_optimizer(optimiser(groups))


def test_kolen_pollack_refuses_a_feedback_learning_rate():
    rule = ngrad.make_rule("kp", ngrad.mlp([6, 5, 4, 3]))
    with pytest.raises(ConfigError, match="no feedback learning rate"):
        rule.param_groups(feedback_lr=0.005)


@pytest.mark.parametrize(
    "settings", [{"optimizer": "adam"}, {"feedback_lr": 0.005}], ids=["adam", "feedback_lr"]
)
def test_training_kolen_pollack_with_a_step_that_breaks_it_is_a_config_error(settings, tmp_path):
    config = make_config(
        {"rule": "kp", "data": "digits", "epochs": 1, "hidden": (8,), "train_subset": 64} | settings
    )
    with pytest.raises(ConfigError, match="rule 'kp'"):
        run_training(config, tmp_path / "run", progress=False)


@pytest.mark.parametrize("rule_name", WITH_INIT_OPTION)
def test_an_unknown_init_is_a_config_error_listing_the_schemes(rule_name):
    with pytest.raises(ConfigError, match="init") as caught:
        ngrad.make_rule(rule_name, ngrad.mlp([6, 5, 4, 3]), init="orthogonal")
    assert all(scheme in str(caught.value) for scheme in INITIALISATIONS)


@pytest.mark.parametrize("init", INITIALISATIONS)
@pytest.mark.parametrize("rule_name", SIGN_SYMMETRY)
def test_sign_symmetric_magnitudes_follow_the_forward_initialisation(rule_name, init):
    """The feedback's RMS is the forward layer's own, whatever scheme initialised it."""
    torch.manual_seed(0)
    network = ngrad.mlp([200, 150, 100, 10], init=init).double()
    rule = ngrad.make_rule(rule_name, network)
    for pair in rule.feedback_pairs():
        ratio = root_mean_square(pair.feedback) / root_mean_square(pair.forward)
        assert abs(ratio - 1) < 0.05, (pair.layer, ratio)


def test_uniform_sign_symmetry_magnitude_is_the_layers_initial_rms():
    torch.manual_seed(0)
    network = ngrad.mlp([30, 20, 10, 5]).double()
    scales = [root_mean_square(layer.weight) for layer in network.layers[1:]]
    rule = ngrad.make_rule("usf", network)
    with torch.no_grad():
        for layer in network.layers:
            layer.weight.mul_(3.0)  # training changes W; the magnitude stays the initial scale
    for matrix, layer, scale in zip(
        rule.feedback_matrices()[1:], network.layers[1:], scales, strict=True
    ):
        torch.testing.assert_close(matrix, torch.sign(layer.weight) * scale)


def _teacher_task(shape, classes, seed):
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(math.prod(shape), classes, generator=generator, dtype=torch.float64)

    def batch(n):
        x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
        return x, (x.flatten(1) @ teacher).argmax(dim=1)

    return batch


@pytest.mark.parametrize("rule_name", FAMILY)
def test_conv_network_learns_a_teacher_task(rule_name):
    """Conv layers learn through the rule's feedback: loss falls, accuracy rises, and every
    layer's update points within 90 degrees of backprop's."""
    shape = (1, 8, 8)
    torch.manual_seed(0)
    network = ngrad.convnet(shape, (4, 6), num_classes=3, hidden=(16,), activation="tanh").double()
    rule = ngrad.make_rule(rule_name, network)
    batch = _teacher_task(shape, 3, seed=1)
    test_x, test_y = batch(512)

    def evaluate():
        with torch.no_grad():
            output = rule(test_x)
            accuracy = float((output.argmax(dim=1) == test_y).double().mean())
            return float(rule.loss(output, test_y)), accuracy

    loss_before, accuracy_before = evaluate()
    optimiser = torch.optim.SGD(rule.parameters(), lr=0.1, momentum=0.9)
    for _ in range(150):
        rule.backward(*batch(32))
        optimiser.step()
    loss_after, accuracy_after = evaluate()
    assert loss_after < 0.75 * loss_before
    assert accuracy_after > accuracy_before + 0.2
    assert max(angles_to_backprop(rule, test_x[:128], test_y[:128])) < 90


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_weight_mirror_converges_to_positive_multiple_of_w_transpose(noise):
    torch.manual_seed(2)
    network = ngrad.mlp([10, 30, 20, 5]).double()
    rule = ngrad.make_rule("wm", network, decay=0.5, noise_distribution=noise)
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
