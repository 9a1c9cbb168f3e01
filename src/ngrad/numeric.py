"""Small numeric helpers every layer of ngrad uses: angles, RMS, JSON-ready numbers.

A leaf module: it imports nothing from ngrad, so rules, analysis, training and plots can all use
it without an arrow running back up the package.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "angle_degrees",
    "json_ready",
    "mean_angle_degrees",
    "nan_to_none",
    "root_mean_square",
    "rowwise_angles",
    "to_json",
]


def angle_degrees(a: Tensor, b: Tensor) -> float:
    """Angle between two tensors seen as vectors, in degrees (NaN if either is zero)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norm_a, norm_b = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if norm_a == 0 or norm_b == 0:
        return math.nan
    cosine = torch.clamp(torch.dot(a, b) / (norm_a * norm_b), -1.0, 1.0)
    return math.degrees(math.acos(float(cosine)))


def rowwise_angles(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample angles in degrees between matching rows of a and b (zero rows are dropped)."""
    a, b = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    keep = norms > 0
    cosine = torch.clamp((a * b).sum(dim=1)[keep] / norms[keep], -1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosine))


def mean_angle_degrees(a: Tensor, b: Tensor) -> float:
    """Mean over samples of the angle in degrees between matching rows (NaN if all are zero)."""
    angles = rowwise_angles(a, b)
    return float(angles.mean()) if angles.numel() else math.nan


def root_mean_square(tensor: Tensor) -> float:
    """sqrt(mean(x^2)) over every element, in float64."""
    return float(tensor.detach().double().pow(2).mean().sqrt())


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def json_ready(value: Any) -> Any:
    """Tensors become lists, non-finite floats None, recursively through dicts, lists, tuples."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def to_json(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (NaN and infinities become null)."""
    return json.dumps(json_ready(value), indent=indent, allow_nan=False)
