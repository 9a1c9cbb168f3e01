"""The embedded datasets (scikit-learn digits, generated MNIST-1D) and the catalogue."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ngrad.data import DataError, DataSplits, available_datasets, download_dataset, load_dataset
from ngrad.data.splits import SPLIT_SEED, fixed_partition, fixed_split


def _assert_same(a: DataSplits, b: DataSplits) -> None:
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, f"{split}_x"), getattr(b, f"{split}_x"))
        assert torch.equal(getattr(a, f"{split}_y"), getattr(b, f"{split}_y"))


@pytest.fixture
def _keep_global_rng() -> Iterator[None]:
    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)


@pytest.fixture(scope="module")
def mnist1d_splits() -> DataSplits:
    return load_dataset("mnist1d")


def test_digits_splits() -> None:
    from sklearn.datasets import load_digits

    splits = load_dataset("digits")
    assert splits.name == "digits"
    assert splits.sizes == (1197, 300, 300)
    assert splits.input_shape == (64,)
    assert splits.num_classes == 10
    assert splits.train_x.shape == (1197, 64)
    assert splits.train_x.dtype == torch.float32
    assert splits.val_y.dtype == torch.int64
    assert splits.train_x.min().item() == 0.0
    assert splits.train_x.max().item() == 1.0
    _assert_same(splits, load_dataset("digits"))
    # the splits are exactly the documented disjoint index sets of the scikit-learn data
    bunch = load_digits()
    test_idx, val_idx, train_idx = fixed_partition(1797, (300, 300, 1197), SPLIT_SEED)
    assert not set(test_idx) & set(val_idx)
    assert not set(val_idx) & set(train_idx)
    assert not set(test_idx) & set(train_idx)
    for split, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        x = getattr(splits, f"{split}_x").numpy()
        np.testing.assert_allclose(x, bunch.data[idx] / 16, rtol=1e-6)
        np.testing.assert_array_equal(getattr(splits, f"{split}_y").numpy(), bunch.target[idx])
    assert set(torch.unique(splits.test_y).tolist()) == set(range(10))


def test_mnist1d_splits(mnist1d_splits: DataSplits) -> None:
    splits = mnist1d_splits
    assert splits.sizes == (3500, 500, 1000)
    assert splits.input_shape == (40,)
    assert splits.train_x.shape == (3500, 40)
    assert splits.train_x.dtype == torch.float32
    assert splits.test_y.dtype == torch.int64
    assert set(torch.unique(splits.train_y).tolist()) == set(range(10))
    # values as generated: the whole set is centred and scaled by the generator
    everything = torch.cat([splits.train_x, splits.val_x, splits.test_x])
    assert everything.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert everything.std().item() == pytest.approx(1.0, abs=1e-2)


@pytest.mark.slow
@pytest.mark.usefixtures("_keep_global_rng")
def test_mnist1d_is_deterministic_disjoint_and_side_effect_free(
    mnist1d_splits: DataSplits,
) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    again = load_dataset("mnist1d")
    assert (random.random(), np.random.random()) == before  # global RNGs untouched
    _assert_same(mnist1d_splits, again)

    reference = make_dataset(get_dataset_args())
    train_idx, val_idx = fixed_split(4000, 500, SPLIT_SEED)
    assert not set(train_idx) & set(val_idx)
    np.testing.assert_allclose(again.train_x.numpy(), reference["x"][train_idx], rtol=1e-6)
    np.testing.assert_allclose(again.val_x.numpy(), reference["x"][val_idx], rtol=1e-6)
    np.testing.assert_array_equal(again.val_y.numpy(), reference["y"][val_idx])
    np.testing.assert_allclose(again.test_x.numpy(), reference["x_test"], rtol=1e-6)
    np.testing.assert_array_equal(again.test_y.numpy(), reference["y_test"])


def test_available_datasets() -> None:
    names = available_datasets()
    assert list(names) == ["digits", "mnist1d", "mnist", "fashion-mnist", "cifar10"]
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())
    assert "LeCun" in names["mnist"]


def test_unknown_dataset_lists_available() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "imagenet" in message
    for name in available_datasets():
        assert name in message
    with pytest.raises(DataError, match="imagenet"):
        download_dataset("imagenet")


def test_data_error_is_an_ngrad_error() -> None:
    from ngrad.errors import NgradError

    assert issubclass(DataError, NgradError)
    assert issubclass(DataError, Exception)


def test_download_embedded_is_a_no_op(tmp_path: Path) -> None:
    assert download_dataset("digits", data_dir=tmp_path / "d") == tmp_path / "d"
    assert not (tmp_path / "d").exists()
