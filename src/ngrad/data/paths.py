"""Where datasets live on disk: explicit argument > ``NGRAD_DATA`` > ``~/.cache/ngrad/data``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "DEFAULT_DATA_DIR", "describe_data_dir", "resolve_data_dir"]

DATA_DIR_ENV = "NGRAD_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/ngrad/data")


def _resolve(data_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "given explicitly"
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser(), f"from ${DATA_DIR_ENV}"
    return DEFAULT_DATA_DIR.expanduser(), f"the default; ${DATA_DIR_ENV} is not set"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory: ``data_dir`` if given, else ``$NGRAD_DATA``, else the default.

    The default is ``~/.cache/ngrad/data``. Nothing is created: loading must work from a read-only
    directory, and only downloads create folders.
    """
    return _resolve(data_dir)[0]


def describe_data_dir(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Return ``"<path> (<where the path came from>)"`` for error messages."""
    path, source = _resolve(data_dir)
    return f"{path} ({source})"
