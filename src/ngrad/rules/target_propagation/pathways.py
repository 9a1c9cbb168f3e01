"""Signals through a layer and its reversed block, on dense and convolutional layers alike.

A layer computes a = P(W * h_in) + b, h = f(a), where ``W *`` is a dense product or a convolution
and P is the identity or a max-pool, which keeps each window's maximum at its *switch*
(``Conv2dLayer(..., pool=k)``). With the switches of the forward pass fixed, P is a selection and
the block is linear before f. The reversed block of Ernoult et al. 2022 sends a signal u at h back
to h_in's shape: max-unpooling at the forward pass's switches, then the transposed product
(transposed convolution) with a feedback weight M of W's shape, ``layer.transpose(u, M, shape,
switches=...)``; ``layer.weight_gradient(z, x, switches=...)`` is its gradient sum_n <x_n, M^T z_n>
in M. Every feedback pathway of the family runs through these two and ``layer.linear``, so the
rules' closed-form feedback gradients hold on conv layers as on dense ones. Each sample is
flattened where the family's formulas treat activities as vectors (noise, Jacobians, angles).

The feedback passes use the forward pass's switches also for the noisy inputs of the feedback
losses (the block's linearisation at the data, whose Jacobian the losses train the feedback to
match; docs/target_propagation.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ngrad.nn.activations import Activation
from ngrad.nn.layers import Conv2dLayer, DenseLayer, Layer
from ngrad.nn.network import ForwardTrace, Network
from ngrad.rules.base import draw_for_batch
from ngrad.rules.noise import NoiseDistribution, rademacher

__all__ = [
    "dense_output",
    "fast_function",
    "feedback_affine",
    "feedback_noise",
    "layer_output",
    "output_jacobians",
    "repeat_switches",
    "spread_sum",
]


def fast_function(activation: Activation) -> Callable[[Tensor], Tensor]:
    """``activation``'s function for the feedback pathways' extra evaluations: the one place that
    may swap in a faster form of the same function. Today it is the activation's own: torch 2.13's
    CPU tanh runs about 3x faster than the 2 sigmoid(2x) - 1 that older torch releases needed
    (whose tanh kernel cost several times their sigmoid)."""
    return activation.function


def feedback_noise(
    like: Sequence[Tensor], std: float, distribution: NoiseDistribution
) -> list[Tensor]:
    """Independent zero-mean noise of covariance std^2 I shaped like each tensor (one sample per
    row, any per-sample shape), drawn in one call: ``rademacher`` (+-std, the family's default:
    the feedback losses' small-noise analysis needs only the covariance; +-std draws cost about a
    quarter of Gaussian ones and make the diagonal of eps eps^T exact, which lowers the variance of
    the noise-based feedback gradients) or ``gaussian`` (N(0, std^2 I), as in the papers)."""
    widths = [tensor[0].numel() for tensor in like]
    first = like[0]

    def draw(rows: int) -> Tensor:
        shape = (rows, sum(widths))
        if distribution == "gaussian":
            return torch.randn(shape, dtype=first.dtype, device=first.device)
        return rademacher(shape, first.dtype, first.device)

    block = draw_for_batch(draw, first.shape[0])  # data-parallel: rows of the global batch's draw
    blocks = block.mul_(std).split(widths, dim=1)
    return [noise.view(tensor.shape) for noise, tensor in zip(blocks, like, strict=True)]


def dense_output(layer: DenseLayer, inputs: Tensor) -> Tensor:
    """f(W x + b) of a dense layer, with ``fast_function`` (the feedback phases' extra passes)."""
    flat = inputs.flatten(1)
    if layer.bias is None:
        pre = flat @ layer.weight.t()
    else:
        pre = torch.addmm(layer.bias, flat, layer.weight.t())
    return fast_function(layer.activation)(pre)


def layer_output(layer: Layer, inputs: Tensor, switches: Tensor | None = None) -> Tensor:
    """f(P(W * x) + b) with ``fast_function``; a pooled layer reads its maxima at ``switches`` (the
    forward pass's, repeated to the batch) when given."""
    if isinstance(layer, DenseLayer):
        return dense_output(layer, inputs)
    pre = layer.add_bias(layer.linear(inputs, layer.weight, switches=switches))
    return fast_function(layer.activation)(pre)


def repeat_switches(switches: Tensor | None, times: int) -> Tensor | None:
    """The switches of a batch, for ``times`` copies of it stacked along the batch."""
    return None if switches is None or times == 1 else switches.repeat(times, 1, 1, 1)


def feedback_affine(
    layer: Layer,
    signal: Tensor,
    weight: Tensor,
    bias: Tensor,
    input_shape: torch.Size,
    switches: Tensor | None = None,
) -> Tensor:
    """M^T U(u) + c, shaped like the layer's input: the affine part of a reversed block (U the
    unpooling at ``switches``, c one bias per input unit of a dense layer, per input channel of a
    convolution)."""
    if isinstance(layer, DenseLayer):
        return torch.addmm(bias, signal.flatten(1), weight).view(input_shape)
    out = layer.transpose(signal, weight, input_shape, switches=switches)
    return out.add_(bias.view(1, -1, 1, 1))


def spread_sum(layer: Layer, gradient: Tensor) -> Tensor:
    """Sum over the batch of a gradient at the layer's input, per entry of ``feedback_affine``'s
    bias c."""
    if isinstance(layer, Conv2dLayer):
        return gradient.sum(dim=(0, 2, 3))
    return gradient.flatten(1).sum(dim=0)


def output_jacobians(network: Network, trace: ForwardTrace) -> list[Tensor]:
    """J_l = dh_L/dh_l per sample, shape (N, n_L, n_l) with each h_l flattened, for l = 1..L
    (J_L = I), by the chain rule J_{l-1} = J_l diag(f_l'(a_l)) dP(W_l h)/dh (through the forward
    pass's switches in a pooled layer)."""
    output = trace.output
    count, width = output.shape
    jacobian = torch.eye(width, dtype=output.dtype, device=output.device).expand(count, -1, -1)
    jacobians = [jacobian]
    for index in range(len(network.layers) - 1, 0, -1):
        layer = network.layers[index]
        slope = layer.activation.derivative(
            trace.pre_activations[index], trace.activities[index + 1]
        )
        if isinstance(layer, DenseLayer):
            jacobian = (jacobian * slope.flatten(1).unsqueeze(1)) @ layer.weight
        else:  # one transposed convolution for the n_L rows of every sample
            below = trace.activities[index]
            rows = (jacobian.view(count, width, *slope.shape[1:]) * slope.unsqueeze(1)).flatten(
                0, 1
            )
            switches = trace.switches_of(index)
            if switches is not None:
                switches = switches.repeat_interleave(width, dim=0)
            shape = torch.Size((count * width, *below.shape[1:]))
            sent = layer.transpose(rows, layer.weight, shape, switches=switches)
            jacobian = sent.view(count, width, -1)
        jacobians.append(jacobian)
    jacobians.reverse()
    return jacobians
