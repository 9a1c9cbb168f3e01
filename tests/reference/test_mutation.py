"""Prove the reference properties catch a wrong update in any rule: a sign flip of the whole
update, of one layer's update alone, and of the learned feedback's update alone."""

import pytest

import ngrad
from ngrad import rules
from ngrad.nn.network import Network
from ngrad.rules import layerwise
from ngrad.rules.base import model_layers
from ngrad.rules.checking import run_checks
from ngrad.rules.feedback_alignment import direct_feedback_alignment


def _mutant(cls, flipped):
    """``cls`` with the ``.grad`` written by ``backward`` negated on ``flipped(rule)``."""

    class Mutant(cls):
        def backward(self, inputs, targets):
            record = super().backward(inputs, targets)
            for parameter in flipped(self):
                if parameter.grad is not None:
                    parameter.grad.neg_()
            return record

    Mutant.__name__ = f"Mutant{cls.__name__}"
    return Mutant


def _whole_update(rule):
    return list(rule.parameters())


def _layer_update(position):
    def flipped(rule):
        if isinstance(rule.network, Network):
            layer = rule.network.layers[position]
        else:  # a torch module (the module-path checks): its converted layers, in order
            layer = [module for _, module in model_layers(rule.network)][position]
        return [p for p in (layer.weight, layer.bias) if p is not None]

    return flipped


def _learned_feedback_update(rule):
    forward = {id(p) for p in rule.network.parameters()}
    return [p for p in rule.parameters() if id(p) not in forward]


def _caught(rule_name, flipped, monkeypatch):
    monkeypatch.setitem(rules.REGISTRY, rule_name, _mutant(rules.REGISTRY[rule_name], flipped))
    return any(not result.passed for result in run_checks(rule_name))


@pytest.mark.parametrize("rule_name", ngrad.available_rules())
def test_sign_flipped_update_fails_a_reference_property(rule_name, monkeypatch):
    assert _caught(rule_name, _whole_update, monkeypatch), (
        f"no reference property of {rule_name} notices a sign-flipped update"
    )


@pytest.mark.parametrize("position", [0, -1], ids=["first_layer", "last_layer"])
@pytest.mark.parametrize("rule_name", ngrad.available_rules())
def test_one_layer_sign_flipped_fails_a_reference_property(rule_name, position, monkeypatch):
    assert _caught(rule_name, _layer_update(position), monkeypatch), (
        f"no reference property of {rule_name} notices layer {position}'s update sign-flipped"
    )


def _learns_feedback(rule_name):
    rule = ngrad.make_rule(rule_name, ngrad.mlp([4, 4, 4, 4]))
    return bool(_learned_feedback_update(rule))


@pytest.mark.parametrize(
    "rule_name", [name for name in ngrad.available_rules() if _learns_feedback(name)]
)
def test_learned_feedback_sign_flipped_fails_a_reference_property(rule_name, monkeypatch):
    assert _caught(rule_name, _learned_feedback_update, monkeypatch), (
        f"no reference property of {rule_name} notices its feedback update sign-flipped"
    )


def test_sign_flip_inside_the_shared_error_propagation_is_caught(monkeypatch):
    original = layerwise.hidden_error
    for module in (layerwise, direct_feedback_alignment):
        monkeypatch.setattr(module, "hidden_error", lambda *args: -original(*args))
    for rule_name in ("bp", "fa", "dfa", "kp", "wm", "frsf"):
        assert any(not r.passed for r in run_checks(rule_name)), rule_name
