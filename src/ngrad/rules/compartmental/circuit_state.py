"""The dendritic microcircuit's state during a batch: somatic and interneuron potentials, the
compartment potentials they imply and the synapses, gathered once per batch. Notation:
``dendritic_microcircuit.py`` and ``docs/compartmental.md``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CircuitState",
    "Readout",
    "Synapses",
    "affine",
    "apical_potentials",
    "gather_synapses",
    "largest_move",
]


@dataclass
class CircuitState:
    soma: list[Tensor]  # u_l, l = 1..L
    interneuron: list[Tensor]  # u^I_l, l = 1..L-1


@dataclass(frozen=True)
class Synapses:
    """The circuit's weights gathered once per batch (plain lists: no module look-ups per step;
    the matrices that act from the right are transposed views, taken once)."""

    activations: list  # f_l, l = 1..L
    weight_t: list[Tensor]  # W_l^T
    bias: list  # b_l (or None)
    predict_t: list[Tensor]  # W^IP_l^T
    predict_bias: list[Tensor]  # b^I_l
    cancel: list[Tensor]  # W^PI_l
    top_down: list[Tensor]  # B_l


def largest_move(before: CircuitState, after: CircuitState) -> float:
    """The largest change of any soma or interneuron potential between two states."""
    pairs = zip(before.soma + before.interneuron, after.soma + after.interneuron, strict=True)
    return float(torch.stack([(b - a).abs().amax() for a, b in pairs]).max())


@dataclass
class Readout:
    """Compartment potentials computed from a state (the rates it implies)."""

    rates: list[Tensor]  # r_0 = x, r_1 .. r_L
    basal: list[Tensor]  # v^_B,l
    apical: list[Tensor]  # v_A,l (hidden layers)
    interneuron_dendrite: list[Tensor]  # v^_I,l
    interneuron_rates: list[Tensor]  # r^I_l


def affine(inputs: Tensor, weight_t: Tensor, bias: Tensor | None) -> Tensor:
    """inputs W^T + b from W^T (what ``F.linear(inputs, W, b)`` computes, without its transpose)."""
    return inputs @ weight_t if bias is None else torch.addmm(bias, inputs, weight_t)


def apical_potentials(
    rates: list[Tensor], interneuron_rates: list[Tensor], w: Synapses
) -> list[Tensor]:
    """v_A,l = B_l r_{l+1} + W^PI_l r^I_l (rates r_0..r_L, interneuron rates r^I_l); the second
    product accumulates in place into the first (no copy)."""
    return [
        torch.mm(rates[i + 2], w.top_down[i]).addmm_(r, w.cancel[i])
        for i, r in enumerate(interneuron_rates)
    ]


def gather_synapses(network, interneurons, top_down: list[Tensor]) -> Synapses:
    """The weights of ``network`` (its layers), of the ``interneurons`` and the top-down B_l."""
    layers = list(network.layers)
    predict, predict_bias, cancel = interneurons.weights()
    return Synapses(
        [layer.activation for layer in layers],
        [layer.weight.t() for layer in layers],
        [layer.bias for layer in layers],
        [weight.t() for weight in predict],
        predict_bias,
        cancel,
        top_down,
    )
