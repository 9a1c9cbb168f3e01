"""Prove the reference properties catch a sign flip in any rule's update."""

import pytest

import ngrad
from ngrad import rules
from ngrad.rules import layerwise
from ngrad.rules.checking import run_checks
from ngrad.rules.feedback_alignment import direct_feedback_alignment


def _sign_flipped(cls):
    class Mutant(cls):
        def backward(self, inputs, targets):
            record = super().backward(inputs, targets)
            for parameter in self.parameters():
                if parameter.grad is not None:
                    parameter.grad.neg_()
            return record

    Mutant.__name__ = f"SignFlipped{cls.__name__}"
    return Mutant


@pytest.mark.parametrize("rule_name", ngrad.available_rules())
def test_sign_flipped_update_fails_a_reference_property(rule_name, monkeypatch):
    monkeypatch.setitem(rules.REGISTRY, rule_name, _sign_flipped(rules.REGISTRY[rule_name]))
    failures = [r for r in run_checks(rule_name) if not r.passed]
    assert failures, f"no reference property of {rule_name} notices a sign-flipped update"


def test_sign_flip_inside_the_shared_error_propagation_is_caught(monkeypatch):
    original = layerwise.hidden_error
    for module in (layerwise, direct_feedback_alignment):
        monkeypatch.setattr(module, "hidden_error", lambda *args: -original(*args))
    for rule_name in ("bp", "fa", "dfa", "kp", "wm", "frsf"):
        assert any(not r.passed for r in run_checks(rule_name)), rule_name
