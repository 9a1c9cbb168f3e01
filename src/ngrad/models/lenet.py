"""LeNets: the two of Sanfiz & Akrout's BioTorch benchmark, and the one of Ernoult et al.

``lenet`` (BioTorch, ``biotorch/models/le_net.py``; Sanfiz & Akrout 2021, "Benchmarking the
Accuracy and Robustness of Feedback Alignment Algorithms", arXiv:2108.13446) picks the variant from
the input shape (conv k/s/p = kernel, stride, padding; maxpool 2/2 = window 2, stride 2):

- LeNetMNIST, 1x32x32 (MNIST and Fashion-MNIST resized to 32x32)::

      conv1 5/1/0 1->6, act, maxpool 2/2      6x28x28 -> 6x14x14
      conv2 5/1/0 6->16, act, maxpool 2/2     16x10x10 -> 16x5x5
      conv3 5/1/0 16->120, act, flatten       120
      fc1 120->84, act;  fc2 84->classes      61,706 parameters (10 classes)

  On a 1x28x28 input conv1 zero-pads by 2 (the LeNet-5 convention), which keeps every later shape
  and the parameter count; BioTorch instead resizes the images to 32x32, so resize them to match
  its benchmark exactly.
- LeNetCIFAR, 3x32x32::

      conv1 3/1/0 3->32, act, maxpool 2/2     32x30x30 -> 32x15x15
      conv2 3/1/0 32->64, act, maxpool 2/2    64x13x13 -> 64x6x6
      conv3 3/1/0 64->128, act                128x4x4
      global average pool, flatten            128
      fc1 128->256, act;  fc2 256->classes    128,842 parameters (10 classes)

All convs and linear layers have biases; no batch norm, no dropout; the activation is ReLU. The
default ``init="xavier"`` is BioTorch's benchmark setting: every conv and linear weight
xavier-uniform, every bias zero (its model file itself keeps torch's default, ``init="pytorch"``).

``lenet_dtp`` is the LeNet of Ernoult et al. 2022, "Towards Scaling Difference Target Propagation
by Learning Backprop Targets" (ICML; code ``ernoult/scalingDTP``,
``target_prop/networks/lenet.py``)::

      conv1 5/1/2 C->32, ELU, maxpool 3/2/1   32xH/2xW/2
      conv2 5/1/2 32->64, ELU, maxpool 3/2/1  64xH/4xW/4
      flatten, fc1 ->512, ELU;  fc2 512->classes

with torch's default initialisation: 2,156,490 parameters on 3x32x32, 1,663,370 on 1x28x28 (their
code hard-codes the 4096 = 64x8x8 inputs of fc1 for 32x32 images; here fc1 follows the input).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ngrad.errors import ConfigError
from ngrad.models.common import (
    ConvActivation,
    ModelSpec,
    activation_module,
    check_positive,
    checked_classes,
    image_shape,
    initialise,
    parse_options,
    shape_text,
)
from ngrad.nn.init import Init

__all__ = [
    "LeNetDTPOptions",
    "LeNetOptions",
    "lenet",
    "lenet_cifar",
    "lenet_dtp",
    "lenet_mnist",
]

MNIST_SHAPES = ((1, 28, 28), (1, 32, 32))
CIFAR_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class LeNetOptions:
    activation: ConvActivation = (
        "relu"  # nonlinearity after every layer but the last (BioTorch: relu)
    )
    init: Init = "xavier"  # weight initialisation: xavier (BioTorch's benchmarks; zero biases),
    #     pytorch (torch's default), kaiming or gaussian (ngrad.nn.init; zero biases)


@dataclass(frozen=True)
class LeNetDTPOptions:
    channels: tuple[int, ...] = (
        32,
        64,
    )  # output channels of the conv blocks (5x5 conv, pool 3/2/1)
    hidden: int = 512  # width of the dense layer before the classifier
    activation: ConvActivation = "elu"  # nonlinearity after every layer but the last (theirs: elu)
    init: Init = "pytorch"  # weight initialisation: pytorch (torch's default, as theirs), xavier,
    #     kaiming or gaussian (ngrad.nn.init; zero biases)

    def __post_init__(self) -> None:
        check_positive(self, "channels", "hidden")
        if not self.channels:
            raise ValueError("option 'channels' needs at least one conv block")


def lenet(
    input_shape: Sequence[int] = (1, 32, 32), num_classes: int = 10, **options: Any
) -> nn.Sequential:
    """BioTorch's LeNet for the input: LeNetMNIST on 1x28x28 or 1x32x32, LeNetCIFAR on 3x32x32.
    Options: see :class:`LeNetOptions`."""
    shape = image_shape(input_shape, "lenet")
    if shape in MNIST_SHAPES:
        return _lenet_mnist(shape, num_classes, options, "lenet")
    if shape == CIFAR_SHAPE:
        return _lenet_cifar(num_classes, options, "lenet")
    raise ConfigError(
        f"model 'lenet' takes 1x28x28 or 1x32x32 inputs (LeNetMNIST) or 3x32x32 (LeNetCIFAR), "
        f"got {shape_text(shape)}"
    )


def lenet_mnist(
    input_shape: Sequence[int] = (1, 32, 32), num_classes: int = 10, **options: Any
) -> nn.Sequential:
    """BioTorch's LeNetMNIST (1x28x28 or 1x32x32 inputs). Options: see :class:`LeNetOptions`."""
    shape = image_shape(input_shape, "lenet_mnist")
    if shape not in MNIST_SHAPES:
        raise ConfigError(f"LeNetMNIST takes 1x28x28 or 1x32x32 inputs, got {shape_text(shape)}")
    return _lenet_mnist(shape, num_classes, options, "lenet_mnist")


def lenet_cifar(
    input_shape: Sequence[int] = CIFAR_SHAPE, num_classes: int = 10, **options: Any
) -> nn.Sequential:
    """BioTorch's LeNetCIFAR (3x32x32 inputs). Options: see :class:`LeNetOptions`."""
    shape = image_shape(input_shape, "lenet_cifar")
    if shape != CIFAR_SHAPE:
        raise ConfigError(f"LeNetCIFAR takes 3x32x32 inputs, got {shape_text(shape)}")
    return _lenet_cifar(num_classes, options, "lenet_cifar")


def _lenet_mnist(
    shape: tuple[int, ...], num_classes: Any, options: dict[str, Any], model: str
) -> nn.Sequential:
    classes = checked_classes(num_classes, model)
    config = parse_options(LeNetOptions, options, model)
    padding = 2 if shape[1] == 28 else 0

    def act() -> nn.Module:
        return activation_module(config.activation)

    layers = OrderedDict(
        conv1=nn.Conv2d(1, 6, kernel_size=5, padding=padding),
        act1=act(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 16, kernel_size=5),
        act2=act(),
        pool2=nn.MaxPool2d(2),
        conv3=nn.Conv2d(16, 120, kernel_size=5),
        act3=act(),
        flatten=nn.Flatten(),
        fc1=nn.Linear(120, 84),
        act4=act(),
        fc2=nn.Linear(84, classes),
    )
    return initialise(nn.Sequential(layers), config.init)


def _lenet_cifar(num_classes: Any, options: dict[str, Any], model: str) -> nn.Sequential:
    classes = checked_classes(num_classes, model)
    config = parse_options(LeNetOptions, options, model)

    def act() -> nn.Module:
        return activation_module(config.activation)

    layers = OrderedDict(
        conv1=nn.Conv2d(3, 32, kernel_size=3),
        act1=act(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(32, 64, kernel_size=3),
        act2=act(),
        pool2=nn.MaxPool2d(2),
        conv3=nn.Conv2d(64, 128, kernel_size=3),
        act3=act(),
        pool3=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc1=nn.Linear(128, 256),
        act4=act(),
        fc2=nn.Linear(256, classes),
    )
    return initialise(nn.Sequential(layers), config.init)


def lenet_dtp(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> nn.Sequential:
    """Ernoult et al.'s LeNet (any CxHxW input). Options: see :class:`LeNetDTPOptions`."""
    channels, height, width = image_shape(input_shape, "lenet_dtp")
    classes = checked_classes(num_classes, "lenet_dtp")
    config = parse_options(LeNetDTPOptions, options, "lenet_dtp")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, out_channels in enumerate(config.channels, start=1):
        layers[f"conv{index}"] = nn.Conv2d(channels, out_channels, kernel_size=5, padding=2)
        layers[f"act{index}"] = activation_module(config.activation)
        layers[f"pool{index}"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = out_channels
        height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1  # pool 3/2/1 never empties
    last = len(config.channels) + 1
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(channels * height * width, config.hidden)
    layers[f"act{last}"] = activation_module(config.activation)
    layers["fc2"] = nn.Linear(config.hidden, classes)
    return initialise(nn.Sequential(layers), config.init)


_BIOTORCH = "Sanfiz & Akrout 2021 (BioTorch, biotorch/models/le_net.py)"
MODELS = {
    "lenet": ModelSpec(
        builder=lenet,
        options=LeNetOptions,
        summary="LeNet of the BioTorch benchmark (LeNetMNIST or LeNetCIFAR by input shape)",
        citation=_BIOTORCH,
        inputs="1x28x28, 1x32x32 (LeNetMNIST) or 3x32x32 (LeNetCIFAR)",
    ),
    "lenet_dtp": ModelSpec(
        builder=lenet_dtp,
        options=LeNetDTPOptions,
        summary="LeNet of the scaling-DTP benchmark: two 5x5 conv/ELU/pool blocks, 512 dense",
        citation="Ernoult et al. 2022 (ernoult/scalingDTP, target_prop/networks/lenet.py)",
        inputs="any CxHxW",
    ),
}
