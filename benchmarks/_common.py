"""Shared helpers of the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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


def saved_summary(out: Path) -> dict[str, Any] | None:
    """The summary.json of the run in ``out``, or None where it has none."""
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_to(
    out: Path, epochs: int, settings: Callable[[], dict[str, Any]], progress: bool = False
) -> dict[str, Any]:
    """The summary of the run in ``out`` after ``epochs`` epochs: a saved run is continued
    (``ngrad train --resume``, extended to ``epochs``), else a new one starts from
    ``settings()``. A run that diverged is not retrained: its summary keeps its best epoch
    before the NaN."""
    from ngrad.errors import NgradError
    from ngrad.train.config import make_config
    from ngrad.train.loop import run_training
    from ngrad.train.runs import load_run_config

    summary = saved_summary(out)
    if summary is not None and summary.get("status") == "diverged":
        return summary
    try:
        if (out / "checkpoint.pt").is_file() and (out / "config.json").is_file():
            config = load_run_config(out)
            if config.epochs < epochs:
                values = json.loads((out / "config.json").read_text()) | {"epochs": epochs}
                config = make_config(values)
            return run_training(config, out, resume=True, progress=progress).summary
        config = make_config(settings())
        return run_training(config, out, overwrite=True, progress=progress).summary
    except NgradError:
        summary = saved_summary(out)
        if summary is None or summary.get("status") != "diverged":
            raise
        return summary
