"""The base of the rules on a layered Hopfield network (EP, CHL): options, phases, prediction.

The energy is in ``energy.py``, its relaxation in ``relaxation.py``. A rule relaxes the free
phase (input clamped, output free) from the feedforward pass or from zeros, runs its own second
phase(s) from there, and predicts from the free fixed point. Every phase stops once it has
settled (no state moved by more than ``tolerance`` in a step) or after its step budget, and the
rule reports each phase's final residual and the fraction of samples that settled, so a run
shows whether its relaxation did (docs/energy_based.md).

Max-pooled conv layers (Laborieux et al. 2021's conv couplings, a_l = maxpool(W_l * s_{l-1}) +
b_l) relax through the switches of the current state; their units must be non-negative (relu,
sigmoid, as Laborieux et al.'s hard sigmoid) for the relaxation to keep descending the energy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ngrad.nn.activations import Activation
from ngrad.nn.layers import DenseLayer
from ngrad.nn.network import Network
from ngrad.options import check_bounds
from ngrad.rules.base import LearningRule
from ngrad.rules.energy_based.energy import (
    ENERGY_INTEGRALS,
    Relaxation,
    TopUpdate,
    bottom_up,
    feedforward_states,
    hopfield_energy,
    is_pooled,
    relax,
)
from ngrad.rules.energy_based.relaxation import in_place, relax_groups

__all__ = ["NON_NEGATIVE", "HopfieldRule", "RelaxationOptions", "phase_scalars"]

# Activities a max-pooled coupling needs: with s_l >= 0 the term -s_l . maxpool(W s_{l-1}) is
# concave in s_{l-1}, so updating s_{l-1} at the current switches still never raises the energy.
NON_NEGATIVE = ("relu", "sigmoid", "hard_sigmoid")


@dataclass(frozen=True)
class RelaxationOptions:
    """The free-phase options every Hopfield rule shares (subclassed by each rule's options)."""

    free_steps: int = 40  # T1, the most steps of the free phase (input clamped, output free)
    feedback_strength: float = 0.25  # gamma: layer l's energy term is weighted by gamma^(l-1)
    #     (1: the Hopfield energy of Scellier & Bengio and Laborieux et al.; -> 0: feedforward)
    schedule: Literal["alternating", "synchronous"] = "alternating"  # odd layers, then even
    #     ones (never raises the energy), or every layer at once from the old state
    initial_state: Literal["feedforward", "zeros"] = "feedforward"  # the free phase's start
    tolerance: float = 1e-3  # a phase stops once no state moved by more than this in a step
    #     (activity units); 0: every phase runs all its steps

    def __post_init__(self) -> None:
        if not 0 < self.feedback_strength <= 1:
            raise ValueError(
                f"option 'feedback_strength' must be in (0, 1], got {self.feedback_strength}"
            )
        check_bounds(self, non_negative=("tolerance",), at_least_one=("free_steps",))


def phase_scalars(name: str, *phases: Relaxation) -> dict[str, float]:
    """``<name>_residual`` (largest over ``phases``), ``<name>_settled_fraction`` (smallest) and
    ``<name>_steps_used`` (largest): what a StepRecord reports of a phase."""
    return {
        f"{name}_residual": max(phase.residual for phase in phases),
        f"{name}_settled_fraction": min(phase.settled_fraction for phase in phases),
        f"{name}_steps_used": float(max(phase.steps_used for phase in phases)),
    }


class HopfieldRule(LearningRule):
    """A rule on the layered Hopfield network; it predicts from the free fixed point.

    Subclasses give options ``free_steps``, ``feedback_strength``, ``schedule``, ``initial_state``
    and ``tolerance``, and may change ``relaxed_layers`` (M) and ``predict(states)``."""

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        for number, layer in enumerate(network.layers, start=1):
            if layer.activation.name not in ENERGY_INTEGRALS:
                return (
                    f"layer {number}'s activation {layer.activation.name!r} has no Hopfield "
                    f"energy (it needs a monotone one: {', '.join(ENERGY_INTEGRALS)})"
                )
            if is_pooled(layer) and layer.activation.name not in NON_NEGATIVE:
                return (
                    f"layer {number} max-pools, so its units need non-negative activities "
                    f"({', '.join(NON_NEGATIVE)}) for the relaxation to settle (with "
                    f"{layer.activation.name!r} the pooling's switches can flip back and forth)"
                )
        return None

    @property
    def relaxed_layers(self) -> int:
        return len(self.network.layers)

    def input_drive(self, inputs: Tensor) -> Tensor:
        return bottom_up(self.network.layers[0], inputs)

    def unit_activations(self) -> list[Activation]:
        """The nonlinearity of each relaxed layer's units (the layers' own by default)."""
        return [layer.activation for layer in list(self.network.layers)[: self.relaxed_layers]]

    def initial_states(self, input_drive: Tensor) -> list[Tensor]:
        """The feedforward pass (``initial_state="feedforward"``) or zeros."""
        units = self.unit_activations()
        layers = list(self.network.layers)[: len(units)]
        if self.options.initial_state == "feedforward":
            return feedforward_states(self.network, input_drive, units)
        if all(isinstance(layer, DenseLayer) for layer in layers[1:]):
            count = input_drive.shape[0]
            return [torch.zeros_like(input_drive)] + [
                input_drive.new_zeros(count, layer.out_features) for layer in layers[1:]
            ]
        states = feedforward_states(self.network, input_drive, units)  # for the shapes
        return [torch.zeros_like(state) for state in states]

    def phase(
        self,
        input_drive: Tensor,
        states: Sequence[Tensor],
        steps: int,
        top_update: TopUpdate | None,
    ) -> Relaxation:
        """At most ``steps`` steps from ``states``, stopping once settled to the tolerance."""
        return self.phases(input_drive, states, steps, top_update, 1)[0]

    def phases(
        self,
        input_drive: Tensor,
        states: Sequence[Tensor],
        steps: int,
        top_update: TopUpdate | None,
        groups: int,
    ) -> list[Relaxation]:
        """:meth:`phase` of a batch stacking ``groups`` blocks of samples, each stopping on its
        own (``relaxation.relax_groups``): one Relaxation per block."""
        options = self.options
        return relax_groups(
            self.network,
            input_drive,
            states,
            steps,
            top_update,
            options.feedback_strength,
            options.schedule,
            options.tolerance,
            groups,
        )

    def free_update(self) -> TopUpdate:
        top = in_place(self.unit_activations()[-1])
        return lambda drive, _state: top(drive)

    def free_phase(self, input_drive: Tensor) -> Relaxation:
        """Relax from the initial state with the input clamped and the output free."""
        start = self.initial_states(input_drive)
        return self.phase(input_drive, start, self.options.free_steps, self.free_update())

    def predict(self, inputs: Tensor, states: Sequence[Tensor]) -> Tensor:
        """The network's output given relaxed states (the top state by default)."""
        return states[-1]

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> Tensor:
        return self.predict(inputs, self.free_phase(self.input_drive(inputs)).states)

    @torch.no_grad()
    def representations(self, inputs: Tensor) -> list[Tensor]:
        """The free fixed point's hidden states (what the rule predicts from), then its output
        as ``forward`` gives it (logits where the output units use a link or a readout)."""
        states = list(self.free_phase(self.input_drive(inputs)).states)
        output = self.predict(inputs, states)
        hidden = states[: len(self.network.layers) - 1]
        return [*hidden, output]

    @torch.no_grad()
    def relaxation_trace(self, inputs: Tensor) -> dict[str, Any]:
        """Energy and residual at every step of the free phase (diagnostics, step by step; it
        stops where the free phase does)."""
        options, units = self.options, self.unit_activations()
        gamma, free = options.feedback_strength, self.free_update()
        drive = self.input_drive(inputs)
        states = self.initial_states(drive)
        energies = [float(hopfield_energy(self.network, inputs, states, gamma, units).mean())]
        residuals = []
        for _ in range(options.free_steps):
            step = relax(self.network, drive, states, 1, free, gamma, options.schedule)
            states = step.states
            energy = hopfield_energy(self.network, inputs, states, gamma, units)
            energies.append(float(energy.mean()))
            residuals.append(step.residual)
            if options.tolerance > 0 and step.residual <= options.tolerance:
                break
        return {"energy_by_step": energies, "residual_by_step": residuals, "states": states}
