"""Burstprop: event rates go forward, burst rates go back, bursts gate plasticity.

Rate-based model of Payeur et al. (2021) for deep networks. Each hidden unit l = 1..L-1 emits
events at rate e_l (its activity, driven by the basal input a_l = W_l e_{l-1} + b_l); a fraction
p_l of the events are bursts. The apical dendrite receives the burst rates of the layer above
through feedback weights Y_l and sets the burst probability:

    event rate          e_l = f(a_l),  e_0 = x;   positive event rate rho_l = sigma(kappa a_l)
    apical potential    v_l = g_l * (Y_l b_{l+1}),  g_l = (d rho_l/d a_l) / rho_l = kappa(1 - rho_l)
    burst probability   p_l = sigma(v_l)
    burst rate          b_l = p_l * rho_l
    output (teacher)    b_L = p_bar (e_L - N dL/da_L)       (no teacher: p_bar e_L)
    plasticity          Delta W_l ~ ((p_l - p_bar_l) * rho_l) e_{l-1}^T
                                  = (b_l - p_bar_l rho_l) e_{l-1}^T

where p_bar_l is the burst probability without the teacher, the quantity the paper's running
average tracks. Linearised, b_l - p_bar_l rho_l = sigma'(v_l) (d rho_l / d a_l) Y_l (b_{l+1} -
b_bar_{l+1}): the burst-rate deviation is sent down exactly as feedback alignment sends delta,
gated by the unit's own f'. Locality: every quantity of the update belongs to the synapse's two
neurons (presynaptic event rate, postsynaptic burst and event rates); Y is fixed and random.

Payeur, Guerguiev, Zenke, Richards & Naud (2021). Burst-dependent synaptic plasticity can
coordinate learning in hierarchical circuits. Nature Neuroscience 24, 1010-1019.

ngrad's reading. A sigmoid unit's event rate is its activity (kappa = 1, the paper's units); a tanh
unit's activity is h = 2 rho - 1 with rho = sigma(2a) its event rate (kappa = 2), and the synapse
reads h as the presynaptic event rate measured from half the maximum rate (other activations are
not supported: the gain g needs a positive, bounded event rate). The running mean p_bar is
computed exactly, by running the feedback pass once without the teacher on the same batch. At the
output the teacher sets the burst rate directly (p_bar (1 + (y - e) (1 - e)) e in the paper, the
same for sigmoid outputs and the squared error). The recurrent inhibitory weights Z of the
authors' code are left out. Each update is divided by p_bar N prod_{k >= l} sigma'(0) /
(1 + [k is tanh]), which makes it BP's gradient for Y = W^T in the linear regime. What is kept
and left out, and why: ``docs/compartmental.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.activations import SIGMOID_SLOPE_AT_ZERO
from ngrad.nn.init import Init
from ngrad.nn.network import ForwardTrace, Network
from ngrad.numeric import root_mean_square
from ngrad.options import check_bounds
from ngrad.rules.base import FeedbackPair, LearningRule, StepRecord, write_layer_update
from ngrad.rules.compartmental.compartments import (
    CompartmentTrace,
    teacher_potential,
    unsupported_network_reason,
)
from ngrad.rules.feedback import random_feedback

__all__ = ["Burstprop", "event_rate_slope"]

EVENT_RATE_SLOPE = {"sigmoid": 1.0, "tanh": 2.0}  # rho = sigmoid(kappa a)


def event_rate_slope(activation: str) -> float:
    """kappa such that the unit's positive event rate is sigmoid(kappa a)."""
    return EVENT_RATE_SLOPE[activation]


@dataclass(frozen=True)
class BurstpropOptions:
    baseline_burst_probability: float = 0.2  # p_bar, output burst probability without teacher
    init: Init = "pytorch"  # how the feedback weights Y are drawn
    scale: float = 1.0  # multiplies Y after drawing it

    def __post_init__(self) -> None:
        if not 0 < self.baseline_burst_probability < 1:
            raise ValueError(
                "option 'baseline_burst_probability' must lie in (0, 1), "
                f"got {self.baseline_burst_probability}"
            )
        check_bounds(self, positive=("scale",))


@dataclass(frozen=True)
class BurstState:
    """One feedback pass: per hidden layer the apical potential, burst probability and rate."""

    apical: list[Tensor]
    probability: list[Tensor]
    burst_rate: list[Tensor]  # hidden layers, then the output


class Burstprop(LearningRule):
    name = "burstprop"
    summary = "burstprop: burst rates carry feedback; dW ~ (p - p_bar) x event rates"
    citation = "Payeur, Guerguiev, Zenke, Richards & Naud 2021, Nat. Neurosci."
    Options = BurstpropOptions

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        upper = list(network.layers)[1:]
        self.feedback = random_feedback(
            (layer.weight for layer in upper), self.options.init, self.options.scale
        )

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        return unsupported_network_reason(
            network,
            hidden=tuple(EVENT_RATE_SLOPE),
            why_hidden=" (the apical gain needs a positive, bounded event rate)",
        )

    def feedback_matrices(self) -> list[Tensor]:
        """Y_l in W_{l+1}'s orientation (apical input = b_{l+1} @ Y), l = 1..L-1."""
        return list(self.feedback)

    def feedback_pairs(self) -> list[FeedbackPair]:
        return [
            FeedbackPair(index + 1, matrix, self.network.layers[index + 1].weight)
            for index, matrix in enumerate(self.feedback_matrices())
        ]

    # -- the two feedback passes ---------------------------------------------------------------
    def _event_rates(self, trace: ForwardTrace) -> list[Tensor]:
        """rho_l = sigma(kappa a_l) per hidden layer."""
        return [
            torch.sigmoid(a * event_rate_slope(layer.activation.name))
            for layer, a in zip(self.network.layers[:-1], trace.pre_activations, strict=False)
        ]

    def _feedback_pass(self, rates: list[Tensor], top_burst_rate: Tensor) -> BurstState:
        """Burst rates sent down from the output's, layer by layer."""
        apical, probability, bursts = [], [], [top_burst_rate]
        feedback = self.feedback_matrices()
        for index in range(len(rates) - 1, -1, -1):
            layer = self.network.layers[index]
            gain = event_rate_slope(layer.activation.name) * (1.0 - rates[index])
            potential = gain * (bursts[0] @ feedback[index])
            chance = torch.sigmoid(potential)
            apical.insert(0, potential)
            probability.insert(0, chance)
            bursts.insert(0, chance * rates[index])
        return BurstState(apical, probability, bursts)

    def _scales(self, batch: int) -> list[float]:
        """p_bar N prod_{k >= l} sigma'(0) / span_k: burst-rate deviation per unit of delta_l."""
        scales = [self.options.baseline_burst_probability * batch]
        for layer in reversed(self.network.layers[:-1]):
            span = 2.0 if layer.activation.name == "tanh" else 1.0
            scales.insert(0, scales[0] * SIGMOID_SLOPE_AT_ZERO / span)
        return scales

    def _passes(self, inputs: Tensor, targets: Tensor):
        trace = self.network.trace(inputs)
        rates = self._event_rates(trace)
        baseline = self.options.baseline_burst_probability
        output = trace.output
        untaught = self._feedback_pass(rates, baseline * output)
        taught_top = baseline * teacher_potential(self.loss, output, targets)
        taught = self._feedback_pass(rates, taught_top)
        return trace, rates, untaught, taught

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        trace, _, untaught, taught = self._passes(inputs, targets)
        scales = self._scales(inputs.shape[0])
        errors = []
        for index, layer in enumerate(self.network.layers):
            deviation = taught.burst_rate[index] - untaught.burst_rate[index]
            error = deviation.div(-scales[index])
            weight_update = layer.weight_gradient(error, trace.activities[index])
            write_layer_update(layer, weight_update, layer.bias_gradient(error))
            errors.append(error)
        series = {
            "burst_probability_deviation_by_layer": [
                float((t - u).abs().mean())
                for t, u in zip(taught.probability, untaught.probability, strict=True)
            ],
            "apical_potential_by_layer": [root_mean_square(v) for v in taught.apical],
        }
        loss = self.loss(trace.output, targets)
        return StepRecord(loss, trace.output, tuple(errors), {}, series)

    @torch.no_grad()
    def burst_probability_deviation(self, inputs: Tensor, targets: Tensor) -> list[Tensor]:
        """p_l - p_bar_l per hidden layer (batch, units)."""
        _, _, untaught, taught = self._passes(inputs, targets)
        return [t - u for t, u in zip(taught.probability, untaught.probability, strict=True)]

    @torch.no_grad()
    def compartment_trace(self, inputs: Tensor, targets: Tensor) -> CompartmentTrace:
        """One step per phase (the rate model has no membrane dynamics): the basal potential
        a_l, the apical potential v_l, the burst probability and the event rate rho_l; at the
        output the basal potential and the burst rate the teacher sets."""
        trace, rates, untaught, taught = self._passes(inputs, targets)
        layers = []
        for index, a in enumerate(trace.pre_activations):
            entry = {"basal": torch.stack([a, a])}
            if index == len(rates):
                entry["burst_rate"] = torch.stack(
                    [untaught.burst_rate[index], taught.burst_rate[index]]
                )
            else:
                entry["apical"] = torch.stack([untaught.apical[index], taught.apical[index]])
                entry["burst_probability"] = torch.stack(
                    [untaught.probability[index], taught.probability[index]]
                )
                entry["event_rate"] = torch.stack([rates[index], rates[index]])
            layers.append(entry)
        return CompartmentTrace((("forward", 1), ("teaching", 1)), tuple(layers))
