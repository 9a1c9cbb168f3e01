"""(mean loss, accuracy) of a rule's network on a split, in evaluation mode."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ngrad.data.loading import EVALUATION_BATCH
from ngrad.rules import LearningRule

__all__ = ["evaluate"]

Batch = tuple[Tensor, Tensor]


@torch.no_grad()
def evaluate(
    rule: LearningRule,
    inputs: Tensor | Iterable[Batch],
    targets: Tensor | None = None,
    batch: int = EVALUATION_BATCH,
    prepare: Callable[[Tensor, Tensor], Batch] | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) of the rule's network on a split: tensors ``inputs`` and
    ``targets`` taken ``batch`` samples at a time, or an iterable of (inputs, labels) batches
    (a DataLoader), each passed through ``prepare`` (to the device, normalised, shaped) if given.
    The rule is in evaluation mode meanwhile (batch norm uses its running statistics, dropout
    is off), then back in the mode it was in.
    """
    if targets is None:
        pairs = inputs
    else:
        pairs = [
            (inputs[i : i + batch], targets[i : i + batch]) for i in range(0, len(targets), batch)
        ]
    total_loss, correct, count = 0.0, 0, 0
    training = rule.training
    rule.eval()
    try:
        for x, y in pairs:
            if prepare is not None:
                x, y = prepare(x, y)
            output = rule(x)
            total_loss += float(rule.loss(output, y)) * y.shape[0]
            correct += int((output.argmax(dim=1) == y).sum())
            count += y.shape[0]
    finally:
        rule.train(training)
    count = max(count, 1)
    return total_loss / count, correct / count
