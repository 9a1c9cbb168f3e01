"""What ``ngrad tune`` searches: the settings every rule shares and each rule's own options.

The shared settings are declared here, once: the learning rate (log-uniform, its range chosen by
the optimiser), the momentum of sgd and rmsprop, the weight decay and, for a rule that learns
feedback weights and lets them have their own rate, the feedback learning rate. A rule's own
options come from the ``search_space`` its class declares next to its options
(:mod:`ngrad.search_space`). A setting or option the user gives (a flag, ``--rule-option`` or a
config file) is held at that value and not searched.

In an Optuna trial a shared setting keeps its name (``lr``); a rule option is named
``options.<name>``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from ngrad.errors import ConfigError
from ngrad.rules import LearningRule, get_rule_class
from ngrad.search_space import Choice, Distribution, IntRange, LogUniform, Uniform
from ngrad.train.build import build_optimizer
from ngrad.train.config import TrainConfig

__all__ = [
    "OPTION_PREFIX",
    "SHARED_SETTINGS",
    "SearchSpace",
    "describe",
    "learns_feedback_at_own_rate",
    "rule_search_space",
    "search_space",
    "shared_space",
    "split_parameters",
]

SHARED_SETTINGS = ("lr", "momentum", "weight_decay", "feedback_lr")
OPTION_PREFIX = "options."

# learning-rate ranges per optimiser: plain SGD takes far larger steps than the adaptive ones
_SGD_RATES = LogUniform(1e-3, 1.0)
_ADAPTIVE_RATES = LogUniform(1e-5, 1e-2)


def shared_space(optimizer: str, learned_feedback: bool) -> dict[str, Distribution]:
    """The shared settings searched for a rule trained with ``optimizer``; ``feedback_lr`` only
    where ``learned_feedback`` (the rule learns feedback weights at a rate of their own)."""
    rates = _SGD_RATES if optimizer == "sgd" else _ADAPTIVE_RATES
    space: dict[str, Distribution] = {"lr": rates}
    if optimizer in ("sgd", "rmsprop"):
        space["momentum"] = Uniform(0.0, 0.99)
    space["weight_decay"] = LogUniform(1e-6, 1e-2)
    if learned_feedback:
        space["feedback_lr"] = rates
    return space


def rule_search_space(rule: str) -> dict[str, Distribution]:
    """The ranges rule ``rule`` declares for its own options (``search_space`` on its class),
    checked: every key an option of the rule, every value a distribution."""
    cls = get_rule_class(rule)
    declared = getattr(cls, "search_space", None)
    if declared is None:
        raise ConfigError(
            f"rule {rule!r} declares no search_space, so it cannot be tuned; its class needs "
            "`search_space = {...}` next to its options (an empty mapping if none is tuned)"
        )
    options = {field.name for field in fields(cls.Options)}
    for name, distribution in declared.items():
        if name not in options:
            raise ConfigError(
                f"rule {rule!r} declares a search range for {name!r}, which is not one of its "
                f"options ({', '.join(sorted(options)) or 'it has none'})"
            )
        if not isinstance(distribution, LogUniform | Uniform | IntRange | Choice):
            raise ConfigError(
                f"rule {rule!r}: the search range of {name!r} must be a LogUniform, Uniform, "
                f"IntRange or Choice, got {distribution!r}"
            )
    return dict(declared)


def learns_feedback_at_own_rate(rule: LearningRule, config: TrainConfig) -> bool:
    """Whether ``rule`` trains feedback weights and accepts a feedback learning rate of their
    own (Kolen-Pollack, for one, needs the same step on both)."""
    if not rule.feedback_parameters():
        return False
    probe = dataclasses.replace(config, feedback_lr=config.lr / 2)
    try:
        rule.check_optimizer(build_optimizer(probe, rule))
    except ConfigError:
        return False
    return True


@dataclass(frozen=True)
class SearchSpace:
    """The searched settings of one rule: shared ones by name, the rule's options by name."""

    shared: dict[str, Distribution]
    options: dict[str, Distribution]

    def parameters(self) -> dict[str, Distribution]:
        """Every searched quantity under its Optuna parameter name."""
        named = dict(self.shared)
        named.update({OPTION_PREFIX + key: value for key, value in self.options.items()})
        return named

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One point of the space, drawn through the Optuna ``trial``: {parameter name: value}."""
        return {name: _suggest(trial, name, d) for name, d in self.parameters().items()}


def split_parameters(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's parameters -> (shared settings, rule options)."""
    settings = {k: v for k, v in params.items() if not k.startswith(OPTION_PREFIX)}
    options = {k[len(OPTION_PREFIX) :]: v for k, v in params.items() if k.startswith(OPTION_PREFIX)}
    return settings, options


def _suggest(trial: Any, name: str, distribution: Distribution) -> Any:
    if isinstance(distribution, LogUniform):
        return trial.suggest_float(name, distribution.low, distribution.high, log=True)
    if isinstance(distribution, Uniform):
        return trial.suggest_float(name, distribution.low, distribution.high)
    if isinstance(distribution, IntRange):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_categorical(name, list(distribution.values))


def search_space(
    config: TrainConfig, rule: LearningRule, fixed: set[str] | frozenset[str] = frozenset()
) -> SearchSpace:
    """What is searched for ``config.rule`` (built as ``rule`` on the model): the shared settings
    and the rule's declared options, less the names in ``fixed`` (shared settings the user set)
    and the rule options ``config.rule_options`` sets."""
    shared = shared_space(config.optimizer, learns_feedback_at_own_rate(rule, config))
    options = rule_search_space(config.rule)
    return SearchSpace(
        shared={k: v for k, v in shared.items() if k not in fixed},
        options={k: v for k, v in options.items() if k not in config.rule_options},
    )


def describe(space: SearchSpace) -> str:
    """One line per searched quantity, e.g. ``lr: log-uniform in [0.001, 1]``."""
    lines = []
    for name, distribution in space.parameters().items():
        if isinstance(distribution, LogUniform):
            what = f"log-uniform in [{distribution.low:g}, {distribution.high:g}]"
        elif isinstance(distribution, Uniform):
            what = f"uniform in [{distribution.low:g}, {distribution.high:g}]"
        elif isinstance(distribution, IntRange):
            scale = "log-uniform " if distribution.log else ""
            what = f"{scale}integer in [{distribution.low}, {distribution.high}]"
        else:
            what = "one of " + ", ".join(map(repr, distribution.values))
        lines.append(f"{name}: {what}")
    return "\n".join(lines)
