"""Neural recordings a user brings for `ngrad similarity --neural FILE`: loading and validation.

The file holds three arrays (the names are the keys):

- ``stimuli``: the images shown, stimuli x (the model's input shape, or its flattening), in the
  same preprocessing as the dataset the runs were trained on (``load_dataset(name).test_x``);
- ``responses``: stimuli x sites x repetitions (e.g. trial-wise firing rates of each recording
  site), at least 2 repetitions for the split-half ceiling; finite everywhere (drop or impute
  missing trials before saving);
- ``object`` (optional; ``objects`` is accepted too): one label per stimulus (integers or
  strings), used to stratify the cross-validation splits.

Formats: ``.npz`` (``numpy.savez(path, stimuli=..., responses=..., object=...)``; no pickled
objects), and NetCDF (``.nc``, ``.nc4``, ``.cdf``, ``.netcdf``) with variables of those names:
NetCDF-3 files are read with SciPy, NetCDF-4 (HDF5) files need ``pip install xarray netCDF4``.
Every problem raises :class:`NeuralDataError` naming the file and what is wrong.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ngrad.errors import NgradError

__all__ = ["NeuralDataError", "NeuralRecording", "load_neural_data", "validate_recording"]

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")
LABEL_KEYS = ("object", "objects")


class NeuralDataError(NgradError):
    """A neural data file that is missing, unreadable or malformed."""


@dataclass(frozen=True, eq=False)
class NeuralRecording:
    """Validated recording: ``stimuli`` (float32, stimuli x ...), ``responses`` (float64,
    stimuli x sites x repetitions) and ``objects`` (one label per stimulus, or None)."""

    stimuli: np.ndarray
    responses: np.ndarray
    objects: np.ndarray | None
    source: str

    @property
    def n_stimuli(self) -> int:
        return self.responses.shape[0]

    @property
    def n_sites(self) -> int:
        return self.responses.shape[1]

    @property
    def n_repetitions(self) -> int:
        return self.responses.shape[2]


def _numeric(array: np.ndarray, name: str, source: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise NeuralDataError(f"{source}: {name!r} must be numeric, got dtype {array.dtype}")
    values = array.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NeuralDataError(
            f"{source}: {name!r} has {int(bad.sum())} NaN or infinite value(s), first at index "
            f"{first}; drop or impute them before saving"
        )
    return values


def _labels(labels: np.ndarray, n_stimuli: int, source: str) -> np.ndarray:
    if labels.dtype.kind == "S" and labels.ndim == 2:  # NetCDF-3 character arrays
        labels = np.array([b"".join(row).decode().rstrip("\x00 ") for row in labels])
    if labels.dtype.kind not in "biuUS":
        raise NeuralDataError(
            f"{source}: object labels must be integers or strings, got dtype {labels.dtype}"
        )
    if labels.shape != (n_stimuli,):
        raise NeuralDataError(
            f"{source}: 'object' must hold one label per stimulus ({n_stimuli}), got shape "
            f"{labels.shape}"
        )
    return labels


def validate_recording(
    stimuli: np.ndarray,
    responses: np.ndarray,
    objects: np.ndarray | None = None,
    source: str = "recording",
) -> NeuralRecording:
    """Check shapes, values and labels of a recording given as arrays (see the module doc)."""
    from ngrad.analysis.predictivity import stimulus_splits

    stimuli, responses = np.asarray(stimuli), np.asarray(responses)
    if stimuli.ndim < 2:
        raise NeuralDataError(
            f"{source}: 'stimuli' must be stimuli x image, got shape {stimuli.shape}"
        )
    if responses.ndim != 3:
        hint = " (one repetition? keep the trials: the ceiling needs them)" * (responses.ndim == 2)
        raise NeuralDataError(
            f"{source}: 'responses' must be stimuli x sites x repetitions, got shape "
            f"{responses.shape}{hint}"
        )
    if responses.shape[0] != stimuli.shape[0]:
        raise NeuralDataError(
            f"{source}: {stimuli.shape[0]} stimuli but responses to {responses.shape[0]}"
        )
    if responses.shape[1] < 1:
        raise NeuralDataError(f"{source}: 'responses' has no sites")
    if responses.shape[2] < 2:
        raise NeuralDataError(
            f"{source}: {responses.shape[2]} repetition(s) per stimulus; the split-half "
            "ceiling needs at least 2"
        )
    stimuli = _numeric(stimuli, "stimuli", source).astype(np.float32)
    responses = _numeric(responses, "responses", source)
    if not np.ptp(responses.mean(axis=2), axis=0).any():
        raise NeuralDataError(
            f"{source}: 'responses' are the same for every stimulus at every site, so there is "
            "nothing to predict"
        )
    labels = None if objects is None else _labels(np.asarray(objects), len(stimuli), source)
    try:
        stimulus_splits(len(stimuli), labels)
    except ValueError as error:
        raise NeuralDataError(f"{source}: {error}") from None
    return NeuralRecording(stimuli, responses, labels, source)


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB" if size >= 2**20 else f"{size:.0f} bytes"


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _check_declared_sizes(path: Path) -> None:
    """Compare each array's declared shape and dtype with the bytes the archive holds for it,
    before numpy allocates what a header declares (a damaged header can declare terabytes)."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as stream:
                if stream.read(6) != b"\x93NUMPY":
                    continue  # not an array: numpy reports it
                version = tuple(stream.read(2))
                reader = _HEADER_READERS.get(version)
                if reader is None:
                    continue
                shape, _, dtype = reader(stream)
                header = stream.tell()
            if dtype.hasobject:
                continue  # refused as pickled objects when read
            declared = math.prod(shape) * dtype.itemsize
            held = info.file_size - header
            name = info.filename.removesuffix(".npy")
            if declared != held:
                raise NeuralDataError(
                    f"{path}: array {name!r} declares shape {shape} of {dtype} "
                    f"({_gib(declared)}) but the archive holds {_gib(held)} for it; the file is "
                    "damaged (save it again with numpy.savez)"
                )
            total += declared
    memory = _memory_bytes()
    if memory is not None and total > memory:
        raise NeuralDataError(
            f"{path}: its arrays need {_gib(total)}, more than this machine's memory "
            f"({_gib(memory)})"
        )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as stream:
        if stream.read(4) != b"PK\x03\x04":
            raise NeuralDataError(f"{path}: not a readable .npz archive (no zip signature)")
    try:
        _check_declared_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "pickle" in str(error):
            raise NeuralDataError(
                f"{path}: holds pickled objects; save labels as a string or integer array"
            ) from None
        raise NeuralDataError(f"{path}: not a readable .npz archive: {error}") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        # damaged zip structure or compressed data
        raise NeuralDataError(f"{path}: not a readable .npz archive: {error}") from None
    except (NotImplementedError, RuntimeError, MemoryError) as error:  # compression, encryption
        reason = str(error) or type(error).__name__
        raise NeuralDataError(f"{path}: not a readable .npz archive: {reason}") from None


def _read_netcdf(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as stream:
        magic = stream.read(4)
    if magic[:3] == b"CDF":  # NetCDF-3 (classic or 64-bit offset): SciPy reads it
        from scipy.io import netcdf_file

        try:
            with netcdf_file(path, "r", mmap=False) as dataset:
                return {name: np.array(var[...]) for name, var in dataset.variables.items()}
        except (OSError, TypeError, ValueError, MemoryError) as error:
            raise NeuralDataError(f"{path}: not a readable NetCDF-3 file: {error}") from None
    try:
        import xarray
    except ImportError:
        raise NeuralDataError(
            f"{path}: reading NetCDF-4 needs the xarray and netCDF4 packages "
            "(pip install xarray netCDF4), or save the arrays as .npz"
        ) from None
    try:
        with xarray.open_dataset(path) as dataset:
            return {str(name): np.asarray(dataset[name].values) for name in dataset.variables}
    except (OSError, ValueError) as error:
        raise NeuralDataError(f"{path}: not a readable NetCDF file: {error}") from None


def load_neural_data(path: str | Path) -> NeuralRecording:
    """Read and validate a recording file (.npz or NetCDF; see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise NeuralDataError(f"neural data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _read_npz(path)
    elif suffix in NETCDF_SUFFIXES:
        arrays = _read_netcdf(path)
    else:
        raise NeuralDataError(
            f"{path}: unknown format {suffix or '(no suffix)'!r}; use .npz or NetCDF "
            f"({', '.join(NETCDF_SUFFIXES)})"
        )
    missing = [key for key in ("stimuli", "responses") if key not in arrays]
    if missing:
        raise NeuralDataError(
            f"{path}: missing {', '.join(map(repr, missing))} (found: "
            f"{', '.join(sorted(arrays)) or 'nothing'})"
        )
    present = [key for key in LABEL_KEYS if key in arrays]
    if len(present) > 1:
        raise NeuralDataError(f"{path}: give object labels once, as 'object' or 'objects'")
    labels = arrays[present[0]] if present else None
    return validate_recording(arrays["stimuli"], arrays["responses"], labels, str(path))
