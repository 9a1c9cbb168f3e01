"""The feedback-alignment family on any ``torch.nn.Module``: conversion of its layers.

A rule of the family built on a general module (not an ngrad Network) converts every layer of it,
each ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (:func:`ngrad.rules.base.model_layers`), by registering
a forward pre-hook and a forward hook on it. The model is neither copied nor rewritten: its
parameters, their names, ``state_dict()`` and its behaviour outside the rule are unchanged (the
hooks do nothing unless the rule's ``backward`` is running), so the model's own ``state_dict``
loads into a fresh, plain model. ``rule.release_model()`` removes the hooks.

Inside ``rule.backward(x, y)`` each converted layer, y = W x + b, runs as:

- the pre-hook hands the layer a detached view of its input, so autograd computes only the layer's
  own gradients from the error delta = dL/dy that reaches its output, dW = delta x^T and
  db = sum delta (PyTorch's own kernels, as in backprop);
- the hook attaches one autograd node to the output that passes delta on to the layer and sends
  the rule's signal down to the layer's input in place of backprop's W^T delta: B delta for a
  feedback matrix B^T stored in W's shape (for a convolution, the transposed convolution with
  kernel B^T) in FA, sign symmetry, KP and WM, or D e, the output error through a fixed matrix, in
  DFA.

Everything else (batch norm, pooling, dropout, residual additions, attention, custom code)
backpropagates by autograd as usual, and its parameters get their ordinary gradients. The error at
the model's output, e = dL/d(output), is taken by autograd from the loss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ngrad.nn.losses import Loss
from ngrad.nn.validation import check_label_range
from ngrad.rules.base import assign_gradients, model_layers

__all__ = [
    "LazyFeedbackBuffers",
    "ModulePathway",
    "ModuleReference",
    "ModuleStep",
    "conversion_refusal",
    "module_backprop_reference",
    "send_through",
]

SendDown = Callable[[Tensor], Tensor]


def conversion_refusal(model: nn.Module) -> str | None:
    """Why the family cannot train ``model`` (it has no layer to give feedback to), or None."""
    if not model_layers(model):
        return "the model has no layer to give feedback to (nn.Linear or nn.Conv1d/2d/3d)"
    return None


def send_through(module: nn.Module, matrix: Tensor, inputs: Tensor, delta: Tensor) -> Tensor:
    """``delta`` (the error at ``module``'s output) sent to its input through ``matrix``, a tensor
    of the layer's weight's shape, in place of the weight: delta B^T for a dense layer, the
    transposed convolution with kernel ``matrix`` for a convolution. With ``matrix`` = W this is
    autograd's gradient with respect to the input."""
    if isinstance(module, nn.Linear):
        return delta @ matrix
    padding: Any = module.padding
    if padding == "valid":
        padding = (0,) * (matrix.dim() - 2)
    if module.padding_mode == "zeros" and not isinstance(padding, str):
        batched = inputs.dim() == matrix.dim()
        grad_output = delta if batched else delta.unsqueeze(0)
        shaped_input = inputs if batched else inputs.unsqueeze(0)
        gradient = torch.ops.aten.convolution_backward(
            grad_output,
            shaped_input,
            matrix,
            None,
            module.stride,
            padding,
            module.dilation,
            False,
            [0] * (matrix.dim() - 2),
            module.groups,
            [True, False, False],
        )[0]
        return gradient if batched else gradient.squeeze(0)
    # "same" padding, reflect/replicate/circular padding: autograd through the layer's own map
    with torch.enable_grad():
        probe = inputs.detach().requires_grad_(True)
        return torch.autograd.grad(module._conv_forward(probe, matrix, None), probe, delta)[0]


class _Reroute(torch.autograd.Function):
    """Identity on a layer's output; backward passes delta on to the layer (its dW, db) and
    sends ``send_down(delta)`` to the layer's input in place of W^T delta."""

    @staticmethod
    def forward(ctx, output, inputs, send_down, record):  # type: ignore[override]
        ctx.send_down, ctx.record = send_down, record
        return output.detach()

    @staticmethod
    def backward(ctx, delta):  # type: ignore[override]
        ctx.record(delta)
        down = ctx.send_down(delta) if ctx.needs_input_grad[1] else None
        return delta, down, None, None


@dataclass
class _Session:
    """One ``rule.backward``'s bookkeeping, dropped when it returns."""

    send_down: Callable[[int, nn.Module, Tensor, _Session], SendDown]
    pending: dict[int, list[Tensor | None]] = field(default_factory=dict)
    used: list[int] = field(default_factory=list)  # layers whose input needed an error, in order
    input_shapes: dict[int, torch.Size] = field(default_factory=dict)
    deltas: dict[int, list[Tensor]] = field(default_factory=dict)
    output_error: Tensor | None = None

    def record(self, index: int, delta: Tensor) -> None:
        self.deltas.setdefault(index, []).append(delta)


@dataclass(frozen=True)
class ModuleStep:
    """What one converted backward pass computed (the ``.grad`` are already written)."""

    loss: Tensor
    output: Tensor
    used: tuple[int, ...]  # layers whose input received an error, in the order of the forward pass
    layer_errors: tuple[Tensor, ...] | None  # dL/dy at each layer's output (None if a layer ran
    #     other than once)


def _layer_input(args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    return kwargs.get("input")


class ModulePathway:
    """The hooks on a general model's layers and the backward pass through them.

    ``layers`` lists (qualified name, module) of the converted layers, in the order of
    :func:`ngrad.rules.base.model_layers`; a rule keeps one feedback matrix per entry.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = model_layers(model)
        self._session: _Session | None = None
        self._handles = []
        for index, (_, module) in enumerate(self.layers):
            self._handles.append(
                module.register_forward_pre_hook(
                    functools.partial(self._before, index), with_kwargs=True
                )
            )
            self._handles.append(
                module.register_forward_hook(
                    functools.partial(self._after, index), with_kwargs=True
                )
            )

    def weights(self) -> list[Tensor]:
        # the registered parameter directly (nn.Module.__getattr__ is slow); else the attribute
        # (e.g. a parametrized weight)
        return [
            module._parameters.get("weight") if "weight" in module._parameters else module.weight
            for _, module in self.layers
        ]

    def weight_names(self) -> list[str]:
        return [f"{name}.weight" if name else "weight" for name, _ in self.layers]

    def remove(self) -> None:
        """Remove the hooks: the model is then exactly as it was before conversion."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _before(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        session = self._session
        if session is None or not torch.is_grad_enabled():
            return None
        inputs = _layer_input(args, kwargs)
        stack = session.pending.setdefault(index, [])
        if not isinstance(inputs, Tensor):
            stack.append(None)
            return None
        stack.append(inputs)
        if not inputs.requires_grad:
            return None
        if index not in session.input_shapes:
            session.used.append(index)
            session.input_shapes[index] = inputs.shape
        detached = inputs.detach()
        if args:
            return (detached, *args[1:]), kwargs
        return args, {**kwargs, "input": detached}

    def _after(self, index: int, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        session = self._session
        if session is None or not torch.is_grad_enabled():
            return None
        stack = session.pending.get(index)
        inputs = stack.pop() if stack else None
        if inputs is None or not isinstance(output, Tensor):
            return None
        send = session.send_down(index, module, inputs, session) if inputs.requires_grad else None
        return _Reroute.apply(output, inputs, send, functools.partial(session.record, index))

    def run(
        self,
        inputs: Tensor,
        targets: Tensor,
        loss: Loss,
        send_down: Callable[[int, nn.Module, Tensor, _Session], SendDown],
        prepare: Callable[[_Session], None] | None = None,
    ) -> ModuleStep:
        """Forward the batch with the layers converted and backpropagate the loss, writing
        ``.grad`` of every parameter of the model that requires one (None for one the batch did
        not reach). ``send_down(index, module, inputs, session)`` is called during the forward
        pass, in its order, for each layer whose input needs an error, and returns what sends
        delta down in place of W^T delta; ``prepare(session)`` runs once e = dL/d(output)
        (``session.output_error``) is known, before it enters the model (e.g. to draw feedback
        whose size the forward pass revealed)."""
        session = _Session(send_down)
        self._session = session
        try:
            with torch.enable_grad():
                output = self.model(inputs)
        finally:
            self._session = None
        if not isinstance(output, Tensor):
            raise TypeError(
                "the rule trains a model whose forward pass returns one tensor of outputs, got "
                f"{type(output).__name__}"
            )
        check_label_range(targets, output.shape[-1])
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        gradients: tuple[Tensor | None, ...] = (None,) * len(parameters)

        def reached_output(error: Tensor) -> None:
            # e = dL/d(output) arrives here before it enters the model
            session.output_error = error
            if prepare is not None:
                prepare(session)

        with torch.enable_grad():
            value = loss(output, targets)
            if output.requires_grad and parameters:
                output.register_hook(reached_output)
                gradients = torch.autograd.grad(value, parameters, allow_unused=True)
        assign_gradients(parameters, gradients)
        deltas = [session.deltas.get(index, []) for index in range(len(self.layers))]
        layer_errors = (
            tuple(found[0] for found in deltas) if all(len(f) == 1 for f in deltas) else None
        )
        return ModuleStep(value.detach(), output.detach(), tuple(session.used), layer_errors)


class LazyFeedbackBuffers(nn.Module):
    """Fixed feedback buffers ``0, 1, ...``, one per layer, each None until first drawn (its
    size is known only once the model has run); ``load_state_dict`` creates the saved ones."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self._count = count
        for index in range(count):
            self.register_buffer(str(index), None)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Tensor | None:
        return self._buffers[str(index)]

    def __setitem__(self, index: int, tensor: Tensor) -> None:
        self._buffers[str(index)] = tensor

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        for name, value in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if value is None and isinstance(saved, Tensor):
                self._buffers[name] = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        shapes = [
            None if t is None else tuple(t.shape) for t in map(self.__getitem__, range(len(self)))
        ]
        return ", ".join(str(shape) for shape in shapes)


@dataclass(frozen=True)
class ModuleReference:
    """Autograd's backprop through a general model on one batch: the loss, the gradient of each
    layer's weight and the error dL/dy at each layer's output (None if a layer ran other than
    once), layers in the order of :func:`ngrad.rules.base.model_layers`."""

    loss: float
    names: list[str]
    weight_gradients: list[Tensor | None]
    errors: list[Tensor] | None


def module_backprop_reference(
    model: nn.Module, loss: Loss, inputs: Tensor, targets: Tensor
) -> ModuleReference:
    """Backprop through ``model`` with autograd (the oracle of the module path)."""
    layers = model_layers(model)
    outputs: dict[int, list[Tensor]] = {}

    def keep(index: int, _module: nn.Module, _args: Any, output: Any) -> Any:
        outputs.setdefault(index, []).append(output)
        # the model goes on with a copy, so an in-place operation after the layer (a ReLU with
        # inplace=True) leaves the watched output, and dL/dy, that of the layer itself
        return output.clone() if isinstance(output, Tensor) else None

    handles = [
        module.register_forward_hook(functools.partial(keep, index))
        for index, (_, module) in enumerate(layers)
    ]
    try:
        with torch.enable_grad():
            output = model(inputs)
            value = loss(output, targets)
    finally:
        for handle in handles:
            handle.remove()
    weights = [module.weight for _, module in layers]
    single = all(len(outputs.get(index, [])) == 1 for index in range(len(layers)))
    watched = [outputs[index][0] for index in range(len(layers))] if single else []
    wanted = [w for w in weights if w.requires_grad] + watched
    found = iter(torch.autograd.grad(value, wanted, allow_unused=True) if wanted else ())
    gradients = [next(found) if w.requires_grad else None for w in weights]
    errors = [next(found) for _ in watched] if single else None
    names = [f"{name}.weight" if name else "weight" for name, _ in layers]
    return ModuleReference(float(value.detach()), names, gradients, errors)


def numel_per_sample(shape: torch.Size) -> int:
    """Entries of one sample of a batch of ``shape``."""
    return math.prod(shape[1:])
