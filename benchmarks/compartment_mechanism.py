"""Figures of the compartmental mechanisms at work, on a small teacher task (seconds, CPU).

    python benchmarks/compartment_mechanism.py [--out docs/figures] [--steps 300]

Burstprop (sigmoid 20-64-64-4, default options, after ``--steps`` SGD steps on a random linear
teacher): one unit's event rate and burst probability without and with the teacher; histograms
of the untaught burst probabilities with and without the learned recurrent inhibition Z; per unit
the change of burst probability against backprop's -dL/dh (burstprop_mechanism.png); held-out R^2
of linear decoders reading the stimulus from layer 1's event rates and the output error from its
burst-probability changes, and the crossed decoders (burstprop_decoding.png). Segregated
dendrites (sigmoid 20-64-4): forward and target plateau per neuron, and the somatic potential,
which the apical input leaves unchanged (segregated_mechanism.png). Dendritic microcircuit (tanh
20-64-64-4, learned interneurons, every layer at BP's rate): one layer-1 unit's basal, somatic and
interneuron potentials with its apical potential on its own axis over a forward and a teaching
phase; per unit of layer 2 the apical deflection under the teacher against backprop's -dL/dh;
the forward apical residue over the teaching deflection at every training step
(microcircuit_mechanism.png). Every figure is a PNG in ``--out``.
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


def decoding_score(features: torch.Tensor, wanted: torch.Tensor) -> float:
    """Held-out R^2 of a ridge-regularised linear decoder (first half fits, second half scores)."""
    half = features.shape[0] // 2
    design = torch.cat([features, torch.ones(features.shape[0], 1, dtype=features.dtype)], 1)
    fit, test = design[:half], design[half:]
    ridge = 1e-3 * torch.eye(fit.shape[1], dtype=fit.dtype)
    weights = torch.linalg.solve(fit.t() @ fit + ridge, fit.t() @ wanted[:half])
    residual = (test @ weights - wanted[half:]).pow(2).sum()
    total = (wanted[half:] - wanted[half:].mean(dim=0)).pow(2).sum()
    return float(1 - residual / total)


def burstprop_decoding_figure(out: Path, steps: int) -> None:
    """Multiplexing: a linear decoder reads the stimulus from the event rates and the output error
    from the burst-probability changes of hidden layer 1; the crossed decoders fail."""
    rule, _, _ = trained("burstprop", (INPUTS, 64, 64, CLASSES), steps)
    torch.set_grad_enabled(False)
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(INPUTS, CLASSES, generator=generator, dtype=torch.float64)
    x = torch.randn(4000, INPUTS, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y = (x @ teacher).argmax(dim=1)
    untaught, taught = rule.burst_states(x, y)
    events = rule.network.trace(x).activities[1]
    bursts = taught.probability[0] - untaught.probability[0]
    error = torch.nn.functional.one_hot(y, CLASSES) - rule.network(x).softmax(dim=1)
    torch.set_grad_enabled(True)
    scores = {
        "stimulus\nfrom event rates": decoding_score(events, x),
        "error\nfrom burst prob.": decoding_score(bursts, error),
        "stimulus\nfrom burst prob.": decoding_score(bursts, x),
        "error\nfrom event rates": decoding_score(events, error),
    }
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    axis.bar(list(scores), list(scores.values()), color=["C0", "C1", "grey", "grey"])
    axis.axhline(0, color="black", lw=0.5)
    axis.set_ylabel("held-out R^2 of a linear decoder")
    axis.set_title("burstprop layer 1: events carry the stimulus, bursts the error")
    for position, value in enumerate(scores.values()):
        axis.text(position, max(value, 0) + 0.02, f"{value:.2f}", ha="center")
    figure.tight_layout()
    figure.savefig(out / "burstprop_decoding.png", dpi=110)
    plt.close(figure)
    print("burstprop decoding R^2:", {k.replace("\n", " "): round(v, 3) for k, v in scores.items()})


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


def microcircuit_figures(out: Path, steps: int) -> None:
    torch.manual_seed(0)
    network = ngrad.mlp([INPUTS, 64, 64, CLASSES], activation="tanh", init="xavier").double()
    rule = ngrad.make_rule("microcircuit", network, depth_compensation="all")
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(INPUTS, CLASSES, generator=generator, dtype=torch.float64)
    optimiser = torch.optim.SGD(rule.parameters(), lr=0.1)
    residue = []
    for _ in range(steps):
        x = torch.randn(32, INPUTS, generator=generator, dtype=torch.float64)
        y = (x @ teacher).argmax(dim=1)
        residue.append(rule.backward(x, y).scalars["apical_residue_ratio"])
        optimiser.step()
    trace = rule.compartment_trace(x, y)
    first, forward_steps = trace.layers[0], rule.options.forward_steps
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    unit, sample = 0, 0
    for name, style in (("basal", "-"), ("soma", "-"), ("interneuron", "--")):
        axes[0].plot(first[name][:, sample, unit].numpy(), style, label=name)
    axes[0].set_xlabel("step (forward | teaching)")
    axes[0].set_ylabel("potential")
    axes[0].axvline(forward_steps - 0.5, color="grey", lw=0.5)
    apical_axis = axes[0].twinx()
    apical_axis.plot(first["apical"][:, sample, unit].numpy(), "r-", label="apical")
    apical_axis.set_ylabel("apical potential", color="r")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[0].set_title("layer-1 unit: the teacher moves the apical")
    (_, gradient) = hidden_activity_gradients(rule.network, rule.loss, x, y)
    last = trace.layers[1]
    deflection = last["apical"][-1] - last["apical"][forward_steps - 1]
    correlation = torch.corrcoef(torch.stack([-gradient.flatten(), deflection.flatten()]))[0, 1]
    axes[1].scatter(-gradient.flatten(), deflection.flatten(), s=4)
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[1].axvline(0, color="grey", lw=0.5)
    axes[1].set_xlabel("BP's -dL/dh (layer 2)")
    axes[1].set_ylabel("apical deflection under the teacher")
    axes[1].set_title(f"apical deflection vs BP's error (r = {float(correlation):.2f})")
    axes[2].semilogy(residue)
    axes[2].axhline(1.0, color="grey", lw=0.5)
    axes[2].set_xlabel("training step")
    axes[2].set_title("apical residue / teaching deflection")
    figure.tight_layout()
    figure.savefig(out / "microcircuit_mechanism.png", dpi=110)
    plt.close(figure)
    print(
        f"microcircuit: apical deflection vs BP's -dL/dh r = {float(correlation):.2f}; residue "
        f"ratio over the last {steps // 2} steps {min(residue[steps // 2 :]):.2g} to "
        f"{max(residue[steps // 2 :]):.2g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/figures"))
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    burstprop_figures(out, args.steps)
    burstprop_decoding_figure(out, args.steps)
    segregated_figures(out, args.steps)
    microcircuit_figures(out, args.steps)
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
