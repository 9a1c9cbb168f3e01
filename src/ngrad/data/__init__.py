"""Datasets for ngrad: fixed train/validation/test splits as tensors, verified downloads.

>>> from ngrad.data import load_dataset
>>> splits = load_dataset("digits")
>>> splits.sizes
(1197, 300, 300)

Datasets: ``digits`` and ``mnist1d`` (no files needed), ``mnist``, ``fashion-mnist`` and
``cifar10`` (files in the data directory: ``$NGRAD_DATA`` or ``~/.cache/ngrad/data``; fetch them
with ``download=True``). Every problem with a dataset raises :class:`DataError`.

Training streams batches from the splits (:mod:`ngrad.data.loading`, a ``DataLoader``), with
optional input normalisation and CIFAR-style augmentation (:mod:`ngrad.data.transforms`).
"""

from ngrad.data.catalog import available_datasets, download_dataset, load_dataset
from ngrad.data.errors import DataError
from ngrad.data.paths import resolve_data_dir
from ngrad.data.splits import DataSplits, fixed_split

__all__ = [
    "DataError",
    "DataSplits",
    "available_datasets",
    "download_dataset",
    "fixed_split",
    "load_dataset",
    "resolve_data_dir",
]
