"""Ablations of the compartmental rules: without a working apical channel the hidden layers fall
back to readout-only learning.

Two ablations, on a 12-24-24-4 network of the paper's units (tanh for the microcircuit, sigmoid
for the others) trained on a random teacher task:

- silenced: every feedback matrix := 0 (top-down B for the microcircuit, whose interneurons are
  then reset to cancel nothing; Y for burstprop and segregated dendrites). The apical potential no
  longer moves with the teacher, so no hidden synapse changes: only the readout learns.
- shuffled: each step, each hidden layer's error is permuted across its units (a fresh random
  permutation per step, which permutes the rows of the layer's update). The error keeps its size
  but no longer reaches the unit it belongs to; the hidden layers learn nothing useful.

Both must end clearly worse than the intact rule: the mechanism, not the readout, does the
hidden layers' learning. See ``docs/compartmental.md``.
"""

from __future__ import annotations

import torch

from ngrad.rules import get_rule_class, make_rule
from ngrad.rules.checking import CheckResult, check_of, dense_network
from ngrad.rules.compartmental.burstprop import Burstprop
from ngrad.rules.compartmental.dendritic_microcircuit import DendriticMicrocircuit
from ngrad.rules.compartmental.segregated_dendrites import SegregatedDendrites

__all__ = ["check_ablations_fall_back_to_readout", "train_ablated"]

SIZES = (12, 24, 24, 4)
ABLATIONS = ("intact", "silenced", "shuffled")
UNITS = {DendriticMicrocircuit: "tanh", Burstprop: "sigmoid", SegregatedDendrites: "sigmoid"}
"""Hidden units of each rule's paper (a subclass uses its base's)."""


def _units(rule_name: str) -> str:
    cls = get_rule_class(rule_name)
    return next(units for base, units in UNITS.items() if issubclass(cls, base))


@torch.no_grad()
def _silence(rule) -> None:
    for matrix in rule.feedback_matrices():
        matrix.zero_()
    if hasattr(rule, "make_self_predicting"):
        rule.make_self_predicting()


@torch.no_grad()
def _shuffle_hidden_errors(rule, generator: torch.Generator) -> None:
    """Permute each hidden layer's error across its units (the rows of its update)."""
    for layer in list(rule.network.layers)[:-1]:
        order = torch.randperm(layer.weight.shape[0], generator=generator)
        layer.weight.grad.copy_(layer.weight.grad[order])
        if layer.bias is not None and layer.bias.grad is not None:
            layer.bias.grad.copy_(layer.bias.grad[order])


def train_ablated(rule_name: str, ablation: str, steps: int = 300, lr: float = 0.1, **options):
    """Train a fresh 12-24-24-4 network under ``ablation`` (one of ``ABLATIONS``) on a
    random linear teacher; returns (held-out loss, largest change of a hidden weight)."""
    network = dense_network(sizes=SIZES, activation=_units(rule_name))
    hidden = [layer.weight.detach().clone() for layer in list(network.layers)[:-1]]
    rule = make_rule(rule_name, network, **options)
    if ablation == "silenced":
        _silence(rule)
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(SIZES[0], SIZES[-1], generator=generator, dtype=torch.float64)
    shuffler = torch.Generator().manual_seed(2)
    optimiser = torch.optim.SGD(rule.parameters(), lr=lr)
    for _ in range(steps):
        inputs = torch.randn((32, SIZES[0]), generator=generator, dtype=torch.float64)
        rule.backward(inputs, (inputs @ teacher).argmax(dim=1))
        if ablation == "shuffled":
            _shuffle_hidden_errors(rule, shuffler)
        optimiser.step()
    held_out = torch.randn((1024, SIZES[0]), generator=generator, dtype=torch.float64)
    with torch.no_grad():
        loss = float(rule.loss(network(held_out), (held_out @ teacher).argmax(dim=1)))
    moved = max(
        float((layer.weight.detach() - before).abs().max())
        for layer, before in zip(network.layers, hidden, strict=False)
    )
    return loss, moved


@check_of(
    DendriticMicrocircuit,
    Burstprop,
    SegregatedDendrites,
    DendriticMicrocircuit={"depth_compensation": "all"},
)
def check_ablations_fall_back_to_readout(rule_name: str, **options) -> list[CheckResult]:
    """Silencing the apical channel freezes the hidden layers (readout-only learning) and ends
    with a higher loss; shuffling the error across units recovers less than half of what the
    intact rule gains over readout-only learning."""
    runs = {name: train_ablated(rule_name, name, **options) for name in ABLATIONS}
    (intact, _), (readout, frozen), (shuffled, _) = (runs[name] for name in ABLATIONS)
    gain = readout - intact
    return [
        CheckResult(
            rule_name, "silenced apical channel: largest hidden weight change", frozen, 1e-12, "<"
        ),
        CheckResult(
            rule_name,
            "intact loss / readout-only loss (silenced channel)",
            intact / readout,
            0.85,
            "<",
        ),
        CheckResult(
            rule_name,
            "shuffled errors: loss gain over readout-only / intact rule's gain",
            (readout - shuffled) / gain if gain > 0 else float("nan"),
            0.5,
            "<",
        ),
    ]
