"""Layered Hopfield networks for the energy-based rules (EP, CHL): the energy and its relaxation.

The network's layers are the Hopfield network: states s_1..s_M (activities, in the range of each
layer's activation f_l), the input s_0 = x clamped, and the layers' weights as symmetric couplings,
with a feedback strength gamma (Xie & Seung 2003; gamma = 1 is the energy of Scellier & Bengio
2017 and Laborieux et al. 2021):

    E(s) = sum_{l=1}^{M} gamma^{l-1} [ sum_i G_l(s_{l,i}) - s_l . (W_l s_{l-1} + b_l) ],
    G_l' = f_l^{-1};   dE/ds_l = gamma^{l-1} (f_l^{-1}(s_l) - u_l),
    u_l = W_l s_{l-1} + b_l + gamma W_{l+1}^T s_{l+1}          (no feedback term for l = M)

so a state is a fixed point of the discrete-time dynamics s_l <- f_l(u_l) (Laborieux et al. 2021's
s <- f(dPhi/ds), Phi = sum_l s_l . (W_l s_{l-1} + b_l), at gamma = 1) exactly when dE/ds = 0. G_l
integrates f_l^{-1} (Hopfield 1984): (1+s)log(1+s)/2 + (1-s)log(1-s)/2 for tanh, s log s +
(1-s) log(1-s) for the sigmoid, s^2/2 for the identity and relu. Given its neighbours, E is
separable and convex in one layer's states and f_l(u_l) is the exact minimiser: updating the odd
layers, then the even ones (``schedule="alternating"``) is block coordinate descent and never
raises E; updating every layer from the old state (``"synchronous"``, Laborieux et al.'s code)
costs the same without that guarantee. As gamma -> 0 the free fixed point is the feedforward pass.

Max-pooled conv layers (Laborieux et al. 2021): a_l = maxpool(W_l * s_{l-1}) + b_l in E, which is
linear in s_{l-1} once the switches (where each window's maximum sits) are fixed. The relaxation
reads them at the current state (a layer's bottom-up product refreshes them; its top-down pass
reuses them). For s_l >= 0 (relu, sigmoid units) -s_l . maxpool(W_l * s_{l-1}) is concave in
s_{l-1}, so the update at the current switches minimises an upper bound of E that touches it:
the alternating schedule still never raises E.

M = L when the output units relax (squared-error variant), M = L - 1 when the last layer is a
readout of s_{L-1} outside the energy (Laborieux et al. 2021's cross-entropy variant). The top
relaxed layer takes a ``top_update(u_M, s_M)``: f_M(u_M) in the free phase, the nudged or clamped
rule otherwise.

``relaxation.py`` runs these dynamics: phases of at most a given number of steps that stop once
settled (no state moved by more than a tolerance in a step), and stacked blocks of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ngrad.nn.activations import LEAKY_RELU_SLOPE, Activation
from ngrad.nn.layers import DenseLayer, Layer
from ngrad.nn.losses import Loss
from ngrad.nn.network import Network
from ngrad.rules.base import write_layer_update
from ngrad.rules.energy_based.relaxation import (
    Relaxation,
    TopUpdate,
    add_top_down,
    is_pooled,
    largest_change,
    relax,
)

__all__ = [
    "ENERGY_INTEGRALS",
    "SOFTMAX_GROUP",
    "Relaxation",
    "TopUpdate",
    "add_top_down",
    "bottom_up",
    "feedforward_states",
    "hopfield_energy",
    "is_pooled",
    "largest_change",
    "one_hot_like",
    "readout_error",
    "relax",
    "write_contrastive_gradients",
]


def _tanh_integral(s: Tensor) -> Tensor:
    return 0.5 * (torch.xlogy(1 + s, 1 + s) + torch.xlogy(1 - s, 1 - s))


def _sigmoid_integral(s: Tensor) -> Tensor:
    return torch.xlogy(s, s) + torch.xlogy(1 - s, 1 - s)


def _quadratic_integral(s: Tensor) -> Tensor:
    return 0.5 * s * s


def _hard_sigmoid_integral(s: Tensor) -> Tensor:
    return s * s  # rho^{-1}(s) = 2 s on [0, 1], where the relaxation keeps the state


def _leaky_integral(s: Tensor) -> Tensor:
    return 0.5 * s * torch.where(s > 0, s, s / LEAKY_RELU_SLOPE)


def _not_elementwise(_pre: Tensor, _activity: Tensor) -> Tensor:
    raise NotImplementedError("the softmax group's derivative is not elementwise")


# A group of output units with p = softmax(u): the minimiser of sum_i p_i log p_i - u . p on the
# simplex (negative entropy is the Legendre dual of log-sum-exp), so it relaxes like any layer.
SOFTMAX_GROUP = Activation("softmax", lambda pre: torch.softmax(pre, dim=1), _not_elementwise)


# G_l = integral of f_l^{-1} per activation; gelu (not monotone) has none: no Hopfield energy.
ENERGY_INTEGRALS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": _tanh_integral,
    "sigmoid": _sigmoid_integral,
    "identity": _quadratic_integral,
    "relu": _quadratic_integral,
    "leaky_relu": _leaky_integral,
    "hard_sigmoid": _hard_sigmoid_integral,
    "softmax": lambda p: torch.xlogy(p, p),  # summed over the group: its negative entropy
}


def bottom_up(layer: Layer, below: Tensor) -> Tensor:
    """W_l s_{l-1} + b_l (one fused product for dense layers)."""
    if isinstance(layer, DenseLayer) and layer.bias is not None:
        return torch.addmm(layer.bias, below.flatten(1), layer.weight.t())
    return layer.pre_activation(below)


def feedforward_states(
    network: Network, input_drive: Tensor, activations: Sequence[Activation]
) -> list[Tensor]:
    """s_l = f_l(W_l s_{l-1} + b_l) for the relaxed layers: the relaxation's start without
    feedback (``activations[l]``: the units' nonlinearity, usually the layer's own)."""
    states = [activations[0](input_drive)] if activations else []
    for index in range(1, len(activations)):
        states.append(activations[index](bottom_up(network.layers[index], states[-1])))
    return states


@torch.no_grad()
def hopfield_energy(
    network: Network,
    inputs: Tensor,
    states: Sequence[Tensor],
    feedback_strength: float = 1.0,
    activations: Sequence[Activation] | None = None,
) -> Tensor:
    """E(s) per sample (shape: batch), the relaxed layers being the first ``len(states)``, their
    units' nonlinearities ``activations`` (default: the layers' own)."""
    energy = torch.zeros(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
    below = inputs
    for index, (layer, state) in enumerate(zip(network.layers, states, strict=False)):
        activation = layer.activation if activations is None else activations[index]
        integral = ENERGY_INTEGRALS[activation.name](state)
        term = integral - state * layer.pre_activation(below)
        energy = energy + feedback_strength**index * term.flatten(1).sum(1)
        below = state
    return energy


def write_contrastive_gradients(
    network: Network,
    inputs: Tensor,
    positive: Sequence[Tensor],
    negative: Sequence[Tensor],
    scales: Sequence[float],
) -> list[Tensor]:
    """grad W_l = -c_l sum_n (s+_l s+_{l-1}^T - s-_l s-_{l-1}^T), grad b_l = -c_l sum_n (s+_l -
    s-_l), c_l = ``scales[l]``, for the relaxed layers (s_0 = x in both states, so the first layer
    needs one product). Returns the scaled activity differences -c_l (s+_l - s-_l)."""
    differences = []
    for index, (plus, minus, scale) in enumerate(zip(positive, negative, scales, strict=True)):
        layer = network.layers[index]
        difference = (plus - minus).mul_(-scale)
        if index == 0:
            gradient = layer.weight_gradient(difference, inputs)
        else:
            gradient = layer.weight_gradient(plus, positive[index - 1])
            gradient = gradient.sub_(layer.weight_gradient(minus, negative[index - 1]))
            gradient = gradient.mul_(-scale)
        write_layer_update(layer, gradient, layer.bias_gradient(difference))
        differences.append(difference)
    return differences


def one_hot_like(targets: Tensor, like: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(targets, like.shape[1]).to(like.dtype)


def readout_error(loss: Loss, readout: Layer, state: Tensor, targets: Tensor) -> Tensor:
    """e = dL/da_L of the readout a_L = W_L s_{L-1} + b_L (with the losses' 1/N)."""
    activation: Activation = readout.activation
    pre = bottom_up(readout, state)
    return loss.output_error(pre, activation(pre), targets, activation)
