"""Sign symmetry: feedback that shares only the signs of the forward weights.

    delta_l = f'(a_l) * (B_{l+1} delta_{l+1}),   B_{l+1} = (sign(W_{l+1}) o M_{l+1})^T

Three magnitudes M (o is the elementwise product), each on the scale s_l of the forward layer's own
initialisation:
- ``usf`` uniform sign-concordant feedback: M = s_l, one number per layer (Liao, Leibo & Poggio
  2016; the scaling by the initialisation's standard deviation is Xiao, Chen, Liao & Poggio 2018's);
- ``brsf`` batchwise-random magnitude: M redrawn at every batch, uniform on (0, sqrt(3) s_l]
  (Liao et al. 2016; Moskovitz, Litwin-Kumar & Abbott 2018);
- ``frsf`` fixed-random magnitude: M = |R|, R uniform on (-sqrt(3) s_l, sqrt(3) s_l), drawn once
  (Liao et al. 2016; Xiao et al. 2018).

Liao, Leibo & Poggio (2016). How important is weight symmetry in backpropagation? AAAI.
Moskovitz, Litwin-Kumar & Abbott (2018). Feedback alignment in deep convolutional networks.
arXiv:1812.06488.
Xiao, Chen, Liao & Poggio (2018). Biologically-plausible learning algorithms can scale to large
datasets. arXiv:1811.03567 (ICLR 2019).
Sanfiz & Akrout (2021). Benchmarking the accuracy and robustness of feedback alignment algorithms.
arXiv:2108.13446 (BioTorch).

The scale s_l is the root mean square of W_l when the rule is built, i.e. the standard deviation of
whatever initialisation the layer received. BioTorch does the same from the scheme's formula (its
``fa_constructor`` layers: ``scaling_factor`` is the standard deviation of the layer's Xavier or
PyTorch-default initialisation, and brSF/frSF draw |R| with that same initialiser); measuring it
gives that number for any scheme and any layer without asking how the layer was built. Uniform on
(-sqrt(3) s, sqrt(3) s) is exactly the law of the uniform schemes (pytorch, xavier) and has the
Gaussian schemes' standard deviation. In a general ``torch.nn.Module`` every nn.Linear and
nn.Conv1d/2d/3d gets its own s_l, measured the same way. Property: sign(B) = sign(W^T) at every
step, whatever W becomes; the output layer, which needs no feedback, learns by the delta rule
exactly as backprop. Locality: the feedback synapse needs the sign of its forward partner, not its
value. Notation and settings: docs/feedback_alignment.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ngrad.numeric import root_mean_square
from ngrad.rules.feedback import FeedbackBuffers
from ngrad.rules.layerwise import FeedbackPathwayRule
from ngrad.rules.noise import uniform_levels
from ngrad.search_space import tunable

__all__ = ["BatchRandomSignSymmetry", "FixedRandomSignSymmetry", "UniformSignSymmetry"]

SQRT3 = math.sqrt(3.0)  # a uniform law on (-sqrt(3) s, sqrt(3) s) has standard deviation s


class SignSymmetry(FeedbackPathwayRule):
    """Feedback sign(W) o magnitude; subclasses choose the magnitude from ``weight_scales``."""

    summary: ClassVar[str]
    search_space = tunable()  # usf, brsf and frsf have no options

    def __init__(self, network: nn.Module, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        weights = self.fed_weights()
        scales = [root_mean_square(weight) for weight in weights]
        # s_l of each fed weight, fixed at construction (a buffer: checkpoints restore it)
        self.register_buffer(
            "weight_scales", torch.tensor(scales, dtype=weights[0].dtype, device=weights[0].device)
        )

    def learn_feedback(self, batch_size: int, carried: Sequence[int]) -> dict[str, float]:
        return {}


class UniformSignSymmetry(SignSymmetry):
    name = "usf"
    summary = "sign symmetry, uniform magnitude: B = sign(W)^T * s, s the layer's init scale"
    citation = "Liao, Leibo & Poggio 2016, AAAI; Xiao et al. 2018, arXiv:1811.03567"

    def feedback_matrix(self, index: int) -> Tensor:
        return torch.sign(self.fed_weights()[index]).mul_(self.weight_scales[index])


class BatchRandomSignSymmetry(SignSymmetry):
    name = "brsf"
    summary = "sign symmetry, random magnitude redrawn every batch: B = sign(W)^T o |R_t|"
    citation = "Liao, Leibo & Poggio 2016, AAAI; Moskovitz et al. 2018, arXiv:1812.06488"

    def feedback_matrix(self, index: int) -> Tensor:
        weight = self.fed_weights()[index]
        high = SQRT3 * self.weight_scales[index]
        return uniform_levels(weight.shape, high, weight.dtype, weight.device).mul_(
            torch.sign(weight)
        )


class FixedRandomSignSymmetry(SignSymmetry):
    name = "frsf"
    summary = "sign symmetry, fixed random magnitude: B = sign(W)^T o |R|"
    citation = "Liao, Leibo & Poggio 2016, AAAI; Xiao et al. 2018, arXiv:1811.03567"

    def __init__(self, network: nn.Module, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        self.magnitudes = FeedbackBuffers(
            torch.empty_like(weight.detach()).uniform_(-bound, bound).abs_()
            for weight, bound in zip(
                self.fed_weights(),
                (SQRT3 * s for s in self.weight_scales.tolist()),
                strict=True,
            )
        )

    def feedback_matrix(self, index: int) -> Tensor:
        return torch.sign(self.fed_weights()[index]).mul_(self.magnitudes[index])
