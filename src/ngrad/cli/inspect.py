"""``ngrad inspect``: one neuron's compartments over a forward and a teaching phase (the review's
Figure 4, drawn from a trained network).

    ngrad inspect RUN_DIR [--layer L] [--neuron I] [--sample K] --out FILE.png

Loads the run's best-validation state, presents test image K with its label as the teacher, and
draws every compartment the rule simulates for neuron I of layer L (1..L as in the paper; default:
the last hidden layer) at every step: basal, apical and somatic potentials (and the interneuron
that predicts the unit of layer L + 1 with the same index, for the microcircuit; burst probability
and event rate for burstprop). Works for every rule with a ``compartment_trace(inputs, targets)``
method (:mod:`ngrad.analysis.neuron`; the figure: :mod:`ngrad.plots.neuron`).

``--out`` names the image file; its extension picks the format (png, pdf, svg, ... as matplotlib
writes them), a name without one gets ``.png``, and a directory (existing, or written with a
trailing slash) receives ``<rule>-layer<L>-neuron<I>-sample<K>.png``. Beside it, ``<stem>-error``
with the same extension shows the population: for every hidden unit and the first 64 test images,
the teacher's deflection of the error-carrying compartment (apical potential; burst probability
for burstprop) against backprop's -dL/dh, and for the microcircuit the logged apical residue ratio
by epoch. The command prints both paths.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ngrad.errors import ConfigError

__all__ = [
    "add_arguments",
    "command_inspect",
    "error_channel_path",
    "inspect_error_channel",
    "inspect_neuron",
    "output_path",
    "run",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``ngrad inspect``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by ngrad train")
    parser.add_argument("--layer", type=int, help="layer 1..L (default: the last hidden layer)")
    parser.add_argument(
        "--neuron", type=int, default=0, help="unit index in the layer (default: 0)"
    )
    parser.add_argument(
        "--sample", type=int, default=0, help="index of the test image (default: 0)"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="image file to write; its extension picks the format (png, pdf, svg, ...; none: "
        ".png); a directory gets <rule>-layer<L>-neuron<I>-sample<K>.png (required)",
    )


def _is_directory(out: str) -> bool:
    return out.endswith((os.sep, "/")) or Path(out).is_dir()


def _check_format(out: str) -> None:
    """Refuse, before any work, an extension matplotlib cannot write."""
    from ngrad.plots.neuron import image_formats

    suffix = Path(out).suffix.lower()
    if _is_directory(out) or not suffix:
        return
    formats = image_formats()
    if suffix[1:] not in formats:
        raise ConfigError(
            f"--out {out!r}: cannot write {suffix!r} images; use one of "
            f"{', '.join('.' + name for name in sorted(formats))}"
        )


def output_path(out: str, rule: str, layer: int, neuron: int, sample: int) -> Path:
    """The file ``--out`` names: itself, with ``.png`` added when it has no extension, or a file
    named after the neuron inside it when it is a directory."""
    if _is_directory(out):
        return Path(out) / f"{rule}-layer{layer}-neuron{neuron}-sample{sample}.png"
    path = Path(out)
    return path if path.suffix else path.with_name(path.name + ".png")


def inspect_neuron(
    run_dir: str | Path,
    out: str | Path,
    layer: int | None = None,
    neuron: int = 0,
    sample: int = 0,
) -> Path:
    """Draw the compartments of ``neuron`` in ``layer`` for test sample ``sample``; returns the
    path of the image written (see the module docstring for how ``out`` names it). Bad input
    raises ConfigError, a missing run or an unwritable file NgradError."""
    from ngrad.analysis.neuron import neuron_trace
    from ngrad.plots.neuron import draw_compartments

    out = str(out)
    _check_format(out)
    trace = neuron_trace(run_dir, layer, neuron, sample)
    path = output_path(out, trace.rule, trace.layer, trace.neuron, trace.sample)
    return draw_compartments(trace.series, trace.phases, trace.title, path)


def error_channel_path(neuron_path: Path) -> Path:
    """Where the population picture goes: beside the neuron's, ``<stem>-error<suffix>``."""
    return neuron_path.with_name(f"{neuron_path.stem}-error{neuron_path.suffix}")


def inspect_error_channel(run_dir: str | Path, out: Path) -> Path:
    """Draw the teacher's deflection of every hidden unit's error compartment against BP's
    error (and the microcircuit's residue ratio by epoch) into ``out``; returns it."""
    from ngrad.analysis.neuron import error_channel
    from ngrad.plots.neuron import draw_error_channel

    return draw_error_channel(error_channel(run_dir), out)


def run(args: argparse.Namespace) -> int:
    """The command: draw the neuron and print the path written."""
    path = inspect_neuron(args.run_dir, args.out, args.layer, args.neuron, args.sample)
    print(f"compartments of layer {args.layer or 'last hidden'}, neuron {args.neuron}: {path}")
    population = inspect_error_channel(args.run_dir, error_channel_path(path))
    print(f"error channel of every hidden unit against backprop's: {population}")
    return 0


command_inspect = run
