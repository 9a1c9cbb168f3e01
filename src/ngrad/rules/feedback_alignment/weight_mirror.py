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
optimiser takes the step, so eta_B = rate x the feedback learning rate. A convolution is one dense
map applied at every position of its input, with W's kernel as matrix (out x in_channels x kernel
size): its mirror phase sends the noise into one receptive field (xi of in_channels x kernel
entries, one output position), which is the dense mirror of that matrix, so B -> W^T / lambda for
convolutions as for dense layers, at a cost independent of the image size (each group of a grouped
convolution mirrors its own block). In a general ``torch.nn.Module`` every nn.Linear and
nn.Conv1d/2d/3d mirrors, those whose feedback carried an error first. The mirror is linear, so
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
from ngrad.options import check_bounds
from ngrad.rules.base import assign_gradient, draw_for_batch
from ngrad.rules.layerwise import LearnedFeedbackRule
from ngrad.rules.noise import NoiseDistribution, rademacher
from ngrad.search_space import LogUniform, tunable

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
    scales_with_loss = False  # the mirror learns from noise, not from the loss
    search_space = tunable(decay=LogUniform(0.3, 3.0))  # eta_B: through the searched feedback_lr

    def learn_feedback(self, batch_size: int, carried: Sequence[int]) -> dict[str, float]:
        samples = self.options.mirror_samples or batch_size
        # the feedback that carried an error first, in the order of the forward pass (a
        # Network's order), then any other (e.g. a module's first layer, fed by the data)
        carried_set = set(carried)
        rest = [index for index in range(len(self.feedback)) if index not in carried_set]
        for index in [*carried, *rest]:
            feedback = self.feedback[index]
            gradient = self.mirror_gradient(index, feedback, samples, self.options.rate)
            assign_gradient(feedback, gradient)
        return {}

    def mirror_gradient(self, index: int, feedback: Tensor, samples: int, rate: float) -> Tensor:
        """rate (lambda B^T - (W xi) xi^T / n) for one mirror phase of fed weight ``index``:
        n noise samples xi of the size of one input patch of the layer (its whole input for a
        dense layer; in_channels x kernel for a convolution, one output position's receptive
        field), a separate draw per group of a grouped convolution."""
        weight = self.fed_weights()[index].detach()
        groups = self._groups(index)
        per_group = weight[0].numel()

        def draw(rows: int) -> Tensor:
            shape = (rows, groups * per_group)
            if self.options.noise_distribution == "gaussian":
                return torch.randn(shape, dtype=feedback.dtype, device=feedback.device)
            return rademacher(shape, feedback.dtype, feedback.device)

        # n = the batch size: in data-parallel training, this process's rows of the global draw
        noise = draw(samples) if self.options.mirror_samples else draw_for_batch(draw, samples)
        if groups == 1:
            flat = weight.reshape(weight.shape[0], per_group)
            correlation = (noise @ flat.t()).t() @ noise
        else:
            flat = weight.reshape(groups, weight.shape[0] // groups, per_group)
            xi = noise.view(samples, groups, per_group).transpose(0, 1)
            correlation = torch.bmm(torch.bmm(xi, flat.transpose(1, 2)).transpose(1, 2), xi)
        correlation = correlation.reshape(weight.shape)
        return correlation.mul_(-rate / samples).add_(feedback, alpha=rate * self.options.decay)

    def _groups(self, index: int) -> int:
        if self.pathway is None:
            return 1
        return getattr(self.pathway.layers[index][1], "groups", 1)

    @torch.no_grad()
    def mirror(self, sample_inputs: Tensor, steps: int, learning_rate: float) -> None:
        """Run ``steps`` plain-SGD mirror phases alone, e.g. before training (Akrout et al.);
        ``sample_inputs`` is any input batch, whose size sets n when ``mirror_samples`` is 0."""
        samples = self.options.mirror_samples or sample_inputs.shape[0]
        for _ in range(steps):
            for index, feedback in enumerate(self.feedback):
                feedback.sub_(self.mirror_gradient(index, feedback, samples, learning_rate))
