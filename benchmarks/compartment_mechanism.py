"""Figures of the compartmental mechanisms at work, on a small teacher task (seconds, CPU).

    python benchmarks/compartment_mechanism.py [--out docs/figures] [--steps 300]

Burstprop (sigmoid 20-64-64-4, default options, after ``--steps`` SGD steps on a random linear
teacher): one unit's event rate and burst probability without and with the teacher; histograms
of the untaught burst probabilities with and without the learned recurrent inhibition Z; per unit
the change of burst probability against backprop's -dL/dh. Segregated dendrites (sigmoid
20-64-4): forward and target plateau per neuron, and the somatic potential, which the apical
input leaves unchanged. Every figure is a PNG in ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import ngrad
from ngrad.rules.checking import train_on_teacher
from ngrad.rules.compartmental.checks import hidden_activity_gradients

INPUTS, CLASSES = 20, 4


def trained(rule_name: str, sizes: tuple[int, ...], steps: int, **options):
    torch.manual_seed(0)
    network = ngrad.mlp(list(sizes), activation="sigmoid").double()
    rule = ngrad.make_rule(rule_name, network, **options)
    inputs, targets = train_on_teacher(rule, steps, 0.1, shape=(INPUTS,), classes=CLASSES)
    return rule, inputs, targets


def burstprop_figures(out: Path, steps: int) -> None:
    sizes = (INPUTS, 64, 64, CLASSES)
    rule, x, y = trained("burstprop", sizes, steps)
    untaught, taught = rule.burst_states(x, y)
    trace = rule.compartment_trace(x, y)
    first = trace.layers[0]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    unit, sample = 0, 0
    axes[0].plot([0, 1], first["event_rate"][:, sample, unit], "o-", label="event rate rho")
    axes[0].plot([0, 1], first["burst_probability"][:, sample, unit], "s-", label="burst prob. p")
    axes[0].set_xticks([0, 1], ["no teacher", "teacher"])
    axes[0].set_title("one hidden unit: the teacher moves p, not rho")
    axes[0].legend()
    _, free = trained("burstprop", sizes, steps, recurrent=False)[0].burst_states(x, y)
    bins = torch.linspace(0, 1, 21)
    axes[1].hist(untaught.probability[0].flatten(), bins, alpha=0.6, label="learned Z")
    axes[1].hist(free.probability[0].flatten(), bins, alpha=0.6, label="no Z")
    axes[1].set_title("untaught burst probability, layer 1")
    axes[1].set_xlabel("p_bar")
    axes[1].legend()
    (gradient, _) = hidden_activity_gradients(rule.network, rule.loss, x, y)
    change = taught.probability[0] - untaught.probability[0]
    axes[2].scatter(-gradient.flatten(), change.flatten(), s=4)
    axes[2].axhline(0, color="grey", lw=0.5)
    axes[2].axvline(0, color="grey", lw=0.5)
    axes[2].set_xlabel("BP's -dL/dh (layer 1)")
    axes[2].set_ylabel("p - p_bar")
    axes[2].set_title("burst-probability change vs BP's error")
    figure.tight_layout()
    figure.savefig(out / "burstprop_mechanism.png", dpi=110)
    plt.close(figure)


def segregated_figures(out: Path, steps: int) -> None:
    rule, x, y = trained("segregated", (INPUTS, 64, CLASSES), steps)
    trace = rule.compartment_trace(x, y)
    forward, target = rule.phase_averages(x, y)
    hidden = trace.layers[0]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(hidden["apical"][:, 0, :6].numpy(), "-")
    axes[0].plot(hidden["soma"][:, 0, :6].numpy(), "k:", lw=1)
    axes[0].axvline(rule.options.forward_steps - 0.5, color="grey", lw=0.5)
    axes[0].set_title("apical (colour) and soma (dotted): soma never moves")
    axes[0].set_xlabel("step (forward | target)")
    axes[1].scatter(forward.plateau[0].flatten(), target.plateau[0].flatten(), s=4)
    axes[1].plot([0, 1], [0, 1], color="grey", lw=0.5)
    axes[1].set_xlabel("forward plateau alpha^f")
    axes[1].set_ylabel("target plateau alpha^t")
    axes[1].set_title("plateaus per neuron and sample")
    figure.tight_layout()
    figure.savefig(out / "segregated_mechanism.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/figures"))
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    burstprop_figures(out, args.steps)
    segregated_figures(out, args.steps)
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
