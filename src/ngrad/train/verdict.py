"""How a run that trained all its epochs is judged: completed, diverged or failed.

A non-finite training loss stops a run at once (status ``diverged``). A run that reaches its last
epoch is judged on that epoch's measurements:

- ``diverged``: the validation loss is not finite, or more than ``LOSS_GROWTH_LIMIT`` (10) times
  its value before training;
- ``failed``: the validation accuracy is at chance, i.e. no more than three standard errors above
  the accuracy of always answering the most common class; or the weight updates oppose the
  gradient, i.e. their angle to backprop's gradient, averaged over the layers, exceeds 90 degrees;
- ``completed`` otherwise.

``ngrad train`` exits with status 1 for a diverged or failed run; docs/runs.md explains the
criteria.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "LOSS_GROWTH_LIMIT",
    "OPPOSING_ANGLE_DEG",
    "SMALLER_LR",
    "Chance",
    "chance_level",
    "judge",
]

LOSS_GROWTH_LIMIT = 10.0
OPPOSING_ANGLE_DEG = 90.0
CHANCE_STANDARD_ERRORS = 3.0
SMALLER_LR = "start again with a smaller --lr (and --overwrite to reuse the output directory)"

Chance = tuple[float, float]  # (accuracy of the most common class, accuracy counted as chance)


def chance_level(labels: Tensor) -> Chance:
    """The validation accuracy of always answering the most common class, and the accuracy up to
    which a run counts as at chance (three binomial standard errors above it)."""
    count = labels.numel()
    if count == 0:
        return math.nan, math.nan
    majority = float(torch.bincount(labels.flatten().long().cpu()).max()) / count
    spread = math.sqrt(majority * (1.0 - majority) / count)
    return majority, majority + CHANCE_STANDARD_ERRORS * spread


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def judge(history: Sequence[dict[str, Any]], chance: Chance) -> tuple[str, str | None]:
    """(status, reason) of a run that trained all its epochs, from its metrics lines."""
    if len(history) < 2:
        return "completed", None
    first, last = history[0], history[-1]
    start, end = first.get("val_loss"), last.get("val_loss")
    if not _finite(end):
        return "diverged", f"the validation loss is not finite at the end; {SMALLER_LR}"
    if _finite(start) and start > 0 and end > LOSS_GROWTH_LIMIT * start:
        return "diverged", (
            f"the validation loss rose from {start:.4g} before training to {end:.4g} "
            f"(more than {LOSS_GROWTH_LIMIT:g}x); {SMALLER_LR}"
        )
    reasons = []
    majority, limit = chance
    accuracy = last.get("val_accuracy")
    if _finite(accuracy) and _finite(limit) and accuracy <= limit:
        reasons.append(
            f"the validation accuracy ended at chance ({accuracy:.3f}; always answering the most "
            f"common class scores {majority:.3f}): the network did not learn"
        )
    angles = [a for a in last.get("angle_to_bp_deg") or [] if _finite(a)]
    if angles and sum(angles) / len(angles) > OPPOSING_ANGLE_DEG:
        reasons.append(
            f"the updates oppose the gradient (mean angle to backprop "
            f"{sum(angles) / len(angles):.0f} deg > {OPPOSING_ANGLE_DEG:.0f} deg)"
        )
    if reasons:
        return "failed", "; ".join(reasons)
    return "completed", None
