"""The feedback-alignment family on any torch.nn.Module, in float64: state dicts, the model left
as it was outside the rule, per-layer sign-symmetry scales, learning, diagnostics by parameter name,
the other rules' refusals and the batch checks."""

import copy

import pytest
import torch
from fa_module_cases import (
    FAMILY,
    MODULE_RULES,
    NETWORK_ONLY,
    batch,
    conv_bn_pool_residual,
    set_feedback_transposed,
)
from torch import nn

import ngrad
from ngrad import models
from ngrad.analysis.diagnostics import measure
from ngrad.errors import ConfigError
from ngrad.numeric import root_mean_square
from ngrad.rules import REGISTRY
from ngrad.rules.base import model_layers


# ----------------------------------------------------------------- state -------------------------
@pytest.mark.parametrize("rule_name", MODULE_RULES)
def test_state_dict_round_trip(rule_name):
    x, y = batch((2, 8, 8))
    model = conv_bn_pool_residual(seed=0)
    plain_keys = list(conv_bn_pool_residual(seed=1).state_dict())
    rule = ngrad.make_rule(rule_name, model)
    optimiser = torch.optim.SGD(rule.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        rule.backward(x, y)
        optimiser.step()
    state = rule.state_dict()
    fresh = ngrad.make_rule(rule_name, conv_bn_pool_residual(seed=7))  # never run: DFA's D unborn
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    torch.manual_seed(3)
    rule.backward(x, y)
    torch.manual_seed(3)
    fresh.backward(x, y)
    for mine, theirs in zip(rule.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(mine.grad, theirs.grad)
    # the model's own state_dict: the keys of a plain model, loadable into one
    assert list(model.state_dict()) == plain_keys
    plain = conv_bn_pool_residual(seed=1)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    assert torch.equal(plain(x), model(x))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in plain.modules())


def test_conversion_leaves_the_model_as_it_was_outside_the_rule():
    """Hooks act only inside rule.backward: the model's output, and a user's own backward
    through it, are a plain model's; release_model removes them."""
    model = conv_bn_pool_residual()
    plain = copy.deepcopy(model)
    rule = ngrad.make_rule("fa", model)
    x, y = batch((2, 8, 8))
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    for mine, theirs in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=0)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in plain.named_parameters()]
    rule.release_model()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# ----------------------------------------------------------------- the rest -------------------
@pytest.mark.parametrize(
    "rule_name", [n for n in FAMILY if REGISTRY[n].__module__.endswith("sign_symmetry")]
)
def test_sign_symmetry_per_layer_at_the_layers_own_scale(rule_name):
    model = models.build("resnet20", (3, 8, 8), 3, width=8).double()
    rule = ngrad.make_rule(rule_name, model)
    for pair in rule.feedback_pairs():
        assert torch.equal(torch.sign(pair.feedback), torch.sign(pair.forward))
        ratio = root_mean_square(pair.feedback) / root_mean_square(pair.forward)
        assert abs(ratio - 1) < 0.15, (pair.name, ratio)
    assert [p.name for p in rule.feedback_pairs()] == [
        f"{name}.weight" for name, _ in model_layers(model)
    ]


@pytest.mark.parametrize("rule_name", FAMILY)
def test_every_rule_learns_on_the_converted_model(rule_name):
    """A teacher task (the class is the argmax of a linear map of the channel means): the loss
    falls and the accuracy rises well above chance (1/3) on held-out data."""
    model = conv_bn_pool_residual()
    rule = ngrad.make_rule(rule_name, model)
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 3, generator=generator, dtype=torch.float64)

    def batch(n):
        x = torch.randn((n, 2, 8, 8), generator=generator, dtype=torch.float64)
        return x, (x.mean(dim=(2, 3)) @ teacher).argmax(dim=1)

    def evaluate():
        model.eval()  # batch norm's running statistics
        with torch.no_grad():
            output = rule(test_x)
        model.train()
        return float(rule.loss(output, test_y)), float((output.argmax(1) == test_y).double().mean())

    test_x, test_y = batch(256)
    loss_before, _ = evaluate()
    optimiser = torch.optim.SGD(rule.parameters(), lr=0.02, momentum=0.9)
    for _ in range(120):
        rule.backward(*batch(32))
        optimiser.step()
    loss_after, accuracy = evaluate()
    assert loss_after < 0.85 * loss_before
    assert accuracy > 0.5


def test_diagnostics_on_a_module():
    model = conv_bn_pool_residual()
    x, y = batch((2, 8, 8))
    names = [f"{name}.weight" for name, _ in model_layers(model)]
    statistics = {k: v.clone() for k, v in model.state_dict().items()}
    bp, fa = ngrad.make_rule("bp", model), ngrad.make_rule("fa", model)
    rng = torch.get_rng_state()
    exact = measure(bp, x, y)
    assert exact["layer_names"] == names
    assert max(exact["angle_to_bp_deg"]) < 1e-4
    result = measure(fa, x, y)
    assert result["layer_names"] == names
    assert result["angle_to_bp_deg"][-1] < 1e-4 and result["angle_to_bp_deg"][0] > 1
    assert len(result["error_angle_to_bp_deg"]) == len(result["rule_error_rms"]) == len(names)
    assert [item["name"] for item in result["weight_alignment"]] == names
    set_feedback_transposed(fa)
    transposed = measure(fa, x, y)
    assert max(transposed["angle_to_bp_deg"]) < 1e-4
    assert max(transposed["error_angle_to_bp_deg"]) < 1e-4
    assert transposed["rule_error_rms"] == pytest.approx(transposed["bp_error_rms"], rel=1e-10)
    assert max(item["angle_deg"] for item in transposed["weight_alignment"]) < 1e-4
    assert torch.equal(rng, torch.get_rng_state())
    for key, value in model.state_dict().items():  # batch norm's running statistics too
        assert torch.equal(value, statistics[key]), key
    assert all(p.grad is None for p in fa.parameters())


@pytest.mark.parametrize("rule_name", NETWORK_ONLY)
def test_rules_that_train_networks_only_say_why(rule_name):
    model = conv_bn_pool_residual()
    assert not REGISTRY[rule_name].supports(model)
    assert "trains ngrad Networks only" in REGISTRY[rule_name].unsupported_reason(model)
    with pytest.raises(ConfigError, match=f"rule '{rule_name}' cannot train this model"):
        ngrad.make_rule(rule_name, model)


def test_a_model_without_layers_is_refused():
    for name in FAMILY:
        assert "no layer to give feedback to" in REGISTRY[name].unsupported_reason(nn.ReLU())


def test_module_batches_are_checked():
    rule = ngrad.make_rule("fa", conv_bn_pool_residual())
    x, y = batch((2, 8, 8))
    with pytest.raises(TypeError, match=r"torch.float64 like the model's parameters"):
        rule.backward(x.float(), y)
    with pytest.raises(ValueError, match="non-empty batch"):
        rule.backward(x[:0], y[:0])
    with pytest.raises(ValueError, match=r"in \[0, 2\] \(the network has 3 outputs\)"):
        rule.backward(x, y + 3)
    with pytest.raises(ValueError, match="non-negative"):
        rule.backward(x, y - 3)
    with pytest.raises(ValueError, match="one-hot"):
        rule.backward(x, nn.functional.one_hot(y, 3))
    with pytest.raises(TypeError, match="int64"):
        rule.backward(x, y.int())
    rule.backward(x, y)  # the refusals left it usable
