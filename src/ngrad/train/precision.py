"""Mixed-precision training steps: autocast, and loss scaling for float16.

``precision`` (``ngrad train --precision``) is one of

- ``fp32``: everything in float32 (the default);
- ``bf16``: each ``rule.backward`` runs under ``torch.autocast`` with bfloat16, so matrix products
  and convolutions run in bfloat16 while the weights, their updates and the optimiser stay float32;
- ``fp16``: the same with float16, whose narrow range would flush small error signals to zero, so
  the loss is scaled by a factor S before the rule sends its error down (S x loss and S x dL/dy)
  and ``torch.amp.GradScaler`` divides the updates by S again, skips a step whose update
  overflowed and adapts S (reading the overflow flag makes each step wait for the device). That
  is exact only for rules whose update is linear in the loss's gradient.

A rule allows bf16 where it declares ``supports_mixed_precision`` (backprop and the
feedback-alignment family) and fp16 where it also declares ``scales_with_loss`` (not Kolen-Pollack,
whose feedback decays, nor weight mirrors, whose feedback learns from noise); any other refuses
with a ConfigError. Evaluation and the per-epoch diagnostics run in float32 either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

import torch
from torch import Tensor

from ngrad.errors import ConfigError
from ngrad.nn.losses import Loss
from ngrad.rules import LearningRule
from ngrad.rules.base import StepRecord
from ngrad.train.config import PRECISIONS

__all__ = [
    "PRECISIONS",
    "MixedPrecision",
    "Precision",
    "ScaledLoss",
    "check_precision",
    "mixed_precision_rules",
]

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(rule: type[LearningRule] | LearningRule, precision: str) -> None:
    """ConfigError unless ``rule`` can train in ``precision``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and not rule.supports_mixed_precision:
        raise ConfigError(
            f"rule {rule.name!r} does not support mixed precision (--precision {precision}): its "
            "dynamics are not verified under autocast; use --precision fp32 (rules that do: "
            f"{', '.join(mixed_precision_rules('bf16'))})"
        )
    if precision == "fp16" and not rule.scales_with_loss:
        raise ConfigError(
            f"rule {rule.name!r} cannot train in fp16: its update is not linear in the loss, so "
            "fp16's loss scaling would distort it; use --precision bf16 (rules that can: "
            f"{', '.join(mixed_precision_rules('fp16'))})"
        )


def mixed_precision_rules(precision: str = "bf16") -> list[str]:
    """The registered rules that can train in ``precision`` (bf16 or fp16)."""
    from ngrad.rules import REGISTRY

    return [
        name
        for name, cls in REGISTRY.items()
        if cls.supports_mixed_precision and (precision != "fp16" or cls.scales_with_loss)
    ]


class ScaledLoss(Loss):
    """``inner`` with its value and its output error multiplied by ``scale`` (a tensor, so no
    value is read back from the device)."""

    def __init__(self, inner: Loss, scale: Tensor) -> None:
        self.inner, self.scale, self.name = inner, scale, inner.name

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        return self.inner(output, target) * self.scale

    def output_error(self, pre_activation, output, target, activation):
        error = self.inner.output_error(pre_activation, output, target, activation)
        return error * self.scale.to(error.dtype)


class MixedPrecision:
    """One run's precision: ``step(rule, x, y)`` computes the update, ``apply(optimizer)`` steps.

    ``state_dict``/``load_state_dict`` carry the fp16 loss scale through a checkpoint."""

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(
            self.device.type,
            dtype=_DTYPES.get(self.precision, torch.float32),
            enabled=self.precision != "fp32",
        )

    @contextmanager
    def training_step(self, rule: LearningRule) -> Iterator[Callable[[Tensor], Tensor]]:
        """Run the ``rule.backward`` inside this block in this precision (with fp16, on the
        scaled loss); yields the function that turns the loss it reports back into float32 and
        the unscaled value."""
        if not self.scaler.is_enabled():
            with self.autocast():
                yield lambda loss: loss.detach().float()
            return
        scale = self.scaler.scale(torch.ones((), device=self.device))
        loss = rule.loss
        rule.loss = ScaledLoss(loss, scale)
        try:
            with self.autocast():
                yield lambda value: value.detach().float() / scale
        finally:
            rule.loss = loss

    def step(
        self, rule: LearningRule, inputs: Tensor, targets: Tensor
    ) -> tuple[StepRecord, Tensor]:
        """``rule.backward`` in this precision: its record and the (unscaled, float32) loss."""
        with self.training_step(rule) as unscaled:
            record = rule.backward(inputs, targets)
        return record, unscaled(record.loss)

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser's step (with fp16: unscaled, skipped on overflow, then S adapted)."""
        if self.scaler.is_enabled():
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)
