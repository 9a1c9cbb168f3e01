"""``ngrad inspect``: one neuron's compartments over a forward and a teaching phase (the review's
Figure 4, drawn from a trained network).

    ngrad inspect RUN_DIR [--layer L] [--neuron I] [--sample K] --out FILE.png

Loads the run's best-validation state (:func:`ngrad.train.runs.load_run`), presents test image
K with its label as the teacher, and draws every compartment the rule simulates for neuron I of
layer L
(1..L as in the paper; default: the last hidden layer) at every step: basal, apical and somatic
potentials (and the interneuron that predicts the unit of layer L + 1 with the same index, for the
microcircuit; burst probability and event rate for burstprop). Works for every rule with a
``compartment_trace(inputs, targets)`` method.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ngrad.errors import ConfigError, NgradError

__all__ = ["command_inspect", "draw_compartments", "inspect_neuron"]

PHASE_COLOURS = {"forward": "#f2f2f2", "teaching": "#fde9d9", "target": "#fde9d9"}
COMPARTMENT_COLOURS = {
    "basal": "#1f77b4",
    "apical": "#d62728",
    "soma": "#2ca02c",
    "interneuron": "#9467bd",
    "burst_probability": "#ff7f0e",
    "event_rate": "#8c564b",
}


def inspect_neuron(
    run_dir: str | Path,
    out: str | Path,
    layer: int | None = None,
    neuron: int = 0,
    sample: int = 0,
) -> Path:
    """Draw the compartments of ``neuron`` in ``layer`` for test sample ``sample``; returns the
    PNG's path. Bad input raises ConfigError (or NgradError for an unwritable file)."""
    import torch

    from ngrad.train.runs import load_run

    run = load_run(run_dir)
    rule = run.rule
    if not hasattr(rule, "compartment_trace"):
        raise ConfigError(
            f"rule {run.config.rule!r} has no compartments to inspect "
            "(rules with compartments: microcircuit, burstprop, segregated)"
        )
    count = len(rule.network.layers)
    layer = count - 1 if layer is None else layer
    if not 1 <= layer <= count:
        raise ConfigError(f"--layer must be between 1 and {count}, got {layer}")
    width = rule.network.layers[layer - 1].weight.shape[0]
    if not 0 <= neuron < width:
        raise ConfigError(
            f"--neuron must be between 0 and {width - 1} (layer {layer}), got {neuron}"
        )
    samples = run.data.test_x.shape[0]
    if not 0 <= sample < samples:
        raise ConfigError(f"--sample must be between 0 and {samples - 1}, got {sample}")
    dtype = rule.network.layers[0].weight.dtype
    inputs = run.data.test_x[sample : sample + 1].flatten(1).to(dtype)
    targets = run.data.test_y[sample : sample + 1].long()
    with torch.no_grad():
        trace = rule.compartment_trace(inputs, targets)
        predicted = int(rule(inputs).argmax(dim=1))
    series = {
        name: values[:, 0, neuron].tolist() for name, values in trace.layers[layer - 1].items()
    }
    title = (
        f"{run.config.rule}: layer {layer}, neuron {neuron}; test sample {sample} "
        f"(label {int(targets)}, predicted {predicted})"
    )
    return draw_compartments(series, trace.phases, title, Path(out))


def draw_compartments(
    series: dict[str, list[float]], phases: tuple[tuple[str, int], ...], title: str, out: Path
) -> Path:
    """One panel per compartment, steps on the x axis, the phases shaded and named."""
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
        figure.savefig(out, dpi=110)
    except OSError as error:
        raise NgradError(f"cannot write {str(out)!r}: {error.strerror or error}") from None
    finally:
        plt.close(figure)
    return out


def command_inspect(args: argparse.Namespace) -> int:
    path = inspect_neuron(args.run_dir, args.out, args.layer, args.neuron, args.sample)
    print(f"compartments of layer {args.layer or 'last hidden'}, neuron {args.neuron}: {path}")
    return 0
