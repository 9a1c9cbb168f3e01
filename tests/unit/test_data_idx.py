"""IDX parsing, verification and splitting on small IDX files written by the tests."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ngrad.data import DataError, load_dataset
from ngrad.data import catalog as data_catalog
from ngrad.data.checksums import IDX_SHA256
from ngrad.data.idx import load_idx_splits, parse_idx, read_idx_file
from ngrad.data.splits import fixed_split


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (type code 0x08)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_dataset(
    directory: Path, n_train: int = 40, n_test: int = 12, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four files of a fake MNIST; return the arrays and put their digests in .digests."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for stem, array in arrays.items():
        raw = idx_bytes(array)
        digests[stem] = hashlib.sha256(raw).hexdigest()
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    arrays["digests"] = digests  # type: ignore[assignment]
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_through_loader(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_dataset(tmp_path / "mnist", gz=gz)
    splits = load_idx_splits(tmp_path / "mnist", "mnist", checksums=arrays["digests"], n_val=8)
    train_idx, val_idx = fixed_split(40, 8)
    images = arrays["train-images-idx3-ubyte"]
    labels = arrays["train-labels-idx1-ubyte"]
    assert splits.sizes == (32, 8, 12)
    assert splits.input_shape == (1, 28, 28)
    assert splits.train_x.shape == (32, 1, 28, 28)
    assert splits.train_x.dtype == torch.float32
    assert splits.train_y.dtype == torch.int64
    np.testing.assert_array_equal(splits.train_x.numpy()[:, 0] * 255, images[train_idx])
    np.testing.assert_array_equal(splits.val_x.numpy()[:, 0] * 255, images[val_idx])
    np.testing.assert_array_equal(splits.train_y.numpy(), labels[train_idx])
    np.testing.assert_array_equal(splits.val_y.numpy(), labels[val_idx])
    np.testing.assert_allclose(
        splits.test_x.numpy()[:, 0], arrays["t10k-images-idx3-ubyte"] / 255, rtol=1e-6
    )
    np.testing.assert_array_equal(splits.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert 0.0 <= splits.train_x.min().item() <= splits.train_x.max().item() <= 1.0


def test_raw_file_is_preferred_over_gz(tmp_path: Path) -> None:
    arrays = make_idx_dataset(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not even gzip")
    splits = load_idx_splits(tmp_path, "mnist", checksums=arrays["digests"], n_val=8)
    assert splits.sizes == (32, 8, 12)


def test_parse_idx_other_dtypes_and_dims() -> None:
    array = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    data = struct.pack(">HBB", 0, 0x0C, 3) + struct.pack(">3I", 2, 3, 4) + array.tobytes()
    parsed = parse_idx(data, "x")
    np.testing.assert_array_equal(parsed, np.arange(24).reshape(2, 3, 4))
    assert parsed.dtype.isnative
    assert parsed.flags.writeable


def test_corrupt_byte_is_a_checksum_error_naming_the_file(tmp_path: Path) -> None:
    arrays = make_idx_dataset(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    expected = arrays["digests"]["train-images-idx3-ubyte"]
    with pytest.raises(DataError) as info:
        load_idx_splits(tmp_path, "mnist", checksums=arrays["digests"], n_val=8)
    message = str(info.value)
    assert str(path) in message
    assert expected in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message


def test_truncated_gzip_is_a_data_error(tmp_path: Path) -> None:
    arrays = make_idx_dataset(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*(gzip|truncated)"):
        load_idx_splits(tmp_path, "mnist", checksums=arrays["digests"], n_val=8)


def test_garbage_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage garbage garbage")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz"):
        read_idx_file(path, "0" * 64, "mnist")


def test_wrong_magic_is_a_data_error(tmp_path: Path) -> None:
    data = b"\x00\x01\x08\x01" + struct.pack(">I", 3) + b"\x01\x02\x03"
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*magic"):
        read_idx_file(path, hashlib.sha256(data).hexdigest(), "mnist")


def test_truncated_raw_idx_is_a_data_error(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-1]
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match="truncated"):
        read_idx_file(path, hashlib.sha256(data).hexdigest(), "mnist")


def test_label_count_mismatch_and_range(tmp_path: Path) -> None:
    arrays = make_idx_dataset(tmp_path, gz=False)
    digests = dict(arrays["digests"])
    bad = idx_bytes(np.zeros(39, np.uint8))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bad)
    digests["train-labels-idx1-ubyte"] = hashlib.sha256(bad).hexdigest()
    with pytest.raises(DataError, match="39 labels but"):
        load_idx_splits(tmp_path, "mnist", checksums=digests, n_val=8)
    bad = idx_bytes(np.full(40, 10, np.uint8))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bad)
    digests["train-labels-idx1-ubyte"] = hashlib.sha256(bad).hexdigest()
    with pytest.raises(DataError, match=r"label 10, outside 0\.\.9"):
        load_idx_splits(tmp_path, "mnist", checksums=digests, n_val=8)


def test_load_dataset_uses_the_checksum_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = make_idx_dataset(tmp_path / "fashion-mnist")
    monkeypatch.setattr(data_catalog, "N_VAL", 8)
    with pytest.raises(DataError, match="checksum mismatch"):  # real table, fake files
        load_dataset("fashion-mnist", data_dir=tmp_path)
    for stem, digest in arrays["digests"].items():
        monkeypatch.setitem(IDX_SHA256["fashion-mnist"], stem, digest)
    monkeypatch.setenv("NGRAD_DATA", str(tmp_path))
    splits = load_dataset("Fashion_MNIST")
    assert splits.name == "fashion-mnist"
    assert splits.sizes == (32, 8, 12)


def test_missing_files_message(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert "train-images" not in message
    assert str(tmp_path / "mnist") in message
    assert "--download" in message
    assert "NGRAD_DATA" in message
