"""Stimuli x features arrays as the similarity measures take them: float64 matrices, finite, with
the same stimuli in the same order (:mod:`ngrad.analysis.similarity`,
:mod:`ngrad.analysis.predictivity`)."""

from __future__ import annotations

import numpy as np

__all__ = ["DegenerateRepresentationError", "as_matrix", "matched_pair"]


class DegenerateRepresentationError(ValueError):
    """A representation without the variance a measure needs (e.g. a layer of dead units)."""


def as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a float64 stimuli x features matrix (trailing dimensions flattened)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim < 2:
        raise ValueError(f"{name} must be stimuli x features, got shape {array.shape}")
    array = array.reshape(array.shape[0], -1)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def matched_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two representations of the same stimuli, as matrices with as many rows."""
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} stimuli and y has {y.shape[0]}: they must match")
    return x, y
