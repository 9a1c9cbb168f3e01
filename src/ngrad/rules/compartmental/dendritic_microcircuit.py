"""Dendritic cortical microcircuit: apical mismatch between top-down input and interneurons.

Hidden layer l = 1..L-1: pyramidal neurons (basal, apical, soma) and one interneuron per neuron of
layer l + 1 (``interneurons.py``); output layer L: pyramidal neurons with basal dendrite and soma.
Rates r_l = f_l(u_l), r_0 = x. Conductances g_lk (leak), g_B, g_A (basal, apical to soma), g_D
(interneuron dendrite), g_som (nudging of interneurons by layer l + 1, and of the output by the
teacher):

    basal       v^_B,l = W_l r_{l-1} + b_l      (the dendritic prediction of the soma)
    apical      v_A,l  = B_l r_{l+1} + W^PI_l r^I_l
    soma        du_l/dt = g_tot (v^_B,l + (g_A / g_tot) v_A,l - u_l),   g_tot = g_lk + g_B + g_A
    interneuron v^_I,l = W^IP_l r_l + b^I_l,   r^I_l = f_{l+1}(u^I_l),
                du^I_l/dt = g_I (v^_I,l + lambda_I (u_{l+1} - v^_I,l) - u^I_l)
    output      du_L/dt = g_L (v^_B,L + lambda_out (u_trg - v^_B,L) - u_L)   (teaching phase only)

with lambda_I = g_som / (g_lk + g_D + g_som), lambda_out = g_som / (g_lk + g_B + g_som) and the
teacher u_trg = a_L - N dL/da_L (``compartments.py``). Plasticity, each rule using only the two
sides of its synapse and the potentials of its own neuron (local):

    basal (Urbanczik-Senn)   Delta W_l    ~ (f(u_l) - f(v^_B,l)) r_{l-1}^T
    pyramid -> interneuron   Delta W^IP_l ~ (f(u^I_l) - f(v^_I,l)) r_l^T
    interneuron -> pyramid   Delta W^PI_l ~ -v_A,l r^I_l^T          (drives the apical to rest, 0)
    top-down (learned)       Delta B_l    ~ (f(u_l) - f(B_l r_{l+1})) r_{l+1}^T   (interneurons.py)

Self-predicting state: W^IP_l = W_{l+1}, b^I_l = b_{l+1}, W^PI_l = -B_l. The interneurons then
cancel the top-down input exactly (v_A = 0 without a teacher) and nothing drifts. With a teacher
the apical potential carries B_l f'(a_{l+1}) (u_{l+1} - its interneuron's prediction), so
f(u_l) - f(v^_B,l) ~ -lambda_out N c^{L-l} delta_l (BP's error when B_l = W_{l+1}^T, FA's when B is
random), with c = (g_A / g_tot)(1 - lambda_I) per layer crossed.

Sacramento, Costa, Bengio & Senn (2018). Dendritic cortical microcircuits approximate the
backpropagation algorithm. NeurIPS 31.

ngrad's reading. Rate-based, vectorised over the batch, exponential Euler steps (``dt``): a forward
phase without teacher (at most ``forward_steps``, ended once settled within ``settle_tolerance``)
from its fixed point in the self-predicting state, then a teaching phase whose fixed point the
plasticity reads: reached by top-down sweeps (``teaching_solver="sweeps"``, ``circuit_state.py``)
or by ``teaching_steps`` Euler steps (``"euler"``, the time course ``compartment_trace`` draws).
W_l is the paper's W^PP_l times g_B / (g_lk + g_B + g_A), so ``forward`` (the feedforward pass) is
the circuit's forward state. Updates are divided by lambda_out N (the output's is BP's gradient; a
hidden layer's c^{L-l} times BP's, see ``depth_compensation`` and ``hidden_rate``). Learned
interneurons copy the teacher-induced step of the synapses they predict (``.grad``) and remove
what they still mispredict with their own momentum-free normalised steps;
``interneurons="ideal"`` resets them to the self-predicting state at every batch. Settings and
trade-offs: ``docs/compartmental.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ngrad.nn.init import Init
from ngrad.nn.network import Network
from ngrad.numeric import root_mean_square
from ngrad.options import check_bounds
from ngrad.rules.base import (
    FeedbackPair,
    LearningRule,
    StepRecord,
    write_layer_update,
)
from ngrad.rules.compartmental.circuit_state import (
    CircuitState,
    Readout,
    Synapses,
    affine,
    apical_potentials,
    gather_synapses,
    largest_move,
    read_state,
    settle_by_sweeps,
)
from ngrad.rules.compartmental.compartments import (
    CompartmentTrace,
    input_power,
    relaxation_rate,
    stack_steps,
    teacher_potential,
    unsupported_network_reason,
)
from ngrad.rules.compartmental.interneurons import (
    Interneurons,
    residue_ratios,
    write_top_down_updates,
)
from ngrad.rules.feedback import random_feedback
from ngrad.search_space import LogUniform, tunable

__all__ = ["DendriticMicrocircuit"]

DepthCompensation = Literal["none", "first_layer", "all"]
"""Which layers' updates are also divided by c^{L-l}, the apical attenuation they have crossed."""


@dataclass(frozen=True)
class MicrocircuitOptions:
    g_leak: float = 0.1  # g_lk, leak conductance of every soma
    g_basal: float = 1.0  # g_B, basal dendrite to soma
    g_apical: float = 0.8  # g_A, apical dendrite to soma (hidden layers)
    g_dendrite: float = 1.0  # g_D, interneuron dendrite to soma
    g_soma: float = 0.8  # g_som, nudging: interneurons by layer l+1, output by the teacher
    dt: float = 1.0  # exponential-Euler step (units of capacitance / conductance)
    forward_steps: int = 4  # most steps of the phase without teacher
    teaching_steps: int = 8  # most steps (sweeps) of the phase with the teacher nudging the output
    teaching_solver: Literal["sweeps", "euler"] = "sweeps"  # its fixed point by sweeps, or Euler
    settle_tolerance: float = 1e-4  # forward phase ends before a step moving no potential this far
    # (the sweeps: relative to the teacher's pull on the output)
    top_down: Literal["fixed", "learned"] = "fixed"  # top-down weights B: fixed random or learned
    init: Init = "pytorch"  # how the top-down weights B are drawn
    interneurons: Literal["learned", "ideal"] = "learned"  # ideal: reset to W^IP=W_(l+1), W^PI=-B
    interneuron_rate: float = 1.0  # eta_I: fraction of each sample's misprediction removed, < 2
    interneuron_step: Literal["projection", "nlms"] = "projection"  # how they remove it
    interneuron_copy: bool = True  # W^IP also takes the teacher-induced step through the optimiser
    top_down_rate: float = 0.01  # learned top-down (least-squares) rate relative to the optimiser's
    depth_compensation: DepthCompensation = "all"  # layers also divided by c^(L-l), to BP's size
    hidden_rate: float = 1.0  # hidden / output learning rate ratio (the paper: one rate per layer)

    def __post_init__(self) -> None:
        rates = ("interneuron_rate", "top_down_rate", "hidden_rate")
        check_bounds(
            self,
            positive=("g_basal", "g_apical", "g_dendrite", "g_soma", "dt", *rates),
            non_negative=("g_leak", "settle_tolerance"),
            at_least_one=("forward_steps", "teaching_steps"),
        )


class DendriticMicrocircuit(LearningRule):
    name = "microcircuit"
    summary = "dendritic microcircuit: interneurons cancel top-down input; apical mismatch = error"
    citation = "Sacramento, Costa, Bengio & Senn 2018, NeurIPS"
    Options = MicrocircuitOptions
    search_space = tunable(hidden_rate=LogUniform(0.1, 10.0))

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        if len(network.layers) < 2:
            raise ValueError("the microcircuit needs at least one hidden layer")
        upper = list(network.layers)[1:]
        drawn = random_feedback((layer.weight for layer in upper), self.options.init)
        if self.options.top_down == "learned":
            self.feedback: nn.Module = nn.ParameterList(nn.Parameter(b) for b in drawn)
        else:
            self.feedback = drawn
        self.interneurons = Interneurons(upper)
        self.make_self_predicting()

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        return unsupported_network_reason(network)

    # -- structure ---------------------------------------------------------------------------
    def feedback_matrices(self) -> list[Tensor]:
        """Top-down B_l for l = 1..L-1, in W_{l+1}'s orientation (apical input = r_{l+1} @ B)."""
        return list(self.feedback)

    def randomise_interneurons(self) -> None:
        """Redraw W^IP, b^I and W^PI at random: far from the self-predicting state."""
        self.interneurons.randomise(list(self.network.layers)[1:])

    def make_self_predicting(self) -> None:
        """W^IP_l := W_{l+1}, b^I_l := b_{l+1}, W^PI_l := -B_l (the apical cancels exactly)."""
        upper = list(self.network.layers)[1:]
        self.interneurons.make_self_predicting(upper, self.feedback_matrices())

    def feedback_pairs(self) -> list[FeedbackPair]:
        return [
            FeedbackPair(index + 1, matrix, self.network.layers[index + 1].weight)
            for index, matrix in enumerate(self.feedback_matrices())
        ]

    def _constants(self) -> dict[str, float]:
        o = self.options
        hidden_total = o.g_leak + o.g_basal + o.g_apical
        interneuron_total = o.g_leak + o.g_dendrite + o.g_soma
        return {
            "apical_share": o.g_apical / hidden_total,
            "interneuron_nudge": o.g_soma / interneuron_total,
            "output_nudge": o.g_soma / (o.g_leak + o.g_basal + o.g_soma),
            "hidden_rate": relaxation_rate(o.dt, hidden_total),
            "interneuron_rate": relaxation_rate(o.dt, interneuron_total),
            "output_rate": relaxation_rate(o.dt, o.g_leak + o.g_basal),
            "taught_output_rate": relaxation_rate(o.dt, o.g_leak + o.g_basal + o.g_soma),
            "basal_gain": hidden_total / o.g_basal,  # v_B = gain * v^_B (display only)
            "output_basal_gain": (o.g_leak + o.g_basal) / o.g_basal,
        }

    # -- dynamics ----------------------------------------------------------------------------
    def _synapses(self) -> Synapses:
        return gather_synapses(self.network, self.interneurons, self.feedback_matrices())

    def _relax(self, inputs, state, read, steps, teacher, drive, w, tolerance, visited=None):
        """Up to ``steps`` exponential-Euler steps from ``state`` (``read`` its readout, ``drive``
        the first layer's basal input, ``w`` the synapses); stops before a step that would move
        no potential by ``tolerance`` or more (settled). Returns the last state and its readout;
        ``visited`` collects every state."""
        k = self._constants()
        for _ in range(steps):
            soma = [
                torch.lerp(u, torch.add(basal, apical, alpha=k["apical_share"]), k["hidden_rate"])
                for u, basal, apical in zip(state.soma[:-1], read.basal, read.apical, strict=False)
            ]
            top = read.basal[-1]
            if teacher is None:
                soma.append(torch.lerp(state.soma[-1], top, k["output_rate"]))
            else:
                target = torch.lerp(top, teacher, k["output_nudge"])
                soma.append(torch.lerp(state.soma[-1], target, k["taught_output_rate"]))
            interneuron = [
                torch.lerp(u, torch.lerp(v, upper, k["interneuron_nudge"]), k["interneuron_rate"])
                for u, v, upper in zip(
                    state.interneuron, read.interneuron_dendrite, state.soma[1:], strict=True
                )
            ]
            new = CircuitState(soma, interneuron)
            if tolerance and largest_move(state, new) < tolerance:
                break
            state, read = new, read_state(inputs, new, drive, w)
            if visited is not None:
                visited.append(state)
        return state, read

    def _bottom_up(self, inputs: Tensor, w: Synapses) -> tuple[CircuitState, Readout]:
        """Where the forward phase starts, and its readout: each soma at its basal prediction
        (the input swept up the hierarchy once), each interneuron at its fixed point given those
        somata, v^_I + lambda_I (u_{l+1} - v^_I): with the apical cancelled, the forward phase's
        fixed point itself. The sweep's potentials are the readout's basal ones."""
        trace = self.network.trace(inputs)
        nudge, upper = self._constants()["interneuron_nudge"], list(self.network.layers)[1:]
        dendrites = self.interneurons.dendrites(trace.activities[1:-1])
        somata = list(trace.pre_activations)
        interneuron = [torch.lerp(v, u, nudge) for v, u in zip(dendrites, somata[1:], strict=True)]
        rates = [a.flatten(1) for a in trace.activities]
        interneuron_rates = [
            layer.activation(u) for layer, u in zip(upper, interneuron, strict=True)
        ]
        apical = apical_potentials(rates, interneuron_rates, w)
        read = Readout(rates, somata, apical, dendrites, interneuron_rates)
        return CircuitState(somata, interneuron), read

    def _phases(self, inputs: Tensor, targets: Tensor | None, visited=None, tolerance=None):
        """Forward phase from the bottom-up sweep, ended once settled within ``tolerance``
        (default: the option), then (with ``targets``) the teaching phase: settled by sweeps, or
        every Euler step (always when ``visited`` collects the states)."""
        o, w = self.options, self._synapses()
        tolerance = o.settle_tolerance if tolerance is None else tolerance
        start, read = self._bottom_up(inputs, w)
        drive = read.basal[0]  # W_1 x + b_1, the same at every step
        state, forward = self._relax(  # ends once settled: it starts at its fixed point
            inputs, start, read, o.forward_steps, None, drive, w, tolerance, visited
        )
        if targets is None:
            return state, forward, None, None
        teacher = teacher_potential(self.loss, state.soma[-1], targets)
        if o.teaching_solver == "sweeps" and visited is None:
            k = self._constants()
            nudges = (k["apical_share"], k["interneuron_nudge"], k["output_nudge"])
            taught_state, taught = settle_by_sweeps(
                state, forward, teacher, w, nudges, o.teaching_steps, tolerance
            )
        else:  # the time course (always, for a trace): every exponential-Euler step
            taught_state, taught = self._relax(
                inputs, state, forward, o.teaching_steps, teacher, drive, w, 0.0, visited
            )
        return state, forward, taught_state, taught

    # -- plasticity ----------------------------------------------------------------------------
    def _layer_scales(self, batch: int) -> list[float]:
        """lambda_out N, times c^{L-l} for the layers ``depth_compensation`` names, divided by
        ``hidden_rate`` for the hidden layers."""
        k = self._constants()
        per_layer = k["apical_share"] * (1.0 - k["interneuron_nudge"])
        count = len(self.network.layers)
        scale = k["output_nudge"] * batch
        mode = self.options.depth_compensation
        compensated = [mode == "all" or (mode == "first_layer" and i == 0) for i in range(count)]
        rates = [self.options.hidden_rate] * (count - 1) + [1.0]
        return [
            scale * per_layer ** ((count - 1 - i) * c) / rate
            for i, (c, rate) in enumerate(zip(compensated, rates, strict=True))
        ]

    def _write_forward_updates(self, read: Readout, scales: list[float]) -> list[Tensor]:
        """Urbanczik-Senn on every basal synapse (f(u_l) is the readout's rate r_l), divided by
        ``scales``; returns the errors."""
        errors = []
        for i, layer in enumerate(self.network.layers):
            mismatch = read.rates[i + 1] - layer.activation(read.basal[i])
            error = mismatch.div(-scales[i])
            write_layer_update(
                layer, layer.weight_gradient(error, read.rates[i]), layer.bias_gradient(error)
            )
            errors.append(error)
        return errors

    def _learn_interneurons(self, forward: Readout, read: Readout, scales: list[float]) -> None:
        """Learned interneurons, after a batch with teacher: the teacher-induced part of the
        pyramid -> interneuron mismatch goes to ``.grad`` at the predicted layer's scale (nudged
        by the same teacher, they move with the synapses they predict); the forward phase's
        mismatch and apical residue are removed by the interneurons' own normalised,
        momentum-free steps (``interneuron_rate``), applied in place."""
        nudge, upper = self._constants()["interneuron_nudge"], list(self.network.layers)[1:]
        taught, untaught = (
            self.interneurons.mismatches(upper, r.interneuron_rates, r.interneuron_dendrite)
            for r in (read, forward)
        )
        copy = 1.0 if self.options.interneuron_copy else 0.0
        factors = [-copy / (nudge * scale) for scale in scales[1:]]
        changes = [t - u for t, u in zip(taught, untaught, strict=True)]
        self.interneurons.write_prediction_updates(changes, read.rates[1:-1], factors)
        o, rates = self.options, forward.interneuron_rates
        step = (o.interneuron_rate, nudge, self.reduce_gradients, o.interneuron_step != "nlms")
        self.interneurons.track(untaught, forward.rates[1:-1], forward.apical, rates, *step)

    def _write_top_down_updates(self, state: CircuitState, read: Readout) -> None:
        """Learned top-down synapses predict the lower soma (normalised least squares)."""
        if self.options.top_down == "learned":
            layers, rate = self.network.layers, self.options.top_down_rate
            write_top_down_updates(self.feedback, layers, state.soma, read.rates, rate)

    def _series(self, forward: Readout, taught: Readout | None) -> dict[str, list]:
        read = taught if taught is not None else forward
        series = {
            "apical_potential_by_layer": [root_mean_square(a) for a in read.apical],
            "interneuron_prediction_error_by_layer": [
                root_mean_square(upper - rate)
                for rate, upper in zip(forward.interneuron_rates, forward.rates[2:], strict=True)
            ],
        }
        if taught is not None:
            series["forward_apical_potential_by_layer"] = [
                root_mean_square(a) for a in forward.apical
            ]
        return series

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        if self.options.interneurons == "ideal":
            self.make_self_predicting()
        state, forward, _, taught = self._phases(inputs, targets)
        scales = self._layer_scales(inputs.shape[0])
        errors = self._write_forward_updates(taught, scales)
        self._write_top_down_updates(state, forward)
        if self.options.interneurons == "learned":
            self._learn_interneurons(forward, taught, scales)
        output = state.soma[-1]
        series = self._series(forward, taught)
        overall, series["apical_residue_ratio_by_layer"] = residue_ratios(
            forward.apical, taught.apical
        )
        scalars = {"apical_residue_ratio": overall}
        return StepRecord(self.loss(output, targets), output, tuple(errors), scalars, series)

    @torch.no_grad()
    def pretrain(self, inputs: Tensor) -> dict[str, list[float]]:
        """One step of the phase without teacher: every plastic synapse (forward ones included)
        gets its update in ``.grad`` from the forward phase alone; returns the diagnostics.
        Without a teacher there is no BP scale to match: forward synapses take (f(u) - f(v^_B))
        r^T / N, interneuron synapses normalised least-squares steps."""
        state, forward, _, _ = self._phases(inputs, None)
        nudge, batch = self._constants()["interneuron_nudge"], inputs.shape[0]
        factors = [
            -self.options.interneuron_rate / (nudge * batch * input_power(rates))
            for rates in forward.rates[1:-1]
        ]
        upper = list(self.network.layers)[1:]
        mismatches = self.interneurons.mismatches(
            upper, forward.interneuron_rates, forward.interneuron_dendrite
        )
        self.interneurons.write_prediction_updates(mismatches, forward.rates[1:-1], factors)
        self.interneurons.write_cancellation_updates(
            forward.apical, forward.interneuron_rates, self.options.interneuron_rate
        )
        self._write_top_down_updates(state, forward)
        unscaled = [float(inputs.shape[0])] * len(forward.basal)
        self._write_forward_updates(forward, unscaled)
        return self._series(forward, None)

    @torch.no_grad()
    def compartment_trace(self, inputs: Tensor, targets: Tensor) -> CompartmentTrace:
        """Basal, apical and somatic potentials (and interneuron somata) at every step."""
        states: list[CircuitState] = []
        self._phases(inputs, targets, states, tolerance=0.0)  # every step, for the picture
        w = self._synapses()
        drive = affine(inputs.flatten(1), w.weight_t[0], w.bias[0])
        record = [read_state(inputs, state, drive, w) for state in states]
        k = self._constants()
        count = len(self.network.layers)
        layers = []
        for i in range(count):
            gain = k["basal_gain"] if i < count - 1 else k["output_basal_gain"]
            entry = {
                "basal": stack_steps([r.basal[i] * gain for r in record]),
                "soma": stack_steps([s.soma[i] for s in states]),
            }
            if i < count - 1:
                entry["apical"] = stack_steps([r.apical[i] for r in record])
                entry["interneuron"] = stack_steps([s.interneuron[i] for s in states])
            layers.append(entry)
        phases = (
            ("forward", self.options.forward_steps),
            ("teaching", self.options.teaching_steps),
        )
        return CompartmentTrace(phases, tuple(layers))
