"""VGG-style conv nets: blocks of a conv, an activation and (in chosen blocks) a 2x2 max-pool.

``vgg`` takes the depth and widths as options; each block is::

    conv kxk, stride 1, zero padding k//2 (none in the ``unpadded`` blocks) [-> batch norm]
    -> activation [-> maxpool 2/2 in the ``pool`` blocks]

then flatten, optional dense layers (``hidden``) with the activation, and a linear classifier.

Presets (3x32x32 inputs, 10 classes; torch's default initialisation, which draws the same
U(+-1/sqrt(fan_in)) weights and biases as the equinox layers of PCX):

- ``vgg5``: the VGG-5 of the PCX benchmark (Pinchetti et al. 2025, "Benchmarking Predictive Coding
  Networks -- Made Simple", ICLR; code ``liukidar/pcx``,
  ``examples/s4_1_discriminative_mode/VGG5/cifar10/BP_CE.py``). Four blocks, 3x3 padded convs
  3->128->256->512->512, each pooled: maps 128x16x16, 256x8x8, 512x4x4, 512x2x2, then linear
  2048->10. 3,859,210 parameters.
- ``vgg7``: PCX's VGG-7 (``examples/s4_1_discriminative_mode/VGG7/cifar100/BP_CE.py``). Six blocks,
  3x3 convs 3->128->128->256->256->512->512; blocks 1, 3 and 5 pooled, blocks 4 and 6 unpadded:
  maps 128x16x16, 128x16x16, 256x8x8, 256x6x6, 512x3x3, 512x1x1, then linear 512->10.
  4,581,514 parameters.
- ``simple_vgg``: the SimpleVGG of Ernoult et al. 2022, "Towards Scaling Difference Target
  Propagation by Learning Backprop Targets" (ICML; code ``ernoult/scalingDTP``,
  ``target_prop/networks/simple_vgg.py``). Five blocks, 3x3 padded convs 3->128->128->256->256->512
  with ELU, each pooled (32 -> 1), then linear 512->10. 2,221,706 parameters.

PCX tunes the activation per run (mostly GELU, which is the presets' default); neither benchmark
uses batch norm (``batch_norm`` adds it).

Which type the builders return: with a monotone activation of ngrad's (relu, tanh, sigmoid,
leaky_relu, hard_sigmoid, identity) and no batch norm, an ngrad
:class:`~ngrad.nn.network.Network` of max-pooled :class:`~ngrad.nn.layers.Conv2dLayer` s and
:class:`~ngrad.nn.layers.DenseLayer` s, which every family's rules train (a layer computes
f(maxpool(conv) + b), the same function as conv -> f -> pool for a monotone f; state_dict keys
``layers.<i>.weight``). Otherwise (GELU, which is not monotone, ELU, hard tanh, batch norm) the
plain ``nn.Sequential`` of blocks above (``block<i>.conv``, ...), which the feedback-alignment
family trains through its hooks. Both draw the same weights for a given seed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
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
from ngrad.nn.layers import Conv2dLayer, DenseLayer, Layer
from ngrad.nn.network import Network

__all__ = ["PCXVGGOptions", "SimpleVGGOptions", "VGGOptions", "simple_vgg", "vgg", "vgg5", "vgg7"]

# Activations for which f(maxpool(u)) = maxpool(f(u)), so an ngrad layer pools before f.
MONOTONE = ("relu", "tanh", "sigmoid", "leaky_relu", "hard_sigmoid", "identity")


@dataclass(frozen=True)
class VGGOptions:
    channels: tuple[int, ...] = (128, 256, 512, 512)  # output channels of the conv blocks, in order
    pool: tuple[int, ...] | None = None  # blocks (counted from 1) that end in a 2x2 max-pool;
    #     none: every block, an empty list: no block
    unpadded: tuple[int, ...] = ()  # blocks whose conv has no zero padding (shrinks the map by k-1)
    kernel_size: int = 3  # side k of the square conv kernels
    activation: ConvActivation = "relu"  # nonlinearity after every conv and hidden dense layer
    batch_norm: bool = False  # a BatchNorm2d between each conv and its activation (conv bias off)
    hidden: tuple[int, ...] = ()  # widths of dense layers between the conv blocks and classifier
    init: Init = "pytorch"  # weight initialisation: pytorch (torch's default), xavier, kaiming
    #     or gaussian (ngrad.nn.init; zero biases)

    def __post_init__(self) -> None:
        check_positive(self, "channels", "kernel_size", "hidden", "unpadded")
        if not self.channels:
            raise ValueError("option 'channels' needs at least one conv block")
        if self.pool is not None:
            check_positive(self, "pool")
        blocks = len(self.channels)
        for name in ("pool", "unpadded"):
            chosen = getattr(self, name) or ()
            if any(block > blocks for block in chosen):
                raise ValueError(
                    f"option {name!r} names blocks 1 to {blocks} (one per channel count), "
                    f"got {tuple(chosen)!r}"
                )


@dataclass(frozen=True)
class PCXVGGOptions:
    activation: ConvActivation = "gelu"  # nonlinearity after every conv (PCX tunes it; mostly gelu)
    batch_norm: bool = False  # a BatchNorm2d between each conv and its activation (conv bias off)
    init: Init = "pytorch"  # weight initialisation: pytorch (torch's default), xavier, kaiming
    #     or gaussian (ngrad.nn.init; zero biases)


@dataclass(frozen=True)
class SimpleVGGOptions(PCXVGGOptions):
    activation: ConvActivation = "elu"  # nonlinearity after every conv (Ernoult et al.: elu)


def vgg(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> nn.Module:
    """A VGG-style conv net of any depth and widths. Options: see :class:`VGGOptions`."""
    return _build("vgg", input_shape, num_classes, parse_options(VGGOptions, options, "vgg"))


def vgg5(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> nn.Module:
    """PCX's VGG-5. Options: see :class:`PCXVGGOptions`."""
    preset = parse_options(PCXVGGOptions, options, "vgg5")
    config = VGGOptions(channels=(128, 256, 512, 512), **_preset_fields(preset))
    return _build("vgg5", input_shape, num_classes, config)


def vgg7(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> nn.Module:
    """PCX's VGG-7. Options: see :class:`PCXVGGOptions`."""
    preset = parse_options(PCXVGGOptions, options, "vgg7")
    config = VGGOptions(
        channels=(128, 128, 256, 256, 512, 512),
        pool=(1, 3, 5),
        unpadded=(4, 6),
        **_preset_fields(preset),
    )
    return _build("vgg7", input_shape, num_classes, config)


def simple_vgg(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> nn.Module:
    """Ernoult et al.'s SimpleVGG. Options: see :class:`SimpleVGGOptions`."""
    preset = parse_options(SimpleVGGOptions, options, "simple_vgg")
    config = VGGOptions(channels=(128, 128, 256, 256, 512), **_preset_fields(preset))
    return _build("simple_vgg", input_shape, num_classes, config)


def _preset_fields(preset: PCXVGGOptions) -> dict[str, Any]:
    return {
        "activation": preset.activation,
        "batch_norm": preset.batch_norm,
        "init": preset.init,
    }


def _build(model: str, input_shape: Any, num_classes: Any, config: VGGOptions) -> nn.Module:
    """The network of ngrad layers where it can be one, else the plain module."""
    module = _build_module(model, input_shape, num_classes, config)
    if config.batch_norm or config.activation not in MONOTONE:
        return module
    return _as_network(module, image_shape(input_shape, model), config)


def _as_network(module: nn.Sequential, shape: tuple[int, int, int], config: VGGOptions) -> Network:
    """The same net as ngrad layers, with the module's (already drawn) weights."""
    layers: list[Layer] = []
    for name, child in module.named_children():
        if name.startswith("block"):
            conv = child.conv
            pool = 2 if hasattr(child, "pool") else 1
            layer: Layer = Conv2dLayer(
                conv.in_channels, conv.out_channels, conv.kernel_size[0], config.activation,
                padding=conv.padding[0], pool=pool,
            )  # fmt: skip
        elif isinstance(child, nn.Linear):
            activation = "identity" if name == "classifier" else config.activation
            layer = DenseLayer(child.in_features, child.out_features, activation)
        else:
            continue
        with torch.no_grad():
            source = child.conv if name.startswith("block") else child
            layer.weight.copy_(source.weight)
            layer.bias.copy_(source.bias)
        layers.append(layer)
    return Network(layers, input_shape=shape)


def _build_module(
    model: str, input_shape: Any, num_classes: Any, config: VGGOptions
) -> nn.Sequential:
    shape = image_shape(input_shape, model)
    classes = checked_classes(num_classes, model)
    channels, height, width = shape
    pooled = set(range(1, len(config.channels) + 1) if config.pool is None else config.pool)
    k = config.kernel_size
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, out_channels in enumerate(config.channels, start=1):
        padding = 0 if index in config.unpadded else k // 2
        height, width = height + 2 * padding - k + 1, width + 2 * padding - k + 1
        _check_map(model, shape, index, "conv", height, width)
        block: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(channels, out_channels, k, padding=padding, bias=not config.batch_norm)
        )
        if config.batch_norm:
            block["bn"] = nn.BatchNorm2d(out_channels)
        block["act"] = activation_module(config.activation)
        if index in pooled:
            height, width = height // 2, width // 2
            _check_map(model, shape, index, "max-pool", height, width)
            block["pool"] = nn.MaxPool2d(2)
        layers[f"block{index}"] = nn.Sequential(block)
        channels = out_channels
    layers["flatten"] = nn.Flatten()
    features = channels * height * width
    for index, size in enumerate(config.hidden, start=1):
        layers[f"fc{index}"] = nn.Linear(features, size)
        layers[f"act{index}"] = activation_module(config.activation)
        features = size
    layers["classifier"] = nn.Linear(features, classes)
    return initialise(nn.Sequential(layers), config.init)


def _check_map(
    model: str, shape: tuple[int, ...], block: int, what: str, height: int, width: int
) -> None:
    if height < 1 or width < 1:
        raise ConfigError(
            f"model {model!r}: a {shape_text(shape)} input is too small; the {what} of block "
            f"{block} leaves a {height}x{width} map"
        )


_PCX = "Pinchetti et al. 2025 (liukidar/pcx, examples/s4_1_discriminative_mode)"
MODELS = {
    "vgg": ModelSpec(
        builder=vgg,
        options=VGGOptions,
        summary="VGG-style conv net: conv/activation/max-pool blocks of any depth and widths",
        citation="Simonyan & Zisserman 2015",
        inputs="any CxHxW large enough for its pooling",
    ),
    "vgg5": ModelSpec(
        builder=vgg5,
        options=PCXVGGOptions,
        summary="VGG-5 of the PCX benchmark: four pooled 3x3 conv blocks, 128-256-512-512",
        citation=_PCX,
        inputs="CxHxW with H, W >= 16 (PCX: 3x32x32)",
    ),
    "vgg7": ModelSpec(
        builder=vgg7,
        options=PCXVGGOptions,
        summary="VGG-7 of the PCX benchmark: six 3x3 conv blocks, 128-128-256-256-512-512",
        citation=_PCX,
        inputs="CxHxW with H, W >= 32 (PCX: 3x32x32)",
    ),
    "simple_vgg": ModelSpec(
        builder=simple_vgg,
        options=SimpleVGGOptions,
        summary="SimpleVGG of the scaling-DTP benchmark: five pooled 3x3 conv/ELU blocks",
        citation="Ernoult et al. 2022 (ernoult/scalingDTP, target_prop/networks/simple_vgg.py)",
        inputs="CxHxW with H, W >= 32",
    ),
}
