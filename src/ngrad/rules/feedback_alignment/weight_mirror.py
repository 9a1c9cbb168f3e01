"""Weight mirror (WM): feedback learns W^T from noise sent through the forward weights.

Learning phase: as feedback alignment with learned B,
    delta_l = f'(a_l) * (B_{l+1} delta_{l+1}),   dW_l = delta_l h_{l-1}^T.
Mirror phase (after each batch): zero-mean noise xi with E[xi xi^T] = sigma^2 I drives layer
l - 1's output; layer l responds with W_l xi; each feedback synapse correlates the two:
    Delta B_l = eta_B ( xi (W_l xi)^T / sigma^2 - lambda B_l )
Since E[xi xi^T] = sigma^2 I, E[xi (W_l xi)^T] / sigma^2 = W_l^T, and B_l converges to
W_l^T / lambda, a positive multiple of W_l^T.

Akrout, Wilson, Humphreys, Lillicrap & Tweed (2019). Deep learning without weight transport.
NeurIPS 32.

ngrad stores B_l^T (W_l's shape) as a trained parameter and writes
grad B_l^T = rate (lambda B_l^T - (W_l xi) xi^T / (n sigma^2)), averaged over n noise samples; the
optimiser takes the step, so eta_B = rate x the feedback learning rate. The noise has the shape of
the layer's real input, so convolutional layers mirror the same way. The mirror is linear, so
sigma cancels: the noise has unit variance, Rademacher (+-1) by default (the diagonal of xi xi^T
is then exact) or Gaussian. Locality: each feedback synapse sees only its own pre- and
post-synaptic activity during the mirror phase. Notation and settings: docs/feedback_alignment.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.init import Init
from ngrad.nn.network import ForwardTrace
from ngrad.options import check_bounds
from ngrad.rules.base import assign_gradient
from ngrad.rules.layerwise import LearnedFeedbackRule
from ngrad.rules.noise import NoiseDistribution, rademacher

__all__ = ["WeightMirror"]


@dataclass(frozen=True)
class WeightMirrorOptions:
    noise_distribution: NoiseDistribution = "rademacher"  # law of the mirror noise xi (variance 1)
    decay: float = 1.0  # lambda, decay of B in the mirror phase; B converges to W^T / lambda
    mirror_samples: int = 0  # n, noise samples per mirror phase; 0: the training batch size
    rate: float = 0.02  # eta_B relative to the optimiser's feedback learning rate (scales grad B)
    init: Init = "pytorch"  # scheme the feedback B is drawn with at the start

    def __post_init__(self) -> None:
        check_bounds(self, positive=("rate",), non_negative=("decay", "mirror_samples"))


class WeightMirror(LearnedFeedbackRule):
    name = "wm"
    summary = "weight mirror: a noise-driven mirror phase teaches B the transpose of W"
    citation = "Akrout et al. 2019, NeurIPS"
    Options = WeightMirrorOptions

    def learn_feedback(self, trace: ForwardTrace, errors: Sequence[Tensor]) -> dict[str, float]:
        samples = self.options.mirror_samples or trace.activities[0].shape[0]
        for index, feedback in enumerate(self.feedback, start=1):
            input_shape = trace.activities[index].shape[1:]
            gradient = self.mirror_gradient(
                index, feedback, input_shape, samples, self.options.rate
            )
            assign_gradient(feedback, gradient)
        return {}

    def mirror_gradient(
        self, index: int, feedback: Tensor, input_shape: torch.Size, samples: int, rate: float
    ) -> Tensor:
        """rate (lambda B^T - (W xi) xi^T / n) for one mirror phase of layer ``index``."""
        layer = self.network.layers[index]
        shape = (samples, *input_shape)
        if self.options.noise_distribution == "gaussian":
            noise = torch.randn(shape, dtype=feedback.dtype, device=feedback.device)
        else:
            noise = rademacher(shape, feedback.dtype, feedback.device)
        correlation = layer.weight_gradient(layer.linear(noise, layer.weight), noise)
        return correlation.mul_(-rate / samples).add_(feedback, alpha=rate * self.options.decay)

    @torch.no_grad()
    def mirror(self, sample_inputs: Tensor, steps: int, learning_rate: float) -> None:
        """Run ``steps`` plain-SGD mirror phases alone, e.g. before training (Akrout et al.);
        ``sample_inputs`` is any input batch, used only for the layers' input shapes."""
        trace = self.network.trace(sample_inputs)
        samples = self.options.mirror_samples or sample_inputs.shape[0]
        for _ in range(steps):
            for index, feedback in enumerate(self.feedback, start=1):
                input_shape = trace.activities[index].shape[1:]
                feedback.sub_(
                    self.mirror_gradient(index, feedback, input_shape, samples, learning_rate)
                )
