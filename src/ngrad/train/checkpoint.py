"""Checkpoints: state_dict-based, written atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so loading it never
unpickles arbitrary objects. It is first written to a temporary file in the same directory, flushed
to disk, then renamed over the old one: an interrupted write never leaves a half checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ngrad.errors import NgradError
from ngrad.numeric import to_json

__all__ = ["atomic_write_text", "load_checkpoint", "save_checkpoint", "to_json"]


def _atomic_replace(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save ``state`` to ``path`` atomically."""
    _atomic_replace(Path(path), lambda stream: torch.save(state, stream))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); NgradError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise NgradError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file or disallowed content
        raise NgradError(f"checkpoint {str(path)!r} cannot be loaded safely: {error}") from None
    if not isinstance(state, dict):
        raise NgradError(f"checkpoint {str(path)!r} does not hold a state dictionary")
    return state


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_replace(Path(path), lambda stream: stream.write(text.encode()))
