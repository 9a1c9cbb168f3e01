"""The real MNIST / Fashion-MNIST files, when the shared data folder is present (else skipped).

The folder is ``$NGRAD_TEST_SHARED_DATA`` or ``<repo>/../shared/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ngrad.data import load_dataset


def _shared_data() -> Path:
    env = os.environ.get("NGRAD_TEST_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (path / "mnist").is_dir():
        pytest.skip(f"real data not found at {path} (set NGRAD_TEST_SHARED_DATA to run this test)")
    return path


MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("name", "train_counts", "test_counts", "mean"),
    [
        ("mnist", MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS, 0.1307),
        ("fashion-mnist", [6000] * 10, [1000] * 10, 0.2860),
    ],
)
def test_real_idx_dataset(
    name: str, train_counts: list[int], test_counts: list[int], mean: float
) -> None:
    splits = load_dataset(name, data_dir=_shared_data())
    assert splits.sizes == (55000, 5000, 10000)
    assert splits.train_x.shape == (55000, 1, 28, 28)
    assert splits.test_x.shape == (10000, 1, 28, 28)
    assert splits.input_shape == (1, 28, 28)
    assert splits.num_classes == 10
    assert torch.bincount(splits.test_y, minlength=10).tolist() == test_counts
    # train and validation together are exactly the official training set
    all_train_y = torch.cat([splits.train_y, splits.val_y])
    assert torch.bincount(all_train_y, minlength=10).tolist() == train_counts
    total = splits.train_x.sum(dtype=torch.float64) + splits.val_x.sum(dtype=torch.float64)
    assert (total / (60000 * 784)).item() == pytest.approx(mean, abs=5e-4)
    assert splits.train_x.min().item() == 0.0
    assert splits.train_x.max().item() == 1.0
    # the validation split is a spread-out sample, every class present
    assert torch.bincount(splits.val_y, minlength=10).min().item() > 350
