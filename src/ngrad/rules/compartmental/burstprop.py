"""Burstprop: event rates go forward, burst rates go back, bursts gate plasticity.

Rate-based model of Payeur et al. (2021) for deep networks. Each hidden unit l = 1..L-1 emits
events at rate e_l (its activity, driven by the basal input a_l = W_l e_{l-1} + b_l); a fraction
p_l of the events are bursts. The apical dendrite receives the burst rates of the layer above
through feedback weights Y_l, minus a learned recurrent inhibition Z_l, and sets the burst
probability:

    event rate          e_l = f(a_l),  e_0 = x;   positive event rate rho_l = sigma(kappa a_l)
    apical gain         g_l = (d rho_l/d a_l) / rho_l = kappa (1 - rho_l)
    apical potential    v_l = g_l * (Y_l b_{l+1}) - Z_l b^0_l
    uninhibited burst   b^0_l = sigma(g_l * (Y_l b_bar_{l+1})) rho_l      (without the teacher)
    burst probability   p_l = sigma(v_l)
    burst rate          b_l = p_l * rho_l
    output (teacher)    b_L = p_bar (e_L - N dL/da_L)       (no teacher: p_bar e_L)
                        (sigmoid output, squared error: p_bar (1 + (y - e_L)(1 - e_L)) e_L)
    plasticity          Delta W_l ~ ((p_l - p_bar_l) * rho_l) e_{l-1}^T
                                  = (b_l - p_bar_l rho_l) e_{l-1}^T
    inhibition          Delta Z_l ~ v_bar_l b^0_l^T               (drives v_bar_l toward 0)
    learned feedback    Delta Y_l = Delta W_{l+1}                  (option learn_feedback)

where p_bar_l, v_bar_l are the burst probability and apical potential without the teacher (the
quantities the paper's running averages track) and b^0_l the layer's burst rate before inhibition.
Linearised, b_l - p_bar_l rho_l = sigma'(v_bar_l) (d rho_l / d a_l) Y_l (b_{l+1} - b_bar_{l+1}):
the burst-rate deviation is sent down as feedback alignment sends delta, gated by the unit's own
f' and by sigma'(v_bar_l). With Y at the authors' scale (N(0, 1)) the apical input is not small,
the burst sigmoid bends it, and the hidden update departs from feedback alignment's. Locality:
every quantity of the update belongs to the synapse's two neurons (presynaptic event rate,
postsynaptic burst and event rates).

Payeur, Guerguiev, Zenke, Richards & Naud (2021). Burst-dependent synaptic plasticity can
coordinate learning in hierarchical circuits. Nature Neuroscience 24, 1010-1019.

ngrad's reading. A sigmoid unit's event rate is its activity (kappa = 1, the paper's units); a tanh
unit's activity is h = 2 rho - 1 with rho = sigma(2a) its event rate (kappa = 2), and the synapse
reads h as the presynaptic event rate measured from half the maximum rate (other activations are
not supported: the gain g needs a positive, bounded event rate). The running means are computed
exactly, by running the feedback pass once without the teacher on the same batch. At the output the
teacher sets the burst rate directly. The output is linear (e_L = a_L, the logits) or, as in the
authors' code, sigmoid with the squared error, where b_L is the paper's p_bar (1 + (y - e)(1 - e))
e and the output's update is BP's for that loss. Z learns as a normalised least-squares filter. With
``scaling="paper"`` every update is divided by p_bar N (the output's is then BP's gradient) and the
hidden ones multiplied by ``hidden_rate`` (the paper's hidden / output learning rates); with
``scaling="backprop"`` each is divided by p_bar N prod_{k >= l} sigma'(0) / (1 + [k is tanh]),
BP's gradient for Y = W^T in the linear regime. What is kept and left out, and why:
``docs/compartmental.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ngrad.nn.activations import SIGMOID_SLOPE_AT_ZERO
from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.base import (
    FeedbackPair,
    LearningRule,
    StepRecord,
    assign_gradient,
    write_layer_update,
)
from ngrad.rules.compartmental.compartments import (
    CompartmentTrace,
    input_power,
    unsupported_network_reason,
)
from ngrad.rules.feedback import FeedbackBuffers
from ngrad.search_space import LogUniform, Uniform, tunable

__all__ = ["Burstprop", "event_rate_slope"]

EVENT_RATE_SLOPE = {"sigmoid": 1.0, "tanh": 2.0}  # rho = sigmoid(kappa a)
SATURATED = 0.05  # burst probabilities below this or above 1 - this count as saturated


def event_rate_slope(activation: str) -> float:
    """kappa such that the unit's positive event rate is sigmoid(kappa a)."""
    return EVENT_RATE_SLOPE[activation]


@dataclass(frozen=True)
class BurstpropOptions:
    baseline_burst_probability: float = 0.2  # p_bar, output burst probability without teacher
    feedback_std: float = 1.0  # Y ~ N(0, feedback_std^2); the authors' code draws N(0, 1)
    recurrent: bool = True  # learned recurrent inhibition Z of the apical dendrite (authors' code)
    recurrent_rate: float = 1.0  # Z's normalised least-squares rate relative to the optimiser's
    recurrent_init: float = 0.01  # Z starts uniform in +-recurrent_init (the authors' 0.01)
    learn_feedback: bool = False  # Y_l takes W_{l+1}'s update (the authors' learned feedback)
    scaling: Literal["paper", "backprop"] = "paper"  # update sizes: paper's rates or BP-sized
    hidden_rate: float = 10.0  # hidden / output learning rate, scaling=paper (the paper: 0.1/0.01)

    def __post_init__(self) -> None:
        if not 0 < self.baseline_burst_probability < 1:
            raise ValueError(
                "option 'baseline_burst_probability' must lie in (0, 1), "
                f"got {self.baseline_burst_probability}"
            )
        check_bounds(
            self,
            positive=("feedback_std", "recurrent_rate", "hidden_rate"),
            non_negative=("recurrent_init",),
        )


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
    search_space = tunable(
        hidden_rate=LogUniform(1.0, 100.0), baseline_burst_probability=Uniform(0.05, 0.5)
    )

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        o = self.options
        drawn = [
            torch.randn_like(layer.weight.detach()) * o.feedback_std
            for layer in list(network.layers)[1:]
        ]
        if o.learn_feedback:
            self.feedback: nn.Module = nn.ParameterList(nn.Parameter(y) for y in drawn)
        else:
            self.feedback = FeedbackBuffers(drawn)
        hidden = list(network.layers)[:-1]
        self.recurrent = nn.ParameterList(
            nn.Parameter(
                torch.empty(
                    layer.out_features,
                    layer.out_features,
                    dtype=layer.weight.dtype,
                    device=layer.weight.device,
                ).uniform_(-o.recurrent_init, o.recurrent_init)
            )
            for layer in (hidden if o.recurrent else [])
        )

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        return unsupported_network_reason(
            network,
            hidden=tuple(EVENT_RATE_SLOPE),
            why_hidden=" (the apical gain needs a positive, bounded event rate)",
            outputs=("identity", "sigmoid"),  # sigmoid: the authors' output units
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

    def burst_probability(self, potential: Tensor) -> Tensor:
        """p = sigma(v): the fraction of events that are bursts at apical potential v."""
        return torch.sigmoid(potential)

    def _feedback_pass(
        self, rates: list[Tensor], top: Tensor, inhibition: list[Tensor] | None
    ) -> tuple[BurstState, list[Tensor]]:
        """Burst rates sent down from the output's, layer by layer. ``inhibition`` holds each
        layer's burst rate before inhibition b^0_l, which Z reads; None (the pass without
        teacher) computes it on the way and returns it."""
        apical, probability, bursts = [], [], [top]
        presynaptic = list(inhibition) if inhibition is not None else [None] * len(rates)
        feedback = self.feedback_matrices()
        for index in range(len(rates) - 1, -1, -1):
            layer = self.network.layers[index]
            gain = event_rate_slope(layer.activation.name) * (1.0 - rates[index])
            potential = gain * (bursts[0] @ feedback[index])
            if inhibition is None:
                presynaptic[index] = torch.sigmoid(potential) * rates[index]
            if self.options.recurrent:
                potential = potential - presynaptic[index] @ self.recurrent[index].t()
            chance = self.burst_probability(potential)
            apical.insert(0, potential)
            probability.insert(0, chance)
            bursts.insert(0, chance * rates[index])
        return BurstState(apical, probability, bursts), presynaptic

    def _scales(self, batch: int) -> list[float]:
        """What each layer's burst-rate deviation is divided by: p_bar N (over hidden_rate for
        hidden layers) with scaling=paper; p_bar N prod_{k >= l} sigma'(0) / span_k (BP's size
        for Y = W^T in the linear regime) with scaling=backprop."""
        o = self.options
        top = o.baseline_burst_probability * batch
        hidden = self.network.layers[:-1]
        if o.scaling == "paper":
            return [top / o.hidden_rate] * len(hidden) + [top]
        scales = [top]
        for layer in reversed(hidden):
            span = 2.0 if layer.activation.name == "tanh" else 1.0
            scales.insert(0, scales[0] * SIGMOID_SLOPE_AT_ZERO / span)
        return scales

    def _taught_output(self, trace: ForwardTrace, targets: Tensor) -> Tensor:
        """The output's event rate under the teacher, e_L - N dL/da_L (burst rate / p_bar): for
        a linear output the teacher potential; for the authors' sigmoid output with the squared
        error, (1 + (y - e)(1 - e)) e, the paper's output burst rule."""
        layer, output = self.network.layers[-1], trace.output
        error = self.loss.output_error(trace.pre_activations[-1], output, targets, layer.activation)
        return output - output.shape[0] * error

    def _passes(self, inputs: Tensor, targets: Tensor):
        trace = self.network.trace(inputs)
        rates = self._event_rates(trace)
        baseline = self.options.baseline_burst_probability
        output = trace.output
        untaught, presynaptic = self._feedback_pass(rates, baseline * output, None)
        taught_top = baseline * self._taught_output(trace, targets)
        taught, _ = self._feedback_pass(rates, taught_top, presynaptic)
        return trace, rates, untaught, taught, presynaptic

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        trace, _, untaught, taught, presynaptic = self._passes(inputs, targets)
        scales = self._scales(inputs.shape[0])
        errors = []
        for index, layer in enumerate(self.network.layers):
            deviation = taught.burst_rate[index] - untaught.burst_rate[index]
            error = deviation.div(-scales[index])
            weight_update = layer.weight_gradient(error, trace.activities[index])
            write_layer_update(layer, weight_update, layer.bias_gradient(error))
            errors.append(error)
        if self.options.learn_feedback:
            for index, matrix in enumerate(self.feedback):
                assign_gradient(matrix, self.network.layers[index + 1].weight.grad.clone())
        for index, inhibition in enumerate(self.recurrent):
            source, potential = presynaptic[index], untaught.apical[index]
            step = self.options.recurrent_rate / (inputs.shape[0] * input_power(source))
            assign_gradient(inhibition, -(potential.t() @ source) * step)
        # 0-d tensors, read only when logged: no wait for the device per step
        saturated = [
            ((p < SATURATED) | (p > 1 - SATURATED)).double().mean() for p in untaught.probability
        ]
        series = {
            "burst_probability_deviation_by_layer": [
                (t - u).abs().mean()
                for t, u in zip(taught.probability, untaught.probability, strict=True)
            ],
            "apical_potential_by_layer": [v.double().pow(2).mean().sqrt() for v in taught.apical],
            "saturated_burst_probability_by_layer": saturated,
        }
        loss = self.loss(trace.output, targets)
        return StepRecord(loss, trace.output, tuple(errors), {}, series)

    @torch.no_grad()
    def burst_probability_deviation(self, inputs: Tensor, targets: Tensor) -> list[Tensor]:
        """p_l - p_bar_l per hidden layer (batch, units)."""
        _, _, untaught, taught, _ = self._passes(inputs, targets)
        return [t - u for t, u in zip(taught.probability, untaught.probability, strict=True)]

    @torch.no_grad()
    def burst_states(self, inputs: Tensor, targets: Tensor) -> tuple[BurstState, BurstState]:
        """The feedback passes without and with the teacher (apical potentials, burst
        probabilities and burst rates of every layer)."""
        _, _, untaught, taught, _ = self._passes(inputs, targets)
        return untaught, taught

    @torch.no_grad()
    def compartment_trace(self, inputs: Tensor, targets: Tensor) -> CompartmentTrace:
        """One step per phase (the rate model has no membrane dynamics): the basal potential
        a_l, the apical potential v_l, the burst probability and the event rate rho_l; at the
        output the basal potential and the burst rate the teacher sets."""
        trace, rates, untaught, taught, _ = self._passes(inputs, targets)
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
