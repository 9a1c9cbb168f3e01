"""Input normalisation and augmentation, applied to one batch at a time on the training device.

Normalisation (``normalize``) subtracts a mean and divides by a standard deviation, one pair per
channel for images (shape (C, H, W)) and one pair for any other input:

- ``none``: the inputs as the dataset gives them (pixels in [0, 1]; MNIST-1D already centred);
- ``train``: the mean and (population) standard deviation of the training inputs actually trained
  on (after ``train_subset``), computed in float64;
- ``standard``: the published constants (:data:`STANDARD_STATISTICS`: MNIST, Fashion-MNIST,
  CIFAR-10); the other datasets have none.

Resizing (``resize``, :func:`resize_images`) scales every image (C, H, W) to ``resize`` x
``resize`` pixels by bilinear interpolation with antialiasing (torchvision's ``Resize`` on
tensors), before augmentation and normalisation: BioTorch's MNIST and Fashion-MNIST benchmarks
resize the 28x28 digits to 32x32 this way for their LeNet.

Augmentation (:func:`random_crop_flip`) is the standard CIFAR recipe (He et al. 2016; BioTorch's
CIFAR-10 benchmark): a random crop of the image's own size (32x32 on CIFAR) out of its copy padded
with 4 zero pixels on every side, and a left-right flip with probability 1/2. It is drawn from a
``torch.Generator``, so a seeded run draws the same crops every time; it applies to the training
batches only, before normalisation (the padding is black, as in torchvision's ``RandomCrop``
before ``Normalize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from ngrad.errors import ConfigError

__all__ = [
    "NORMALIZATIONS",
    "STANDARD_STATISTICS",
    "Normalization",
    "Normalizer",
    "check_augmentable",
    "make_normalizer",
    "random_crop_flip",
    "resize_images",
    "resized_shape",
    "training_statistics",
]

Normalization = Literal["none", "train", "standard"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)

STANDARD_STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...], str]] = {
    "mnist": ((0.1307,), (0.3081,), "PyTorch's MNIST example; BioTorch"),
    "fashion-mnist": ((0.2859,), (0.3530,), "BioTorch, biotorch/datasets/fashion_mnist.py"),
    "cifar10": (
        (0.4914, 0.4821, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "BioTorch, biotorch/datasets/cifar.py",
    ),
}
"""{dataset: (per-channel mean, per-channel std, source)} of pixels scaled to [0, 1]."""

CROP_PADDING = 4  # pixels of zero padding around each image before the random crop


@dataclass(frozen=True, eq=False)
class Normalizer:
    """``(x - mean) / std`` with ``mean`` and ``std`` shaped to broadcast over a batch."""

    mean: Tensor
    std: Tensor
    source: str  # where the statistics come from ("training split", or the publication)

    def __call__(self, inputs: Tensor) -> Tensor:
        return (inputs - self.mean) / self.std

    def to(self, device: torch.device | str) -> Normalizer:
        return Normalizer(self.mean.to(device), self.std.to(device), self.source)


def _channels(input_shape: tuple[int, ...]) -> int | None:
    """The channel count of an image shape (C, H, W); None for any other shape."""
    return input_shape[0] if len(input_shape) == 3 else None


def _shaped(values: Tensor, input_shape: tuple[int, ...]) -> Tensor:
    if _channels(input_shape) is None:
        return values.reshape(())
    return values.reshape(-1, 1, 1)


def training_statistics(inputs: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Float64 (mean, population std) of ``inputs`` (N, *shape): per channel for images
    (N, C, H, W), else one pair over every value; summed in chunks of ``chunk`` samples."""
    per_channel = inputs.dim() == 4
    dims = (0, 2, 3) if per_channel else tuple(range(inputs.dim()))
    total = torch.zeros(inputs.shape[1] if per_channel else (), dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, inputs.shape[0], chunk):
        part = inputs[start : start + chunk].double()
        total += part.sum(dim=dims)
        squares += part.square().sum(dim=dims)
    count = inputs.numel() / (inputs.shape[1] if per_channel else 1)
    mean = total / count
    variance = (squares / count - mean.square()).clamp_min(0.0)
    return mean, variance.sqrt()


def make_normalizer(
    how: str, dataset: str, input_shape: tuple[int, ...], train_inputs: Tensor
) -> Normalizer | None:
    """The normalisation ``how`` (one of :data:`NORMALIZATIONS`) of ``dataset``'s inputs; None
    for ``none``. ConfigError where ``standard`` has no published constants or a statistic is
    zero."""
    if how == "none":
        return None
    if how == "standard":
        if dataset not in STANDARD_STATISTICS:
            known = ", ".join(STANDARD_STATISTICS)
            raise ConfigError(
                f"--normalize standard: {dataset!r} has no published mean and std (only {known} "
                "do); use --normalize train for the training split's own"
            )
        mean, std, source = STANDARD_STATISTICS[dataset]
        channels = _channels(input_shape) or 1
        if len(mean) != channels:
            raise ConfigError(
                f"--normalize standard: {dataset!r}'s constants have {len(mean)} channel(s), its "
                f"inputs {channels}"
            )
        mean_t = torch.tensor(mean, dtype=torch.float64)
        std_t = torch.tensor(std, dtype=torch.float64)
    elif how == "train":
        mean_t, std_t = training_statistics(train_inputs)
        source = "training split"
    else:
        raise ConfigError(f"'normalize' must be one of {', '.join(NORMALIZATIONS)}, got {how!r}")
    if not bool((std_t > 0).all()):
        raise ConfigError(
            f"--normalize {how}: {dataset!r}'s inputs have zero standard deviation (a constant "
            "channel); use --normalize none"
        )
    return Normalizer(
        _shaped(mean_t, input_shape).float(), _shaped(std_t, input_shape).float(), source
    )


def check_augmentable(dataset: str, input_shape: tuple[int, ...]) -> None:
    """ConfigError unless ``dataset``'s samples are images (C, H, W) that crop and flip apply to."""
    if _channels(input_shape) is None:
        shape = "x".join(map(str, input_shape))
        raise ConfigError(
            f"--augment crops and flips images (channels, height, width); {dataset!r} has "
            f"samples of shape {shape}"
        )


def resized_shape(input_shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """The sample shape after :func:`resize_images` to ``size`` (0: unchanged); ConfigError for
    samples that are not images (C, H, W)."""
    if not size:
        return tuple(input_shape)
    if _channels(input_shape) is None:
        shape = "x".join(map(str, input_shape))
        raise ConfigError(
            f"--resize scales images (channels, height, width), not samples of shape {shape}"
        )
    return (input_shape[0], size, size)


def resize_images(images: Tensor, size: int) -> Tensor:
    """``images`` (N, C, H, W) scaled to (N, C, size, size): bilinear with antialiasing, corners
    not aligned (torchvision's ``Resize`` on tensors); unchanged where already that size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def random_crop_flip(
    images: Tensor,
    generator: torch.Generator,
    padding: int = CROP_PADDING,
    rows: tuple[int, int] | None = None,
) -> Tensor:
    """Each image of ``images`` (N, C, H, W) cropped at a random offset out of its copy padded
    with ``padding`` zeros on every side, then flipped left-right with probability 1/2.

    The offsets and flips are drawn on the CPU from ``generator`` (2N integers, then N), so the
    draws do not depend on the device the batch is on. ``rows`` (first, total): the images are
    rows first.. of a batch of ``total`` (one process's share in data-parallel training); the
    draws are made for the whole batch and these rows' kept, as one process would draw them."""
    count, channels, height, width = images.shape
    first, drawn = (0, count) if rows is None else rows
    offsets = torch.randint(0, 2 * padding + 1, (2, drawn), generator=generator)
    flips = torch.randint(0, 2, (drawn,), generator=generator).bool()
    offsets, flips = offsets[:, first : first + count], flips[first : first + count]
    device = images.device
    rows = offsets[0, :, None] + torch.arange(height)  # (N, H) rows of the padded image
    columns = offsets[1, :, None] + torch.arange(width)  # (N, W)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    padded = F.pad(images, (padding, padding, padding, padding))
    return padded[
        torch.arange(count, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows.to(device)[:, None, :, None],
        columns.to(device)[:, None, None, :],
    ]
