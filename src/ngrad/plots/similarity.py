"""The two pictures of ``ngrad similarity``: a layer x rule heat map of each measure, and test
accuracy against similarity across runs (the analogue of the review's accuracy-vs-IT panel).

They draw the results of :func:`ngrad.analysis.similarity_runs.compare_runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ngrad.analysis.report import LABELS, MEASURES, format_number, measure_value
from ngrad.plots.training import plt

__all__ = ["plot_accuracy_vs_similarity", "plot_heatmap"]


def plot_heatmap(results: dict[str, Any], path: Path) -> None:
    """Layer x rule heat map of each measure (mean over runs), values written in the cells; each
    panel's colour scale spans the values it shows."""
    rows, layers = results["table"], results["layers"]
    measures = [m for m in MEASURES if rows and m in rows[0]]
    rules = list(dict.fromkeys(row["rule"] for row in rows))
    figure, axes = plt.subplots(  # one panel per measure, stacked: rules run along x
        len(measures),
        1,
        figsize=(2.4 + 0.6 * len(rules), (1.6 + 0.45 * len(layers)) * len(measures)),
        squeeze=False,
    )
    for axis, measure in zip(axes[:, 0], measures, strict=True):
        grid = np.full((len(layers), len(rules)), np.nan)
        for row in rows:
            value = row[measure]["mean"]
            grid[layers.index(row["layer"]), rules.index(row["rule"])] = (
                np.nan if value is None else value
            )
        finite = grid[np.isfinite(grid)]  # the colour scale spans the values shown
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        spread = max(high - low, 0.01)
        image = axis.imshow(grid, vmin=high - spread, vmax=high, cmap="viridis")
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                axis.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if image.norm(value) < 0.6 else "black",
                )
        axis.set_xticks(range(len(rules)), rules, rotation=45, ha="right")
        axis.set_yticks(range(len(layers)), [f"layer {layer}" for layer in layers])
        target = "recording" if measure == "predictivity" else results["reference"]
        axis.set_title(f"{LABELS[measure]} to {target}", fontsize=9)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_accuracy_vs_similarity(results: dict[str, Any], path: Path) -> None:
    """Test accuracy against each measure at the summary layer, one point per run."""
    layer, correlations = results["summary_layer"], results["accuracy_vs_similarity"]
    measures = [m for m in MEASURES if m in correlations] or ["cka"]
    figure, axes = plt.subplots(
        1, len(measures), figsize=(4.6 * len(measures) + 1.2, 4.0), squeeze=False
    )
    rules = list(dict.fromkeys(record["rule"] for record in results["runs"]))
    colours = plt.get_cmap("tab10" if len(rules) <= 10 else "tab20")
    for axis, measure in zip(axes[0], measures, strict=True):
        for index, rule in enumerate(rules):
            points = [
                (measure_value(row, measure), record["test_accuracy"])
                for record in results["runs"]
                if record["rule"] == rule
                for row in record["layers"]
                if row["layer"] == layer
            ]
            points = [p for p in points if p[0] is not None and p[1] is not None]
            if points:
                axis.scatter(*zip(*points, strict=True), label=rule, color=colours(index), s=28)
        found = correlations.get(measure, {}).get("runs", {})
        axis.set_title(
            f"layer {layer}: r = {format_number(found.get('pearson_r'))}, "
            f"rho = {format_number(found.get('spearman_rho'))} (n = {found.get('n', 0)})",
            fontsize=9,
        )
        target = "recording" if measure == "predictivity" else results["reference"]
        axis.set(xlabel=f"{LABELS[measure]} to {target}", ylabel="test accuracy")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    columns = 1 + len(labels) // 13
    if handles:  # one legend beside the panels, clear of the points
        figure.legend(handles, labels, loc="center right", fontsize=7, ncol=columns)
    figure.tight_layout(rect=(0, 0, 1 - 0.09 * columns / len(measures), 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
