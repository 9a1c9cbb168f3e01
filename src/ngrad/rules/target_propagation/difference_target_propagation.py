"""Difference target propagation (DTP): learned inverses with a difference correction (Fig. 3b, c).

    h^_L = h_L - eta dl_n/dh_L                                   (top target, per sample)
    g_l(h) = s_{l-1}(V_l h + c_l)                                (learned feedback, l = 2..L)
    h^_{l-1} = h_{l-1} + g_l(h^_l) - g_l(h_l)                    (difference correction)
    L_l = 1/(2 eta N) sum_n |h_l - h^_l|^2,   grad W_l = delta_l h_{l-1}^T,
    delta_l = -f_l'(a_l) * (h^_l - h_l) / (eta N)
    feedback: minimise 1/(2N) sum_n |g_l(f_l(h_{l-1} + eps)) - (h_{l-1} + eps)|^2,
              eps zero-mean noise of covariance s^2 I

Lee, Zhang, Fischer & Bengio (2015). Difference target propagation. ECML-PKDD, LNCS 9284.
Meulemans, Carzaniga, Suykens, Sacramento & Grewe (2020). A theoretical framework for target
propagation. NeurIPS 33 (the "DTP" baseline: feedback from the output, g_L, too).

s_{l-1} is the activation of the layer g_l reconstructs (tanh for tanh layers). The correction
removes g_l's reconstruction error, so with g_l the exact inverse DTP is TP, with a zero top step
every target equals its activity, and for small eta the targets are g's linearisation,
Delta_{l-1} = J_g(h_l) Delta_l + O(eta^2). The noise is what makes g_l invert f_l around the data,
not only on it: in expectation and to second order in s, the reconstruction loss of one sample is
(|g(f(h)) - h|^2 + s^2 |J_g J_f - I|_F^2) / 2, so the noise trains J_g toward J_f^{-1}.
``penultimate_target="gradient"`` is Lee et al.'s variant: h^_{L-1} = h_{L-1} - eta dl_n/dh_{L-1}
through W_L (their output layer learns from the gradient), and feedback g_l only for l = 2..L-1.
``feedback_iterations``, ``noise`` and ``noise_distribution`` work as for every rule of the family
(docs/target_propagation.md).

ngrad stores V_l^T (W_l's shape) and c_l as trained parameters; gradients are closed forms, no
autograd. On a conv layer V_l h is the reversed block's transposed convolution after unpooling at
the forward pass's switches, and c_l has one entry per input channel (docs/target_propagation.md).

Locality: the forward update needs only the layer's activity, its target and its input;
the feedback synapse learns from its own noisy input and output (a local auto-encoder); the
difference correction needs g_l evaluated at the activity and at the target, in the same neurons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ngrad.nn.activations import Activation
from ngrad.nn.init import fans, initialise_
from ngrad.nn.layers import DenseLayer, Layer
from ngrad.nn.network import ForwardTrace, Network
from ngrad.rules.target_propagation.pathways import (
    fast_function,
    feedback_affine,
    feedback_noise,
    layer_output,
    repeat_switches,
    spread_sum,
)
from ngrad.rules.target_propagation.targets import (
    FeedbackLearningOptions,
    FeedbackStep,
    TrainedFeedbackRule,
)
from ngrad.search_space import LogUniform, tunable

__all__ = ["DifferenceTargetPropagation", "reconstruction_gradients"]


@dataclass(frozen=True)
class DifferenceTargetPropagationOptions(FeedbackLearningOptions):
    penultimate_target: Literal["feedback", "gradient"] = "feedback"  # h^_{L-1}: via g_L or W_L^T


def reconstruction_gradients(
    layer: Layer,
    feedback_weight: Tensor,
    feedback_bias: Tensor,
    below: Tensor,
    above: Tensor,
    noise: Tensor,
    reconstructed: Activation,
    switches: Tensor | None = None,
) -> tuple[float, Tensor, Tensor, Tensor]:
    """Lee et al.'s loss 1/(2N) sum_n |g(f(h + eps)) - (h + eps)|^2 for one layer (``below`` = h,
    ``above`` = f(h)), with g(u) = s(M^T U(u) + c) (M = V^T, W's shape; U the unpooling at the
    forward pass's ``switches`` in a pooled conv layer): returns the loss, grad M, grad c, and g's
    pre-activation at the clean ``above`` (one product with the noisy one), which the targets
    reuse."""
    count = below.shape[0]
    corrupted = below + noise
    up = layer_output(layer, corrupted, switches)
    shape = torch.Size((2 * count, *below.shape[1:]))
    pre, pre_at_activity = feedback_affine(
        layer,
        torch.cat([up, above]),
        feedback_weight,
        feedback_bias,
        shape,
        repeat_switches(switches, 2),
    ).split(count)
    reconstruction = fast_function(reconstructed)(pre)
    slope = reconstructed.derivative(pre, reconstruction)
    residual = reconstruction.sub_(corrupted)
    flat = residual.view(-1)
    loss = 0.5 * float(torch.dot(flat, flat)) / count
    pre_gradient = residual.mul_(slope)
    weight_gradient = layer.weight_gradient(up, pre_gradient, switches=switches).div_(count)
    return loss, weight_gradient, spread_sum(layer, pre_gradient).div_(count), pre_at_activity


class DifferenceTargetPropagation(TrainedFeedbackRule):
    name = "dtp"
    summary = "difference target propagation: learned inverses g_l, h^_{l-1} += g(h^_l) - g(h_l)"
    citation = "Lee et al. 2015, ECML-PKDD; Meulemans et al. 2020, NeurIPS"
    Options = DifferenceTargetPropagationOptions
    search_space = tunable(target_step=LogUniform(1e-3, 0.5), noise=LogUniform(0.01, 0.5))

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        last = len(network.layers) - (1 if self.options.penultimate_target == "feedback" else 2)
        self.feedback_layers = list(range(1, last + 1))  # layer i's feedback rebuilds its input
        weights, biases = [], []
        for index in self.feedback_layers:
            weight = network.layers[index].weight.detach()
            fan_in, fan_out = fans(weight)  # the feedback maps the layer's output to its input
            fresh = initialise_(torch.empty_like(weight), self.options.init, fan_out, fan_in)
            weights.append(nn.Parameter(fresh))
            biases.append(nn.Parameter(weight.new_zeros(weight.shape[1])))
        self.feedback_weights = nn.ParameterList(weights)  # V_l^T, in feedback_layers' order
        self.feedback_biases = nn.ParameterList(biases)  # c_l

    def feedback_matrices(self) -> list[Tensor | None]:
        """Entry i: V_i^T (W_i's shape) of the feedback g_i that rebuilds layer i's input from
        its output; None where layer i has no feedback (the first layer; the output layer in Lee
        et al.'s variant)."""
        matrices: list[Tensor | None] = [None] * len(self.network.layers)
        for index, weight in zip(self.feedback_layers, self.feedback_weights, strict=True):
            matrices[index] = weight
        return matrices

    def feedback_map(
        self,
        index: int,
        activity: Tensor,
        input_shape: torch.Size | None = None,
        switches: Tensor | None = None,
        activate: bool = True,
    ) -> Tensor:
        """g for layer ``index``: from its output back to its input (of ``input_shape``; default:
        the dense layer's flat input); ``switches``: the forward pass's, for a pooled layer;
        ``activate=False``: g's pre-activation M^T U(h) + c."""
        slot, layer = self.feedback_layers.index(index), self.network.layers[index]
        if input_shape is None:
            input_shape = torch.Size((activity.shape[0], layer.weight.shape[1]))
        pre = feedback_affine(
            layer,
            activity,
            self.feedback_weights[slot],
            self.feedback_biases[slot],
            input_shape,
            switches,
        )
        return self.network.layers[index - 1].activation(pre) if activate else pre

    def difference(
        self,
        index: int,
        activity: Tensor,
        difference: Tensor,
        pre: Tensor | None = None,
        *,
        input_shape: torch.Size | None = None,
        switches: Tensor | None = None,
    ) -> Tensor:
        """g(h + Delta) - g(h) for layer ``index``: the target difference of its input (``pre``:
        M^T U(h) + c, if already computed; ``input_shape``, ``switches``: the layer input's shape
        and the forward pass's switches, for conv layers)."""
        slot, layer = self.feedback_layers.index(index), self.network.layers[index]
        weight, activation = self.feedback_weights[slot], self.network.layers[index - 1].activation
        if pre is None:  # V h + c
            pre = self.feedback_map(index, activity, input_shape, switches, activate=False)
        if isinstance(layer, DenseLayer):  # V (h + Delta) + c
            shifted = torch.addmm(pre.flatten(1), difference.flatten(1), weight).view(pre.shape)
        else:
            shifted = layer.transpose(difference, weight, pre.shape, switches=switches).add_(pre)
        function = fast_function(activation)
        return function(shifted).sub_(function(pre))

    def feedback_gradients(self, trace: ForwardTrace) -> FeedbackStep:
        """Lee et al.'s reconstruction loss of every g_l, with fresh noise on its target h_{l-1}."""
        belows = [trace.activities[index] for index in self.feedback_layers]
        if not belows:  # Lee et al.'s variant on one hidden layer: nothing to learn
            return FeedbackStep({})
        step = FeedbackStep({}, [], {})  # reuse: V h_l + c per layer, for the targets
        noises = feedback_noise(belows, self.options.noise, self.options.noise_distribution)
        for slot, (index, below, noise) in enumerate(
            zip(self.feedback_layers, belows, noises, strict=True)
        ):
            weight, bias = self.feedback_weights[slot], self.feedback_biases[slot]
            loss, grad_weight, grad_bias, step.reuse[index] = reconstruction_gradients(
                self.network.layers[index],
                weight,
                bias,
                below,
                trace.activities[index + 1],
                noise,
                self.network.layers[index - 1].activation,
                trace.switches_of(index),
            )
            step.losses[index] = loss
            step.gradients.extend([(weight, grad_weight), (bias, grad_bias)])
        return step

    def propagate_targets(
        self, trace: ForwardTrace, top_difference: Tensor, reuse: Any = None
    ) -> list[Tensor]:
        layers = self.network.layers
        differences = [top_difference]
        index = len(layers) - 1
        if self.options.penultimate_target == "gradient":  # Lee et al.: through W_L
            top = layers[index]
            signal = top_difference * top.activation.derivative(
                trace.pre_activations[index], trace.output
            )
            below = trace.activities[index].shape
            differences.append(top.transpose(signal, top.weight, below, trace.activities[index]))
            index -= 1
        for layer_index in range(index, 0, -1):
            pre = None if reuse is None else reuse[layer_index]
            differences.append(
                self.difference(
                    layer_index,
                    trace.activities[layer_index + 1],
                    differences[-1],
                    pre,
                    input_shape=trace.activities[layer_index].shape,
                    switches=trace.switches_of(layer_index),
                )
            )
        differences.reverse()
        return differences
