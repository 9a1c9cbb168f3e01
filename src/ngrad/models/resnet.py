"""He et al.'s CIFAR ResNets (ResNet-20, ResNet-56, any depth 6n+2) with batch norm.

He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition" (CVPR), section 4.2, as
BioTorch builds them (Sanfiz & Akrout 2021; ``jsalbert/biotorch``,
``biotorch/models/small_resnet.py``, ported from ``akamaster/pytorch_resnet_cifar10``)::

    stem     conv 3x3/1/1 C->16 (no bias), BN, ReLU
    stage 1  n BasicBlocks, 16 channels, stride 1        16x32x32
    stage 2  n BasicBlocks, 32 channels, first stride 2  32x16x16
    stage 3  n BasicBlocks, 64 channels, first stride 2  64x8x8
    head     global average pool, linear 64->classes (with bias)

    BasicBlock: conv 3x3 (stride s, no bias), BN, ReLU, conv 3x3 (no bias), BN,
                + shortcut(input), ReLU

n = 3 gives ResNet-20 (269,722 parameters with 10 classes; "0.27M" in the reference code), n = 9
ResNet-56 (853,018; "0.85M"). The shortcut is the identity, except where a block halves the map
and doubles the channels: option A (the paper's choice for CIFAR and BioTorch's) subsamples the
input by the stride and zero-pads the new channels, parameter-free; option B is a 1x1 conv with
the stride and a BN. Residual additions and ReLUs are not in place, so backward hooks on any
layer may see and replace their gradients.

The default ``init="xavier"`` is BioTorch's benchmark setting: every conv and linear weight
xavier-uniform, the linear bias zero; batch norm keeps torch's default (weight 1, bias 0).
Any CxHxW input works (each stride-2 stage rounds the map size up); the reference is 3x32x32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ngrad.models.common import (
    ModelSpec,
    check_positive,
    checked_classes,
    image_shape,
    initialise,
    parse_options,
)
from ngrad.nn.init import Init

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "ResNetDepthOptions",
    "ResNetOptions",
    "ZeroPadShortcut",
    "resnet",
    "resnet20",
    "resnet56",
]


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: the input subsampled by ``stride`` with zero channels added on both
    sides (``extra // 2`` before, the rest after) to reach the block's width."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.before = extra_channels // 2
        self.after = extra_channels - self.before

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """Two 3x3 conv/BN layers and a shortcut: relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(stride, planes - in_planes)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of ``blocks`` BasicBlocks (widths w, 2w, 4w), global pool, linear."""

    def __init__(
        self,
        blocks: int,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages = []
        planes = width
        for index in range(3):
            out_planes = width * 2**index
            strides = [1 if index == 0 else 2] + [1] * (blocks - 1)
            layer = []
            for stride in strides:
                layer.append(BasicBlock(planes, out_planes, stride, shortcut))
                planes = out_planes
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.avgpool(out), 1))


@dataclass(frozen=True)
class ResNetOptions:
    shortcut: Literal["A", "B"] = "A"  # where a block changes shape: A zero-pads a subsampled
    #     input (the paper's CIFAR choice, BioTorch's), B is a strided 1x1 conv with batch norm
    width: int = 16  # channels of the first stage (the second and third have 2x and 4x)
    init: Init = "xavier"  # weight initialisation: xavier (BioTorch's benchmarks; zero biases),
    #     pytorch (torch's default), kaiming or gaussian (ngrad.nn.init; zero biases)

    def __post_init__(self) -> None:
        check_positive(self, "width")


@dataclass(frozen=True)
class ResNetDepthOptions(ResNetOptions):
    depth: int = 20  # number of weighted layers, 6n+2 (n blocks per stage): 20, 32, 44, 56, 110

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.depth, bool) or self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                f"option 'depth' must be 6n+2 with n >= 1 (8, 14, 20, ...), got {self.depth!r}"
            )


def resnet(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> CifarResNet:
    """A CIFAR ResNet of depth 6n+2. Options: see :class:`ResNetDepthOptions`."""
    config = parse_options(ResNetDepthOptions, options, "resnet")
    return _build("resnet", input_shape, num_classes, config, (config.depth - 2) // 6)


def resnet20(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> CifarResNet:
    """ResNet-20 (3 blocks per stage). Options: see :class:`ResNetOptions`."""
    config = parse_options(ResNetOptions, options, "resnet20")
    return _build("resnet20", input_shape, num_classes, config, 3)


def resnet56(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, **options: Any
) -> CifarResNet:
    """ResNet-56 (9 blocks per stage). Options: see :class:`ResNetOptions`."""
    config = parse_options(ResNetOptions, options, "resnet56")
    return _build("resnet56", input_shape, num_classes, config, 9)


def _build(
    model: str, input_shape: Any, num_classes: Any, config: ResNetOptions, blocks: int
) -> CifarResNet:
    channels, _, _ = image_shape(input_shape, model)
    classes = checked_classes(num_classes, model)
    network = CifarResNet(blocks, classes, channels, config.width, config.shortcut)
    return initialise(network, config.init)


_BIOTORCH = "He et al. 2016; BioTorch biotorch/models/small_resnet.py (Sanfiz & Akrout 2021)"
MODELS = {
    "resnet20": ModelSpec(
        builder=resnet20,
        options=ResNetOptions,
        summary="ResNet-20 for CIFAR: 3x3 BasicBlocks with batch norm, 16-32-64 channels",
        citation=_BIOTORCH,
        inputs="any CxHxW (reference: 3x32x32)",
    ),
    "resnet56": ModelSpec(
        builder=resnet56,
        options=ResNetOptions,
        summary="ResNet-56 for CIFAR: 3x3 BasicBlocks with batch norm, 16-32-64 channels",
        citation=_BIOTORCH,
        inputs="any CxHxW (reference: 3x32x32)",
    ),
    "resnet": ModelSpec(
        builder=resnet,
        options=ResNetDepthOptions,
        summary="CIFAR ResNet of any depth 6n+2 (option depth), as resnet20/resnet56",
        citation=_BIOTORCH,
        inputs="any CxHxW (reference: 3x32x32)",
    ),
}
