"""IDX files (MNIST, Fashion-MNIST): parse, verify and split them.

Each of the four files may be raw or gzip-compressed; when both exist the raw one is read (no
decompression needed). Files are verified by the SHA-256 of their decompressed bytes and their
header and contents are validated; every problem raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ngrad.data.checksums import IDX_SHA256
from ngrad.data.errors import DataError
from ngrad.data.splits import SPLIT_SEED, DataSplits, split_official

__all__ = [
    "IDX_FILES",
    "find_idx_file",
    "load_idx_splits",
    "missing_idx_files",
    "parse_idx",
    "read_idx_file",
]

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four file stems of an IDX dataset; on disk each is ``<stem>`` or ``<stem>.gz``."""

# IDX type code (third magic byte) -> element dtype (data are big-endian).
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into a writable, native-order array.

    The header is two zero bytes, a type code, the number of dimensions, then one big-endian
    uint32 per dimension; the data must fill exactly the size the header announces.
    """
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(data)} bytes)")
    zeros, code, ndim = struct.unpack_from(">HBB", data)
    if zeros != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{source}: not an IDX file (bad magic number 0x{data[:4].hex()}; expected "
            "0x0000 then a type code among 08 09 0b 0c 0d 0e and a dimension count)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: IDX header truncated ({len(data)} bytes)")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        raise DataError(
            f"{source}: IDX header announces shape {dims} ({expected} data bytes) but the file "
            f"holds {found}: it is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """Return ``directory/stem`` if it is a file, else ``directory/stem.gz`` if so, else None."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_idx_files(directory: Path) -> list[str]:
    """Return the stems of :data:`IDX_FILES` found neither raw nor gzipped in ``directory``."""
    return [stem for stem in IDX_FILES if find_idx_file(directory, stem) is None]


def _read_bytes(path: Path, dataset: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{dataset}: cannot read {path}: {exc.strerror or exc}") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{dataset}: {path} is not a valid gzip file or is truncated ({exc}); delete it and "
            "download it again (--download)"
        ) from exc


def read_idx_file(path: Path, expected_sha256: str, dataset: str) -> np.ndarray:
    """Read, decompress if ``.gz``, parse and checksum-verify one IDX file."""
    data = _read_bytes(path, dataset)
    array = parse_idx(data, f"{dataset}: {path}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise DataError(
            f"{dataset}: checksum mismatch for {path} (sha256 of the decompressed bytes): "
            f"expected {expected_sha256}, got {actual}. The file is corrupt or not the official "
            "one; delete it and download it again (--download)"
        )
    return array


def _load_pair(
    directory: Path,
    prefix: str,
    dataset: str,
    checksums: Mapping[str, str],
    image_shape: tuple[int, ...],
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for kind, ndim in (("images-idx3-ubyte", 1 + len(image_shape)), ("labels-idx1-ubyte", 1)):
        stem = f"{prefix}-{kind}"
        path = find_idx_file(directory, stem)
        if path is None:
            raise DataError(f"{dataset}: {stem}[.gz] not found in {directory}")
        if stem not in checksums:
            raise DataError(f"{dataset}: no sha256 known for {stem}; cannot verify {path}")
        array = read_idx_file(path, checksums[stem], dataset)
        if array.dtype != np.uint8 or array.ndim != ndim:
            raise DataError(
                f"{dataset}: {path} holds {array.ndim}-d {array.dtype} data, "
                f"expected {ndim}-d uint8"
            )
        arrays.append((path, array))
    (image_path, images), (label_path, labels) = arrays
    if images.shape[1:] != image_shape:
        raise DataError(
            f"{dataset}: {image_path} has images of shape {images.shape[1:]}, not {image_shape}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{dataset}: {label_path} has {len(labels)} labels but {image_path} has "
            f"{len(images)} images"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"{dataset}: {label_path} has label {int(labels.max())}, outside 0..{num_classes - 1}"
        )
    return images, labels


def load_idx_splits(
    directory: Path,
    dataset: str,
    *,
    checksums: Mapping[str, str] | None = None,
    n_val: int = 5000,
    seed: int = SPLIT_SEED,
    num_classes: int = 10,
    image_shape: tuple[int, ...] = (28, 28),
) -> DataSplits:
    """Load an IDX dataset from ``directory`` into train/validation/test splits.

    ``checksums`` maps file stems to the SHA-256 of the decompressed files (default: the table
    :data:`ngrad.data.checksums.IDX_SHA256` for ``dataset``). Validation is ``n_val`` images of the
    official training set chosen by :func:`fixed_split` with ``seed``; the rest is training, and
    the official test set is the test split. Pixels are scaled to [0, 1]; x has shape
    ``(N, 1, *image_shape)``.
    """
    if checksums is None:
        if dataset not in IDX_SHA256:
            raise DataError(f"{dataset}: no checksum table; pass checksums explicitly")
        checksums = IDX_SHA256[dataset]
    train_images, train_labels = _load_pair(
        directory, "train", dataset, checksums, image_shape, num_classes
    )
    test_images, test_labels = _load_pair(
        directory, "t10k", dataset, checksums, image_shape, num_classes
    )
    return split_official(
        dataset,
        str(directory),
        (train_images, train_labels),
        (test_images, test_labels),
        n_val=n_val,
        seed=seed,
        num_classes=num_classes,
        input_shape=(1, *image_shape),
        scale=255.0,
    )
