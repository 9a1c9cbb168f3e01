"""Checks of what a user hands a model builder or a rule: one ``ValueError`` or ``TypeError``
naming the problem and what was expected, instead of an error from deep inside PyTorch.

- ``check_size``: layer widths, channel counts and kernel sizes are positive integers (a float
  such as 2.7 or a bool is refused, never truncated).
- ``check_inputs``: a batch of inputs is a tensor of the network's dtype, on its device, of shape
  (N, *input_shape) with N >= 1.
- ``check_labels``: labels are int64 class indices of shape (N,), in [0, number of outputs); every
  loss in :mod:`ngrad.nn.losses` takes class indices. The range is checked for tensors on the CPU
  only: on an accelerator it would cost a host round trip every step.

All checks read only shapes and dtypes (plus one min/max of CPU labels), so they are cheap enough
to run on every step.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ngrad.nn.network import Network

__all__ = ["check_inputs", "check_labels", "check_size", "expected_input_shape"]


def check_size(value: Any, what: str) -> int:
    """``value`` as an int if it is a positive integer (a Python or NumPy int; no bool or float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


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


def check_inputs(network: Network, inputs: Any, *, where: str = "inputs") -> None:
    """Raise TypeError/ValueError unless ``inputs`` is a non-empty batch ``network`` can take."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(inputs).__name__}")
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


def check_labels(network: Network, labels: Any, batch: int, *, where: str = "labels") -> None:
    """Raise TypeError/ValueError unless ``labels`` are ``batch`` class indices for ``network``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(labels).__name__}")
    classes = network.layers[-1].weight.shape[0]
    shape = tuple(labels.shape)
    if labels.dim() == 2 and shape == (batch, classes) and classes > 1:
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
    device = network.layers[0].weight.device
    if labels.device != device:
        raise ValueError(f"{where} are on {labels.device} but the network is on {device}")
    if labels.device.type == "cpu" and batch > 0:
        low, high = torch.aminmax(labels)
        if low < 0 or high >= classes:
            bad = int(low) if low < 0 else int(high)
            raise ValueError(
                f"{where} must be class indices in [0, {classes - 1}] (the network has {classes} "
                f"outputs), got {bad}"
            )
