"""Datasets that need no files: scikit-learn's 8x8 digits and the generated MNIST-1D."""

from __future__ import annotations

import functools
import random

import numpy as np

from ngrad.data.errors import DataError
from ngrad.data.splits import SPLIT_SEED, DataSplits, fixed_partition, fixed_split, make_splits

__all__ = ["DIGITS_SIZES", "MNIST1D_N_VAL", "load_digits_splits", "load_mnist1d_splits"]

DIGITS_SIZES = (1197, 300, 300)
"""(train, validation, test) sizes of the fixed split of the 1797 digits."""

MNIST1D_N_VAL = 500
"""Validation samples taken from the 4000 generated training samples of MNIST-1D."""


def load_digits_splits(seed: int = SPLIT_SEED) -> DataSplits:
    """Load scikit-learn's 8x8 digits (1797 images), pixels scaled from 0..16 to [0, 1].

    There is no official test split: ``fixed_partition(1797, (300, 300, 1197), seed)`` gives the
    test, validation and training indices (not stratified), identical on every run.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("digits: scikit-learn is not installed (pip install scikit-learn)") from exc
    bunch = load_digits()
    x, y = np.asarray(bunch.data), np.asarray(bunch.target)
    n_train, n_val, n_test = DIGITS_SIZES
    if len(y) != n_train + n_val + n_test:
        raise DataError(f"digits: scikit-learn returned {len(y)} samples, expected 1797")
    test_idx, val_idx, train_idx = fixed_partition(len(y), (n_test, n_val, n_train), seed)
    return make_splits(
        "digits",
        (x[train_idx], y[train_idx]),
        (x[val_idx], y[val_idx]),
        (x[test_idx], y[test_idx]),
        num_classes=10,
        input_shape=(64,),
        scale=16.0,
    )


@functools.cache  # a few CPU seconds each time; every caller copies what it takes
def _generate_mnist1d() -> dict[str, np.ndarray]:
    """Run the reference MNIST-1D generator (default arguments, seed 42) without side effects.

    The generator seeds the global ``random`` and ``numpy.random`` states; they are restored.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - mnist1d is a dependency
        raise DataError("mnist1d: package mnist1d is not installed (pip install mnist1d)") from exc
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        return make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def load_mnist1d_splits(seed: int = SPLIT_SEED) -> DataSplits:
    """Generate MNIST-1D locally (4000 train / 1000 test signals of length 40, no download).

    Validation is ``MNIST1D_N_VAL`` (500) of the 4000 training signals chosen by
    :func:`fixed_split`, leaving 3500 for training. Values are left as the generator makes them:
    it already centres and scales the whole set to mean 0, standard deviation 1.
    """
    data = _generate_mnist1d()
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    x_test, y_test = np.asarray(data["x_test"]), np.asarray(data["y_test"])
    if x.shape[1:] != (40,) or x_test.shape[1:] != (40,):
        raise DataError(f"mnist1d: generated signals of shape {x.shape[1:]}, expected (40,)")
    train_idx, val_idx = fixed_split(len(y), MNIST1D_N_VAL, seed)
    return make_splits(
        "mnist1d",
        (x[train_idx], y[train_idx]),
        (x[val_idx], y[val_idx]),
        (x_test, y_test),
        num_classes=10,
        input_shape=(40,),
    )
