"""The contract every learning rule implements.

A rule owns a model, an ngrad :class:`~ngrad.nn.network.Network` or, for the rules that declare
``trains_modules`` (backprop and the feedback-alignment family), any ``torch.nn.Module``, and any
feedback pathway it needs; a rule that cannot train a model says why (``unsupported_reason``). Its
``backward(x, y)`` runs every phase the rule needs on one mini-batch and *writes* its update into
``.grad`` of every parameter it trains (forward weights and, where the rule learns them, feedback
weights), so any ``torch.optim`` optimiser, scheduler or gradient clipping applies it unchanged. The
gradient is overwritten, not accumulated: no ``zero_grad`` is needed between steps.

``rule.parameters()`` yields exactly the trained parameters; fixed feedback matrices are buffers, so
``rule.state_dict()`` checkpoints the network and the whole feedback pathway together.

Every rule checks what it is handed the same way: ``backward``, ``diagnose``, ``forward`` and
``representations`` refuse inputs of another shape, dtype or device than the network's, an empty
batch, and labels that are not int64 class indices of shape (N,) in range (checked on the CPU),
with one ``TypeError``/``ValueError`` naming the problem and what was expected (see
:mod:`ngrad.nn.validation`, which also says what can be checked of a general module's batch). The
check runs once, at the outermost call: a rule's own calls of these methods (``super().backward``,
``self.backward`` inside ``diagnose``) are not checked again.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    "LAYER_TYPES",
    "BatchShard",
    "FeedbackPair",
    "LearningRule",
    "NoOptions",
    "StepRecord",
    "assign_gradient",
    "assign_gradients",
    "check_network",
    "draw_for_batch",
    "model_layers",
    "sharded_step",
    "write_layer_update",
]

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""What counts as a layer of a general ``nn.Module``: its weighted linear maps (subclasses too)."""


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
    ``ngrad train`` plots it. Numbers may be 0-d tensors: they are read only when logged, so a
    training step never waits for the device to report them.
    """

    loss: Tensor
    output: Tensor
    layer_errors: tuple[Tensor, ...] | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackPair:
    """A feedback matrix (in forward orientation) and the forward quantity it should align with.

    ``layer`` is the layer's position (in a Network, its index in ``network.layers``; in a general
    module, its position among :func:`model_layers`), ``name`` the forward parameter's qualified
    name in the model (``"layers.1.weight"``, ``"layer1.0.conv1.weight"``)."""

    layer: int
    feedback: Tensor
    forward: Tensor
    name: str = ""


@dataclass(frozen=True)
class BatchShard:
    """This process's share of a data-parallel training step: samples ``offset`` to ``offset +
    size - 1`` of a global batch of ``total`` samples, and ``average``, which averages tensors in
    place over all the processes (see docs/distributed.md)."""

    offset: int
    size: int
    total: int
    average: Callable[[Sequence[Tensor]], None]


_BATCH_SHARD: ContextVar[BatchShard | None] = ContextVar("ngrad_batch_shard", default=None)


@contextmanager
def sharded_step(shard: BatchShard | None) -> Iterator[None]:
    """Run the rule's calls in this block as one process's share of a data-parallel step (None:
    the whole batch is here, nothing is shared); the training loop opens it around ``backward``."""
    token = _BATCH_SHARD.set(shard)
    try:
        yield
    finally:
        _BATCH_SHARD.reset(token)


def draw_for_batch(draw: Callable[[int], Tensor], count: int) -> Tensor:
    """A random draw with one row per sample of this process's batch of ``count`` samples:
    ``draw(count)``, except in a data-parallel step, where every process draws for the whole
    global batch (the same numbers everywhere) and keeps its own rows, so the draws equal those of
    one process training on the whole batch."""
    shard = _BATCH_SHARD.get()
    if shard is None:
        return draw(count)
    if count != shard.size:
        raise ValueError(
            f"draw_for_batch draws one row per sample: {count} rows asked for, but this process "
            f"holds {shard.size} samples of the batch"
        )
    return draw(shard.total)[shard.offset : shard.offset + count]


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
    """TypeError unless ``network`` is a ``torch.nn.Module`` (an ngrad Network or any other)."""
    if not isinstance(network, nn.Module):
        kind = type(network)
        given = repr(network) if kind.__module__ == "builtins" else kind.__qualname__
        raise TypeError(
            "a rule trains an ngrad Network (build one with ngrad.mlp or ngrad.convnet) or, for "
            f"the rules that can, any torch.nn.Module; got {given[:80]}"
        )


def _module_refusal(cls: type[LearningRule], network: nn.Module) -> str | None:
    """Why ``cls`` refuses ``network`` for its type alone (None if the type is one it trains)."""
    check_network(network)
    if isinstance(network, Network) or cls.trains_modules:
        return None
    return (
        "it trains ngrad Networks only (chains of ngrad layers, e.g. ngrad.mlp or ngrad.convnet), "
        f"not a general torch.nn.Module such as {type(network).__qualname__}"
    )


def _gated(function: Callable[..., str | None]) -> Callable[..., str | None]:
    """An ``unsupported_reason`` that first refuses a model of a type the rule does not train, so
    a rule's own reasons only ever see models it can read."""
    if getattr(function, "_ngrad_gated", False):
        return function

    @functools.wraps(function)
    def gated(cls: type[LearningRule], network: Any) -> str | None:
        refusal = _module_refusal(cls, network)
        return refusal if refusal is not None else function(cls, network)

    gated._ngrad_gated = True  # type: ignore[attr-defined]
    return gated


def model_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every layer (:data:`LAYER_TYPES`) of a general model, in the
    order ``model.named_modules()`` lists them; a module reachable twice is listed once."""
    return [
        (name, module) for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)
    ]


class LearningRule(nn.Module, ABC):
    """Base class of all rules; subclasses set the class attributes and implement ``backward``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    citation: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    trains_modules: ClassVar[bool] = False
    """Whether the rule trains any ``torch.nn.Module``, not only ngrad Networks; every other rule
    refuses a general module through ``unsupported_reason``."""
    supports_mixed_precision: ClassVar[bool] = False
    """Whether ``backward`` may run under autocast (``ngrad train --precision bf16``); relaxation
    and compartmental dynamics are not verified there."""
    scales_with_loss: ClassVar[bool] = False
    """Whether every update the rule writes is linear in the loss's gradient, so that scaling the
    loss by S scales the update by S: float16 training (``--precision fp16``) needs it, as its loss
    scaling divides the update by S again. Not so where a feedback pathway learns from something
    else than the loss (e.g. noise) or decays."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method_name, with_labels in _CHECKED_METHODS.items():
            method = cls.__dict__.get(method_name)
            if inspect.isfunction(method):
                setattr(cls, method_name, _checked(method, with_labels))
        reason = cls.__dict__.get("unsupported_reason")
        if isinstance(reason, classmethod):
            cls.unsupported_reason = classmethod(_gated(reason.__func__))  # type: ignore[method-assign]

    def __init__(self, network: nn.Module, loss: str | Loss = "cross_entropy", **options: Any):
        refusal = _module_refusal(type(self), network)
        if refusal is not None:
            raise TypeError(refusal)
        super().__init__()
        self.network = network
        self.loss = get_loss(loss)
        self.options = build_options(type(self).Options, options, f"rule {self.name!r}")

    @classmethod
    def unsupported_reason(cls, network: nn.Module) -> str | None:
        """Why the rule cannot train ``network`` (e.g. exact inverses need square layers, or the
        rule trains ngrad Networks only), or None where it can; ``make_rule`` shows the reason and
        ``ngrad compare`` skips the rule. Overrides see only models of a type the rule trains."""
        return None

    @classmethod
    def supports(cls, network: nn.Module) -> bool:
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
        the feedforward pass by default (in a general module, the output of each of its
        :func:`model_layers`, in the order they run); rules that predict otherwise say so."""
        with torch.no_grad():
            if isinstance(self.network, Network):
                return self.network.trace(inputs).activities[1:]
            outputs: list[Tensor] = []
            handles = [
                module.register_forward_hook(lambda _m, _a, out: outputs.append(out))
                for _, module in model_layers(self.network)
            ]
            try:
                self.network(inputs)
            finally:
                for handle in handles:
                    handle.remove()
            return outputs

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

    def reduce_gradients(self, gradients: Iterable[Tensor]) -> None:
        """Average ``gradients`` in place over the processes of a data-parallel step (nothing in
        one process). A rule that steps parameters itself inside ``backward`` (an internal
        optimisation loop) calls it on each step's updates before applying them, so every process
        applies the same step; the ``.grad`` that ``backward`` leaves is averaged by the trainer."""
        shard = _BATCH_SHARD.get()
        if shard is not None:
            shard.average(list(gradients))

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "loss": self.loss.name, "options": options_as_dict(self.options)}

    def extra_repr(self) -> str:
        return f"rule={self.name}, loss={self.loss.name}, options={options_as_dict(self.options)}"


# the base class's own batch methods get the same checks as its subclasses' overrides, and its
# own unsupported_reason the same refusal of a model type the rule does not train
for _method_name, _with_labels in _CHECKED_METHODS.items():
    _method = LearningRule.__dict__.get(_method_name)
    if _method is not None and not getattr(_method, "__isabstractmethod__", False):
        setattr(LearningRule, _method_name, _checked(_method, _with_labels))
LearningRule.unsupported_reason = classmethod(  # type: ignore[method-assign]
    _gated(LearningRule.__dict__["unsupported_reason"].__func__)
)


def assign_gradient(parameter: Tensor, update: Tensor) -> None:
    """Write ``update`` into ``parameter.grad`` (overwriting, never accumulating), in the
    parameter's dtype (an update computed under autocast may be bf16/fp16)."""
    parameter.grad = update.detach().to(parameter.dtype)


def assign_gradients(parameters: Sequence[Tensor], updates: Sequence[Tensor | None]) -> None:
    """Write each update into its parameter's ``.grad``; None clears it (a parameter the batch did
    not reach gets no stale update)."""
    for parameter, update in zip(parameters, updates, strict=True):
        parameter.grad = None if update is None else update.detach().to(parameter.dtype)


def write_layer_update(layer: Layer, weight_update: Tensor, bias_update: Tensor | None) -> None:
    """Write one layer's update into ``layer.weight.grad`` and, if the layer has a bias,
    ``layer.bias.grad`` (the single place rules write a forward layer's ``.grad``)."""
    assign_gradient(layer.weight, weight_update)
    if layer.bias is not None and bias_update is not None:
        assign_gradient(layer.bias, bias_update)
