"""Layered networks whose layers the learning rules can see.

Notation (REFERENCES.md): h_0 = x; a_l = W_l h_{l-1} + b_l; h_l = f(a_l); l = 1..L.

A :class:`Network` is a list of :class:`Layer` objects. Each layer is one affine map followed by an
elementwise activation and exposes the three linear-algebra pieces every credit-assignment rule is
built from, so a rule written against them runs on dense and convolutional layers alike:

- ``linear(h_in, weight)``: the affine map's linear part with any weight of W's shape,
- ``transpose(delta, weight, input_shape)``: its adjoint, sending an error at a_l down to h_{l-1}
  through any matrix of W's shape (W itself for backprop, a feedback matrix B_l^T for FA),
- ``weight_gradient(delta, h_in)``: the outer-product update delta_l h_{l-1}^T (and the bias sum).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ngrad.activations import Activation, get_activation

__all__ = [
    "INITIALISATIONS",
    "Conv2dLayer",
    "DenseLayer",
    "ForwardTrace",
    "Layer",
    "Network",
    "convnet",
    "fans",
    "mlp",
    "random_like",
]

INITIALISATIONS = ("pytorch", "xavier", "kaiming", "gaussian")


def initialise_(weight: Tensor, scheme: str, fan_in: int, fan_out: int) -> Tensor:
    """Fill ``weight`` in place with one of the named schemes; returns it."""
    with torch.no_grad():
        if scheme == "pytorch":  # nn.Linear / nn.Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            return weight.uniform_(-bound, bound)
        if scheme == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            return weight.uniform_(-bound, bound)
        if scheme == "kaiming":
            return weight.normal_(0.0, math.sqrt(2.0 / fan_in))
        if scheme == "gaussian":  # Akrout et al.: N(0, 1/(fan_in + fan_out))
            return weight.normal_(0.0, math.sqrt(1.0 / (fan_in + fan_out)))
    raise ValueError(
        f"unknown initialisation {scheme!r}; choose one of: {', '.join(INITIALISATIONS)}"
    )


def fans(weight: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense (out, in) or convolutional (out, in, k, k) weight."""
    receptive_field = weight[0, 0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive_field, weight.shape[0] * receptive_field


def random_like(weight: Tensor, scheme: str = "pytorch", scale: float = 1.0) -> Tensor:
    """A fresh random tensor of ``weight``'s shape drawn with ``scheme`` (for feedback matrices)."""
    fresh = initialise_(torch.empty_like(weight), scheme, *fans(weight))
    return fresh.mul_(scale) if scale != 1.0 else fresh


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
        self.stride, self.padding = stride, padding
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


@dataclass
class ForwardTrace:
    """Everything a forward pass computed: activities[0] = x, activities[l] = h_l, and
    pre_activations[l - 1] = a_l (the input of ``layers[i]`` is ``activities[i]``)."""

    activities: list[Tensor]
    pre_activations: list[Tensor]

    @property
    def output(self) -> Tensor:
        return self.activities[-1]


class Network(nn.Module):
    """A feedforward stack of :class:`Layer` objects, visible to rules as ``network.layers``."""

    def __init__(self, layers: list[Layer], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a network needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    def layer_output_shapes(self) -> list[torch.Size]:
        """Per-sample shape of every layer's output (one dummy forward pass)."""
        if self.input_shape is None:
            raise ValueError("this network was built without an input_shape")
        reference = self.layers[0].weight
        probe = torch.zeros(1, *self.input_shape, dtype=reference.dtype, device=reference.device)
        with torch.no_grad():
            return [a.shape[1:] for a in self.trace(probe).pre_activations]

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, inputs: Tensor) -> Tensor:
        for layer in self.layers:
            inputs = layer(inputs)
        return inputs

    def trace(self, inputs: Tensor) -> ForwardTrace:
        """Forward pass keeping every pre-activation and activity (in the caller's grad mode)."""
        activities, pre_activations = [inputs], []
        for layer in self.layers:
            pre = layer.pre_activation(activities[-1])
            pre_activations.append(pre)
            activities.append(layer.activation(pre))
        return ForwardTrace(activities, pre_activations)


def mlp(
    sizes: list[int] | tuple[int, ...],
    activation: str | Activation = "tanh",
    output_activation: str | Activation = "identity",
    bias: bool = True,
    init: str = "pytorch",
) -> Network:
    """Multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``.

    Hidden layers use ``activation``; the last layer uses ``output_activation`` (identity: logits
    for the cross-entropy loss). ``init`` is one of pytorch, xavier, kaiming, gaussian.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"mlp needs at least two positive layer sizes, got {sizes}")
    last = len(sizes) - 2
    return Network(
        [
            DenseLayer(n_in, n_out, output_activation if i == last else activation, bias, init)
            for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
        ],
        input_shape=(sizes[0],),
    )


def convnet(
    input_shape: tuple[int, int, int],
    channels: list[int] | tuple[int, ...],
    num_classes: int,
    kernel_size: int = 3,
    stride: int = 2,
    activation: str | Activation = "relu",
    hidden: list[int] | tuple[int, ...] = (),
    init: str = "pytorch",
) -> Network:
    """Strided convolutions (``channels``), then dense layers (``hidden``), then the classifier."""
    c, h, w = input_shape
    layers: list[Layer] = []
    padding = kernel_size // 2
    for out_c in channels:
        layers.append(Conv2dLayer(c, out_c, kernel_size, activation, stride, padding, init=init))
        h = (h + 2 * padding - kernel_size) // stride + 1
        w = (w + 2 * padding - kernel_size) // stride + 1
        c = out_c
    features = c * h * w
    for width in hidden:
        layers.append(DenseLayer(features, width, activation, init=init))
        features = width
    layers.append(DenseLayer(features, num_classes, "identity", init=init))
    return Network(layers, input_shape=input_shape)
