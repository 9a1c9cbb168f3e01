"""Reference properties of every rule, runnable in seconds (``ngrad check``) and by the tests.

Each check builds a small float64 network, measures one number against an oracle (autograd's
backprop or a closed form) and compares it with a tolerance. The tests in ``tests/reference``
assert the same properties, so a user can verify an installation, and a developer a new rule, with
the very code the test suite trusts.

Checks live in a ``checks.py`` beside each family's rules and register themselves for rule classes
with :func:`check_of`; :func:`run_checks` imports the checks of every registered rule's family and
runs those of one rule (inherited by its subclasses).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.network import Network, convnet, mlp
from ngrad.rules import LearningRule, get_rule_class, make_rule
from ngrad.rules.reference import backprop_reference

__all__ = [
    "CHECKS",
    "CheckResult",
    "bp_gradients",
    "check_of",
    "conv_network",
    "dense_network",
    "max_relative_error",
    "random_batch",
    "run_checks",
    "set_feedback_to_forward",
    "train_on_teacher",
    "weight_updates",
]


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


def random_batch(network_input: tuple[int, ...], classes: int, n: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((n, *network_input), generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (n,), generator=generator)
    return inputs, targets


def dense_network(seed: int = 0, activation: str = "tanh", sizes=(12, 10, 9, 4)) -> Network:
    torch.manual_seed(seed)
    return mlp(list(sizes), activation=activation).double()


def conv_network(seed: int = 0) -> Network:
    torch.manual_seed(seed)
    return convnet(
        (2, 8, 8), channels=(3, 4), num_classes=4, hidden=(6,), activation="tanh"
    ).double()


def set_feedback_to_forward(rule: LearningRule) -> None:
    """Every feedback matrix := the forward quantity it stands for (B := W^T; for DFA-like rules
    W_L ... W_{l+1}), through the storage that ``feedback_pairs`` exposes."""
    with torch.no_grad():
        for pair in rule.feedback_pairs():
            pair.feedback.copy_(pair.forward)


def weight_updates(rule: LearningRule) -> list[Tensor]:
    return [layer.weight.grad.clone() for layer in rule.network.layers]


def bp_gradients(network: Network, inputs: Tensor, targets: Tensor, loss: str = "cross_entropy"):
    return backprop_reference(network, make_rule("bp", network, loss).loss, inputs, targets)


def train_on_teacher(
    rule: LearningRule, steps: int, lr: float, seed: int = 1, shape=(12,), classes=4
):
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


def _load_family_checks() -> None:
    """Import the ``checks`` module beside every registered rule (its family's package)."""
    from ngrad.rules import REGISTRY

    for cls in REGISTRY.values():
        family = cls.__module__.rpartition(".")[0]
        if family.startswith("ngrad.rules") and importlib.util.find_spec(f"{family}.checks"):
            importlib.import_module(f"{family}.checks")


def run_checks(rule_name: str) -> list[CheckResult]:
    """Every registered property of rule ``rule_name`` (ConfigError for unknown names)."""
    _load_family_checks()
    cls = get_rule_class(rule_name)
    results = []
    # walk the class hierarchy, so a subclass of a rule (a variant, a mutant) inherits its checks
    checks = [entry for klass in cls.__mro__ for entry in CHECKS.get(klass, [])]
    # the check networks are tiny: one thread is several times faster than contending for more
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for check, options in checks:
            torch.manual_seed(0)
            results.extend(check(rule_name, **options))
    finally:
        torch.set_num_threads(threads)
    return results
