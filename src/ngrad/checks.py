"""Reference properties of every rule, runnable in seconds (``ngrad check``) and by the tests.

Each check builds a small float64 network, measures one number against an oracle (autograd's
backprop or a closed form) and compares it with a tolerance. The tests in ``tests/reference``
assert the same properties, so a user can verify an installation, and a developer a new rule, with
the very code the test suite trusts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.diagnostics import angle_degrees, angles_to_backprop, backprop_reference
from ngrad.network import Network, convnet, mlp
from ngrad.rules import LearningRule, get_rule_class, make_rule
from ngrad.rules.backprop import Backprop
from ngrad.rules.direct_feedback_alignment import DirectFeedbackAlignment
from ngrad.rules.feedback_alignment import FeedbackAlignment
from ngrad.rules.kolen_pollack import KolenPollack
from ngrad.rules.layerwise import propagate_errors
from ngrad.rules.sign_symmetry import (
    BatchRandomSignSymmetry,
    FixedRandomSignSymmetry,
    UniformSignSymmetry,
)
from ngrad.rules.weight_mirror import WeightMirror

__all__ = ["CHECKS", "CheckResult", "max_relative_error", "run_checks"]

SIGN_RULES = (UniformSignSymmetry, BatchRandomSignSymmetry, FixedRandomSignSymmetry)


@dataclass(frozen=True)
class CheckResult:
    rule: str
    name: str
    measured: float
    tolerance: float
    comparison: str  # "<" or ">": how measured must stand to tolerance
    detail: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.measured):
            return False
        return (
            self.measured < self.tolerance
            if self.comparison == "<"
            else (self.measured > self.tolerance)
        )


Check = Callable[..., list[CheckResult]]
CHECKS: dict[type[LearningRule], list[tuple[Check, dict]]] = {}


def check_of(*classes: type[LearningRule], **options_by_class: dict) -> Callable[[Check], Check]:
    """Register a check for rule classes; ``options_by_class[cls.__name__]`` are rule options
    the check builds that class with (e.g. no weight decay where the property needs none)."""

    def register(function: Check) -> Check:
        for cls in classes:
            CHECKS.setdefault(cls, []).append((function, options_by_class.get(cls.__name__, {})))
        return function

    return register


def max_relative_error(actual: list[Tensor], expected: list[Tensor]) -> float:
    """max over tensors of |actual - expected|_max / |expected|_max."""
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        scale = float(e.abs().max()) or 1.0
        worst = max(worst, float((a - e).abs().max()) / scale)
    return worst


def _batch(network_input: tuple[int, ...], classes: int, n: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((n, *network_input), generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (n,), generator=generator)
    return inputs, targets


def _dense(seed: int = 0, activation: str = "tanh", sizes=(12, 10, 9, 4)) -> Network:
    torch.manual_seed(seed)
    return mlp(list(sizes), activation=activation).double()


def _conv(seed: int = 0) -> Network:
    torch.manual_seed(seed)
    return convnet(
        (2, 8, 8), channels=(3, 4), num_classes=4, hidden=(6,), activation="tanh"
    ).double()


def _weight_updates(rule: LearningRule) -> list[Tensor]:
    return [layer.weight.grad.clone() for layer in rule.network.layers]


def _bp_gradients(network: Network, inputs: Tensor, targets: Tensor, loss: str = "cross_entropy"):
    return backprop_reference(network, make_rule("bp", network, loss).loss, inputs, targets)


def _mirror_weights_into_feedback(rule: LearningRule) -> None:
    """Set every feedback matrix to the forward weight it stands for (B := W^T)."""
    with torch.no_grad():
        for pair in rule.feedback_pairs():
            pair.feedback.copy_(pair.forward)


@check_of(Backprop)
def check_layerwise_machinery(rule_name: str, **options) -> list[CheckResult]:
    """The layerwise error propagation with M_l = W_l reproduces autograd (dense and conv)."""
    results = []
    for label, network, shape in (("dense", _dense(), (12,)), ("conv", _conv(), (2, 8, 8))):
        inputs, targets = _batch(shape, 4)
        rule = make_rule(rule_name, network, **options)
        reference = _bp_gradients(network, inputs, targets)
        with torch.no_grad():
            trace = network.trace(inputs)
            errors = propagate_errors(
                network, trace, reference.errors[-1], [layer.weight for layer in network.layers]
            )
        rule.backward(inputs, targets)
        error = max(
            max_relative_error(errors, reference.errors),
            max_relative_error(_weight_updates(rule), reference.weight_gradients),
        )
        results.append(
            CheckResult(
                rule_name, f"layerwise errors with M=W equal autograd ({label})", error, 1e-10, "<"
            )
        )
    return results


@check_of(FeedbackAlignment, KolenPollack, WeightMirror, KolenPollack={"weight_decay": 0.0})
def check_equals_backprop_with_transposed_feedback(rule_name: str, **options) -> list[CheckResult]:
    """With B := W^T the rule's forward update is backprop's gradient (dense and conv)."""
    results = []
    for label, network, shape in (("dense", _dense(), (12,)), ("conv", _conv(), (2, 8, 8))):
        inputs, targets = _batch(shape, 4)
        rule = make_rule(rule_name, network, **options)
        _mirror_weights_into_feedback(rule)
        rule.backward(inputs, targets)
        reference = _bp_gradients(network, inputs, targets)
        error = max_relative_error(_weight_updates(rule), reference.weight_gradients)
        results.append(
            CheckResult(rule_name, f"B := W^T gives the BP update ({label})", error, 1e-10, "<")
        )
    return results


@check_of(DirectFeedbackAlignment)
def check_dfa_linear_equals_backprop(rule_name: str, **options) -> list[CheckResult]:
    """Linear network, B_l := (W_L ... W_{l+1})^T: DFA's update equals backprop's."""
    network = _dense(activation="identity")
    inputs, targets = _batch((12,), 4)
    rule = make_rule(rule_name, network, **options)
    _mirror_weights_into_feedback(rule)
    rule.backward(inputs, targets)
    reference = _bp_gradients(network, inputs, targets)
    error = max_relative_error(_weight_updates(rule), reference.weight_gradients)
    return [CheckResult(rule_name, "linear net, B_l := (W_L..W_l+1)^T gives BP", error, 1e-10, "<")]


def _train(rule: LearningRule, steps: int, lr: float, seed: int = 1, shape=(12,), classes=4):
    """Plain SGD on a fixed random teacher task; returns the last batch's inputs and targets."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(shape[0], classes, generator=generator, dtype=torch.float64)
    optimiser = torch.optim.SGD(rule.parameters(), lr=lr)
    for _ in range(steps):
        inputs = torch.randn((32, *shape), generator=generator, dtype=torch.float64)
        targets = (inputs.flatten(1) @ teacher).argmax(dim=1)
        rule.backward(inputs, targets)
        optimiser.step()
    return inputs, targets


@check_of(UniformSignSymmetry, BatchRandomSignSymmetry, FixedRandomSignSymmetry)
def check_sign_concordance(rule_name: str, **options) -> list[CheckResult]:
    """sign(B) = sign(W^T) at every step of training (count of sign disagreements)."""
    rule = make_rule(rule_name, _dense(), **options)
    disagreements = 0
    for _ in range(5):
        _train(rule, steps=20, lr=0.2)
        for pair in rule.feedback_pairs():
            disagreements += int((torch.sign(pair.feedback) != torch.sign(pair.forward)).sum())
    return [
        CheckResult(
            rule_name, "sign(B) != sign(W^T) entries over training", disagreements, 0.5, "<"
        )
    ]


@check_of(FixedRandomSignSymmetry)
def check_fixed_magnitude_equals_backprop(rule_name: str, **options) -> list[CheckResult]:
    """With the fixed magnitude set to |W|, sign(W) o |W| = W and the update is backprop's."""
    network = _dense()
    inputs, targets = _batch((12,), 4)
    rule = make_rule(rule_name, network, **options)
    with torch.no_grad():
        for index, layer in enumerate(network.layers):
            if index > 0:
                getattr(rule, f"magnitude_{index}").copy_(layer.weight.abs())
    rule.backward(inputs, targets)
    reference = _bp_gradients(network, inputs, targets)
    error = max_relative_error(_weight_updates(rule), reference.weight_gradients)
    return [CheckResult(rule_name, "magnitude := |W| gives the BP update", error, 1e-10, "<")]


@check_of(FeedbackAlignment, DirectFeedbackAlignment, *SIGN_RULES)
def check_update_aligns_during_training(rule_name: str, **options) -> list[CheckResult]:
    """After training, the hidden layer's update is within 90 degrees of backprop's."""
    rule = make_rule(rule_name, _dense(sizes=(12, 24, 4)), **options)
    inputs, targets = _train(rule, steps=300, lr=0.1)
    angle = angles_to_backprop(rule, inputs, targets)[0]
    return [
        CheckResult(rule_name, "hidden update angle to BP after training (deg)", angle, 90.0, "<")
    ]


@check_of(FeedbackAlignment, DirectFeedbackAlignment)
def check_forward_weights_align(rule_name: str, **options) -> list[CheckResult]:
    """Training turns the forward weights toward the fixed feedback: angle(B, W^T) falls."""
    rule = make_rule(rule_name, _dense(sizes=(12, 24, 4)), **options)
    before = [angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs()]
    _train(rule, steps=300, lr=0.1)
    after = [angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs()]
    turn = max(a - b for a, b in zip(after, before, strict=True))
    return [CheckResult(rule_name, "change of angle(B, W^T) over training (deg)", turn, -10.0, "<")]


@check_of(KolenPollack)
def check_kolen_pollack_decay(rule_name: str, **options) -> list[CheckResult]:
    """Under SGD, |B - W^T| shrinks by exactly (1 - lr * lambda) per step."""
    lr, decay, steps = 0.1, 0.05, 30
    rule = make_rule(rule_name, _dense(), weight_decay=decay, **options)
    before = rule.feedback_mismatch()
    _train(rule, steps=steps, lr=lr)
    after = rule.feedback_mismatch()
    expected = (1 - lr * decay) ** steps
    deviation = max(abs(a / b - expected) / expected for a, b in zip(after, before, strict=True))
    return [
        CheckResult(
            rule_name,
            f"|B-W^T| ratio after {steps} steps vs (1-lr*lambda)^t = {expected:.4f} (rel. dev.)",
            deviation,
            1e-9,
            "<",
        )
    ]


@check_of(WeightMirror)
def check_weight_mirror_alignment(rule_name: str, **options) -> list[CheckResult]:
    """One mirror phase of 200 noise steps brings every B within 10 degrees of W^T."""
    network = _dense(sizes=(12, 20, 16, 4))
    rule = make_rule(rule_name, network, **options)
    inputs, _ = _batch((12,), 4, n=64)
    rule.mirror(inputs, steps=200, learning_rate=0.05)
    worst = max(angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs())
    return [
        CheckResult(rule_name, "largest angle(B, W^T) after a mirror phase (deg)", worst, 10.0, "<")
    ]


def run_checks(rule_name: str) -> list[CheckResult]:
    """Every registered property of rule ``rule_name`` (ConfigError for unknown names)."""
    cls = get_rule_class(rule_name)
    results = []
    # walk the class hierarchy, so a subclass of a rule (a variant, a mutant) inherits its checks
    checks = [entry for klass in cls.__mro__ for entry in CHECKS.get(klass, [])]
    for check, options in checks:
        torch.manual_seed(0)
        results.extend(check(rule_name, **options))
    return results
