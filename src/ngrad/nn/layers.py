"""Layers a learning rule can see: one affine map and an elementwise activation each.

Notation (docs/notation.md): h_0 = x; a_l = W_l h_{l-1} + b_l; h_l = f(a_l); l = 1..L.

A :class:`Network` is a list of :class:`Layer` objects. Each layer is one affine map followed by an
elementwise activation and exposes the three linear-algebra pieces every credit-assignment rule is
built from, so a rule written against them runs on dense and convolutional layers alike:

- ``linear(h_in, weight)``: the affine map's linear part with any weight of W's shape,
- ``transpose(delta, weight, input_shape, inputs)``: its adjoint, sending an error at a_l down to
  h_{l-1} through any matrix of W's shape (W itself for backprop, a feedback matrix B_l^T for FA),
- ``weight_gradient(delta, h_in)``: the outer-product update delta_l h_{l-1}^T (and the bias sum).

A convolutional layer may end in a max-pool (``Conv2dLayer(..., pool=k)``: window k, stride k):
a = maxpool_k(W * h_in) + b. The bias per channel commutes with the max, and for a monotone f,
f(maxpool(u)) = maxpool(f(u)), so this is VGG's conv -> activation -> pool block. The pooled map
is linear once its *switches* (where each window's maximum sits) are fixed: ``switches(h_in)``
finds them for the forward map (W, h_in), and ``linear``, ``transpose`` and ``weight_gradient``
take them (``switches=``) or the layer's ``inputs`` to find them, so any feedback matrix B goes
through the same switches as W (the routing of the forward pass).
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

    def linear(self, inputs: Tensor, weight: Tensor, *, switches: Tensor | None = None) -> Tensor:
        """The linear part of the layer with ``weight`` in place of W (no bias); a pooled layer
        reads its maxima at ``switches`` when given (then the map is linear in ``inputs``)."""
        raise NotImplementedError

    def transpose(
        self,
        delta: Tensor,
        weight: Tensor,
        input_shape: torch.Size,
        inputs: Tensor | None = None,
        *,
        switches: Tensor | None = None,
    ) -> Tensor:
        """Adjoint of :meth:`linear` in its input: sends ``delta`` (shape of a) to h_in's shape.
        A pooled layer needs the forward pass's ``inputs`` (or their ``switches``); other layers
        ignore both."""
        raise NotImplementedError

    def weight_gradient(
        self, delta: Tensor, inputs: Tensor, *, switches: Tensor | None = None
    ) -> Tensor:
        """sum over the batch of delta h_in^T (the update's shape is W's), through the forward
        pass's switches in a pooled layer (found from ``inputs`` unless given)."""
        raise NotImplementedError

    def switches(self, inputs: Tensor) -> Tensor | None:
        """Where each pooling window's maximum sits in the forward map (W, ``inputs``); None for
        a layer without pooling."""
        return None

    def pre_activation_and_switches(self, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """a = W * h_in + b and the switches of its pooling (None without), from one product."""
        return self.pre_activation(inputs), None

    def bias_gradient(self, delta: Tensor) -> Tensor:
        """Sum of delta over the batch (and spatial positions for convolutions)."""
        dims = [0, *range(2, delta.dim())]
        return delta.sum(dim=dims)

    def pre_activation(self, inputs: Tensor) -> Tensor:
        return self.add_bias(self.linear(inputs, self.weight))

    def add_bias(self, out: Tensor) -> Tensor:
        """out + b (b broadcast over the spatial positions of a convolution)."""
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

    def linear(self, inputs: Tensor, weight: Tensor, *, switches: Tensor | None = None) -> Tensor:
        return inputs.flatten(1) @ weight.t()

    def transpose(
        self,
        delta: Tensor,
        weight: Tensor,
        input_shape: torch.Size,
        inputs: Tensor | None = None,
        *,
        switches: Tensor | None = None,
    ) -> Tensor:
        return (delta @ weight).view(input_shape)

    def weight_gradient(
        self, delta: Tensor, inputs: Tensor, *, switches: Tensor | None = None
    ) -> Tensor:
        return delta.t() @ inputs.flatten(1)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, activation={self.activation.name}"


class Conv2dLayer(Layer):
    """2-d convolution, then an activation, optionally max-pooled (``pool`` > 1: window and
    stride ``pool``, the remainder of a map not divisible by it dropped, as torch's MaxPool2d)."""

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
        pool: int = 1,
    ) -> None:
        super().__init__(activation)
        in_channels = check_size(in_channels, "Conv2dLayer in_channels")
        out_channels = check_size(out_channels, "Conv2dLayer out_channels")
        kernel_size = check_size(kernel_size, "Conv2dLayer kernel_size")
        self.stride, self.padding = check_size(stride, "Conv2dLayer stride"), padding
        self.pool = check_size(pool, "Conv2dLayer pool")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        fan_in = in_channels * kernel_size * kernel_size
        initialise_(self.weight, init, fan_in, out_channels * kernel_size * kernel_size)

    def convolve(self, inputs: Tensor, weight: Tensor) -> Tensor:
        """W * h_in before any pooling."""
        return F.conv2d(inputs, weight, stride=self.stride, padding=self.padding)

    def switches(self, inputs: Tensor) -> Tensor | None:
        if self.pool == 1:
            return None
        with torch.no_grad():
            convolved = self.convolve(inputs, self.weight)
            return F.max_pool2d(convolved, self.pool, return_indices=True)[1]

    def pre_activation_and_switches(self, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.pool == 1:
            return self.pre_activation(inputs), None
        pooled, switches = F.max_pool2d(
            self.convolve(inputs, self.weight), self.pool, return_indices=True
        )
        return self.add_bias(pooled), switches

    def linear(self, inputs: Tensor, weight: Tensor, *, switches: Tensor | None = None) -> Tensor:
        out = self.convolve(inputs, weight)
        if self.pool == 1:
            return out
        if switches is None:
            return F.max_pool2d(out, self.pool)
        return out.flatten(2).gather(2, switches.flatten(2)).view(switches.shape)

    def transpose(
        self,
        delta: Tensor,
        weight: Tensor,
        input_shape: torch.Size,
        inputs: Tensor | None = None,
        *,
        switches: Tensor | None = None,
    ) -> Tensor:
        if self.pool > 1:
            delta = self._unpool(delta, input_shape, inputs, switches)
        return torch.nn.grad.conv2d_input(
            input_shape, weight, delta, stride=self.stride, padding=self.padding
        )

    def weight_gradient(
        self, delta: Tensor, inputs: Tensor, *, switches: Tensor | None = None
    ) -> Tensor:
        if self.pool > 1:
            delta = self._unpool(delta, inputs.shape, inputs, switches)
        return torch.nn.grad.conv2d_weight(
            inputs, self.weight.shape, delta, stride=self.stride, padding=self.padding
        )

    def convolved_size(self, height: int, width: int) -> tuple[int, int]:
        """The map's height and width after the convolution (before pooling)."""
        k, pad, stride = self.weight.shape[-1], self.padding, self.stride
        return (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1

    def _unpool(
        self, delta: Tensor, input_shape: torch.Size, inputs: Tensor | None, switches: Tensor | None
    ) -> Tensor:
        """delta placed at the switches of the convolution's map (zeros elsewhere)."""
        if switches is None:
            if inputs is None:
                raise ValueError(
                    "a max-pooled Conv2dLayer sends errors back through the forward pass's "
                    "switches: pass its inputs (inputs=h_in) or switches= to transpose"
                )
            switches = self.switches(inputs)
        height, width = self.convolved_size(input_shape[-2], input_shape[-1])
        batch, channels = delta.shape[:2]
        full = delta.new_zeros(batch, channels, height * width)
        full.scatter_(2, switches.flatten(2), delta.flatten(2))
        return full.view(batch, channels, height, width)

    def extra_repr(self) -> str:
        out_c, in_c, k, _ = self.weight.shape
        pool = f", pool={self.pool}" if self.pool > 1 else ""
        return (
            f"{in_c} -> {out_c}, kernel={k}, stride={self.stride}, padding={self.padding}"
            f"{pool}, activation={self.activation.name}"
        )
