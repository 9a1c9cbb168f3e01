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
    "read_state",
    "settle_by_sweeps",
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


def read_state(inputs: Tensor, state: CircuitState, drive: Tensor, w: Synapses) -> Readout:
    """Every compartment's potential in ``state``; ``drive`` is the first layer's basal input
    W_1 x + b_1 (it does not change within a batch), ``w`` the synapses."""
    f = w.activations
    rates = [inputs.flatten(1)] + [f[i](u) for i, u in enumerate(state.soma)]
    basal = [drive] + [affine(rates[i], w.weight_t[i], w.bias[i]) for i in range(1, len(f))]
    interneuron_rates = [f[i + 1](u) for i, u in enumerate(state.interneuron)]
    dendrite = [
        affine(rates[i + 1], w.predict_t[i], w.predict_bias[i])
        for i in range(len(interneuron_rates))
    ]
    apical = apical_potentials(rates, interneuron_rates, w)
    return Readout(rates, basal, apical, dendrite, interneuron_rates)


def settle_by_sweeps(
    state: CircuitState,
    read: Readout,
    teacher: Tensor,
    w: Synapses,
    nudges: tuple[float, float, float],
    sweeps: int,
    tolerance: float,
) -> tuple[CircuitState, Readout]:
    """The teaching phase's fixed point by top-down Gauss-Seidel sweeps from ``state`` (``read``
    its readout). A sweep sets the output soma to its equilibrium under the ``teacher``, then,
    layer by layer downwards, each interneuron to lerp(v^_I,l, u_{l+1}, lambda_I) with the new
    u_{l+1}, the apical potential from the new rates above, and the soma to v^_B,l + share v_A,l;
    then the basal and interneuron-dendrite potentials follow the new rates (bottom-up products),
    so the readout returned always belongs to the state returned. The teacher reaches every
    layer in one sweep (an Euler step moves it one layer down). Sweeps stop once none moves a
    potential by more than ``tolerance`` times the first sweep's move of the output soma (the
    teacher's pull: relative, so a weak teacher settles as precisely as a strong one), after
    ``sweeps`` at most. ``nudges``: (apical share g_A / g_tot, lambda_I, lambda_out). The fixed
    point is the exponential-Euler dynamics' own, reached in fewer products."""
    share, interneuron_nudge, output_nudge = nudges
    f, count = w.activations, len(w.activations)
    soma, interneuron = list(state.soma), list(state.interneuron)
    rates, basal = list(read.rates), list(read.basal)
    apical, dendrite = list(read.apical), list(read.interneuron_dendrite)
    interneuron_rates = list(read.interneuron_rates)
    pull = None
    for _ in range(sweeps):
        moves = []
        top = torch.lerp(basal[-1], teacher, output_nudge)
        moves.append((top - soma[-1]).abs().amax())
        soma[-1], rates[-1] = top, f[-1](top)
        for i in reversed(range(count - 1)):
            settled = torch.lerp(dendrite[i], soma[i + 1], interneuron_nudge)
            moves.append((settled - interneuron[i]).abs().amax())
            interneuron[i], interneuron_rates[i] = settled, f[i + 1](settled)
            apical[i] = torch.mm(rates[i + 2], w.top_down[i]).addmm_(
                interneuron_rates[i], w.cancel[i]
            )
            potential = torch.add(basal[i], apical[i], alpha=share)
            moves.append((potential - soma[i]).abs().amax())
            soma[i], rates[i + 1] = potential, f[i](potential)
        for i in range(1, count):
            basal[i] = affine(rates[i], w.weight_t[i], w.bias[i])
        for i in range(count - 1):
            dendrite[i] = affine(rates[i + 1], w.predict_t[i], w.predict_bias[i])
        largest = float(torch.stack(moves).max())
        if pull is None:
            pull = float(moves[0])  # the teacher's pull on the output soma
        if largest <= tolerance * pull:
            break
    readout = Readout(rates, basal, apical, dendrite, interneuron_rates)
    return CircuitState(soma, interneuron), readout
