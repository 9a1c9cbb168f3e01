"""Small float64 networks and batches shared by the energy-based rules' reference tests."""

import math

import torch

import ngrad


def small_network(sizes=(10, 8, 7, 3), activation="tanh", seed=3):
    torch.manual_seed(seed)
    return ngrad.mlp(list(sizes), activation=activation).double()


def small_conv_network(seed=3):
    torch.manual_seed(seed)
    return ngrad.convnet((1, 6, 6), (2,), num_classes=3, hidden=(5,), activation="tanh").double()


def small_batch(shape=(10,), n=12, classes=3, seed=5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def small_pooled_network(activation="tanh", seed=3):
    """Two max-pooled conv layers (Laborieux et al. 2021's conv+pool couplings), a dense layer
    and the classifier: 1x8x8 -> 2x4x4 -> 3x2x2 -> 5 -> 3."""
    torch.manual_seed(seed)
    network = ngrad.convnet(
        (1, 8, 8), (2, 3), 3, stride=1, pool=2, hidden=(5,), activation=activation
    )
    return network.double()


def relative_error(actual, expected):
    """|actual - expected| / |expected| over all the tensors together (Frobenius)."""
    num = sum(float((a - e).pow(2).sum()) for a, e in zip(actual, expected, strict=True))
    return math.sqrt(num / sum(float(e.pow(2).sum()) for e in expected))


def min_cosine(actual, expected):
    """The smallest cosine between matching tensors."""
    return min(
        float(a.flatten() @ e.flatten() / (a.norm() * e.norm()))
        for a, e in zip(actual, expected, strict=True)
    )
