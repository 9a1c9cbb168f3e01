"""The registry: the one place where a rule's name maps to its class."""

from __future__ import annotations

from typing import Any

from torch import nn

from ngrad.errors import ConfigError
from ngrad.nn.losses import Loss
from ngrad.nn.network import Network
from ngrad.rules.backprop import Backprop
from ngrad.rules.base import FeedbackPair, LearningRule, StepRecord, check_network
from ngrad.rules.compartmental.burstprop import Burstprop
from ngrad.rules.compartmental.dendritic_microcircuit import DendriticMicrocircuit
from ngrad.rules.compartmental.segregated_dendrites import SegregatedDendrites
from ngrad.rules.energy_based.contrastive_hebbian import ContrastiveHebbian
from ngrad.rules.energy_based.equilibrium_propagation import EquilibriumPropagation
from ngrad.rules.energy_based.predictive_coding import PredictiveCoding
from ngrad.rules.feedback_alignment.direct_feedback_alignment import DirectFeedbackAlignment
from ngrad.rules.feedback_alignment.feedback_alignment import FeedbackAlignment
from ngrad.rules.feedback_alignment.kolen_pollack import KolenPollack
from ngrad.rules.feedback_alignment.sign_symmetry import (
    BatchRandomSignSymmetry,
    FixedRandomSignSymmetry,
    UniformSignSymmetry,
)
from ngrad.rules.feedback_alignment.weight_mirror import WeightMirror
from ngrad.rules.target_propagation.difference_target_propagation import DifferenceTargetPropagation
from ngrad.rules.target_propagation.direct_difference_target_propagation import (
    DirectDifferenceTargetPropagation,
)
from ngrad.rules.target_propagation.local_difference_reconstruction import (
    LocalDifferenceReconstruction,
)
from ngrad.rules.target_propagation.target_propagation import TargetPropagation

__all__ = [
    "REGISTRY",
    "FeedbackPair",
    "LearningRule",
    "StepRecord",
    "available_rules",
    "get_rule_class",
    "make_rule",
]

REGISTRY: dict[str, type[LearningRule]] = {
    cls.name: cls
    for cls in (
        Backprop,
        FeedbackAlignment,
        DirectFeedbackAlignment,
        UniformSignSymmetry,
        BatchRandomSignSymmetry,
        FixedRandomSignSymmetry,
        KolenPollack,
        WeightMirror,
        TargetPropagation,
        DifferenceTargetPropagation,
        DirectDifferenceTargetPropagation,
        LocalDifferenceReconstruction,
        EquilibriumPropagation,
        ContrastiveHebbian,
        PredictiveCoding,
        DendriticMicrocircuit,
        Burstprop,
        SegregatedDendrites,
    )
}


def available_rules() -> list[str]:
    """Names of all registered rules, in registry order (backprop first)."""
    return list(REGISTRY)


def get_rule_class(name: str) -> type[LearningRule]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown rule {name!r}; available rules: {', '.join(REGISTRY)}"
        ) from None


def make_rule(
    name: str, network: nn.Module, loss: str | Loss = "cross_entropy", **options: Any
) -> LearningRule:
    """Build rule ``name`` on ``network``: an ngrad Network, or any ``torch.nn.Module`` for the
    rules that train one (``trains_modules``: backprop and the feedback-alignment family, see
    docs/feedback_alignment.md). Unknown names or options, and a model the rule cannot train,
    raise ConfigError (with the rule's ``unsupported_reason``); anything but an ``nn.Module`` a
    TypeError."""
    if not isinstance(name, str):
        raise TypeError(
            f"make_rule takes the rule's name (one of {', '.join(REGISTRY)}), got {name!r}"
        )
    check_network(network)
    cls = get_rule_class(name)
    if not cls.supports(network):
        reason = cls.unsupported_reason(network) or f"see its description: {cls.summary}"
        what = "network" if isinstance(network, Network) else "model"
        raise ConfigError(f"rule {name!r} cannot train this {what}: {reason}")
    return cls(network, loss, **options)
