"""One neuron's compartments in a trained run, for ``ngrad inspect``: the values of every
compartment a rule simulates (basal, apical, somatic potentials, ...) at every step of a forward
and a teaching phase on one test image (the review's Figure 4, from a trained network).

Works for every rule with a ``compartment_trace(inputs, targets)`` method; drawn by
:func:`ngrad.plots.neuron.draw_compartments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ngrad.errors import ConfigError

__all__ = ["ErrorChannel", "NeuronTrace", "error_channel", "inspectable_rules", "neuron_trace"]


@dataclass(frozen=True)
class NeuronTrace:
    """``series``: compartment name -> its value at each step; ``phases``: (name, steps) in
    order; ``layer`` (1..L), ``neuron``, ``sample`` as resolved; ``title`` names them all."""

    series: dict[str, list[float]]
    phases: tuple[tuple[str, int], ...]
    rule: str
    layer: int
    neuron: int
    sample: int
    title: str


@dataclass(frozen=True)
class ErrorChannel:
    """The population picture: per hidden layer, ``deflection[l]`` the change the teacher makes
    to the error-carrying compartment (``compartment``: apical potential, or burst probability)
    of every unit and sample, beside ``bp_error[l]``, backprop's -dL/dh for the same units;
    ``residue`` the microcircuit's logged apical residue ratio by epoch (empty for the others)."""

    compartment: str
    deflection: list[list[float]]
    bp_error: list[list[float]]
    residue: list[tuple[int, float]]
    title: str


def error_channel(run_dir: str | Path, samples: int = 64) -> ErrorChannel:
    """The teacher's deflection of each hidden unit's error compartment (end of the teaching
    phase minus end of the forward phase) on the first ``samples`` test images, against
    backprop's -dL/dh, in the run's best-validation state."""
    import json

    import torch

    from ngrad.rules.compartmental.checks import hidden_activity_gradients
    from ngrad.train.runs import load_run

    run = load_run(run_dir)
    rule = run.rule
    if not hasattr(rule, "compartment_trace"):
        raise ConfigError(f"rule {run.config.rule!r} has no compartments to inspect")
    dtype = rule.network.layers[0].weight.dtype
    inputs = run.data.test_x[:samples].flatten(1).to(dtype)
    targets = run.data.test_y[:samples].long()
    with torch.no_grad():
        trace = rule.compartment_trace(inputs, targets)
    gradients = hidden_activity_gradients(rule.network, rule.loss, inputs, targets)
    hidden = trace.layers[:-1]
    name = "burst_probability" if "burst_probability" in hidden[0] else "apical"
    forward_steps = trace.phases[0][1]
    deflection = [
        (layer[name][-1] - layer[name][forward_steps - 1]).flatten().tolist() for layer in hidden
    ]
    bp_error = [(-gradient).flatten().tolist() for gradient in gradients]
    residue = []
    metrics = Path(run_dir) / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            entry = json.loads(line)
            value = (entry.get("rule_diagnostics") or {}).get("apical_residue_ratio")
            if value is not None:
                residue.append((int(entry["epoch"]), float(value)))
    title = f"{run.config.rule}: teacher's deflection of the {name.replace('_', ' ')} vs BP's error"
    return ErrorChannel(name, deflection, bp_error, residue, title)


def inspectable_rules() -> list[str]:
    """The registered rules that simulate compartments (they have ``compartment_trace``)."""
    from ngrad.rules import REGISTRY

    return [name for name, cls in REGISTRY.items() if hasattr(cls, "compartment_trace")]


def neuron_trace(
    run_dir: str | Path, layer: int | None = None, neuron: int = 0, sample: int = 0
) -> NeuronTrace:
    """Neuron ``neuron`` of ``layer`` (1..L as in the paper; default: the last hidden layer) in
    the run's best-validation state, on test image ``sample`` with its label as the teacher.
    Bad input raises ConfigError; a missing or damaged run NgradError."""
    import torch

    from ngrad.train.runs import load_run

    run = load_run(run_dir)
    rule = run.rule
    if not hasattr(rule, "compartment_trace"):
        raise ConfigError(
            f"rule {run.config.rule!r} has no compartments to inspect "
            f"(rules with compartments: {', '.join(inspectable_rules())})"
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
    return NeuronTrace(series, trace.phases, run.config.rule, layer, neuron, sample, title)
