"""Dendritic cortical microcircuit: apical mismatch between top-down input and interneurons.

Hidden layer l = 1..L-1: pyramidal neurons (basal, apical, soma) and one interneuron per neuron of
layer l + 1; output layer L: pyramidal neurons with basal dendrite and soma. Rates r_l = f_l(u_l),
r_0 = x. Conductances g_lk (leak), g_B, g_A (basal, apical to soma), g_D (interneuron dendrite),
g_som (nudging of interneurons by layer l + 1, and of the output by the teacher):

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
    top-down (learned)       Delta B_l    ~ (f(u_l) - f(B_l r_{l+1})) r_{l+1}^T

Self-predicting state: W^IP_l = W_{l+1}, b^I_l = b_{l+1}, W^PI_l = -B_l. The interneurons then
cancel the top-down input exactly (v_A = 0 without a teacher) and nothing drifts. With a teacher
the apical potential carries B_l f'(a_{l+1}) (u_{l+1} - its interneuron's prediction), so
f(u_l) - f(v^_B,l) ~ -lambda_out N c^{L-l} delta_l (BP's error when B_l = W_{l+1}^T, FA's when B is
random), with c = (g_A / g_tot)(1 - lambda_I) per layer crossed.

Sacramento, Costa, Bengio & Senn (2018). Dendritic cortical microcircuits approximate the
backpropagation algorithm. NeurIPS 31.

ngrad's reading. Rate-based, vectorised over the batch, integrated with exponential Euler steps
(``dt``): a forward phase without teacher (``forward_steps``) that starts where one bottom-up sweep
leaves the circuit (each soma at its basal prediction, each interneuron at its dendritic one), then
a teaching phase (``teaching_steps``) from where it ended. The paper's plasticity runs
continuously; ngrad reads it out once per phase: forward and pyramid -> interneuron synapses at the
end of the teaching phase (so interneurons, nudged by the same teacher, follow the synapses they
predict), interneuron -> pyramid (and learned top-down) synapses at the end of the forward phase
(learning them under the teacher would cancel the error). W_l is the paper's W^PP_l times g_B /
(g_lk + g_B + g_A) (the basal attenuation folded into the weight), so the network's feedforward
pass is the circuit's forward state in the self-predicting state, and ``forward`` is that pass.

Updates are divided by lambda_out N, which makes the output layer's BP's gradient; a hidden layer's
mismatch is then c^{L-l} times BP's (c = 0.245 with the paper's conductances), and
``depth_compensation`` says which layers also divide by c^{L-l}, the layer-specific learning rate
that makes them BP-sized (the paper tuned rates per layer): "none" (default), "first_layer" or
"all". Interneurons that predict layer l + 1 are divided by lambda_I times that layer's factor, so
that, nudged by the same teacher, they take the same step as the synapses they predict; their
tracking of the forward weights then also runs at that rate. Compensating a layer that interneurons
predict (l >= 2) pushes their least-squares tracking past stability ("all" diverged on 2 of 3
digits seeds at lr 0.05, momentum 0.9); the first hidden layer is predicted by no interneuron, so
its rate is free. On MNIST 784-500-500-10 even "first_layer" diverged after ~300 steps at that
learning rate, hence the default "none": stable, with the hidden layers learning more slowly.

Interneuron -> pyramid synapses learn as a normalised least-squares filter (step / (1 + mean
|r^I|^2), ngrad's choice: the paper hand-tuned one rate per population). Interneuron synapses are
the rule's feedback parameters: ``--feedback-lr`` changes their rate, which must stay the forward
one for them to keep up.

Interneurons start in the self-predicting state: from random interneuron weights
(:meth:`~DendriticMicrocircuit.randomise_interneurons`) the teaching-phase interneuron learning,
fast enough to follow the forward synapses, diverges at ordinary learning rates, so the paper's
phase without teacher (:meth:`~DendriticMicrocircuit.pretrain`, normalised least-squares steps)
must come first; ``ngrad check`` shows it reaching the self-predicting state.

Learned top-down weights (``top_down=learned``, ngrad's reading: B learns to predict the lower
soma, at ``top_down_rate``) are experimental: on the digits network they destabilise the
interneurons at lr 0.05 and turn the hidden updates past 90 degrees from BP's at lr 0.01.

Default steps (4 + 8, ``dt`` = 1) bring the teaching phase within ~0.5 % of its fixed point on the
8x8-digits network at about 10x backprop's time per batch
(``benchmarks/reproduce_compartmental.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ngrad.nn.init import random_like
from ngrad.nn.network import Network
from ngrad.numeric import root_mean_square
from ngrad.options import check_bounds
from ngrad.rules.base import FeedbackPair, LearningRule, StepRecord, assign_gradient
from ngrad.rules.compartmental.compartments import (
    CompartmentTrace,
    has_dense_layers_and_linear_output,
    input_power,
    relaxation_rate,
    stack_steps,
    teacher_potential,
)

__all__ = ["DendriticMicrocircuit"]


@dataclass(frozen=True)
class MicrocircuitOptions:
    g_leak: float = 0.1
    g_basal: float = 1.0
    g_apical: float = 0.8
    g_dendrite: float = 1.0  # interneuron dendrite to soma
    g_soma: float = 0.8  # nudging: interneurons by layer l+1, output by the teacher
    dt: float = 1.0  # exponential-Euler step (units of capacitance / conductance)
    forward_steps: int = 4
    teaching_steps: int = 8
    top_down: Literal["fixed", "learned"] = "fixed"
    init: Literal["pytorch", "xavier", "kaiming", "gaussian"] = "pytorch"  # of B
    interneuron_rate: float = 1.0  # interneuron learning rate relative to the optimiser's
    top_down_rate: float = 0.01  # learned top-down (NLMS) rate relative to the optimiser's
    depth_compensation: Literal["none", "first_layer", "all"] = "none"

    def __post_init__(self) -> None:
        check_bounds(
            self,
            positive=(
                "g_basal",
                "g_apical",
                "g_dendrite",
                "g_soma",
                "dt",
                "interneuron_rate",
                "top_down_rate",
            ),
            non_negative=("g_leak",),
            at_least_one=("forward_steps", "teaching_steps"),
        )


@dataclass
class _CircuitState:
    soma: list[Tensor]  # u_l, l = 1..L
    interneuron: list[Tensor]  # u^I_l, l = 1..L-1


@dataclass
class _Readout:
    """Compartment potentials computed from a state (the rates it implies)."""

    rates: list[Tensor]  # r_0 = x, r_1 .. r_L
    basal: list[Tensor]  # v^_B,l
    apical: list[Tensor]  # v_A,l (hidden layers)
    interneuron_dendrite: list[Tensor]  # v^_I,l
    interneuron_rates: list[Tensor]  # r^I_l


class DendriticMicrocircuit(LearningRule):
    name = "microcircuit"
    summary = "dendritic microcircuit: interneurons cancel top-down input; apical mismatch = error"
    citation = "Sacramento, Costa, Bengio & Senn 2018, NeurIPS"
    Options = MicrocircuitOptions

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        if len(network.layers) < 2:
            raise ValueError("the microcircuit needs at least one hidden layer")
        upper = list(network.layers)[1:]
        top_down = [random_like(layer.weight.detach(), self.options.init) for layer in upper]
        if self.options.top_down == "learned":
            self.top_down = nn.ParameterList(nn.Parameter(b) for b in top_down)
        else:
            for index, matrix in enumerate(top_down):
                self.register_buffer(f"top_down_{index + 1}", matrix)
        self.pyramid_to_interneuron = nn.ParameterList(
            nn.Parameter(torch.empty_like(layer.weight.detach())) for layer in upper
        )
        self.interneuron_bias = nn.ParameterList(
            nn.Parameter(layer.weight.new_zeros(layer.out_features).detach()) for layer in upper
        )
        self.interneuron_to_pyramid = nn.ParameterList(
            nn.Parameter(torch.empty_like(layer.weight.detach())) for layer in upper
        )
        self.make_self_predicting()

    @classmethod
    def supports(cls, network: Network) -> bool:
        return len(network.layers) >= 2 and has_dense_layers_and_linear_output(network)

    # -- structure ---------------------------------------------------------------------------
    def top_down_weights(self) -> list[Tensor]:
        """B_l for l = 1..L-1, stored in W_{l+1}'s orientation (apical input = r_{l+1} @ B)."""
        if self.options.top_down == "learned":
            return list(self.top_down)
        return [getattr(self, f"top_down_{i}") for i in range(1, len(self.network.layers))]

    @torch.no_grad()
    def randomise_interneurons(self) -> None:
        """Redraw W^IP, b^I and W^PI at random: far from the self-predicting state."""
        for index, layer in enumerate(list(self.network.layers)[1:]):
            weight = layer.weight.detach()
            self.pyramid_to_interneuron[index].copy_(random_like(weight))
            self.interneuron_bias[index].zero_()
            self.interneuron_to_pyramid[index].copy_(random_like(weight))

    @torch.no_grad()
    def make_self_predicting(self) -> None:
        """W^IP_l := W_{l+1}, b^I_l := b_{l+1}, W^PI_l := -B_l (the apical cancels exactly)."""
        upper = list(self.network.layers)[1:]
        for index, layer in enumerate(upper):
            self.pyramid_to_interneuron[index].copy_(layer.weight)
            self.interneuron_bias[index].copy_(layer.bias if layer.bias is not None else 0.0)
            self.interneuron_to_pyramid[index].copy_(-self.top_down_weights()[index])

    def feedback_pairs(self) -> list[FeedbackPair]:
        return [
            FeedbackPair(index + 1, matrix, self.network.layers[index + 1].weight)
            for index, matrix in enumerate(self.top_down_weights())
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
    def _read(self, inputs: Tensor, state: _CircuitState) -> _Readout:
        layers = list(self.network.layers)
        rates = [inputs.flatten(1)] + [
            layer.activation(u) for layer, u in zip(layers, state.soma, strict=True)
        ]
        basal = [F.linear(rates[i], layer.weight, layer.bias) for i, layer in enumerate(layers)]
        interneuron_rates = [layers[i + 1].activation(u) for i, u in enumerate(state.interneuron)]
        apical = [
            torch.addmm(
                rates[i + 2] @ top_down, interneuron_rates[i], self.interneuron_to_pyramid[i]
            )
            for i, top_down in enumerate(self.top_down_weights())
        ]
        dendrite = [
            F.linear(rates[i + 1], self.pyramid_to_interneuron[i], self.interneuron_bias[i])
            for i in range(len(layers) - 1)
        ]
        return _Readout(rates, basal, apical, dendrite, interneuron_rates)

    def _relax(
        self,
        inputs: Tensor,
        state: _CircuitState,
        steps: int,
        teacher: Tensor | None,
        visited: list[_CircuitState] | None = None,
    ) -> tuple[_CircuitState, _Readout]:
        """``steps`` exponential-Euler steps from ``state``; ``visited`` collects every state."""
        k = self._constants()
        for _ in range(steps):
            read = self._read(inputs, state)
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
            state = _CircuitState(soma, interneuron)
            if visited is not None:
                visited.append(state)
        return state, self._read(inputs, state)

    def _bottom_up(self, inputs: Tensor) -> _CircuitState:
        """Where the forward phase starts: each soma at its basal prediction (the input swept
        up the hierarchy once), each interneuron at its dendritic prediction."""
        trace = self.network.trace(inputs)
        interneuron = [
            F.linear(trace.activities[i + 1], weight, bias)
            for i, (weight, bias) in enumerate(
                zip(self.pyramid_to_interneuron, self.interneuron_bias, strict=True)
            )
        ]
        return _CircuitState(list(trace.pre_activations), interneuron)

    def _phases(self, inputs: Tensor, targets: Tensor | None, visited=None):
        start = self._bottom_up(inputs)
        state, forward = self._relax(inputs, start, self.options.forward_steps, None, visited)
        if targets is None:
            return state, forward, None, None
        teacher = teacher_potential(self.loss, state.soma[-1], targets)
        taught_state, taught = self._relax(
            inputs, state, self.options.teaching_steps, teacher, visited
        )
        return state, forward, taught_state, taught

    # -- plasticity ----------------------------------------------------------------------------
    def _layer_scales(self, batch: int) -> list[float]:
        """lambda_out N, times c^{L-l} for the layers ``depth_compensation`` names."""
        k = self._constants()
        per_layer = k["apical_share"] * (1.0 - k["interneuron_nudge"])
        count = len(self.network.layers)
        scale = self._teacher_scale(batch)
        mode = self.options.depth_compensation
        compensated = [mode == "all" or (mode == "first_layer" and i == 0) for i in range(count)]
        return [scale * per_layer ** ((count - 1 - i) * c) for i, c in enumerate(compensated)]

    def _teacher_scale(self, batch: int) -> float:
        """lambda_out N: the size of f(u_L) - f(v^_B,L) per unit of -dL/da_L."""
        return self._constants()["output_nudge"] * batch

    def _write_forward_updates(
        self, state: _CircuitState, read: _Readout, scales: list[float]
    ) -> list[Tensor]:
        """Urbanczik-Senn on every basal synapse, divided by ``scales``; returns the errors."""
        errors = []
        for i, layer in enumerate(self.network.layers):
            mismatch = layer.activation(state.soma[i]) - layer.activation(read.basal[i])
            error = mismatch.div(-scales[i])
            assign_gradient(layer.weight, layer.weight_gradient(error, read.rates[i]))
            if layer.bias is not None:
                assign_gradient(layer.bias, layer.bias_gradient(error))
            errors.append(error)
        return errors

    def _prediction_mismatch(self, state: _CircuitState, read: _Readout) -> list[Tensor]:
        """f(u^I_l) - f(v^_I,l) per interneuron population."""
        return [
            self.network.layers[i + 1].activation(u) - self.network.layers[i + 1].activation(v)
            for i, (u, v) in enumerate(
                zip(state.interneuron, read.interneuron_dendrite, strict=True)
            )
        ]

    def _write_prediction_updates(
        self, state: _CircuitState, read: _Readout, normalised: bool
    ) -> None:
        """Pyramid -> interneuron synapses learn to predict the upper layer's soma: with a
        teacher at the upper layer's rate divided by lambda_I (nudged by the same teacher, they
        move with the synapses they predict); without one (``normalised``) as a normalised
        least-squares filter. Both readouts must come from settled phases: a lagging interneuron
        soma, amplified by the upper layer's rate, makes the tracking unstable."""
        k, batch = self._constants(), read.rates[0].shape[0]
        nudge = k["interneuron_nudge"]
        for i, mismatch in enumerate(self._prediction_mismatch(state, read)):
            if normalised:
                scale = nudge * batch * input_power(read.rates[i + 1])
            else:
                scale = nudge * self._layer_scales(batch)[i + 1]
            factor = -self.options.interneuron_rate / scale
            gradient = mismatch.t() @ read.rates[i + 1] * factor
            assign_gradient(self.pyramid_to_interneuron[i], gradient)
            assign_gradient(self.interneuron_bias[i], mismatch.sum(dim=0) * factor)

    def _write_cancellation_updates(self, state: _CircuitState, read: _Readout) -> None:
        """Interneuron -> pyramid synapses drive the apical to rest; learned top-down synapses
        predict the lower soma."""
        batch = read.rates[0].shape[0]
        for i, apical in enumerate(read.apical):
            presynaptic = read.interneuron_rates[i]
            gradient = presynaptic.t() @ apical
            gradient *= self.options.interneuron_rate / (batch * input_power(presynaptic))
            assign_gradient(self.interneuron_to_pyramid[i], gradient)
        if self.options.top_down == "learned":
            for i, top_down in enumerate(self.top_down):
                f = self.network.layers[i].activation
                presynaptic = read.rates[i + 2]
                mismatch = f(state.soma[i]) - f(presynaptic @ top_down)
                step = -self.options.top_down_rate / (batch * input_power(presynaptic))
                assign_gradient(top_down, presynaptic.t() @ mismatch * step)

    def _series(self, forward: _Readout, taught: _Readout | None, state) -> dict[str, list]:
        read = taught if taught is not None else forward
        series = {
            "apical_potential_by_layer": [root_mean_square(a) for a in read.apical],
            "interneuron_prediction_error_by_layer": [
                root_mean_square(upper - self.network.layers[i + 1].activation(u))
                for i, (u, upper) in enumerate(
                    zip(state.interneuron, forward.rates[2:], strict=True)
                )
            ],
        }
        if taught is not None:
            series["forward_apical_potential_by_layer"] = [
                root_mean_square(a) for a in forward.apical
            ]
        return series

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        state, forward, taught_state, taught = self._phases(inputs, targets)
        self._write_prediction_updates(taught_state, taught, normalised=False)
        self._write_cancellation_updates(state, forward)
        scales = self._layer_scales(inputs.shape[0])
        errors = self._write_forward_updates(taught_state, taught, scales)
        output = state.soma[-1]
        series = self._series(forward, taught, state)
        return StepRecord(self.loss(output, targets), output, tuple(errors), {}, series)

    @torch.no_grad()
    def pretrain(self, inputs: Tensor) -> dict[str, list[float]]:
        """One step of the phase without teacher: every plastic synapse (forward ones included)
        gets its update in ``.grad`` from the forward phase alone; returns the diagnostics.
        Without a teacher there is no BP scale to match: forward synapses take (f(u) - f(v^_B))
        r^T / N, interneuron synapses normalised least-squares steps."""
        state, forward, _, _ = self._phases(inputs, None)
        self._write_prediction_updates(state, forward, normalised=True)
        self._write_cancellation_updates(state, forward)
        unscaled = [float(inputs.shape[0])] * len(forward.basal)
        self._write_forward_updates(state, forward, unscaled)
        return self._series(forward, None, state)

    @torch.no_grad()
    def compartment_trace(self, inputs: Tensor, targets: Tensor) -> CompartmentTrace:
        """Basal, apical and somatic potentials (and interneuron somata) at every step."""
        states: list[_CircuitState] = []
        self._phases(inputs, targets, states)
        record = [self._read(inputs, state) for state in states]
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
