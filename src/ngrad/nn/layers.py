"""Layers a learning rule can see: one affine map and an elementwise activation each.

Notation (docs/notation.md): h_0 = x; a_l = W_l h_{l-1} + b_l; h_l = f(a_l); l = 1..L.

A :class:`Network` is a list of :class:`Layer` objects. Each layer is one affine map followed by an
elementwise activation and exposes the three linear-algebra pieces every credit-assignment rule is
built from, so a rule written against them runs on dense and convolutional layers alike:

- ``linear(h_in, weight)``: the affine map's linear part with any weight of W's shape,
- ``transpose(delta, weight, input_shape)``: its adjoint, sending an error at a_l down to h_{l-1}
  through any matrix of W's shape (W itself for backprop, a feedback matrix B_l^T for FA),
- ``weight_gradient(delta, h_in)``: the outer-product update delta_l h_{l-1}^T (and the bias sum).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ngrad.nn.activations import Activation, get_activation
from ngrad.nn.init import initialise_
from ngrad.nn.sizes import check_size

__all__ = ["Conv2dLayer", "DenseLayer", "Layer"]


class Layer(nn.Module):
    """a = W * h_in + b (``*`` a dense or convolutional linear map), h = f(a)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, activation: str | Activation) -> None:
        super().__init__()
        self.activation = get_activation(activation)

    def linear(self, inputs: Tensor, weight: Tensor) -> Tensor:
        """The linear part of the layer with ``weight`` in place of W (no bias)."""
        raise NotImplementedError

    def transpose(self, delta: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        """Adjoint of :meth:`linear` in its input: sends ``delta`` (shape of a) to h_in's shape."""
        raise NotImplementedError

    def weight_gradient(self, delta: Tensor, inputs: Tensor) -> Tensor:
        """sum over the batch of delta h_in^T (the update's shape is W's)."""
        raise NotImplementedError

    def bias_gradient(self, delta: Tensor) -> Tensor:
        """Sum of delta over the batch (and spatial positions for convolutions)."""
        dims = [0, *range(2, delta.dim())]
        return delta.sum(dim=dims)

    def pre_activation(self, inputs: Tensor) -> Tensor:
        out = self.linear(inputs, self.weight)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *([1] * (out.dim() - 2)))
        return out

    def forward(self, inputs: Tensor) -> Tensor:
        return self.activation(self.pre_activation(inputs))


class DenseLayer(Layer):
    """Fully connected layer; flattens its input, so it can follow a convolution."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | Activation = "tanh",
        bias: bool = True,
        init: str = "pytorch",
    ) -> None:
        super().__init__(activation)
        in_features = check_size(in_features, "DenseLayer in_features")
        out_features = check_size(out_features, "DenseLayer out_features")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        initialise_(self.weight, init, in_features, out_features)
        if self.bias is not None and init == "pytorch":
            bound = 1.0 / math.sqrt(in_features)
            with torch.no_grad():
                self.bias.uniform_(-bound, bound)

    def linear(self, inputs: Tensor, weight: Tensor) -> Tensor:
        return inputs.flatten(1) @ weight.t()

    def transpose(self, delta: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        return (delta @ weight).view(input_shape)

    def weight_gradient(self, delta: Tensor, inputs: Tensor) -> Tensor:
        return delta.t() @ inputs.flatten(1)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, activation={self.activation.name}"


class Conv2dLayer(Layer):
    """2-d convolution followed by an activation (no pooling: use ``stride`` to downsample)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        activation: str | Activation = "relu",
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        init: str = "pytorch",
    ) -> None:
        super().__init__(activation)
        in_channels = check_size(in_channels, "Conv2dLayer in_channels")
        out_channels = check_size(out_channels, "Conv2dLayer out_channels")
        kernel_size = check_size(kernel_size, "Conv2dLayer kernel_size")
        self.stride, self.padding = check_size(stride, "Conv2dLayer stride"), padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        fan_in = in_channels * kernel_size * kernel_size
        initialise_(self.weight, init, fan_in, out_channels * kernel_size * kernel_size)

    def linear(self, inputs: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(inputs, weight, stride=self.stride, padding=self.padding)

    def transpose(self, delta: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        return torch.nn.grad.conv2d_input(
            input_shape, weight, delta, stride=self.stride, padding=self.padding
        )

    def weight_gradient(self, delta: Tensor, inputs: Tensor) -> Tensor:
        return torch.nn.grad.conv2d_weight(
            inputs, self.weight.shape, delta, stride=self.stride, padding=self.padding
        )

    def extra_repr(self) -> str:
        out_c, in_c, k, _ = self.weight.shape
        return (
            f"{in_c} -> {out_c}, kernel={k}, stride={self.stride}, padding={self.padding}, "
            f"activation={self.activation.name}"
        )
