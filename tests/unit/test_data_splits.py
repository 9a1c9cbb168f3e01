"""Fixed split helpers, the DataSplits container and data-directory resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ngrad.data import DataSplits, fixed_split, resolve_data_dir
from ngrad.data.splits import SPLIT_SEED, fixed_partition, fixed_permutation, make_splits


@pytest.mark.parametrize(("n", "n_val"), [(10, 1), (1797, 300), (60000, 5000)])
def test_fixed_split_is_deterministic_disjoint_and_complete(n: int, n_val: int) -> None:
    train, val = fixed_split(n, n_val, seed=7)
    train2, val2 = fixed_split(n, n_val, seed=7)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(val, val2)
    assert len(val) == n_val
    assert len(train) == n - n_val
    assert not np.intersect1d(train, val).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert train.dtype == np.int64
    assert np.all(np.diff(train) > 0)
    assert np.all(np.diff(val) > 0)


def test_fixed_split_depends_on_seed_and_is_not_a_block() -> None:
    _, val_a = fixed_split(1000, 100, seed=1)
    _, val_b = fixed_split(1000, 100, seed=2)
    assert not np.array_equal(val_a, val_b)
    # a shuffled selection, not the first or last block of the data
    assert val_a.min() < 100
    assert val_a.max() > 900


def test_fixed_permutation_is_pinned() -> None:
    """The split must never change silently between versions (it defines every val set)."""
    perm = fixed_permutation(10, SPLIT_SEED)
    assert sorted(perm.tolist()) == list(range(10))
    assert perm.tolist() == fixed_permutation(10, SPLIT_SEED).tolist()
    assert perm.tolist() == [0, 1, 8, 4, 9, 5, 6, 2, 3, 7]
    assert fixed_split(20, 5)[1].tolist() == [0, 1, 8, 10, 14]


def test_fixed_partition_sizes_and_cover() -> None:
    parts = fixed_partition(1797, (300, 300, 1197), seed=3)
    assert [len(p) for p in parts] == [300, 300, 1197]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == 1797
    with pytest.raises(ValueError, match="sum to n"):
        fixed_partition(10, (3, 3))


@pytest.mark.parametrize("n_val", [0, 10, -1])
def test_fixed_split_rejects_bad_sizes(n_val: int) -> None:
    with pytest.raises(ValueError, match="n_val"):
        fixed_split(10, n_val)


def _pair(n: int, dim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n * dim, dtype=np.uint8).reshape(n, dim), np.arange(n) % 3


def test_make_splits_converts_and_scales() -> None:
    splits = make_splits(
        "toy", _pair(5), _pair(2), _pair(3), num_classes=3, input_shape=(1, 2, 2), scale=255.0
    )
    assert splits.sizes == (5, 2, 3)
    assert splits.train_x.shape == (5, 1, 2, 2)
    assert splits.train_x.dtype == torch.float32
    assert splits.test_y.dtype == torch.int64
    assert splits.train_x.flatten()[7].item() == pytest.approx(7 / 255)
    assert splits.train_x.is_contiguous()
    assert "train=5" in repr(splits)
    assert "tensor" not in repr(splits)


def test_datasplits_validates_shapes_and_dtypes() -> None:
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    good = {
        "train_x": x,
        "train_y": y,
        "val_x": x,
        "val_y": y,
        "test_x": x,
        "test_y": y,
    }
    DataSplits(name="ok", num_classes=2, input_shape=(3,), **good)
    with pytest.raises(ValueError, match="input_shape"):
        DataSplits(name="bad", num_classes=2, input_shape=(4,), **good)
    with pytest.raises(ValueError, match="float32"):
        DataSplits(name="bad", num_classes=2, input_shape=(3,), **{**good, "val_y": y.int()})


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NGRAD_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.setenv("NGRAD_DATA", "")
    assert resolve_data_dir() == Path.home() / ".cache" / "ngrad" / "data"
    monkeypatch.delenv("NGRAD_DATA")
    assert resolve_data_dir() == Path.home() / ".cache" / "ngrad" / "data"
    assert resolve_data_dir("~/x") == Path.home() / "x"
    assert not (tmp_path / "env").exists()  # resolving creates nothing
