"""Segregated dendrites: plateau potentials at the end of a forward and a target phase.

Hidden layer l = 1..L-1: neurons with a basal dendrite, a soma and an apical dendrite that is
electrotonically segregated (it does not drive the soma). The output layer L has a dendrite and a
soma that the teacher nudges in the target phase. Rates r_l = f(C_l), r_0 = x; conductances g_L
(leak), g_B (basal), g_D (output dendrite), g_som (teacher):

    basal      v^_B,l = W_l r_{l-1} + b_l
    soma       dC_l/dt = -g_L C_l + g_B (v_B,l - C_l)     => C_l -> v^_B,l = k_B v_B,l
    apical     A_l = Y_l r_L                               (feedback straight from the output)
    output     dC_L/dt = -g_L C_L + g_D (v_B,L - C_L) [+ g_som (u_trg - C_L) in the target phase]
    plateaus   alpha^f_l = sigma(mean A_l over the end of the forward phase), alpha^t_l likewise
    hidden     L^l = || f(C_bar^f_l) + alpha^t_l - alpha^f_l - f(C_l) ||^2 / 2  (target fixed):
               Delta W_l ~ (alpha^t_l - alpha^f_l) * f'(C_bar^f_l) r_bar^f_{l-1}^T
    output     Delta W_L ~ (f(C_bar^t_L) - f(C_bar^f_L)) * f'(C_bar^f_L) r_bar^f_{L-1}^T

with bars the averages over the window at the end of a phase and k_B = g_B / (g_L + g_B) folded
into W (the soma settles at v^_B, so the network's feedforward pass is the forward phase's steady
state and ``forward`` is that pass). Locality: a hidden synapse uses its presynaptic rate, its
neuron's somatic potential and the neuron's own two plateau potentials; Y is fixed and random.

Guerguiev, Lillicrap & Richards (2017). Towards deep learning with segregated dendrites. eLife 6,
e22901.

ngrad's reading. Two phases of fixed length with the paper's leaky somatic integration and
conductances; plateaus are the sigmoid of the apical potential averaged over the last
``plateau_window`` steps of each phase; rates instead of Poisson spikes; any hidden activation;
exponential Euler steps; the teacher nudges the output potential toward u_trg = a_L - N dL/da_L
(``compartments.py``). The forward phase starts from the somata settled on the input (with a
segregated apical this is the forward phase's equilibrium), the target phase from where the
forward phase ended; only the output soma is simulated (the hidden somata never move). The
apical reads the output potentials u_L (or, with ``output_rates="sigmoid"``, the paper's positive
rates sigma(u_L)) through positive-mean Y, scaled so that at half-maximal output rates the apical
potential has mean ``feedback_mean`` and spread ``feedback_spread``: the plateau sigmoid bends the
signal without saturating.
Every update is divided by lambda N sigma'(0) (times sigma'(0) for sigmoid output rates), lambda =
g_som / (g_L + g_D + g_som), which makes the output update BP's gradient and a hidden update
DFA's (BP's for one hidden layer with Y = W_L) when the apical potential is near 0.

Teacher (``teacher``). ``loss`` (default): u_trg = a_L - N dL/da_L as above. ``conductance``: the
paper's (its Materials and methods, target phase): the output somata receive the current
I = g_E (E_E - C_L) + g_I (E_I - C_L) with g_E = g_som y, g_I = g_som (1 - y), y the one-hot label
(the target unit is excited, the others inhibited; the paper: g_E + g_I = 1, E_E = 8, E_I = -8).
As g_E + g_I = g_som for every unit this is the nudging above with

    u_trg = u_cond = y E_E + (1 - y) E_I          (``reversal_excitatory``, ``reversal_inhibitory``)

so the target phase settles at C_L = (1 - lambda) v^_B,L + lambda u_cond, and at its fixed point
the output update is the gradient of |a_L - u_cond|^2 / (2 N): the squared error toward the
reversal potentials, whatever ``loss`` reports. With E_E = 1, E_I = 0 and the squared-error loss
it is the ``loss`` teacher exactly. What is kept, what is simplified and the defaults:
``docs/compartmental.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from ngrad.nn.activations import SIGMOID_SLOPE_AT_ZERO
from ngrad.nn.network import Network
from ngrad.numeric import root_mean_square
from ngrad.options import check_bounds
from ngrad.rules.base import FeedbackPair, LearningRule, StepRecord, write_layer_update
from ngrad.rules.compartmental.compartments import (
    CompartmentTrace,
    relaxation_rate,
    stack_steps,
    teacher_potential,
    unsupported_network_reason,
)
from ngrad.rules.feedback import FeedbackBuffers
from ngrad.search_space import LogUniform, Uniform, tunable

__all__ = ["PhaseAverages", "SegregatedDendrites"]


@dataclass(frozen=True)
class SegregatedOptions:
    g_leak: float = 0.1  # g_L, leak conductance of every soma
    g_basal: float = 0.6  # g_B, basal dendrite to soma (hidden layers)
    g_dendrite: float = 0.6  # g_D, output dendrite to soma
    g_soma: float = 1.0  # g_som, teacher conductance (g_E + g_I in the paper)
    dt: float = 1.0  # exponential-Euler step (units of capacitance / conductance)
    forward_steps: int = 4  # steps of the forward phase (no teacher)
    target_steps: int = 8  # steps of the target phase (teacher nudges the output)
    plateau_window: int = 4  # steps averaged at the end of each phase
    feedback_mean: float = 0.5  # mean apical potential when every output reads 1/2
    feedback_spread: float = 1.0  # its standard deviation across units
    output_rates: Literal["sigmoid", "potential"] = "potential"  # apical reads u_L or sigma(u_L)
    teacher: Literal["loss", "conductance"] = "loss"  # toward a_L - N dL/da_L, or paper's g_E, g_I
    reversal_excitatory: float = 8.0  # E_E: where g_E pulls the target unit (teacher=conductance)
    reversal_inhibitory: float = -8.0  # E_I: where g_I pulls the other units (teacher=conductance)

    def __post_init__(self) -> None:
        check_bounds(
            self,
            positive=("g_basal", "g_dendrite", "g_soma", "dt", "feedback_spread"),
            non_negative=("g_leak",),
            at_least_one=("plateau_window",),
        )
        if self.reversal_excitatory <= self.reversal_inhibitory:
            raise ValueError(
                "option 'reversal_excitatory' must be above 'reversal_inhibitory', got "
                f"{self.reversal_excitatory} <= {self.reversal_inhibitory}"
            )
        for name in ("forward_steps", "target_steps"):
            if getattr(self, name) < self.plateau_window:
                raise ValueError(
                    f"option {name!r} must be >= plateau_window ({self.plateau_window}), "
                    f"got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class PhaseAverages:
    """Averages over the window at the end of one phase."""

    soma: list[Tensor]  # C_bar_l, l = 1..L
    rates: list[Tensor]  # r_bar_l, l = 0..L (r_0 = x)
    apical: list[Tensor]  # A_bar_l, hidden layers
    plateau: list[Tensor]  # alpha_l = sigma(A_bar_l)


class SegregatedDendrites(LearningRule):
    name = "segregated"
    summary = "segregated dendrites: hidden loss on plateau potentials of two phases"
    citation = "Guerguiev, Lillicrap & Richards 2017, eLife 6:e22901"
    Options = SegregatedOptions
    search_space = tunable(feedback_mean=Uniform(1.0, 5.0), feedback_spread=LogUniform(0.5, 5.0))

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        o, top = self.options, network.layers[-1].weight.detach()
        outputs = top.shape[0]  # Y_l ~ N(2 mean / n_L, (2 spread / sqrt(n_L))^2): at rates 1/2
        mean, std = 2 * o.feedback_mean / outputs, 2 * o.feedback_spread / outputs**0.5
        self.feedback = FeedbackBuffers(
            top.new_empty(outputs, layer.out_features).normal_(mean, std)
            for layer in network.layers[:-1]
        )

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        return unsupported_network_reason(network)

    def feedback_matrices(self) -> list[Tensor]:
        """Y_l for l = 1..L-1 in (outputs x units of layer l) orientation: A_l = r_L @ Y_l."""
        return list(self.feedback)

    def feedback_pairs(self) -> list[FeedbackPair]:
        """Y_l against W_L ... W_{l+1}, what it stands in for (as DFA's blocks)."""
        layers, pairs = list(self.network.layers), []
        for index, block in enumerate(self.feedback_matrices()):
            product = layers[-1].weight
            for layer in reversed(layers[index + 1 : -1]):
                product = product @ layer.weight
            pairs.append(FeedbackPair(index, block, product))
        return pairs

    def _apical_slope(self) -> float:
        """sigma'(0) of the plateau, times that of the output rate when it is a sigmoid."""
        rate = SIGMOID_SLOPE_AT_ZERO if self.options.output_rates == "sigmoid" else 1.0
        return SIGMOID_SLOPE_AT_ZERO * rate

    def _nudge(self) -> float:
        o = self.options
        return o.g_soma / (o.g_leak + o.g_dendrite + o.g_soma)

    def output_rate(self, potential: Tensor) -> Tensor:
        """What the apical dendrites read from an output soma: sigma(u_L), a positive rate (the
        paper's lambda_max sigma(C_L) with lambda_max folded into Y), or u_L itself."""
        if self.options.output_rates == "sigmoid":
            return torch.sigmoid(potential)
        return potential

    def plateau(self, apical: Tensor) -> Tensor:
        """alpha = sigma(A): the plateau potential of an apical potential averaged over a window."""
        return torch.sigmoid(apical)

    def target_potential(self, potential: Tensor, targets: Tensor) -> Tensor:
        """Where the target phase's teacher pulls the output somata (``potential``: their forward
        potentials): u_trg = a_L - N dL/da_L, or with ``teacher="conductance"`` the reversal
        potential of each unit's nudging conductance, u_cond = y E_E + (1 - y) E_I."""
        o = self.options
        if o.teacher == "loss":
            return teacher_potential(self.loss, potential, targets)
        excited = F.one_hot(targets, potential.shape[1]).to(potential.dtype)  # g_E / g_som
        span = o.reversal_excitatory - o.reversal_inhibitory
        return excited.mul_(span).add_(o.reversal_inhibitory)

    # -- dynamics ------------------------------------------------------------------------------
    def _phases(self, inputs: Tensor, targets: Tensor, visited=None):
        """The two phases. The forward phase starts settled on the input (its equilibrium: the
        apical does not drive the soma), so it stays there; in the target phase only the output
        soma moves (the hidden somata never see the teacher), so only it is simulated."""
        o = self.options
        inputs = inputs.flatten(1)
        trace = self.network.trace(inputs)
        soma, rates = list(trace.pre_activations), list(trace.activities)
        top = soma[-1]
        feedback = self.feedback_matrices()
        resting = self.output_rate(top)
        apical = [resting @ block for block in feedback]
        forward = PhaseAverages(soma, rates, apical, [self.plateau(a) for a in apical])
        if visited is not None:
            visited.extend([(soma, apical, soma)] * o.forward_steps)
        teacher = self.target_potential(top, targets)
        equilibrium = torch.lerp(top, teacher, self._nudge())
        rate = relaxation_rate(o.dt, o.g_leak + o.g_dendrite + o.g_soma)
        output, total, total_rate = top, torch.zeros_like(top), torch.zeros_like(top)
        for step in range(o.target_steps):
            output = torch.lerp(output, equilibrium, rate)
            if step >= o.target_steps - o.plateau_window:
                total = total + output
                total_rate = total_rate + self.output_rate(output)
            if visited is not None:
                now = [*soma[:-1], output]
                visited.append((soma, [self.output_rate(output) @ y for y in feedback], now))
        average = total / o.plateau_window
        target_apical = [(total_rate / o.plateau_window) @ block for block in feedback]
        target = PhaseAverages(
            [*soma[:-1], average],
            [*rates[:-1], self.network.layers[-1].activation(average)],
            target_apical,
            [self.plateau(a) for a in target_apical],
        )
        return forward, target

    # -- plasticity ----------------------------------------------------------------------------
    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        forward, target = self._phases(inputs, targets)
        layers = list(self.network.layers)
        scale = self._nudge() * inputs.shape[0]
        errors = []
        for index, layer in enumerate(layers):
            potential = forward.soma[index]
            slope = layer.activation.derivative(potential, layer.activation(potential))
            if index < len(layers) - 1:
                difference = target.plateau[index] - forward.plateau[index]
                error = difference * slope / (-scale * self._apical_slope())
            else:
                difference = target.rates[-1] - forward.rates[-1]
                error = difference * slope / -scale
            weight_update = layer.weight_gradient(error, forward.rates[index])
            write_layer_update(layer, weight_update, layer.bias_gradient(error))
            errors.append(error)
        series = {
            "plateau_difference_by_layer": [
                root_mean_square(t - f)
                for t, f in zip(target.plateau, forward.plateau, strict=True)
            ],
            "apical_potential_by_layer": [root_mean_square(a) for a in target.apical],
        }
        output = forward.soma[-1]
        return StepRecord(self.loss(output, targets), output, tuple(errors), {}, series)

    @torch.no_grad()
    def phase_averages(
        self, inputs: Tensor, targets: Tensor
    ) -> tuple[PhaseAverages, PhaseAverages]:
        """What the plasticity reads: end-of-phase averages of the forward and target phases."""
        return self._phases(inputs, targets)

    @torch.no_grad()
    def compartment_trace(self, inputs: Tensor, targets: Tensor) -> CompartmentTrace:
        """Basal (v_B = v^_B / k_B), apical and somatic potentials at every step."""
        visited: list = []
        self._phases(inputs, targets, visited)
        o = self.options
        gains = [(o.g_leak + o.g_basal) / o.g_basal] * (len(self.network.layers) - 1)
        gains.append((o.g_leak + o.g_dendrite) / o.g_dendrite)
        layers = []
        for index, gain in enumerate(gains):
            entry = {
                "basal": stack_steps([basal[index] * gain for basal, _, _ in visited]),
                "soma": stack_steps([soma[index] for _, _, soma in visited]),
            }
            if index < len(gains) - 1:
                entry["apical"] = stack_steps([apical[index] for _, apical, _ in visited])
            layers.append(entry)
        phases = (("forward", o.forward_steps), ("target", o.target_steps))
        return CompartmentTrace(phases, tuple(layers))
