"""Direct difference target propagation, linear feedback (DDTP-linear), trained with the
difference reconstruction loss (DRL).

    h^_L = h_L - eta dl_n/dh_L                                   (top target, per sample)
    h^_l = h_l + Q_l (h^_L - h_L)                                (l = 1..L-1, straight from the top)
    L_l = 1/(2 eta N) sum_n |h_l - h^_l|^2,   grad W_l = delta_l h_{l-1}^T,
    delta_l = -f_l'(a_l) * (h^_l - h_l) / (eta N)
    DRL: minimise 1/(2 s^2 N) sum_n |Q_l (f_{L,l}(h_l + eps_l) - h_L) - eps_l|^2
                  + lambda/2 |Q_l|_F^2,
         eps_l zero-mean, covariance s^2 I;  f_{L,l} = the network from layer l's output up

Meulemans, Carzaniga, Suykens, Sacramento & Grewe (2020). A theoretical framework for target
propagation. NeurIPS 33 (DDTP-linear; g_l(h_L) = Q_l h_L, so g(h^_L) - g(h_L) = Q_l Delta_L).

For small s, f_{L,l}(h_l + eps) - h_L = J_l eps with J_l = dh_L/dh_l, and for one sample the loss is
(|Q J - I|^2 + lambda |Q|^2) / 2, minimised by Q = J^T (J J^T + lambda I)^{-1}: the targets become
the damped Gauss-Newton targets (J^T J + lambda I)^{-1} J^T Delta_L. Over a batch Q fits the
average. The paper's second DRL term (lambda E|g(h_L + s eps_2) - g(h_L)|^2 / s^2) is, for linear g,
exactly lambda |Q|_F^2 in expectation; ngrad takes the expectation. The noise sent from every
hidden layer to the output is propagated in one pass per layer (the streams share the matrix
products). All hidden targets come from one product of Delta_L with the stacked [Q_1 ... Q_{L-1}].

Step size: the DRL is quadratic in Q with Hessian E[d d^T] / s^2 + lambda I (d the output's
response to the noise), which grows with the forward weights; plain SGD on it diverges once that
outgrows 2 / learning rate. With ``normalised_step`` (default) each layer's gradient is divided by
the Hessian's trace, mean |d|^2 / s^2 + n_L lambda, an upper bound of its largest eigenvalue (the
normalised-LMS step of adaptive filtering): a positive scalar per batch, so each batch's minimiser
is unchanged, and SGD stays stable at learning rates up to about 1. Turn it off to follow the
paper's raw gradient (they train Q with Adam, which is insensitive to that scale).
``feedback_iterations``, ``noise`` and ``noise_distribution`` work as for every rule of the family
(docs/target_propagation.md); ``train_feedback`` runs a feedback-only step, as the authors' extra
feedback epochs do.

On conv layers each Q_l maps to the layer's flattened map, and the noise streams read their
maxima at the forward pass's switches (docs/target_propagation.md).

Locality: a hidden layer needs the output's target difference (broadcast, as in DFA) and its own
activity, target and input; the DRL needs the output's response to noise injected in that layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ngrad.nn.init import initialise_
from ngrad.nn.layers import DenseLayer
from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.target_propagation.pathways import feedback_noise, layer_output, repeat_switches
from ngrad.rules.target_propagation.targets import (
    FeedbackLearningOptions,
    FeedbackStep,
    TrainedFeedbackRule,
)
from ngrad.search_space import LogUniform, tunable

__all__ = ["DirectDifferenceTargetPropagation", "difference_reconstruction_gradient"]


@dataclass(frozen=True)
class DirectDifferenceTargetPropagationOptions(FeedbackLearningOptions):
    damping: float = 0.1  # lambda: Tikhonov term of the DRL (and of the Gauss-Newton diagnostic)
    normalised_step: bool = True  # divide grad Q by the DRL's curvature trace (normalised LMS)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bounds(self, non_negative=("damping",))


def noise_responses(network: Network, trace: ForwardTrace, noises: Sequence[Tensor]) -> Tensor:
    """f_{L,l}(h_l + eps_l) - h_L for every hidden layer l, stacked along the batch (layer 1's
    rows first): the streams from lower layers join the higher ones, one product per layer
    (pooled layers read their maxima at the forward pass's switches)."""
    streams = None
    for index, noise in enumerate(noises):
        perturbed = trace.activities[index + 1] + noise
        streams = perturbed if streams is None else torch.cat([streams, perturbed])
        switches = repeat_switches(trace.switches_of(index + 1), index + 1)
        streams = layer_output(network.layers[index + 1], streams, switches)
    return streams - trace.output.repeat(len(noises), 1)


def difference_reconstruction_gradient(
    responses: Tensor,
    noises: Sequence[Tensor],
    blocks: Sequence[Tensor],
    noise: float,
    damping: float,
    normalised: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """Per hidden layer, the DRL 1/(2 s^2 N) sum_n |d_n Q^T - eps_n|^2 + lambda/2 |Q|^2 and its
    gradient with respect to the block Q^T (n_L x n_l), given the output responses d (stacked as
    ``noise_responses`` returns); ``normalised`` divides each gradient by its curvature's trace."""
    count = noises[0].shape[0]
    scale = 1.0 / (noise * noise * count)
    losses, gradients = [], []
    for response, eps, block in zip(responses.split(count), noises, blocks, strict=True):
        residual = response @ block - eps.flatten(1)
        loss = 0.5 * scale * residual.pow(2).sum()  # 0-d tensors: no wait for the device
        gradient = response.t() @ residual.mul_(scale)
        if damping:
            loss = loss + 0.5 * damping * block.pow(2).sum()
            gradient.add_(block, alpha=damping)
        # the Hessian is E[d d^T] / s^2 + lambda I; its trace bounds its largest eigenvalue
        if normalised:
            gradient.div_(scale * response.pow(2).sum() + damping * response.shape[1])
        losses.append(loss)
        gradients.append(gradient)
    return losses, gradients


class DirectDifferenceTargetPropagation(TrainedFeedbackRule):
    name = "ddtp"
    summary = (
        "direct DTP (linear): h^_l = h_l + Q_l Delta_L, Q trained on the difference recon. loss"
    )
    citation = "Meulemans et al. 2020, NeurIPS"
    Options = DirectDifferenceTargetPropagationOptions
    search_space = tunable(target_step=LogUniform(1e-3, 0.5), noise=LogUniform(0.01, 0.5))

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        if all(isinstance(layer, DenseLayer) for layer in network.layers):
            self.widths = [layer.weight.shape[0] for layer in network.layers[:-1]]
        else:  # hidden layer sizes, each sample's activity flattened
            self.widths = [shape.numel() for shape in network.layer_output_shapes()[:-1]]
        reference = network.layers[-1].weight
        outputs = reference.shape[0]
        stacked = torch.empty(outputs, sum(self.widths), dtype=reference.dtype)
        for block, width in zip(stacked.split(self.widths, dim=1), self.widths, strict=True):
            initialise_(block, self.options.init, outputs, width)
        self.feedback_stack = nn.Parameter(stacked.to(reference.device))  # [Q_1^T ... Q_L-1^T]

    def gauss_newton_damping(self) -> float:
        """The DRL's own lambda: its minimiser gives exactly these damped targets."""
        return self.options.damping

    def feedback_matrices(self) -> list[Tensor]:
        """Q_l^T for each hidden layer l, shape n_L x n_l (views into the stacked parameter)."""
        return list(self.feedback_stack.split(self.widths, dim=1))

    def feedback_gradients(self, trace: ForwardTrace) -> FeedbackStep:
        """The DRL of every Q_l, with fresh noise in every hidden layer."""
        noises = feedback_noise(
            trace.activities[1:-1], self.options.noise, self.options.noise_distribution
        )
        losses, gradients = difference_reconstruction_gradient(
            noise_responses(self.network, trace, noises),
            noises,
            self.feedback_matrices(),
            self.options.noise,
            self.options.damping,
            self.options.normalised_step,
        )
        gradient = torch.cat(gradients, dim=1)
        return FeedbackStep(dict(enumerate(losses)), [(self.feedback_stack, gradient)])

    def propagate_targets(
        self, trace: ForwardTrace, top_difference: Tensor, reuse: Any = None
    ) -> list[Tensor]:
        hidden = top_difference @ self.feedback_stack  # all layers in one product
        blocks = hidden.split(self.widths, dim=1)
        shaped = [b.view(a.shape) for b, a in zip(blocks, trace.activities[1:-1], strict=True)]
        return [*shaped, top_difference]

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        reason = super().unsupported_reason(network)
        dense = all(isinstance(layer, DenseLayer) for layer in network.layers)
        if reason is None and network.input_shape is None and not dense:
            return "its feedback to conv layers needs the network's input_shape"
        return reason
