"""Shared helpers of the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> str:
    """NGRAD_DATA if set, else the offline copy beside the repository (../shared/data)."""
    return os.environ.get("NGRAD_DATA", str(REPO.parent / "shared" / "data"))


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def epoch_time(
    rule, optimiser, batches: Iterable, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds for one pass of ``rule.backward`` + ``optimiser.step`` over ``batches``."""
    start = clock()
    for inputs, targets in batches:
        rule.backward(inputs, targets)
        optimiser.step()
    return clock() - start
