"""Elementwise activation functions with the derivatives the learning rules need.

Every rule that forms its own error signals needs f'(a_l). The derivative is computed from the
pre-activation ``a`` and, where cheaper, the activity ``h = f(a)`` (tanh' = 1 - h^2,
sigmoid' = h (1 - h)), so no rule pays for autograd to get it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity f with its derivative f'(a) (given a and h = f(a))."""

    name: str
    function: Callable[[Tensor], Tensor]
    derivative_fn: Callable[[Tensor, Tensor], Tensor]
    inverse_fn: Callable[[Tensor], Tensor] | None = None

    def __call__(self, pre_activation: Tensor) -> Tensor:
        return self.function(pre_activation)

    def derivative(self, pre_activation: Tensor, activity: Tensor) -> Tensor:
        """f'(a), using whichever of a and h = f(a) is cheaper."""
        return self.derivative_fn(pre_activation, activity)

    def inverse(self, activity: Tensor) -> Tensor:
        """f^{-1}(h) for invertible activations (target propagation needs it)."""
        if self.inverse_fn is None:
            raise ValueError(f"activation {self.name!r} is not invertible")
        return self.inverse_fn(activity)


LEAKY_RELU_SLOPE = 0.1
"""Negative-side slope of ngrad's ``leaky_relu``."""
SIGMOID_SLOPE_AT_ZERO = 0.25
"""sigma'(0) of the logistic sigmoid."""


def hard_sigmoid(pre_activation: Tensor) -> Tensor:
    """rho(a) = clip(a / 2, 0, 1): Laborieux et al. 2021's ``my_hard_sig``, the bounded unit of
    their conv EP (its states live in [0, 1], so relaxations on it cannot run away)."""
    return pre_activation.mul(0.5).clamp_(0.0, 1.0)


def _hard_sigmoid_derivative(a: Tensor, _h: Tensor) -> Tensor:
    return ((a >= 0) & (a <= 2)).to(a.dtype).mul_(0.5)  # as autograd through clamp


def _gelu_derivative(a: Tensor, _h: Tensor) -> Tensor:
    cdf = 0.5 * (1.0 + torch.erf(a / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return cdf + a * pdf


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", torch.tanh, lambda _a, h: 1.0 - h * h, lambda h: torch.atanh(h)),
    "sigmoid": Activation(
        "sigmoid", torch.sigmoid, lambda _a, h: h * (1.0 - h), lambda h: torch.logit(h)
    ),
    "relu": Activation("relu", torch.relu, lambda a, _h: (a > 0).to(a.dtype)),
    "leaky_relu": Activation(
        "leaky_relu",
        lambda a: torch.nn.functional.leaky_relu(a, LEAKY_RELU_SLOPE),
        lambda a, _h: torch.where(a > 0, 1.0, LEAKY_RELU_SLOPE).to(a.dtype),
        lambda h: torch.where(h > 0, h, h / LEAKY_RELU_SLOPE),
    ),
    "gelu": Activation("gelu", torch.nn.functional.gelu, _gelu_derivative),
    "hard_sigmoid": Activation("hard_sigmoid", hard_sigmoid, _hard_sigmoid_derivative),
    "identity": Activation("identity", lambda a: a, lambda a, _h: torch.ones_like(a), lambda h: h),
}


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up by name; raises ValueError naming the choices."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        choices = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; choose one of: {choices}") from None
