"""CIFAR-10 batches in the real pickle format, the restricted unpickler and safe extraction."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ngrad.data import DataError, load_dataset
from ngrad.data import catalog as data_catalog
from ngrad.data.cifar import (
    TEST_BATCH,
    TRAIN_BATCHES,
    RestrictedUnpickler,
    extract_archive,
    load_batch,
    load_cifar10_splits,
)
from ngrad.data.splits import fixed_split


def cifar_batch(n: int, seed: int) -> dict[bytes, Any]:
    """A batch dict as the CIFAR authors pickled it (keys are bytes once loaded in Python 3)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_batches(directory: Path, n: int = 6, protocol: int = 2) -> list[dict[bytes, Any]]:
    directory.mkdir(parents=True, exist_ok=True)
    batches = []
    for seed, name in enumerate((*TRAIN_BATCHES, TEST_BATCH)):
        batch = cifar_batch(n, seed)
        (directory / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches.append(batch)
    return batches


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_load_batch_real_format(tmp_path: Path, protocol: int) -> None:
    batch = cifar_batch(7, seed=1)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    images, labels = load_batch(path)
    assert images.shape == (7, 3, 32, 32)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(7, -1), batch[b"data"])
    # channel-major layout: the first 1024 bytes of a row are the red plane
    np.testing.assert_array_equal(images[3, 0].ravel(), batch[b"data"][3, :1024])
    assert labels.tolist() == batch[b"labels"]


def test_load_cifar10_splits(tmp_path: Path) -> None:
    batches = write_batches(tmp_path / "cifar-10-batches-py", n=6)
    splits = load_cifar10_splits(tmp_path / "cifar-10-batches-py", n_val=5)
    assert splits.sizes == (25, 5, 6)
    assert splits.input_shape == (3, 32, 32)
    assert splits.train_x.shape == (25, 3, 32, 32)
    assert splits.train_x.dtype == torch.float32
    all_x = np.concatenate([b[b"data"] for b in batches[:5]]).reshape(-1, 3, 32, 32)
    all_y = np.concatenate([b[b"labels"] for b in batches[:5]])
    train_idx, val_idx = fixed_split(30, 5)
    np.testing.assert_allclose(splits.val_x.numpy(), all_x[val_idx] / 255, rtol=1e-6)
    np.testing.assert_array_equal(splits.train_y.numpy(), all_y[train_idx])
    np.testing.assert_array_equal(splits.test_y.numpy(), batches[5][b"labels"])


def test_load_dataset_finds_both_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_catalog, "N_VAL", 5)
    with pytest.raises(DataError, match=r"data_batch_1.*--download"):
        load_dataset("cifar10", data_dir=tmp_path)
    write_batches(tmp_path / "cifar-10-batches-py")
    assert load_dataset("cifar10", data_dir=tmp_path).sizes == (25, 5, 6)
    write_batches(tmp_path / "other" / "cifar10" / "cifar-10-batches-py")
    assert load_dataset("cifar10", data_dir=tmp_path / "other").sizes == (25, 5, 6)


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


class CustomClass:
    """Any class at all must be refused, not only dangerous functions."""


@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_runs_no_code(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = {b"data": _RunsShell(f"touch {marker}"), b"labels": [0]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(DataError, match=r"refusing to unpickle global (posix|os|nt)\.system"):
        load_batch(path)
    assert not marker.exists()
    # positive control: the same bytes do run the command with the stock unpickler
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    "obj", [CustomClass(), eval, {b"data": {1, 2}}], ids=["class", "builtin", "set"]
)
def test_restricted_unpickler_refuses_other_globals(obj: Any) -> None:
    with pytest.raises(DataError, match="refusing to unpickle global"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(obj, protocol=2)), "test").load()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({b"labels": [1]}, "no 'data'"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "1 labels for 2 images"),
        ({b"data": np.zeros((1, 100), np.uint8), b"labels": [1]}, "rows of 100 bytes"),
        ({b"data": np.zeros((1, 3072), np.float32), b"labels": [1]}, "uint8"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, r"outside 0\.\.9"),
        ([1, 2, 3], "expected a dict"),
    ],
)
def test_bad_batch_structure(tmp_path: Path, payload: Any, match: str) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=match):
        load_batch(path)


def test_truncated_pickle_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_2"
    path.write_bytes(pickle.dumps(cifar_batch(3, 0), protocol=2)[:-50])
    with pytest.raises(DataError, match=r"data_batch_2.*corrupt pickle"):
        load_batch(path)


def _tar_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.mark.parametrize("bad", ["../escape", "/abs/escape", "top/../../escape"])
def test_extract_refuses_unsafe_paths(tmp_path: Path, bad: str) -> None:
    archive = _tar_with(tmp_path, {"top/a": b"1", bad: b"x"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="unsafe path"):
        extract_archive(archive, dest, "top", ("a",))
    assert not (tmp_path / "escape").exists()
    assert list(dest.iterdir()) == []  # temporary folder cleaned, nothing half-extracted


def test_extract_refuses_links(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("top/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="links"):
        extract_archive(archive, dest, "top", ())
    assert list(dest.iterdir()) == []


def test_extract_checks_required_files(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path, {"top/a": b"1"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="lacks top/b"):
        extract_archive(archive, dest, "top", ("a", "b"))
    assert list(dest.iterdir()) == []
    assert extract_archive(archive, dest, "top", ("a",)) == dest / "top"
    assert (dest / "top" / "a").read_bytes() == b"1"
    assert [p.name for p in dest.iterdir()] == ["top"]
