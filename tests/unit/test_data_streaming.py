"""Batches streamed by a DataLoader in ngrad's training order; normalisation and augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ngrad.data.loading import batches, training_batches
from ngrad.data.transforms import (
    STANDARD_STATISTICS,
    check_augmentable,
    make_normalizer,
    random_crop_flip,
    training_statistics,
)
from ngrad.errors import ConfigError


def _data(count: int = 23, shape=(3, 4, 5)):
    inputs = torch.arange(count * torch.Size(shape).numel(), dtype=torch.float32)
    return inputs.reshape(count, *shape), torch.arange(count) % 10


def test_training_batches_follow_one_permutation_per_pass_in_order():
    inputs, targets = _data()
    generator = torch.Generator().manual_seed(7)
    loader = training_batches(inputs, targets, 5, generator)
    reference = torch.Generator().manual_seed(7)
    for _ in range(3):  # each pass: randperm(n) cut into batches of 5, the last one smaller
        order = torch.randperm(23, generator=reference)
        got = list(loader)
        assert [len(y) for _, y in got] == [5, 5, 5, 5, 3]
        assert torch.equal(torch.cat([x for x, _ in got]), inputs[order])
        assert torch.equal(torch.cat([y for _, y in got]), targets[order])
    assert len(loader) == 5


def test_training_batches_leave_the_global_random_state_alone_and_resume_exactly():
    inputs, targets = _data()
    generator = torch.Generator().manual_seed(1)
    loader = training_batches(inputs, targets, 4, generator)
    before = torch.get_rng_state()
    first = [y for _, y in loader]
    assert torch.equal(torch.get_rng_state(), before)  # the rules' random numbers untouched
    saved = generator.get_state()
    second = [y for _, y in loader]
    generator.set_state(saved)  # what --resume does
    again = [y for _, y in loader]
    assert all(torch.equal(a, b) for a, b in zip(second, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_evaluation_batches_are_in_order():
    inputs, targets = _data(count=10)
    got = list(batches(inputs, targets, batch_size=4))
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in got]), inputs)


def test_training_statistics_per_channel_and_overall():
    generator = torch.Generator().manual_seed(0)
    images = (
        torch.rand(50, 3, 6, 6, generator=generator) * torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    )
    mean, std = training_statistics(images, chunk=7)
    as64 = images.double()
    assert torch.allclose(mean, as64.mean(dim=(0, 2, 3)), atol=1e-12)
    assert torch.allclose(std, as64.std(dim=(0, 2, 3), unbiased=False), atol=1e-12)
    flat = images.flatten(1)
    mean, std = training_statistics(flat)
    assert mean.shape == () and torch.allclose(mean, flat.double().mean(), atol=1e-12)
    assert torch.allclose(std, flat.double().std(unbiased=False), atol=1e-12)


def test_normalisation_train_standard_and_refusals():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(40, 3, 8, 8, generator=generator)
    normal = make_normalizer("train", "cifar10", (3, 8, 8), images)
    out = normal(images).double()
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(
        out.std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5
    )
    assert make_normalizer("none", "cifar10", (3, 8, 8), images) is None
    standard = make_normalizer("standard", "cifar10", (3, 8, 8), images)
    mean, std, _ = STANDARD_STATISTICS["cifar10"]
    assert torch.allclose(
        standard(torch.zeros(1, 3, 8, 8))[0, :, 0, 0], -torch.tensor(mean) / torch.tensor(std)
    )
    mnist = make_normalizer("standard", "mnist", (1, 28, 28), torch.zeros(1, 1, 28, 28))
    assert mnist(torch.full((1, 1, 28, 28), 0.1307)).abs().max() < 1e-6
    with pytest.raises(ConfigError, match="'digits' has no published mean"):
        make_normalizer("standard", "digits", (64,), torch.zeros(2, 64))
    with pytest.raises(ConfigError, match="zero standard deviation"):
        make_normalizer("train", "digits", (64,), torch.zeros(2, 64))


def test_augmentation_crops_the_padded_image_and_flips_it():
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    out = random_crop_flip(images, generator, padding=2)
    assert out.shape == images.shape
    # the same draws, made by hand: offsets (2, N) in 0..4, then N flips
    generator.set_state(state)
    offsets = torch.randint(0, 5, (2, 16), generator=generator)
    flips = torch.randint(0, 2, (16,), generator=generator).bool()
    padded = F.pad(images, (2, 2, 2, 2))
    for index in range(16):
        top, left = offsets[0, index], offsets[1, index]
        crop = padded[index, :, top : top + 8, left : left + 8]
        expected = crop.flip(-1) if flips[index] else crop
        assert torch.equal(out[index], expected), index
    assert 0 < int(flips.sum()) < 16  # both branches taken
    generator.set_state(state)
    assert torch.equal(random_crop_flip(images, generator, padding=2), out)  # seeded: repeatable


def test_augmentation_needs_images():
    check_augmentable("cifar10", (3, 32, 32))
    with pytest.raises(ConfigError, match="--augment crops and flips images"):
        check_augmentable("digits", (64,))
