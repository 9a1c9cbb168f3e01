"""PNG figures of a tuning study: the optimisation history and the parameter importances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_history", "plot_importances"]


def plot_history(trials: Sequence[Any], path: Path, title: str) -> Path:
    """Each trial's best validation accuracy by trial number (pruned trials at their last
    reported epoch, as crosses) and the best so far; ``trials`` are Optuna FrozenTrials."""
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    complete = [(t.number, t.value) for t in trials if t.state.name == "COMPLETE"]
    pruned = [
        (t.number, max(t.intermediate_values.values()))
        for t in trials
        if t.state.name == "PRUNED" and t.intermediate_values
    ]
    if complete:
        axis.scatter(*zip(*complete, strict=True), s=18, label="completed", color="tab:blue")
        best, steps = -1.0, []
        for number, value in sorted(complete):
            best = max(best, value)
            steps.append((number, best))
        last = max(number for number, _ in complete + pruned)
        steps.append((last, best))  # the best stands until the last finished trial
        axis.step(*zip(*steps, strict=True), where="post", color="tab:orange", label="best so far")
    if pruned:
        axis.scatter(*zip(*pruned, strict=True), marker="x", s=18, color="grey", label="pruned")
    if not complete and not pruned:
        axis.text(0.5, 0.5, "no finished trial yet", ha="center", transform=axis.transAxes)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("trial")
    axis.set_ylabel("best validation accuracy")
    axis.set_title(f"Optimisation history: {title}")
    if complete or pruned:
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_importances(importances: Mapping[str, float], path: Path, title: str) -> Path:
    """Horizontal bars: each searched parameter's share of the variance of validation accuracy."""
    names = list(importances)[::-1]
    figure, axis = plt.subplots(figsize=(6.4, 0.5 + 0.4 * max(len(names), 2)))
    axis.barh(names, [importances[name] for name in names], color="tab:blue")
    axis.set_xlabel("importance (fANOVA share of the variance)")
    axis.set_xlim(0, 1)
    axis.set_title(f"Parameter importances: {title}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
