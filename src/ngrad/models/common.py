"""What the model builders share: the catalogue entry, activations as modules, initialisation,
and the checks of input shapes, class counts and sizes (each a one-line ConfigError)."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from ngrad.errors import ConfigError
from ngrad.nn.activations import LEAKY_RELU_SLOPE, hard_sigmoid
from ngrad.nn.init import fans, initialise_
from ngrad.options import build_options

__all__ = [
    "Activation",
    "ConvActivation",
    "ModelSpec",
    "activation_module",
    "check_positive",
    "checked_classes",
    "checked_shape",
    "image_shape",
    "initialise",
    "parse_options",
    "shape_text",
]

T = TypeVar("T")

Activation = Literal["tanh", "sigmoid", "relu", "leaky_relu", "gelu", "hard_sigmoid", "identity"]
"""The activations of :mod:`ngrad.nn.activations` (an MLP built with them has an ngrad twin)."""
ConvActivation = Literal[
    "relu", "elu", "gelu", "tanh", "sigmoid", "leaky_relu", "hard_sigmoid", "hard_tanh", "identity"
]
"""Activations of the conv nets: ngrad's (hard_sigmoid: Laborieux et al.'s clip(a/2, 0, 1)), plus
ELU (Ernoult et al.) and hard tanh (PCX)."""


class HardSigmoid(nn.Module):
    """clip(a / 2, 0, 1) (Laborieux et al. 2021; torch's ``nn.Hardsigmoid`` is another
    function, relu6(a + 3) / 6)."""

    def forward(self, pre_activation: torch.Tensor) -> torch.Tensor:
        return hard_sigmoid(pre_activation)


_ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE),  # ngrad's slope, not torch's 0.01
    "gelu": nn.GELU,
    "identity": nn.Identity,
    "elu": nn.ELU,
    "hard_tanh": nn.Hardtanh,
    "hard_sigmoid": HardSigmoid,
}


def activation_module(name: str) -> nn.Module:
    """A fresh ``nn.Module`` computing the activation ``name`` (never in place)."""
    try:
        return _ACTIVATION_MODULES[name]()
    except KeyError:
        choices = ", ".join(_ACTIVATION_MODULES)
        raise ConfigError(f"unknown activation {name!r}; choose one of: {choices}") from None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the model catalogue."""

    builder: Callable[..., nn.Module]  # builder(input_shape, num_classes, **options)
    options: type  # the frozen dataclass of the builder's options (field comments are the help)
    summary: str  # one line: what the model is
    citation: str  # where its architecture comes from (paper; code)
    inputs: str  # the input shapes it takes, e.g. "3x32x32" or "any CxHxW"


def parse_options(options_type: type[T], given: dict[str, Any], model: str) -> T:
    """``options_type`` built from ``given`` (strings from the command line or typed values);
    ConfigError naming the model and the key for an unknown or ill-typed option."""
    return build_options(options_type, given, f"model {model!r}")


def check_positive(options: Any, *names: str) -> None:
    """Raise ValueError (for ``__post_init__``) unless each named field is a positive integer or
    a sequence of them."""
    for name in names:
        value = getattr(options, name)
        values = value if isinstance(value, tuple | list) else (value,)
        for item in values:
            if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 1:
                raise ValueError(f"option {name!r} takes positive integers, got {value!r}")


def shape_text(shape: Sequence[int]) -> str:
    """``(3, 32, 32)`` -> ``3x32x32``."""
    return "x".join(str(size) for size in shape)


def checked_shape(input_shape: Any, model: str) -> tuple[int, ...]:
    """``input_shape`` (the shape of one sample, without the batch dimension) as a tuple of
    positive ints."""
    if isinstance(input_shape, str) or not isinstance(input_shape, Sequence) or not input_shape:
        raise ConfigError(
            f"model {model!r}: input_shape is the shape of one sample, a non-empty sequence of "
            f"positive integers such as (1, 28, 28), got {input_shape!r}"
        )
    for size in input_shape:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ConfigError(
                f"model {model!r}: input_shape takes positive integers, got {tuple(input_shape)!r}"
            )
    return tuple(int(size) for size in input_shape)


def image_shape(input_shape: Any, model: str) -> tuple[int, int, int]:
    """``input_shape`` checked to be an image shape (channels, height, width)."""
    shape = checked_shape(input_shape, model)
    if len(shape) != 3:
        raise ConfigError(
            f"model {model!r} takes images of shape (channels, height, width), got input_shape "
            f"{shape!r}"
        )
    return shape  # type: ignore[return-value]


def checked_classes(num_classes: Any, model: str) -> int:
    """``num_classes`` as a positive int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ConfigError(f"model {model!r}: num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise ConfigError(f"model {model!r}: num_classes must be positive, got {num_classes!r}")
    return int(num_classes)


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def initialise(model: nn.Module, scheme: str) -> nn.Module:
    """Re-draw every linear and conv weight of ``model`` with ``scheme`` (ngrad.nn.init) and zero
    their biases; ``pytorch`` keeps torch's own default (weights and biases U(+-1/sqrt(fan_in))).
    Batch norm keeps its default (weight 1, bias 0)."""
    if scheme == "pytorch":
        return model
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            initialise_(module.weight, scheme, *fans(module.weight))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
