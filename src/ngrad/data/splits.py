"""The :class:`DataSplits` container and the fixed, seeded train/validation/test split helpers.

Splits are made by :func:`fixed_permutation`, a permutation computed from a counter hashed with
SplitMix64 and sorted. Unlike ``numpy.random``, whose streams may change between NumPy releases,
this gives the same indices on every platform and version, so a split never silently changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ngrad.data.errors import DataError

__all__ = [
    "SPLIT_SEED",
    "DataSplits",
    "fixed_partition",
    "fixed_permutation",
    "fixed_split",
    "make_splits",
]

#: Seed of every fixed split in ngrad. Changing it changes every validation set: do not.
SPLIT_SEED = 20_240_601

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic, vectorised)."""
    z = z.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def fixed_permutation(n: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Return a permutation of ``range(n)`` (int64) that depends only on ``n`` and ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seed_key = _mix64(np.array([seed & _MASK64], dtype=np.uint64))
    counter = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
    keys = _mix64(counter + seed_key)
    return np.argsort(keys, kind="stable").astype(np.int64)


def fixed_partition(n: int, sizes: Sequence[int], seed: int = SPLIT_SEED) -> tuple[np.ndarray, ...]:
    """Split ``range(n)`` into disjoint index arrays of the given ``sizes`` (which must sum to n).

    Part ``k`` takes the next ``sizes[k]`` entries of ``fixed_permutation(n, seed)``; every part is
    returned sorted ascending.
    """
    if any(s < 0 for s in sizes) or sum(sizes) != n:
        raise ValueError(f"sizes {list(sizes)} must be >= 0 and sum to n={n}")
    perm = fixed_permutation(n, seed)
    bounds = np.cumsum([0, *sizes])
    return tuple(np.sort(perm[a:b]) for a, b in itertools.pairwise(bounds))


def fixed_split(n: int, n_val: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train_idx, val_idx)``: ``n_val`` seeded indices of ``range(n)`` for validation.

    The validation indices are the first ``n_val`` entries of ``fixed_permutation(n, seed)``; the
    rest are for training. Both are sorted, disjoint and together cover ``range(n)``.
    """
    if not 0 < n_val < n:
        raise ValueError(f"n_val must be in 1..{n - 1} for n={n}, got {n_val}")
    val_idx, train_idx = fixed_partition(n, (n_val, n - n_val), seed)
    return train_idx, val_idx


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A dataset split into train, validation and test sets, as tensors in memory.

    ``*_x`` are float32 with shape ``(N, *input_shape)``; ``*_y`` are int64 class labels of shape
    ``(N,)`` in ``0..num_classes-1``. Select models and hyper-parameters on the validation split
    only: the test split is for the final report, never for model selection.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise ValueError(f"{self.name}: {split} needs float32 x and int64 y")
            if tuple(x.shape[1:]) != shape or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{self.name}: {split} x {tuple(x.shape)} / y {tuple(y.shape)} do not match "
                    f"input_shape {shape}"
                )

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Numbers of (train, validation, test) samples."""
        return (len(self.train_y), len(self.val_y), len(self.test_y))

    def __repr__(self) -> str:
        n_train, n_val, n_test = self.sizes
        return (
            f"DataSplits(name={self.name!r}, train={n_train}, val={n_val}, test={n_test}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )


def _x_tensor(x: np.ndarray, scale: float | None, input_shape: tuple[int, ...]) -> torch.Tensor:
    out = np.array(x, dtype=np.float32, copy=True)
    if scale is not None:
        np.divide(out, np.float32(scale), out=out)
    return torch.from_numpy(out.reshape(len(out), *input_shape))


def make_splits(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    scale: float | None = None,
) -> DataSplits:
    """Build :class:`DataSplits` from ``(x, y)`` NumPy pairs, dividing x by ``scale`` if given."""
    tensors: dict[str, torch.Tensor] = {}
    for split, (x, y) in (("train", train), ("val", val), ("test", test)):
        tensors[f"{split}_x"] = _x_tensor(x, scale, input_shape)
        tensors[f"{split}_y"] = torch.from_numpy(np.array(y, dtype=np.int64, copy=True))
    return DataSplits(name=name, num_classes=num_classes, input_shape=input_shape, **tensors)


def split_official(
    name: str,
    source: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    n_val: int,
    seed: int,
    num_classes: int,
    input_shape: tuple[int, ...],
    scale: float | None = None,
) -> DataSplits:
    """Hold out ``n_val`` of the official training set (:func:`fixed_split`) for validation;
    the official test set stays the test split. ``source`` names where the data came from."""
    images, labels = train
    if not 0 < n_val < len(labels):
        raise DataError(
            f"{name}: {len(labels)} training images in {source} are too few for a "
            f"validation split of {n_val}"
        )
    train_idx, val_idx = fixed_split(len(labels), n_val, seed)
    return make_splits(
        name,
        (images[train_idx], labels[train_idx]),
        (images[val_idx], labels[val_idx]),
        test,
        num_classes=num_classes,
        input_shape=input_shape,
        scale=scale,
    )
