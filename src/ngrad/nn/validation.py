"""Checks of what a user hands a model builder or a rule: one ``ValueError`` or ``TypeError``
naming the problem and what was expected, instead of an error from deep inside PyTorch.

- ``check_size``: layer widths, channel counts and kernel sizes are positive integers (a float
  such as 2.7 or a bool is refused, never truncated).
- ``check_inputs``: a batch of inputs is a tensor of the network's dtype, on its device, of shape
  (N, *input_shape) with N >= 1.
- ``check_labels``: labels are int64 class indices of shape (N,), in [0, number of outputs); every
  loss in :mod:`ngrad.nn.losses` takes class indices. The range is checked for tensors on the CPU
  only: on an accelerator it would cost a host round trip every step.

A general ``torch.nn.Module`` (not an ngrad Network) declares neither its input shape nor its
number of outputs, so for one the checks are what can be known without running it: a tensor with a
non-empty batch dimension; floating-point inputs in the dtype of the model's floating-point
parameters (integer inputs, e.g. token indices, pass); the device of its parameters; labels as
above, non-negative. ``check_label_range`` checks the upper end once the output is known (the rules
that train modules call it after their forward pass).

All checks read only shapes and dtypes (plus one min/max of CPU labels), so they are cheap enough
to run on every step.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from ngrad.nn.network import Network
from ngrad.nn.sizes import check_size

__all__ = [
    "check_inputs",
    "check_label_range",
    "check_labels",
    "check_size",
    "expected_input_shape",
]


def expected_input_shape(network: Network) -> tuple[int | None, ...] | None:
    """Per-sample input shape: ``network.input_shape``, else what the first layer implies (None
    for a size it leaves open, e.g. a convolution's height and width), else None."""
    if network.input_shape is not None:
        return network.input_shape
    first = network.layers[0]
    if first.weight.dim() == 2:
        return (first.weight.shape[1],)
    if first.weight.dim() == 4:
        return (first.weight.shape[1], None, None)
    return None


def _shape(shape: tuple[int | None, ...] | torch.Size) -> str:
    return "(" + ", ".join(["N", *("?" if s is None else str(s) for s in shape)]) + ")"


def _is_network(model: Any) -> bool:
    return isinstance(model, Network)


def _reference_tensor(model: nn.Module) -> Tensor | None:
    """The first floating-point parameter (else buffer) of a general module, or None."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor
    return None


def _check_module_inputs(model: nn.Module, inputs: Tensor, where: str) -> None:
    reference = _reference_tensor(model)
    if reference is not None:
        if inputs.is_floating_point() and inputs.dtype != reference.dtype:
            raise TypeError(
                f"{where} must be {reference.dtype} like the model's parameters, got "
                f"{inputs.dtype} (convert with {where}.to({reference.dtype}))"
            )
        if inputs.device != reference.device:
            raise ValueError(
                f"{where} are on {inputs.device} but the model is on {reference.device}"
            )
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"{where} must be a non-empty batch, got shape {tuple(inputs.shape)}")


def check_inputs(network: nn.Module, inputs: Any, *, where: str = "inputs") -> None:
    """Raise TypeError/ValueError unless ``inputs`` is a non-empty batch ``network`` can take."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(inputs).__name__}")
    if not _is_network(network):
        _check_module_inputs(network, inputs, where)
        return
    reference = network.layers[0].weight
    if inputs.dtype != reference.dtype:
        raise TypeError(
            f"{where} must be {reference.dtype} like the network's weights, got {inputs.dtype} "
            f"(convert with {where}.to({reference.dtype}))"
        )
    if inputs.device != reference.device:
        raise ValueError(f"{where} are on {inputs.device} but the network is on {reference.device}")
    expected = expected_input_shape(network)
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"{where} must be a non-empty batch, got shape {tuple(inputs.shape)}")
    if expected is None:
        return
    sample = inputs.shape[1:]
    fits = len(sample) == len(expected) and all(
        want is None or want == got for want, got in zip(expected, sample, strict=True)
    )
    if not fits:
        hint = ""
        if tuple(inputs.shape) == expected:
            hint = " (a single sample: add the batch dimension with inputs.unsqueeze(0))"
        elif len(expected) == 1 and sample.numel() == expected[0]:
            hint = " (flatten each sample first: inputs.flatten(1))"
        raise ValueError(
            f"{where} must have shape {_shape(expected)}, got {tuple(inputs.shape)}{hint}"
        )


def check_labels(network: nn.Module, labels: Any, batch: int, *, where: str = "labels") -> None:
    """Raise TypeError/ValueError unless ``labels`` are ``batch`` class indices for ``network``
    (for a general module, whose number of outputs is unknown here, no upper bound)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(labels).__name__}")
    if _is_network(network):
        classes: int | None = network.layers[-1].weight.shape[0]
        device = network.layers[0].weight.device
    else:
        reference = _reference_tensor(network)
        classes, device = None, (reference.device if reference is not None else labels.device)
    shape = tuple(labels.shape)
    looks_one_hot = (
        shape == (batch, classes) if classes is not None else len(shape) == 2 and shape[0] == batch
    )
    if labels.dim() == 2 and looks_one_hot and shape[1] > 1:
        raise ValueError(
            f"{where} must be class indices of shape ({batch},), got shape {shape}, which looks "
            "one-hot (convert with labels.argmax(dim=1))"
        )
    if labels.dtype != torch.int64:
        raise TypeError(
            f"{where} must be int64 class indices (torch.long), got {labels.dtype} "
            "(convert with labels.long())"
        )
    if shape != (batch,):
        raise ValueError(
            f"{where} must be class indices of shape ({batch},), one per input, got shape {shape}"
        )
    if labels.device != device:
        raise ValueError(f"{where} are on {labels.device} but the network is on {device}")
    if labels.device.type == "cpu" and batch > 0:
        if classes is None:
            low = labels.min()
            if low < 0:
                raise ValueError(f"{where} must be non-negative class indices, got {int(low)}")
            return
        check_label_range(labels, classes, where=where)


def check_label_range(labels: Tensor, classes: int, *, where: str = "labels") -> None:
    """Raise ValueError unless the class indices ``labels`` lie in [0, classes) (CPU tensors
    only: on an accelerator the check would cost a host round trip)."""
    if labels.device.type != "cpu" or labels.numel() == 0:
        return
    low, high = torch.aminmax(labels)
    if low < 0 or high >= classes:
        bad = int(low) if low < 0 else int(high)
        raise ValueError(
            f"{where} must be class indices in [0, {classes - 1}] (the network has {classes} "
            f"outputs), got {bad}"
        )
