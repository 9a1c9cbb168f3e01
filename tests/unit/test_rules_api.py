"""The rule contract: registry, options, .grad, optimisers, state dicts."""

import pytest
import torch

import ngrad
from ngrad.errors import ConfigError
from ngrad.rules import REGISTRY


def _data(n=16):
    """A learnable task: labels of a random linear teacher."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=generator)
    teacher = torch.randn(6, 3, generator=generator)
    return x, (x @ teacher).argmax(dim=1)


def test_registry_lists_backprop_first_and_describes_every_rule():
    assert ngrad.available_rules()[0] == "bp"
    for name, cls in REGISTRY.items():
        assert cls.name == name
        assert cls.summary
        assert cls.citation


def test_unknown_rule_and_option_are_named():
    net = ngrad.mlp([6, 5, 3])
    with pytest.raises(ConfigError, match=r"unknown rule 'nope'.*available rules: bp"):
        ngrad.make_rule("nope", net)
    with pytest.raises(
        ConfigError, match="rule 'fa' has no option 'bogus'; its options are: init, scale"
    ):
        ngrad.make_rule("fa", net, bogus=1)
    with pytest.raises(ConfigError, match="'scale' must be positive"):
        ngrad.make_rule("fa", net, scale=-1.0)
    with pytest.raises(ConfigError, match="'init'"):
        ngrad.make_rule("fa", net, init="orthogonal")


def _network_for(name: str, sizes=(6, 16, 3)):
    """The test MLP, or a square one for rules that need invertible layers."""
    network = ngrad.mlp(list(sizes))
    if REGISTRY[name].supports(network):
        return network
    square = ngrad.mlp([sizes[0]] * (len(sizes) - 1) + [sizes[0]], activation="tanh")
    assert REGISTRY[name].supports(square), f"{name} supports neither test network"
    return square


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("optimiser", [torch.optim.SGD, torch.optim.Adam])
def test_every_rule_fills_every_trained_grad_and_trains(name, optimiser):
    torch.manual_seed(0)
    rule = ngrad.make_rule(name, _network_for(name))
    x, y = _data(64)
    opt = optimiser(rule.parameters(), lr=0.02)
    first = None
    for _ in range(150):
        record = rule.backward(x, y)
        for parameter in rule.parameters():
            assert parameter.grad is not None
            assert torch.isfinite(parameter.grad).all()
        opt.step()
        first = float(record.loss) if first is None else first
    assert record.output.shape[0] == 64
    assert float(record.loss) < 0.75 * first, f"{name} did not learn"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_gradient_is_overwritten_not_accumulated(name):
    torch.manual_seed(0)
    rule = ngrad.make_rule(name, _network_for(name, (6, 5, 3)))
    x, y = _data()
    torch.manual_seed(1)
    rule.backward(x, y)
    once = [p.grad.clone() for p in rule.network.parameters()]
    torch.manual_seed(1)
    rule.backward(x, y)
    for parameter, expected in zip(rule.network.parameters(), once, strict=True):
        torch.testing.assert_close(parameter.grad, expected)


def _square_data(n=32):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    return x, (x @ torch.randn(4, 4, generator=generator)).argmax(dim=1)


@pytest.mark.parametrize("name", ngrad.available_rules())
def test_trained_parameters_are_the_network_and_the_learned_feedback(name):
    net = ngrad.mlp([4, 4, 4, 4])  # square layers: every registered rule can train it
    rule = ngrad.make_rule(name, net)
    forward = {id(p) for p in net.parameters()}
    trained = list(rule.parameters())
    feedback = rule.feedback_parameters()
    assert forward <= {id(p) for p in trained}
    assert {id(p) for p in trained} - forward == {id(p) for p in feedback}
    assert not forward & {id(p) for p in feedback}
    if feedback:
        groups = rule.param_groups(feedback_lr=None)
        assert sum(len(group["params"]) for group in groups) == len(trained)


def test_learned_feedback_gets_its_own_learning_rate():
    groups = ngrad.make_rule("wm", ngrad.mlp([6, 5, 4, 3])).param_groups(feedback_lr=0.3)
    assert len(groups) == 2
    assert groups[1]["lr"] == 0.3
    assert "lr" not in groups[0]


@pytest.mark.parametrize("name", ngrad.available_rules())
def test_state_dict_round_trip_restores_the_whole_rule(name):
    torch.manual_seed(0)
    rule = ngrad.make_rule(name, ngrad.mlp([4, 4, 4, 4]))
    torch.manual_seed(99)
    other = ngrad.make_rule(name, ngrad.mlp([4, 4, 4, 4]))
    other.load_state_dict(rule.state_dict())
    x, y = _square_data()
    for twin in (rule, other):
        torch.manual_seed(5)  # the same per-batch draws (noise, random magnitudes)
        twin.backward(x, y)
    for a, b in zip(rule.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize(
    ("rule", "option", "value", "message"),
    [
        ("wm", "rate", 0.0, "'rate' must be positive"),
        ("wm", "mirror_samples", -1, "'mirror_samples' must be >= 0"),
        ("ep", "free_steps", 0, "'free_steps' must be >= 1"),
        ("pc", "output_clamping", -1.0, "'output_clamping' must be positive"),
    ],
)
def test_option_bounds_are_named(rule, option, value, message):
    with pytest.raises(ConfigError, match=message):
        ngrad.make_rule(rule, ngrad.mlp([6, 5, 3]), **{option: value})
