"""The contract every learning rule implements.

A rule owns a :class:`~ngrad.nn.network.Network` and any feedback pathway it needs. Its
``backward(x, y)`` runs every phase the rule needs on one mini-batch and *writes* its update into
``.grad`` of every parameter it trains (forward weights and, where the rule learns them, feedback
weights), so any ``torch.optim`` optimiser, scheduler or gradient clipping applies it unchanged. The
gradient is overwritten, not accumulated: no ``zero_grad`` is needed between steps.

``rule.parameters()`` yields exactly the trained parameters; fixed feedback matrices are buffers, so
``rule.state_dict()`` checkpoints the network and the whole feedback pathway together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ngrad.nn.layers import Layer
from ngrad.nn.losses import Loss, get_loss
from ngrad.nn.network import Network
from ngrad.options import build_options, options_as_dict

__all__ = [
    "FeedbackPair",
    "LearningRule",
    "NoOptions",
    "StepRecord",
    "assign_gradient",
    "write_layer_update",
]


@dataclass(frozen=True)
class NoOptions:
    """A rule without options."""


@dataclass(frozen=True)
class StepRecord:
    """What ``rule.backward`` reports about one mini-batch.

    ``layer_errors[i]`` is the error signal the rule delivered to layer i's pre-activation (its
    estimate of dL/da_i), where the rule forms one. ``scalars`` holds rule-specific numbers and
    ``series`` rule-specific sequences; the trainer logs those of one step on the diagnostics
    batch each epoch (taken on a copy of the rule), so keep them cheap: name a per-layer list
    ``<quantity>_by_layer`` and a per-relaxation-step one ``<quantity>_by_step`` and
    ``ngrad train`` plots it.
    """

    loss: Tensor
    output: Tensor
    layer_errors: tuple[Tensor, ...] | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackPair:
    """A feedback matrix (in forward orientation) and the forward quantity it should align with."""

    layer: int
    feedback: Tensor
    forward: Tensor


class LearningRule(nn.Module, ABC):
    """Base class of all rules; subclasses set the class attributes and implement ``backward``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    citation: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, network: Network, loss: str | Loss = "cross_entropy", **options: Any):
        super().__init__()
        self.network = network
        self.loss = get_loss(loss)
        self.options = build_options(type(self).Options, options, f"rule {self.name!r}")

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        """Why the rule cannot train ``network`` (e.g. exact inverses need square layers), or
        None where it can; ``make_rule`` shows the reason and ``ngrad compare`` skips the rule."""
        return None

    @classmethod
    def supports(cls, network: Network) -> bool:
        return cls.unsupported_reason(network) is None

    @abstractmethod
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        """Compute the update on one batch and write it into ``.grad``; return a record."""

    def forward(self, inputs: Tensor) -> Tensor:
        """Prediction (evaluation pass) of the trained network."""
        return self.network(inputs)

    def representations(self, inputs: Tensor) -> list[Tensor]:
        """Each layer's activity h_1..h_L when the rule predicts (for similarity analyses):
        the feedforward pass by default; rules that predict otherwise say so."""
        with torch.no_grad():
            return self.network.trace(inputs).activities[1:]

    def feedback_pairs(self) -> list[FeedbackPair]:
        """Feedback matrices paired with the forward quantity they should align with."""
        return []

    def diagnose(self, inputs: Tensor, targets: Tensor) -> dict[str, float | list[float]]:
        """Rule-specific measurements too costly for every step (e.g. an angle to Gauss-Newton
        targets), run once per epoch by the trainer on a copy of the rule. Same naming as
        ``StepRecord.series``."""
        return {}

    def feedback_parameters(self) -> list[nn.Parameter]:
        """Trained parameters of the rule that are not the network's (learned feedback)."""
        network_ids = {id(p) for p in self.network.parameters()}
        return [p for p in self.parameters() if id(p) not in network_ids]

    def param_groups(self, feedback_lr: float | None = None) -> list[dict[str, Any]]:
        """Optimiser parameter groups: forward parameters, then learned feedback (own lr if set)."""
        groups: list[dict[str, Any]] = [{"params": list(self.network.parameters())}]
        feedback = self.feedback_parameters()
        if feedback:
            group: dict[str, Any] = {"params": feedback}
            if feedback_lr is not None:
                group["lr"] = feedback_lr
            groups.append(group)
        return groups

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "loss": self.loss.name, "options": options_as_dict(self.options)}

    def extra_repr(self) -> str:
        return f"rule={self.name}, loss={self.loss.name}, options={options_as_dict(self.options)}"


def assign_gradient(parameter: Tensor, update: Tensor) -> None:
    """Write ``update`` into ``parameter.grad`` (overwriting, never accumulating)."""
    parameter.grad = update.detach()


def write_layer_update(layer: Layer, weight_update: Tensor, bias_update: Tensor | None) -> None:
    """Write one layer's update into ``layer.weight.grad`` and, if the layer has a bias,
    ``layer.bias.grad`` (the single place rules write a forward layer's ``.grad``)."""
    assign_gradient(layer.weight, weight_update)
    if layer.bias is not None and bias_update is not None:
        assign_gradient(layer.bias, bias_update)
