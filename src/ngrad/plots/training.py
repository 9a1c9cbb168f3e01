"""PNG figures of runs and comparisons (matplotlib, non-interactive Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_comparison", "plot_run"]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(line["epoch"], line[key]) for line in history if line.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _layer_series(history, key: str, field: str | None = None):
    """{layer l = 1..L: (epochs, values)} for per-layer lists (or dicts with ``field``)."""
    layers: dict[int, tuple[list[int], list[float]]] = {}
    for line in history:
        for position, item in enumerate(line.get(key) or []):
            layer = item["layer"] if field else position + 1
            value = item[field] if field else item
            if value is None:
                continue
            epochs, values = layers.setdefault(layer, ([], []))
            epochs.append(line["epoch"])
            values.append(value)
    return layers


def _legend(axis, **options) -> None:
    if axis.get_legend_handles_labels()[0]:
        axis.legend(**options)


def _save(figure, path: Path) -> None:
    for axis in figure.axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_run(history: Sequence[Mapping[str, Any]], out_dir: Path, title: str) -> list[Path]:
    """learning_curves.png, angles.png and (with feedback weights) weight_alignment.png."""
    written = []
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split in ("train", "val", "test"):
        loss_axis.plot(*_series(history, f"{split}_loss"), label=split)
        accuracy_axis.plot(*_series(history, f"{split}_accuracy"), label=split)
    loss_axis.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    _legend(loss_axis)
    _legend(accuracy_axis)
    _save(figure, out_dir / "learning_curves.png")
    written.append(out_dir / "learning_curves.png")

    angles = _layer_series(history, "angle_to_bp_deg")
    error_angles = _layer_series(history, "error_angle_to_bp_deg")
    if angles:
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for layer, (epochs, values) in sorted(angles.items()):
            axes[0].plot(epochs, values, label=f"layer {layer}")
        for layer, (epochs, values) in sorted(error_angles.items()):
            axes[1].plot(epochs, values, label=f"layer {layer}")
        axes[0].set(xlabel="epoch", ylabel="degrees", title="weight update vs BP gradient")
        axes[1].set(xlabel="epoch", ylabel="degrees", title="error signal vs BP (mean per sample)")
        for axis in axes:
            axis.axhline(90, color="grey", lw=0.8, ls="--")
            _legend(axis, fontsize=8)
        _save(figure, out_dir / "angles.png")
        written.append(out_dir / "angles.png")

    written += _plot_rule_diagnostics(history, out_dir, title)

    alignment = _layer_series(history, "weight_alignment", "angle_deg")
    if alignment:
        figure, axis = plt.subplots(figsize=(5.5, 3.8))
        for layer, (epochs, values) in sorted(alignment.items()):
            axis.plot(epochs, values, label=f"layer {layer}")
        axis.set(xlabel="epoch", ylabel="degrees", title="angle between B^T and W")
        _legend(axis, fontsize=8)
        _save(figure, out_dir / "weight_alignment.png")
        written.append(out_dir / "weight_alignment.png")
    return written


def _plot_rule_diagnostics(history, out_dir: Path, title: str) -> list[Path]:
    """rule_diagnostics.png (``*_by_layer`` over epochs) and relaxation.png (``*_by_step`` at the
    first and last epochs) from the rule-specific diagnostics the rule reports."""
    entries = [line.get("rule_diagnostics") or {} for line in history]
    keys = list(dict.fromkeys(key for entry in entries for key in entry))
    written = []
    by_layer = [key for key in keys if key.endswith("_by_layer")]
    if by_layer:
        figure, axes = plt.subplots(
            1, len(by_layer), figsize=(4.6 * len(by_layer), 3.8), squeeze=False
        )
        for axis, key in zip(axes[0], by_layer, strict=True):
            wrapped = [
                {"epoch": line["epoch"], key: (line.get("rule_diagnostics") or {}).get(key)}
                for line in history
            ]
            for layer, (epochs, values) in sorted(_layer_series(wrapped, key).items()):
                axis.plot(epochs, values, label=f"layer {layer}")
            axis.set(xlabel="epoch", title=key.removesuffix("_by_layer").replace("_", " "))
            _legend(axis, fontsize=8)
        figure.suptitle(title)
        _save(figure, out_dir / "rule_diagnostics.png")
        written.append(out_dir / "rule_diagnostics.png")
    by_step = [key for key in keys if key.endswith("_by_step")]
    if by_step:
        figure, axes = plt.subplots(
            1, len(by_step), figsize=(4.6 * len(by_step), 3.8), squeeze=False
        )
        for axis, key in zip(axes[0], by_step, strict=True):
            shown = [line for line in history if (line.get("rule_diagnostics") or {}).get(key)]
            for line in {id(x): x for x in (shown[:1] + shown[-1:])}.values():
                values = line["rule_diagnostics"][key]
                axis.plot(range(1, len(values) + 1), values, label=f"epoch {line['epoch']}")
            axis.set(xlabel="relaxation step", title=key.removesuffix("_by_step").replace("_", " "))
            _legend(axis, fontsize=8)
        figure.suptitle(title)
        _save(figure, out_dir / "relaxation.png")
        written.append(out_dir / "relaxation.png")
    return written


def plot_comparison(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], out_dir: Path, dataset: str
) -> list[Path]:
    """accuracy.png (final test accuracy per rule with intervals over seeds) and angles.png
    (angle to BP per layer over training); ``histories[rule]`` holds one metrics history per
    seed. The comparison's full set of figures, with titles naming the model and budget, is
    :func:`ngrad.plots.comparison.plot_comparison`."""
    from ngrad.plots.comparison import plot_comparison as plot_figures

    return plot_figures(histories, out_dir, dataset, figures=("accuracy.png", "angles.png"))
