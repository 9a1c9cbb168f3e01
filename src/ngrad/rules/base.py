"""The contract every learning rule implements.

A rule owns a :class:`~ngrad.nn.network.Network` and any feedback pathway it needs. Its
``backward(x, y)`` runs every phase the rule needs on one mini-batch and *writes* its update into
``.grad`` of every parameter it trains (forward weights and, where the rule learns them, feedback
weights), so any ``torch.optim`` optimiser, scheduler or gradient clipping applies it unchanged. The
gradient is overwritten, not accumulated: no ``zero_grad`` is needed between steps.

``rule.parameters()`` yields exactly the trained parameters; fixed feedback matrices are buffers, so
``rule.state_dict()`` checkpoints the network and the whole feedback pathway together.

Every rule checks what it is handed the same way: ``backward``, ``diagnose``, ``forward`` and
``representations`` refuse inputs of another shape, dtype or device than the network's, an empty
batch, and labels that are not int64 class indices of shape (N,) in range (checked on the CPU), with
one ``TypeError``/``ValueError`` naming the problem and what was expected (see
:mod:`ngrad.nn.validation`). The check runs once, at the outermost call: a rule's own calls of these
methods (``super().backward``, ``self.backward`` inside ``diagnose``) are not checked again.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ngrad.nn.layers import Layer
from ngrad.nn.losses import Loss, get_loss
from ngrad.nn.network import Network
from ngrad.nn.validation import check_inputs, check_labels
from ngrad.options import build_options, options_as_dict

__all__ = [
    "FeedbackPair",
    "LearningRule",
    "NoOptions",
    "StepRecord",
    "assign_gradient",
    "check_network",
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


_INSIDE_CHECKED_CALL: ContextVar[bool] = ContextVar("ngrad_inside_checked_call", default=False)


def _checked(method: Callable[..., Any], with_labels: bool) -> Callable[..., Any]:
    """``method`` (taking inputs, and labels if ``with_labels``) behind the batch checks, which run
    only at the outermost checked call."""
    if getattr(method, "_ngrad_checked", False):
        return method
    names = list(inspect.signature(method).parameters)[1:3]

    @functools.wraps(method)
    def checked(self: LearningRule, *args: Any, **kwargs: Any) -> Any:
        if _INSIDE_CHECKED_CALL.get():
            return method(self, *args, **kwargs)
        given = [args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(names)]
        if given and given[0] is not None:
            check_inputs(self.network, given[0])
            if with_labels and len(given) > 1:
                check_labels(self.network, given[1], given[0].shape[0])
        token = _INSIDE_CHECKED_CALL.set(True)
        try:
            return method(self, *args, **kwargs)
        finally:
            _INSIDE_CHECKED_CALL.reset(token)

    checked._ngrad_checked = True  # type: ignore[attr-defined]
    return checked


# public methods taking a batch -> whether they also take its labels
_CHECKED_METHODS = {
    "backward": True,
    "diagnose": True,
    "forward": False,
    "representations": False,
    "train_feedback": False,
}


def check_network(network: Any) -> None:
    """TypeError unless ``network`` is an ngrad :class:`~ngrad.nn.network.Network`."""
    if not isinstance(network, Network):
        kind = type(network)
        given = repr(network) if kind.__module__ == "builtins" else kind.__qualname__
        raise TypeError(
            "a rule trains an ngrad Network (build one with ngrad.mlp or ngrad.convnet), got "
            f"{given[:80]}"
        )


class LearningRule(nn.Module, ABC):
    """Base class of all rules; subclasses set the class attributes and implement ``backward``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    citation: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method_name, with_labels in _CHECKED_METHODS.items():
            method = cls.__dict__.get(method_name)
            if inspect.isfunction(method):
                setattr(cls, method_name, _checked(method, with_labels))

    def __init__(self, network: Network, loss: str | Loss = "cross_entropy", **options: Any):
        check_network(network)
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
        check_network(network)
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

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Raise ConfigError if ``optimizer`` cannot apply this rule's updates as the rule means
        them (e.g. Kolen-Pollack needs the same SGD step on W and B); called by the training loop
        right after it builds the optimiser. Any optimiser is fine by default."""

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "loss": self.loss.name, "options": options_as_dict(self.options)}

    def extra_repr(self) -> str:
        return f"rule={self.name}, loss={self.loss.name}, options={options_as_dict(self.options)}"


# the base class's own batch methods get the same checks as its subclasses' overrides
for _method_name, _with_labels in _CHECKED_METHODS.items():
    _method = LearningRule.__dict__.get(_method_name)
    if _method is not None and not getattr(_method, "__isabstractmethod__", False):
        setattr(LearningRule, _method_name, _checked(_method, _with_labels))


def assign_gradient(parameter: Tensor, update: Tensor) -> None:
    """Write ``update`` into ``parameter.grad`` (overwriting, never accumulating)."""
    parameter.grad = update.detach()


def write_layer_update(layer: Layer, weight_update: Tensor, bias_update: Tensor | None) -> None:
    """Write one layer's update into ``layer.weight.grad`` and, if the layer has a bias,
    ``layer.bias.grad`` (the single place rules write a forward layer's ``.grad``)."""
    assign_gradient(layer.weight, weight_update)
    if layer.bias is not None and bias_update is not None:
        assign_gradient(layer.bias, bias_update)
