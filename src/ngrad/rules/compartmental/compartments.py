"""Pure pieces shared by the rules whose neurons have compartments (microcircuit, burstprop,
segregated dendrites).

Membrane dynamics. A compartment of conductance-weighted equilibrium u_inf and total conductance
g_tot obeys du/dt = g_tot (u_inf - u) (capacitance 1). ngrad integrates it with the exponential
Euler step

    u <- u + (1 - exp(-dt g_tot)) (u_inf - u),

exact while u_inf is constant over the step and stable for any dt (plain Euler diverges once
dt g_tot > 2). All potentials are dimensionless, rest = 0.

Teacher. ngrad's losses act on a linear output layer (logits), so every rule here nudges the output
soma toward the target potential u_trg = a_L - N dL/da_L (N the batch size: the loss is a batch
mean). For the squared error this is the one-hot label itself, as in the papers; for the
cross-entropy it is the logit vector moved by (onehot - softmax).

Inspection. :class:`CompartmentTrace` holds every compartment's potential at every step of a
forward phase followed by a teaching phase, so one neuron can be drawn as the review's Figure 4.

Notation, what each rule keeps local and how to set the options: ``docs/compartmental.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.activations import get_activation
from ngrad.nn.layers import DenseLayer
from ngrad.nn.losses import Loss
from ngrad.nn.network import Network

__all__ = [
    "CompartmentTrace",
    "input_power",
    "relaxation_rate",
    "stack_steps",
    "teacher_potential",
    "unsupported_network_reason",
]

_LINEAR = get_activation("identity")


@dataclass(frozen=True)
class CompartmentTrace:
    """Potentials of every compartment at every simulated step of one batch.

    ``phases`` names the phases in order with their step counts, e.g. (("forward", 8),
    ("teaching", 8)). ``layers[i]`` belongs to layer i + 1 (numbered 1..L as in the paper) and maps
    a compartment name ("basal", "apical", "soma", ...) to a tensor of shape (steps, batch, units).
    """

    phases: tuple[tuple[str, int], ...]
    layers: tuple[dict[str, Tensor], ...]

    @property
    def steps(self) -> int:
        return sum(count for _, count in self.phases)


def relaxation_rate(dt: float, total_conductance: float) -> float:
    """Fraction of the way to equilibrium covered in one exponential-Euler step."""
    return 1.0 - math.exp(-dt * total_conductance)


def teacher_potential(loss: Loss, output_potential: Tensor, targets: Tensor) -> Tensor:
    """u_trg = a_L - N dL/da_L for a linear output layer whose potential (logits) is given."""
    error = loss.output_error(output_potential, output_potential, targets, _LINEAR)
    return output_potential - output_potential.shape[0] * error


def input_power(rates: Tensor) -> float:
    """1 + mean over the batch of |r|^2: normalises a least-squares synapse's step (NLMS)."""
    return 1.0 + float(rates.pow(2).sum(dim=1).mean())


def unsupported_network_reason(
    network: Network,
    hidden: tuple[str, ...] = (),
    why_hidden: str = "",
    outputs: tuple[str, ...] = ("identity",),
) -> str | None:
    """Why a compartmental rule cannot train ``network``, or None: it needs at least one hidden
    layer, dense layers only and an output activation among ``outputs`` (by default linear: the
    teacher nudges the logits); ``hidden``, when not empty, lists the hidden activations allowed
    (``why_hidden`` says why)."""
    layers = list(network.layers)
    if len(layers) < 2:
        return "it needs at least one hidden layer (apical dendrites receive feedback from above)"
    for number, layer in enumerate(layers, start=1):
        if not isinstance(layer, DenseLayer):
            return (
                f"layer {number} is a {type(layer).__name__}; the compartmental neurons are "
                "simulated for fully connected (dense) layers only"
            )
    output = layers[-1].activation.name
    if output not in outputs:
        allowed = " or ".join(
            "linear ('identity')" if name == "identity" else repr(name) for name in outputs
        )
        return (
            f"the output layer's activation is {output!r}; it must be {allowed}, "
            "because the teacher nudges the output potential (the logits)"
        )
    for number, layer in enumerate(layers[:-1], start=1):
        if hidden and layer.activation.name not in hidden:
            return (
                f"hidden layer {number}'s activation is {layer.activation.name!r}; "
                f"it must be one of: {', '.join(hidden)}{why_hidden}"
            )
    return None


def stack_steps(steps: list[Tensor]) -> Tensor:
    """(steps, batch, units) from a list of per-step (batch, units) tensors."""
    return torch.stack(steps)
