"""Layered networks: a stack of :mod:`ngrad.nn.layers` whose forward pass can be traced, and the
builders ``mlp`` and ``convnet``.

Notation: h_0 = x; a_l = W_l h_{l-1} + b_l; h_l = f(a_l); l = 1..L.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ngrad.nn.activations import Activation
from ngrad.nn.layers import Conv2dLayer, DenseLayer, Layer
from ngrad.nn.sizes import check_size

__all__ = ["ForwardTrace", "Network", "convnet", "mlp"]


@dataclass
class ForwardTrace:
    """Everything a forward pass computed: activities[0] = x, activities[l] = h_l, and
    pre_activations[l - 1] = a_l (the input of ``layers[i]`` is ``activities[i]``); switches[i]:
    where ``layers[i]``'s pooling took its maxima (None for a layer without pooling; an empty list
    when the trace was built without them)."""

    activities: list[Tensor]
    pre_activations: list[Tensor]
    switches: list[Tensor | None] = field(default_factory=list)

    def switches_of(self, index: int) -> Tensor | None:
        """``layers[index]``'s switches, or None where the trace has none."""
        return self.switches[index] if index < len(self.switches) else None

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
        self.input_shape = (
            tuple(check_size(s, "input_shape entry") for s in input_shape)
            if input_shape is not None
            else None
        )

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
        activities, pre_activations, switches = [inputs], [], []
        for layer in self.layers:
            pre, where = layer.pre_activation_and_switches(activities[-1])
            pre_activations.append(pre)
            switches.append(where)
            activities.append(layer.activation(pre))
        return ForwardTrace(activities, pre_activations, switches)


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
    given = _size_list(sizes, "mlp's sizes")
    if len(given) < 2:
        raise ValueError(f"mlp needs at least two positive layer sizes, got {given!r}")
    sizes = [check_size(s, f"mlp layer size {i} in {given!r}") for i, s in enumerate(given)]
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
    pool: int = 1,
) -> Network:
    """Strided convolutions (``channels``; each max-pooled by ``pool`` when it exceeds 1), then
    dense layers (``hidden``), then the classifier."""
    shape = _size_list(input_shape, "convnet's input_shape")
    if len(shape) != 3:
        raise ValueError(f"convnet's input_shape is (channels, height, width), got {shape!r}")
    c, h, w = (check_size(s, f"convnet input_shape entry in {shape!r}") for s in shape)
    channels = [check_size(s, "convnet channel count") for s in _size_list(channels, "channels")]
    hidden = [check_size(s, "convnet hidden width") for s in _size_list(hidden, "hidden")]
    num_classes = check_size(num_classes, "convnet num_classes")
    kernel_size = check_size(kernel_size, "convnet kernel_size")
    stride = check_size(stride, "convnet stride")
    pool = check_size(pool, "convnet pool")
    layers: list[Layer] = []
    padding = kernel_size // 2
    for out_c in channels:
        layers.append(
            Conv2dLayer(c, out_c, kernel_size, activation, stride, padding, init=init, pool=pool)
        )
        h = ((h + 2 * padding - kernel_size) // stride + 1) // pool
        w = ((w + 2 * padding - kernel_size) // stride + 1) // pool
        if h < 1 or w < 1:
            raise ValueError(f"convnet: a {shape!r} input is too small for {len(layers)} layers")
        c = out_c
    features = c * h * w
    for width in hidden:
        layers.append(DenseLayer(features, width, activation, init=init))
        features = width
    layers.append(DenseLayer(features, num_classes, "identity", init=init))
    return Network(layers, input_shape=shape)


def _size_list(sizes: Any, what: str) -> list[Any]:
    """``sizes`` as a list, refusing a single number or a string in place of a sequence."""
    if isinstance(sizes, str | bytes) or not isinstance(sizes, Iterable):
        raise TypeError(f"{what} must be a sequence of positive integers, got {sizes!r}")
    return list(sizes)
