"""The picture of ``ngrad inspect``: one neuron's compartments, step by step, over a forward and a
teaching phase (:func:`ngrad.analysis.neuron.neuron_trace` gathers them)."""

from __future__ import annotations

from pathlib import Path

from ngrad.errors import NgradError

__all__ = [
    "COMPARTMENT_COLOURS",
    "PHASE_COLOURS",
    "draw_compartments",
    "draw_error_channel",
    "image_formats",
]

PHASE_COLOURS = {"forward": "#f2f2f2", "teaching": "#fde9d9", "target": "#fde9d9"}
COMPARTMENT_COLOURS = {
    "basal": "#1f77b4",
    "apical": "#d62728",
    "soma": "#2ca02c",
    "interneuron": "#9467bd",
    "burst_probability": "#ff7f0e",
    "event_rate": "#8c564b",
}


def image_formats() -> dict[str, str]:
    """File extensions (without the dot) matplotlib can write here, with their descriptions.
    PGF needs a LaTeX installation, so it is offered only when one is found."""
    import shutil

    from matplotlib.backend_bases import FigureCanvasBase

    formats = dict(FigureCanvasBase.get_supported_filetypes())
    if not any(shutil.which(tex) for tex in ("xelatex", "lualatex", "pdflatex")):
        formats.pop("pgf", None)
    return formats


def draw_compartments(
    series: dict[str, list[float]], phases: tuple[tuple[str, int], ...], title: str, out: Path
) -> Path:
    """One panel per compartment, steps on the x axis, the phases shaded and named; written to
    ``out`` in the format its extension names. Returns ``out``."""
    from matplotlib.ticker import MaxNLocator

    from ngrad.plots.training import plt

    names = list(series)
    figure, axes = plt.subplots(
        len(names), 1, figsize=(7.5, 1.6 + 1.5 * len(names)), sharex=True, squeeze=False
    )
    steps = sum(count for _, count in phases)
    for axis, name in zip(axes[:, 0], names, strict=True):
        values = series[name]
        axis.step(
            range(steps + 1),
            [*values, values[-1]],
            where="post",
            lw=1.8,
            color=COMPARTMENT_COLOURS.get(name, "black"),
        )
        start = 0
        for phase, count in phases:
            axis.axvspan(start, start + count, color=PHASE_COLOURS.get(phase, "#eeeeee"), zorder=0)
            start += count
        axis.axhline(0.0, color="grey", lw=0.6, ls=":")
        axis.set_ylabel(name.replace("_", " "))
    start = 0
    for phase, count in phases:
        axes[0, 0].text(
            start + count / 2,
            1.02,
            f"{phase} phase",
            ha="center",
            va="bottom",
            transform=axes[0, 0].get_xaxis_transform(),
            fontsize=9,
        )
        start += count
    axes[-1, 0].set_xlabel("step")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=110, format=out.suffix[1:].lower() or None)
    except OSError as error:
        raise NgradError(f"cannot write {str(out)!r}: {error.strerror or error}") from None
    except (ValueError, RuntimeError) as error:  # a format this installation cannot write
        raise NgradError(f"cannot write {str(out)!r}: {error}") from None
    finally:
        plt.close(figure)
    return out


def draw_error_channel(channel, out: Path) -> Path:
    """One scatter per hidden layer (the teacher's deflection of the error compartment against
    BP's -dL/dh, per unit and sample) and, for the microcircuit, the apical residue ratio by
    epoch; ``channel`` an :class:`ngrad.analysis.neuron.ErrorChannel`. Returns ``out``."""
    import numpy as np

    from ngrad.plots.training import plt

    panels = len(channel.deflection) + (1 if channel.residue else 0)
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), squeeze=False)
    colour = COMPARTMENT_COLOURS.get(channel.compartment, "black")
    for index, (moved, wanted) in enumerate(zip(channel.deflection, channel.bp_error, strict=True)):
        axis = axes[0, index]
        axis.scatter(wanted, moved, s=3, color=colour, alpha=0.5)
        correlation = np.corrcoef(wanted, moved)[0, 1] if len(moved) > 1 else float("nan")
        axis.axhline(0.0, color="grey", lw=0.6)
        axis.axvline(0.0, color="grey", lw=0.6)
        axis.set(
            xlabel=f"BP's -dL/dh, layer {index + 1}",
            ylabel=f"{channel.compartment.replace('_', ' ')} deflection",
            title=f"layer {index + 1} (r = {correlation:.2f})",
        )
    if channel.residue:
        axis = axes[0, -1]
        epochs, values = zip(*channel.residue, strict=True)
        axis.semilogy(epochs, values, "o-")
        axis.axhline(1.0, color="grey", lw=0.6)
        axis.set(xlabel="epoch", title="apical residue / teaching deflection")
    figure.suptitle(channel.title, fontsize=10)
    figure.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=110, format=out.suffix[1:].lower() or None)
    except (OSError, ValueError, RuntimeError) as error:
        raise NgradError(f"cannot write {str(out)!r}: {error}") from None
    finally:
        plt.close(figure)
    return out
