"""CIFAR-10 (python version): restricted unpickling of the batches and safe archive extraction.

The batch files are pickles. Unpickling can run arbitrary code, so they are read with
:class:`RestrictedUnpickler`, which resolves only the few NumPy globals that an array needs and
refuses everything else with :class:`DataError` before any of it is called.
"""

from __future__ import annotations

import codecs
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ngrad.data.errors import DataError
from ngrad.data.splits import SPLIT_SEED, DataSplits, split_official

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

__all__ = [
    "ARCHIVE_NAME",
    "BATCHES_DIRNAME",
    "TEST_BATCH",
    "TRAIN_BATCHES",
    "RestrictedUnpickler",
    "extract_archive",
    "find_batches_dir",
    "load_batch",
    "load_cifar10_splits",
]

ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIRNAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_IMAGE_SIZE = 3 * 32 * 32


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 uses to pickle bytes at protocol < 3."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise DataError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return text.encode("latin-1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, strings, numbers and NumPy arrays, nothing else.

    Globals are looked up in a fixed allow-list (never imported by name), so a pickle that names
    ``os.system`` or any class fails with :class:`DataError` and nothing from it is executed.
    """

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global or raise :class:`DataError`."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.source}: refusing to unpickle global {module}.{name} (only NumPy arrays "
                "are allowed in a CIFAR batch); the file is not a genuine CIFAR-10 batch"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids, which CIFAR batches never contain."""
        raise DataError(f"{self.source}: refusing a pickle persistent id")


def _get(batch: dict[Any, Any], key: str) -> Any:
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise KeyError(key)


def load_batch(path: Path, dataset: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """Load one batch file: ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``, validated."""
    source = f"{dataset}: {path}"
    try:
        with path.open("rb") as handle:
            batch = RestrictedUnpickler(handle, source).load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{source}: cannot read ({exc.strerror or exc})") from exc
    except Exception as exc:  # any unpickling failure means a corrupt file
        raise DataError(f"{source}: corrupt pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a dict, found {type(batch).__name__}")
    try:
        data, labels = _get(batch, "data"), _get(batch, "labels")
    except KeyError as exc:
        raise DataError(f"{source}: batch has no {exc.args[0]!r} entry") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{source}: 'data' must be a 2-d uint8 array")
    if data.shape[1] != _IMAGE_SIZE:
        raise DataError(f"{source}: 'data' has rows of {data.shape[1]} bytes, not {_IMAGE_SIZE}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: 'labels' are not integers") from exc
    if labels.shape != (len(data),):
        raise DataError(f"{source}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{source}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def find_batches_dir(data_dir: Path) -> tuple[Path, list[str]]:
    """Return the batches folder and the batch files missing from it.

    Looks in ``<data_dir>/cifar10/cifar-10-batches-py`` then ``<data_dir>/cifar-10-batches-py``;
    returns the first complete one, or the first with its missing files when none is complete.
    """
    candidates = [data_dir / "cifar10" / BATCHES_DIRNAME, data_dir / BATCHES_DIRNAME]
    for directory in candidates:
        missing = [f for f in (*TRAIN_BATCHES, TEST_BATCH) if not (directory / f).is_file()]
        if not missing:
            return directory, []
    first = candidates[0]
    return first, [f for f in (*TRAIN_BATCHES, TEST_BATCH) if not (first / f).is_file()]


def load_cifar10_splits(
    directory: Path, *, n_val: int = 5000, seed: int = SPLIT_SEED, dataset: str = "cifar10"
) -> DataSplits:
    """Load CIFAR-10 from a ``cifar-10-batches-py`` folder into train/validation/test splits.

    Validation is ``n_val`` of the official training images chosen by :func:`fixed_split`; the
    official ``test_batch`` is the test split. Pixels are scaled to [0, 1], shape (3, 32, 32).
    """
    parts = [load_batch(directory / name, dataset) for name in TRAIN_BATCHES]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    del parts
    test_x, test_y = load_batch(directory / TEST_BATCH, dataset)
    return split_official(
        dataset,
        str(directory),
        (train_x, train_y),
        (test_x, test_y),
        n_val=n_val,
        seed=seed,
        num_classes=10,
        input_shape=(3, 32, 32),
        scale=255.0,
    )


def _member_parts(member: tarfile.TarInfo, archive: Path) -> tuple[str, ...]:
    name = member.name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataError(f"{archive}: refusing archive member {member.name!r} (unsafe path)")
    return tuple(part for part in path.parts if part not in ("", "."))


def extract_archive(archive: Path, dest_dir: Path, top_dir: str, required: tuple[str, ...]) -> Path:
    """Safely extract ``archive`` (tar.gz) and move its ``top_dir`` to ``dest_dir/top_dir``.

    Members with absolute paths or ``..``, links and special files are refused. Extraction goes to
    a temporary folder inside ``dest_dir`` and is renamed into place only when ``top_dir`` holds
    all ``required`` files, so an interrupted extraction never leaves a folder that looks complete.
    """
    target = dest_dir / top_dir
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parts = _member_parts(member, archive)
                    if not parts:
                        continue
                    out = tmp.joinpath(*parts)
                    if member.isdir():
                        out.mkdir(parents=True, exist_ok=True)
                    elif member.isfile():
                        out.parent.mkdir(parents=True, exist_ok=True)
                        source = tar.extractfile(member)
                        if source is None:  # pragma: no cover - regular files always have data
                            raise DataError(f"{archive}: cannot read member {member.name!r}")
                        with source, out.open("wb") as sink:
                            shutil.copyfileobj(source, sink)
                    else:
                        raise DataError(
                            f"{archive}: refusing archive member {member.name!r} (links and "
                            "special files are not allowed)"
                        )
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(
                f"{archive}: cannot extract (corrupt, truncated or unwritable): {exc}"
            ) from exc
        missing = [f for f in required if not (tmp / top_dir / f).is_file()]
        if missing:
            raise DataError(f"{archive}: archive lacks {top_dir}/{', '.join(missing)}")
        if not target.exists():
            (tmp / top_dir).replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
