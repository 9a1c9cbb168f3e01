"""Run files written safely: atomic rewrites, durable appends, checkpoints loaded without pickle.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, loaded with
``torch.load(weights_only=True)``, so loading it never unpickles arbitrary objects. Every rewrite
(checkpoint, config, summary, results) goes to a temporary file in the same directory, is flushed
to disk, then renamed over the old file: an interrupted write never leaves half a file. Files get
the mode the user's umask allows (0644 under the usual 022), like any other file the user creates.

A failed write names its cause (``No space left on device``, ``Disk quota exceeded``, ...) in a
:class:`StorageError` instead of torch's internal messages.

:func:`random_state` and :func:`restore_random_state` carry the random-number state of the CPU and
of every CUDA device through a checkpoint, so a resumed run draws what the uninterrupted run would
have drawn, on a GPU too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ngrad.errors import NgradError
from ngrad.numeric import to_json

__all__ = [
    "StorageError",
    "append_line",
    "atomic_write_text",
    "load_checkpoint",
    "random_state",
    "restore_random_state",
    "save_array",
    "save_checkpoint",
    "to_json",
]


class StorageError(NgradError):
    """A run file could not be written (``reason``: the operating system's words, e.g. "No space
    left on device"; ``hint``: what to do about it)."""

    def __init__(self, path: Path, reason: str, hint: str | None = None) -> None:
        super().__init__(f"cannot write {str(path)!r}: {reason}" + (f"; {hint}" if hint else ""))
        self.path, self.reason = path, reason


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return error.strerror or os.strerror(error.errno)
    return str(error) or type(error).__name__


def _new_file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what the umask allows for a new file."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


class _Recorder:
    """A file wrapper that keeps the operating system's error: torch.save turns a failed write
    into "unexpected pos", and this keeps the real reason (e.g. ENOSPC)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.error = stream, None

    def write(self, data) -> int:
        try:
            return self.stream.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.stream.flush()


def _fsync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(handle)


def _atomic_replace(path: Path, write: Callable[[_Recorder], None]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _new_file_mode(path)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise StorageError(path, _reason(error)) from None
    recorder = None
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            recorder = _Recorder(stream)
            write(recorder)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).replace(path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError | RuntimeError):
            cause = recorder.error if recorder is not None and recorder.error else error
            raise StorageError(path, _reason(cause)) from None
        raise
    _fsync_directory(path.parent)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save ``state`` to ``path`` atomically (StorageError names a failed write)."""
    _atomic_replace(Path(path), lambda stream: torch.save(state, stream))


def save_array(path: str | Path, array: Any) -> None:
    """numpy.save ``array`` to ``path`` atomically (StorageError names a failed write)."""
    import numpy as np

    _atomic_replace(Path(path), lambda stream: np.save(stream, array, allow_pickle=False))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (StorageError names a failed write)."""
    _atomic_replace(Path(path), lambda stream: stream.write(text.encode()))


def append_line(path: str | Path, text: str) -> None:
    """Append one line to ``path`` and flush it to disk. If the write fails (a full disk), the
    file is cut back to its previous length where possible, so no half line stays behind."""
    path = Path(path)
    line = (text.rstrip("\n") + "\n").encode()
    try:
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise StorageError(path, _reason(error)) from None
    try:
        size = os.fstat(handle).st_size
        try:
            written = os.write(handle, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(handle)
        except OSError as error:
            with contextlib.suppress(OSError):  # else --resume drops the cut last line
                os.ftruncate(handle, size)
            raise StorageError(path, _reason(error)) from None
    finally:
        os.close(handle)


def _damage(path: Path, error: BaseException) -> str:
    """What is wrong with a checkpoint that torch could not load, in a user's words."""
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(4)
    except OSError as read_error:
        return f"cannot be read ({_reason(read_error)})"
    if size == 0:
        return "is empty (the disk may have been full when it was written)"
    if head != b"PK\x03\x04":
        return "is not a checkpoint (not a torch zip archive)"
    if not zipfile.is_zipfile(path):
        return "is truncated (its end is missing; the copy or the write was cut short)"
    if isinstance(error, pickle.UnpicklingError):
        return (
            "holds objects other than tensors and plain data, which ngrad never writes; "
            "it was refused unread"
        )
    return "is damaged (its contents cannot be read back)"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); NgradError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise NgradError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file or disallowed content: never retry unsafely
        raise NgradError(f"checkpoint {str(path)!r} {_damage(path, error)}") from None
    if not isinstance(state, dict):
        raise NgradError(f"checkpoint {str(path)!r} does not hold a state dictionary")
    return state


def random_state() -> dict[str, Any]:
    """The global random-number state: ``torch_rng`` (the CPU's) and, once CUDA is in use,
    ``cuda_rng`` (a list: each CUDA device's, in device order), all CPU byte tensors."""
    state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Set what :func:`random_state` saved (tensors on any device: a checkpoint loaded with
    ``map_location="cuda"`` has them there). CUDA states are set for the devices present; a run
    resumed without CUDA has none to set."""
    torch.set_rng_state(state["torch_rng"].cpu())
    saved = state.get("cuda_rng") or []
    if saved and torch.cuda.is_available():
        for index, device_state in enumerate(saved[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), index)
