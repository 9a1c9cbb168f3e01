"""The one check for sizes a model is built from (widths, channels, kernel sizes)."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_size"]


def check_size(value: Any, what: str) -> int:
    """``value`` as an int if it is a positive integer (a Python or NumPy int; no bool or float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)
