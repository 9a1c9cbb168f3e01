"""DTP with feedback trained on the local difference reconstruction loss (L-DRL).

    h^_L = h_L - beta dl_n/dh_L                                  (top target, per sample)
    g_l(h) = V_l f_l(h)         (feedback of the block [W_l, f_l]: reversed, f_l first, then V_l)
    h^_{l-1} = h_{l-1} + g_l(h^_l) - g_l(h_l)                    (difference correction, as DTP)
    L_l = 1/(2 beta N) sum_n |h_l - h^_l|^2      (the update is scaled by 1/beta)
    L-DRL, per layer, noise eps on h_{l-1} and eta on h_l (covariance s^2 I), r = g_l(h_l):
        1/(s^2 N) sum_n [ -eps . (g_l(f_l(W_l (h_{l-1} + eps) + b_l)) - r)
                          + |g_l(h_l + eta) - r|^2 / 2 ]

Ernoult, Normandin, Moudgil, Spinney, Belilovsky, Rish, Richards & Bengio (2022). Towards scaling
difference target propagation by learning backprop targets. ICML, PMLR 162.

For small s the loss is -tr(J_g J_f) + |J_g|_F^2 / 2 (J_f = dh_l/dh_{l-1}, J_g = dg_l/dh_l), which
is smallest at J_g = J_f^T: the feedback's Jacobian learns the forward Jacobian's transpose (no
reconstruction of h_{l-1} itself is asked for: the difference correction removes g's offset).
Then g(h^_l) - g(h_l) = J_f^T Delta_l + O(beta^2), the targets are backprop's activity steps
-beta dl_n/dh_l, and the update tends to the BP gradient as beta -> 0 (Ernoult et al.'s Theorem).
The feedback is the forward block reversed, as Ernoult et al. build it (activation, then a linear
map; a linear output layer gets a linear feedback). g only enters through differences, so it needs
no bias, and the loss is quadratic in V with curvature E[dr dr^T] / s^2 <= 1, where
dr = f_l(h_l + eta) - f_l(h_l): plain SGD with momentum is stable at the usual learning rates.
J_g = V_l diag(f_l'(h_l)) matches J_f^T = W_l^T diag(f_l'(a_l)) exactly for identity layers and
approximately for squashing ones (the slopes are taken at h_l and at a_l). The loss is
differentiated in closed form; its value is the series ``feedback_loss_by_layer`` (negative once
the feedback is good). Ernoult et al. write it as -2 eps.(...) + |...|^2 without 1/s^2: the same
minimiser; ngrad divides by s^2 so the gradient's size does not depend on s.
``feedback_rate`` scales the feedback gradient (0.02 by default, as WM's rate): one batch's
estimate of J_f^T from N noise samples is noisy when N is below the layer width, and a small rate
averages it over batches (docs/target_propagation.md). ``feedback_iterations``, ``noise`` and
``noise_distribution`` work as for every rule of the family. Ernoult et al. set the feedback
schedule per layer (iterations [20, 30, 35, 55, 20], noise [0.4, 0.4, 0.2, 0.2, 0.08] and their
own learning rates on SimpleVGG): ``feedback_iterations``, ``feedback_step``, ``noise`` and
``feedback_rate`` each take one value for every layer or a list of one per layer with feedback
(layers 2..L, forward order, as their lists). The layers' losses are independent, so a per-layer
schedule is the one-value schedule applied to each layer on its own (tested): every iteration
evaluates the layers that still have iterations left, a layer takes internal steps of its own
size until its last iteration, whose gradient goes to ``.grad``.

On a conv layer g_l is their reversed conv block: unpooling at the forward pass's switches, the
activation, a transposed convolution with V_l (docs/target_propagation.md).

ngrad stores V_l^T (W_l's shape): ``feedback_pairs`` compares it with W_l (angle(V_l, W_l^T)), and
``diagnose`` adds |J_g - J_f^T|_F / |J_f|_F per layer (``jacobian_mismatch_by_layer``).

Locality: as DTP; the feedback synapse sees its own noisy input and output and the noise injected
into the layer below (the -eps . dr term is a correlation of the noise with the feedback response).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ngrad.errors import ConfigError
from ngrad.nn.init import fans, initialise_
from ngrad.nn.layers import Conv2dLayer, DenseLayer, Layer
from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.base import FeedbackPair
from ngrad.rules.target_propagation.pathways import (
    fast_function,
    feedback_noise,
    layer_output,
    repeat_switches,
)
from ngrad.rules.target_propagation.targets import (
    FeedbackLearningOptions,
    FeedbackStep,
    TrainedFeedbackRule,
)
from ngrad.search_space import LogUniform, tunable

__all__ = ["LocalDifferenceReconstruction", "local_difference_gradients"]


PER_LAYER = ("feedback_iterations", "feedback_step", "noise", "feedback_rate")


@dataclass(frozen=True)
class LocalDifferenceReconstructionOptions(FeedbackLearningOptions):
    target_step: float = 0.01  # beta: size of the output target's gradient step (small)
    feedback_rate: float | tuple[float, ...] = 0.02  # feedback lr / optimiser lr (or per layer)
    noise: float | tuple[float, ...] = 0.1  # s: std of the feedback loss's noise (or per layer)
    feedback_iterations: int | tuple[int, ...] = 1  # k: feedback updates per batch (or per layer)
    feedback_step: float | tuple[float, ...] = 0.01  # internal SGD step size (or per layer)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bounds(self, positive=("feedback_rate",))


def local_difference_gradients(
    layer: Layer,
    feedback_weight: Tensor,
    below: Tensor,
    above: Tensor,
    above_response: Tensor,
    noise_below: Tensor,
    noise_above: Tensor,
    noise: float,
    switches: Tensor | None = None,
) -> tuple[float, Tensor]:
    """L-DRL of one layer with g(h) = M^T U(f(h)) (M = V^T, W's shape; U the unpooling at the
    forward pass's ``switches`` in a pooled conv layer): ``below`` = h_{l-1}, ``above`` = h_l,
    ``above_response`` = f(h_l), noise samples eps and eta of standard deviation ``noise``.
    Returns (loss, grad M)."""
    scale = 1.0 / (noise * noise * below.shape[0])
    # g's inputs, as differences from g's input at the activity (g is linear after f)
    function = fast_function(layer.activation)
    forward = layer_output(layer, below + noise_below, switches)
    forward_change = function(forward).sub_(above_response)
    noise_change = function(above + noise_above).sub_(above_response)
    if not isinstance(layer, DenseLayer):
        return _convolutional_gradients(
            layer, feedback_weight, forward_change, noise_change, noise_below, scale, switches
        )
    noise_output = noise_change @ feedback_weight  # g(h_l + eta) - r
    correlation = forward_change.t() @ noise_below.flatten(1)  # sum_n dr_n eps_n^T, W's shape
    # -eps . (g(f(h + eps)) - r) summed over the batch is -<M, correlation>
    flat = noise_output.view(-1)
    loss = scale * float(
        0.5 * torch.dot(flat, flat) - torch.dot(correlation.view(-1), feedback_weight.view(-1))
    )
    gradient = torch.addmm(correlation, noise_change.t(), noise_output, alpha=-1.0)
    return loss, gradient.mul_(-scale)


def _convolutional_gradients(
    layer: Layer,
    weight: Tensor,
    forward_change: Tensor,
    noise_change: Tensor,
    noise_below: Tensor,
    scale: float,
    switches: Tensor | None,
) -> tuple[float, Tensor]:
    """The L-DRL and its gradient for a conv layer, through one transposed convolution and one
    weight correlation: with o = M^T U(noise_change), G = sum_n [corr(dr_n, eps_n) -
    corr(noise_change_n, o_n)], the gradient is -G / (s^2 N) and, as <M, corr(u, o)> = |o|^2,
    the loss is -(<M, G> + |o|^2 / 2) / (s^2 N)."""
    noise_output = layer.transpose(noise_change, weight, noise_below.shape, switches=switches)
    pairs = repeat_switches(switches, 2)
    combined = layer.weight_gradient(
        torch.cat([forward_change, noise_change]),
        torch.cat([noise_below, noise_output.neg()]),
        switches=pairs,
    )
    flat = noise_output.view(-1)
    loss = -scale * float(
        torch.dot(combined.view(-1), weight.reshape(-1)) + 0.5 * torch.dot(flat, flat)
    )
    return loss, combined.mul_(-scale)


class LocalDifferenceReconstruction(TrainedFeedbackRule):
    name = "ldrl"
    summary = "DTP whose feedback learns J_g = J_f^T (local difference recon. loss); update / beta"
    citation = "Ernoult et al. 2022, ICML"
    Options = LocalDifferenceReconstructionOptions
    search_space = tunable(target_step=LogUniform(1e-3, 0.1), noise=LogUniform(0.01, 0.5))
    feedback_loss_name = "feedback_loss_by_layer"

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        weights = []
        for layer in network.layers[1:]:
            weight = layer.weight.detach()
            fan_in, fan_out = fans(weight)  # the feedback maps the layer's output to its input
            fresh = initialise_(torch.empty_like(weight), self.options.init, fan_out, fan_in)
            weights.append(nn.Parameter(fresh))
        self.feedback_weights = nn.ParameterList(weights)  # slot i - 1: layer i's V^T
        count = len(weights)
        for name in PER_LAYER:
            value = getattr(self.options, name)
            if isinstance(value, tuple) and len(value) != count:
                raise ConfigError(
                    f"ldrl option {name!r} gives {len(value)} values, but the network has "
                    f"{count} layers with feedback (layers 2 to {count + 1}, in forward order): "
                    f"give one value or {count}"
                )

    def _by_layer(self, name: str) -> dict[int, Any]:
        """An option's value for each layer index with feedback (1 .. L - 1, 0-based)."""
        value = getattr(self.options, name)
        indices = range(1, len(self.network.layers))
        if isinstance(value, tuple):
            return dict(zip(indices, value, strict=True))
        return dict.fromkeys(indices, value)

    def feedback_schedule(self) -> dict[int, tuple[int, float]] | None:
        """Per layer (iterations, internal step size) when either option is a list."""
        options = self.options
        if not isinstance(options.feedback_iterations, tuple) and not isinstance(
            options.feedback_step, tuple
        ):
            return None
        iterations, sizes = self._by_layer("feedback_iterations"), self._by_layer("feedback_step")
        return {index: (k, sizes[index]) for index, k in iterations.items()}

    def feedback_matrices(self) -> list[Tensor | None]:
        """Entry i: V_i^T (W_i's shape) of the feedback that sends layer i's target difference
        down to its input; entry 0 is None (no target for the input)."""
        return [None, *self.feedback_weights]

    def feedback_gradients(
        self, trace: ForwardTrace, indices: Sequence[int] | None = None
    ) -> FeedbackStep:
        """The L-DRL of V_l for every layer (or those of ``indices``), with fresh noise on each
        layer's input and output; the gradients in the order of the layers."""
        layers = self.network.layers
        indices = range(1, len(layers)) if indices is None else indices
        noise, rates = self._by_layer("noise"), self._by_layer("feedback_rate")
        per_layer_noise = isinstance(self.options.noise, tuple)
        step = FeedbackStep({}, [], {})  # reuse: f_l(h_l) per layer, for the targets
        # eps on each layer's input, eta on its output: one draw for the whole pathway (of unit
        # size when each layer scales its own)
        pairs = [t for i in indices for t in trace.activities[i : i + 2]]
        drawn = 1.0 if per_layer_noise else self.options.noise
        noises = feedback_noise(pairs, drawn, self.options.noise_distribution)
        for position, index in enumerate(indices):
            below_noise, above_noise = noises[2 * position], noises[2 * position + 1]
            if per_layer_noise:
                below_noise.mul_(noise[index])
                above_noise.mul_(noise[index])
            weight = self.feedback_weights[index - 1]
            response = fast_function(layers[index].activation)(trace.activities[index + 1])
            step.reuse[index] = response
            step.losses[index], gradient = local_difference_gradients(
                layers[index],
                weight,
                trace.activities[index],
                trace.activities[index + 1],
                response,
                below_noise,
                above_noise,
                noise[index],
                trace.switches_of(index),
            )
            step.gradients.append((weight, gradient.mul_(rates[index])))
        return step

    def propagate_targets(
        self, trace: ForwardTrace, top_difference: Tensor, reuse: Any = None
    ) -> list[Tensor]:
        layers = self.network.layers
        differences = [top_difference]
        for index in range(len(layers) - 1, 0, -1):
            function, above = fast_function(layers[index].activation), trace.activities[index + 1]
            response = function(above) if reuse is None else reuse[index]
            # g(h^) - g(h) = (f(h + Delta) - f(h)) M
            change = function(above + differences[-1]).sub_(response)
            differences.append(
                layers[index].transpose(
                    change,
                    self.feedback_weights[index - 1],
                    trace.activities[index].shape,
                    switches=trace.switches_of(index),
                )
            )
        differences.reverse()
        return differences

    def feedback_pairs(self) -> list[FeedbackPair]:
        """V_l^T against W_l: the feedback Jacobian should approach the forward one's transpose."""
        return [
            FeedbackPair(index, matrix, layer.weight)
            for index, (matrix, layer) in enumerate(
                zip(self.feedback_matrices(), self.network.layers, strict=True)
            )
            if matrix is not None
        ]

    @torch.no_grad()
    def diagnose(self, inputs: Tensor, targets: Tensor) -> dict[str, float | list[float]]:
        """Adds |J_g - J_f^T|_F / |J_f|_F per layer (mean over samples) to the family's."""
        result = super().diagnose(inputs, targets)
        trace = self.network.trace(inputs)
        layers = self.network.layers
        mismatch = [math.nan]
        for index in range(1, len(layers)):
            layer, weight = layers[index], self.feedback_weights[index - 1]
            above = trace.activities[index + 1]
            forward_slope = layer.activation.derivative(trace.pre_activations[index], above)
            feedback_slope = layer.activation.derivative(above, layer.activation(above))
            if not isinstance(layer, DenseLayer):
                gap, forward = _convolutional_mismatch(
                    layer, weight, trace, index, forward_slope, feedback_slope
                )
                mismatch.append(float((gap.clamp(min=0).sqrt() / forward.sqrt()).mean()))
                continue
            # per sample, in W's shape: J_g^T = diag(f'(h)) M and J_f = diag(f'(a)) W; their
            # squared Frobenius distance from the rows' norms and products, O(N n_l) memory
            rows_m = weight.pow(2).sum(dim=1)
            rows_w = layer.weight.pow(2).sum(dim=1)
            rows_mw = (weight * layer.weight).sum(dim=1)
            forward = forward_slope.pow(2) @ rows_w
            gap = feedback_slope.pow(2) @ rows_m - 2 * (feedback_slope * forward_slope) @ rows_mw
            gap += forward
            mismatch.append(float((gap.clamp(min=0).sqrt() / forward.sqrt()).mean()))
        result["jacobian_mismatch_by_layer"] = mismatch
        return result


def _convolutional_mismatch(
    layer: Conv2dLayer,
    weight: Tensor,
    trace: ForwardTrace,
    index: int,
    forward_slope: Tensor,
    feedback_slope: Tensor,
) -> tuple[Tensor, Tensor]:
    """|J_g - J_f^T|_F^2 and |J_f|_F^2 per sample for a conv layer. The column of output unit
    (c, p) in either Jacobian is a slope times channel c's kernel placed at p (at its switch in a
    pooled layer), clipped at the padded borders: its products are the kernels' per-offset
    products summed over the offsets that land inside the input, one convolution of an all-ones
    map with them."""
    below = trace.activities[index]
    ones = below.new_ones(1, 1, *below.shape[2:])
    products = torch.stack(
        [(weight * weight).sum(1), (weight * layer.weight).sum(1), layer.weight.pow(2).sum(1)]
    )  # (3, C_out, k, k): M.M, M.W, W.W per output channel and offset
    channels = products.shape[1]
    maps = F.conv2d(
        ones, products.flatten(0, 1).unsqueeze(1), stride=layer.stride, padding=layer.padding
    ).view(3, channels, -1)
    switches = trace.switches_of(index)
    count = below.shape[0]
    if switches is None:
        maps = maps.unsqueeze(1).expand(-1, count, -1, -1)
    else:
        where = switches.flatten(2).unsqueeze(0).expand(3, -1, -1, -1)
        maps = maps.unsqueeze(1).expand(-1, count, -1, -1).gather(3, where)
    mm, mw, ww = (m.reshape(count, -1) for m in maps)
    forward_slope, feedback_slope = forward_slope.flatten(1), feedback_slope.flatten(1)
    forward = (forward_slope.pow(2) * ww).sum(1)
    cross = (feedback_slope * forward_slope * mw).sum(1)
    gap = (feedback_slope.pow(2) * mm).sum(1) - 2 * cross + forward
    return gap, forward
