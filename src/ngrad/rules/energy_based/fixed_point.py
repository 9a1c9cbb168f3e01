"""The gradient at a Hopfield network's free fixed point, by implicit differentiation.

This is the oracle EP is measured against (what recurrent backprop computes). With s*(theta) the
free fixed point of the layered energy E (``energy.py``) and C(s*) a cost:

    v = H^{-1} dC/ds,   H = d^2E/ds^2,
    dC/dW_l = (dC/dW_l)_direct + gamma^{l-1} (v_l s_{l-1}^T + s_l v_{l-1}^T),
    dC/db_l = (dC/db_l)_direct + gamma^{l-1} v_l,

solved per sample by conjugate gradients on I - sqrt(gamma) D^{1/2} K D^{1/2} (D = f'(u), K the
symmetric layer coupling), since H = Gamma^{1/2} D^{-1/2} (that matrix) D^{-1/2} Gamma^{1/2}. The
same v is -ds/dbeta at beta = 0: the activity difference EP measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ngrad.nn.network import Network
from ngrad.rules.energy_based.energy import add_top_down

__all__ = ["fixed_point_gradient"]


def _per_sample_dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))


def _broadcast(per_sample: Tensor, like: Tensor) -> Tensor:
    return per_sample.view(-1, *([1] * (like.dim() - 1)))


def _conjugate_gradients(
    operator: Callable[[Sequence[Tensor]], list[Tensor]],
    rhs: list[Tensor],
    iterations: int,
    tolerance: float,
) -> list[Tensor]:
    """Solve A z = rhs for each sample (A symmetric positive definite), batched."""
    z = [torch.zeros_like(r) for r in rhs]
    residual, direction = list(rhs), list(rhs)
    norm = _per_sample_dot(residual, residual)
    target = tolerance**2 * float(norm.max())
    for _ in range(iterations):
        if float(norm.max()) <= target:
            break
        product = operator(direction)
        curvature = _per_sample_dot(direction, product)
        step = torch.where(curvature > 0, norm / curvature, torch.zeros_like(norm))
        z = [v + _broadcast(step, v) * p for v, p in zip(z, direction, strict=True)]
        residual = [r - _broadcast(step, r) * q for r, q in zip(residual, product, strict=True)]
        new_norm = _per_sample_dot(residual, residual)
        ratio = torch.where(norm > 0, new_norm / norm, torch.zeros_like(norm))
        direction = [r + _broadcast(ratio, p) * p for r, p in zip(residual, direction, strict=True)]
        norm = new_norm
    return z


@torch.no_grad()
def fixed_point_gradient(
    network: Network,
    inputs: Tensor,
    states: Sequence[Tensor],
    cost_gradient: Sequence[Tensor],
    feedback_strength: float = 1.0,
    iterations: int = 300,
    tolerance: float | None = None,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """At the fixed point ``states``, v = H^{-1} dC/ds and the implicit part of dC/dW_l and
    dC/db_l for the relaxed layers (batch sums); the caller adds C's direct dependence. CG stops
    at ``tolerance`` x the first residual (default: 100 x the dtype's machine epsilon)."""
    layers, gamma, count = list(network.layers), feedback_strength, len(states)
    below = [inputs, *states[:-1]]
    # a pooled layer is linear at the fixed point's switches: the Hessian holds them fixed
    switches = [layer.switches(state) for layer, state in zip(layers, below, strict=False)]
    roots = []  # D^{1/2} = sqrt(f'(u)) per relaxed layer
    for index, state in enumerate(states):
        drive = layers[index].pre_activation(below[index])
        if index < count - 1:
            drive = add_top_down(
                drive, layers[index + 1], states[index + 1], gamma, False, switches[index + 1]
            )
        roots.append(layers[index].activation.derivative(drive, state).clamp_min(0).sqrt())

    def operator(z: Sequence[Tensor]) -> list[Tensor]:  # (I - sqrt(gamma) D^1/2 K D^1/2) z
        scaled = [d * v for d, v in zip(roots, z, strict=True)]
        result = []
        for index in range(count):
            coupled = torch.zeros_like(scaled[index])
            if index > 0:
                layer = layers[index]
                coupled = coupled + layer.linear(
                    scaled[index - 1], layer.weight, switches=switches[index]
                )
            if index < count - 1:
                coupled = add_top_down(
                    coupled, layers[index + 1], scaled[index + 1], 1.0, False, switches[index + 1]
                )
            result.append(z[index] - gamma**0.5 * roots[index] * coupled)
        return result

    weights = [gamma ** (-index / 2) for index in range(count)]  # Gamma^{-1/2}
    rhs = [w * d * c for w, d, c in zip(weights, roots, cost_gradient, strict=True)]
    if tolerance is None:
        tolerance = 100 * torch.finfo(inputs.dtype).eps
    z = _conjugate_gradients(operator, rhs, iterations, tolerance)
    adjoint = [w * d * v for w, d, v in zip(weights, roots, z, strict=True)]
    weight_gradients, bias_gradients = [], []
    for index, layer in enumerate(layers[:count]):
        where = switches[index]
        gradient = layer.weight_gradient(adjoint[index], below[index], switches=where)
        if index > 0:
            gradient = gradient + layer.weight_gradient(
                states[index], adjoint[index - 1], switches=where
            )
        weight_gradients.append(gamma**index * gradient)
        bias_gradients.append(gamma**index * layer.bias_gradient(adjoint[index]))
    return adjoint, weight_gradients, bias_gradients
