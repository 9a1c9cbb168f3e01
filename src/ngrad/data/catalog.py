"""The dataset catalogue: names, descriptions, ``load_dataset`` and ``download_dataset``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ngrad.data.checksums import CIFAR10_ARCHIVE_MD5, IDX_SHA256
from ngrad.data.cifar import (
    ARCHIVE_NAME,
    BATCHES_DIRNAME,
    TEST_BATCH,
    TRAIN_BATCHES,
    extract_archive,
    find_batches_dir,
    load_cifar10_splits,
)
from ngrad.data.download import RemoteFile, fetch_file, resolve_mirrors
from ngrad.data.embedded import load_digits_splits, load_mnist1d_splits
from ngrad.data.errors import DataError
from ngrad.data.idx import IDX_FILES, find_idx_file, load_idx_splits, missing_idx_files
from ngrad.data.paths import DATA_DIR_ENV, describe_data_dir, resolve_data_dir
from ngrad.data.splits import DataSplits

__all__ = ["N_VAL", "available_datasets", "download_dataset", "is_embedded", "load_dataset"]

PathArg = str | os.PathLike[str] | None

N_VAL = 5000
"""Validation images taken (by a fixed seeded split) from the official MNIST, Fashion-MNIST and
CIFAR-10 training sets."""


@dataclass(frozen=True)
class _Dataset:
    name: str
    kind: Literal["embedded", "idx", "cifar"]
    description: str
    loader: Callable[[], DataSplits] | None = None


_DATASETS: dict[str, _Dataset] = {
    d.name: d
    for d in (
        _Dataset(
            "digits",
            "embedded",
            "8x8 handwritten digits shipped with scikit-learn (UCI, Alpaydin & Kaynak 1998); "
            "1797 images, no download",
            load_digits_splits,
        ),
        _Dataset(
            "mnist1d",
            "embedded",
            "MNIST-1D, 1-D digit signals of length 40 generated locally by the mnist1d package "
            "(Greydanus & Kobak 2024); 5000 signals, no download",
            load_mnist1d_splits,
        ),
        _Dataset(
            "mnist",
            "idx",
            "MNIST handwritten digits, 28x28 grey (LeCun, Cortes & Burges 1998; CC BY-SA 3.0); "
            "70000 images, 11 MB download",
        ),
        _Dataset(
            "fashion-mnist",
            "idx",
            "Fashion-MNIST clothing images, 28x28 grey (Xiao, Rasul & Vollgraf 2017, Zalando; "
            "MIT); 70000 images, 30 MB download",
        ),
        _Dataset(
            "cifar10",
            "cifar",
            "CIFAR-10 colour images, 3x32x32 (Krizhevsky 2009, python version); 60000 images, "
            "163 MB download",
        ),
    )
}


def available_datasets() -> dict[str, str]:
    """Return ``{name: one-line description with source and citation}`` for every dataset."""
    return {name: d.description for name, d in _DATASETS.items()}


def is_embedded(name: str) -> bool:
    """Whether dataset ``name`` needs no files (it ships with a package or is generated)."""
    return name in _DATASETS and _DATASETS[name].kind == "embedded"


def _lookup(name: str) -> _Dataset:
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    if key not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; available datasets: {', '.join(_DATASETS)}")
    return _DATASETS[key]


def _missing_error(
    dataset: str, directory: Path, missing: Sequence[str], data_dir: PathArg, note: str = ""
) -> DataError:
    return DataError(
        f"{dataset}: missing {len(missing)} file(s) in {directory}: {', '.join(missing)}{note}. "
        f"Data directory: {describe_data_dir(data_dir)}. To fix: rerun with --download "
        f"(download=True) to fetch and verify them, or set {DATA_DIR_ENV} to a directory that "
        "already holds the files."
    )


def _idx_remote(dataset: str, stem: str) -> RemoteFile:
    digest = IDX_SHA256[dataset][stem]
    return RemoteFile(f"{stem}.gz", "sha256", digest, gunzip=True)


def _download_idx(
    dataset: str,
    directory: Path,
    stems: Sequence[str],
    mirrors: Sequence[str] | None,
    progress: bool,
) -> None:
    bases = resolve_mirrors(dataset, mirrors)
    for stem in stems:
        fetch_file(_idx_remote(dataset, stem), directory, bases, dataset=dataset, progress=progress)


def _prepare_cifar(root: Path, mirrors: Sequence[str] | None, progress: bool) -> Path:
    """Make sure extracted CIFAR-10 batches exist (download and extract if needed); return them."""
    directory, missing = find_batches_dir(root)
    if not missing:
        return directory
    dest = root / "cifar10"
    remote = RemoteFile(ARCHIVE_NAME, "md5", CIFAR10_ARCHIVE_MD5[ARCHIVE_NAME])
    archive = dest / ARCHIVE_NAME
    if archive.is_file():
        problem = remote.problem(archive)
        if problem:
            raise DataError(
                f"cifar10: {archive} is corrupt ({problem}); delete it and rerun with --download"
            )
    else:
        bases = resolve_mirrors("cifar10", mirrors)
        archive = fetch_file(remote, dest, bases, dataset="cifar10", progress=progress)
    if (dest / BATCHES_DIRNAME).exists():
        raise DataError(
            f"cifar10: {dest / BATCHES_DIRNAME} exists but lacks {', '.join(missing)}; "
            "delete that folder and rerun with --download"
        )
    return extract_archive(archive, dest, BATCHES_DIRNAME, (*TRAIN_BATCHES, TEST_BATCH))


def load_dataset(
    name: str,
    data_dir: PathArg = None,
    download: bool = False,
    progress: bool = False,
) -> DataSplits:
    """Load dataset ``name`` as fixed train/validation/test splits of float32/int64 tensors.

    ``data_dir`` defaults to ``$NGRAD_DATA``, then ``~/.cache/ngrad/data`` (see
    :func:`resolve_data_dir`); ``digits`` and ``mnist1d`` need no files. With ``download=True``
    missing files are downloaded and verified first (``progress`` shows a progress bar); without it
    missing files raise :class:`DataError` saying which files, where, and how to fix it.

    The validation split is carved from the official training set by a fixed seed, so it is the
    same on every run. Use it for early stopping and model selection; the test split is for the
    final report only and must never be used to choose a model or hyper-parameter.
    """
    info = _lookup(name)
    if info.loader is not None:
        return info.loader()
    root = resolve_data_dir(data_dir)
    if info.kind == "idx":
        directory = root / info.name
        missing = missing_idx_files(directory)
        if missing and not download:
            raise _missing_error(info.name, directory, [f"{s}[.gz]" for s in missing], data_dir)
        if missing:
            _download_idx(info.name, directory, missing, None, progress)
        return load_idx_splits(directory, info.name, n_val=N_VAL)
    directory, missing = find_batches_dir(root)
    if missing and not download:
        note = f" (also looked in {root / BATCHES_DIRNAME})"
        if (root / "cifar10" / ARCHIVE_NAME).is_file():
            note += f"; {ARCHIVE_NAME} is there but not extracted: --download extracts it"
        raise _missing_error(info.name, directory, missing, data_dir, note)
    if missing:
        directory = _prepare_cifar(root, None, progress)
    return load_cifar10_splits(directory, n_val=N_VAL)


def download_dataset(
    name: str,
    data_dir: PathArg = None,
    mirrors: Sequence[str] | None = None,
    progress: bool = False,
) -> Path:
    """Download and verify dataset ``name`` into the data directory; return its folder.

    Files already present are verified, not downloaded again (a corrupt one raises
    :class:`DataError`). ``mirrors`` (base URLs, tried in order) overrides ``$NGRAD_MIRROR``, which
    overrides the official mirrors. Each file goes to ``<file>.part`` first (resumed if a previous
    attempt was cut) and is renamed into place only once its checksum matches. Embedded datasets
    (``digits``, ``mnist1d``) need nothing: the data directory is returned untouched.
    """
    info = _lookup(name)
    root = resolve_data_dir(data_dir)
    if info.kind == "embedded":
        return root
    if info.kind == "cifar":
        return _prepare_cifar(root, mirrors, progress)
    directory = root / info.name
    missing = []
    for stem in IDX_FILES:
        path = find_idx_file(directory, stem)
        if path is None:
            missing.append(stem)
            continue
        remote = _idx_remote(info.name, stem)
        check = RemoteFile(path.name, remote.algorithm, remote.digest, path.suffix == ".gz")
        problem = check.problem(path)
        if problem:
            raise DataError(
                f"{info.name}: {path} exists but is corrupt ({problem}); delete it and rerun"
            )
    if missing:
        _download_idx(info.name, directory, missing, mirrors, progress)
    return directory
