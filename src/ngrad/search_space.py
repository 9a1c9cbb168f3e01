"""Tuning ranges a rule declares next to its options.

A rule class sets ``search_space`` to a read-only mapping of its option names to one of the
distributions below, made with :func:`tunable`, e.g.::

    search_space = tunable(target_step=LogUniform(1e-3, 0.3), noise=LogUniform(0.01, 0.5))

``ngrad tune`` samples the rule's options from it, together with the settings every rule shares
(learning rate, momentum, weight decay and, for rules that learn feedback weights, the feedback
learning rate). A rule with nothing of its own to tune declares ``search_space = tunable()``.
docs/tuning.md describes the search.

This module imports nothing from ngrad, so rules can use it without an upward import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["Choice", "Distribution", "IntRange", "LogUniform", "Uniform", "tunable"]


def _check_range(kind: str, low: float, high: float, positive: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{kind} needs finite low < high, got {low!r}, {high!r}")
    if positive and low <= 0:
        raise ValueError(f"{kind} is on a log scale: low must be positive, got {low!r}")


@dataclass(frozen=True)
class LogUniform:
    """A float whose logarithm is uniform in [log low, log high] (rates, scales)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_range("LogUniform", self.low, self.high, positive=True)

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class Uniform:
    """A float uniform in [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_range("Uniform", self.low, self.high, positive=False)

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high], both included; ``log``: uniform in its logarithm."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)):
            raise ValueError(f"IntRange takes integers, got {self.low!r}, {self.high!r}")
        _check_range("IntRange", self.low, self.high, positive=self.log)

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True, init=False)
class Choice:
    """One of a few values (strings, numbers or booleans)."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        if len(values) < 2 or len(set(values)) != len(values):
            raise ValueError(f"Choice needs at least two distinct values, got {values!r}")
        if not all(v is None or isinstance(v, str | int | float | bool) for v in values):
            raise ValueError(f"Choice takes strings, numbers or booleans, got {values!r}")
        object.__setattr__(self, "values", tuple(values))

    def bounds(self) -> tuple[Any, ...]:
        return self.values


Distribution = LogUniform | Uniform | IntRange | Choice


def tunable(**ranges: Distribution) -> Mapping[str, Distribution]:
    """A rule's search space: option name -> distribution, read-only (none: nothing to tune)."""
    for name, distribution in ranges.items():
        if not isinstance(distribution, LogUniform | Uniform | IntRange | Choice):
            raise TypeError(
                f"the search range of {name!r} must be a LogUniform, Uniform, IntRange or "
                f"Choice, got {distribution!r}"
            )
    return MappingProxyType(ranges)
