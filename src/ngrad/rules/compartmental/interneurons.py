"""The interneurons of the dendritic microcircuit and their plasticity.

Hidden layer l = 1..L-1 has one interneuron per neuron of layer l + 1. Interneuron population l
reads the pyramidal rates r_l of its own layer through W^IP_l and is nudged toward the upper
layer's soma u_{l+1}; it inhibits the apical dendrites of layer l through W^PI_l:

    dendrite    v^_I,l = W^IP_l r_l + b^I_l
    apical      v_A,l  = B_l r_{l+1} + W^PI_l r^I_l,        r^I_l = f_{l+1}(u^I_l)
    pyramid -> interneuron   Delta W^IP_l ~ (f(u^I_l) - f(v^_I,l)) r_l^T
    interneuron -> pyramid   Delta W^PI_l ~ -v_A,l r^I_l^T      (drives the apical to rest, 0)

In the self-predicting state W^IP_l = W_{l+1}, b^I_l = b_{l+1}, W^PI_l = -B_l the interneurons
predict the upper layer exactly and cancel the top-down input: v_A = 0 without a teacher.

Sacramento, Costa, Bengio & Senn (2018). Dendritic cortical microcircuits approximate the
backpropagation algorithm. NeurIPS 31. Notation and settings: ``docs/compartmental.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ngrad.nn.init import random_like
from ngrad.nn.layers import Layer
from ngrad.rules.base import assign_gradient
from ngrad.rules.compartmental.compartments import input_power

__all__ = ["Interneurons", "residue_ratio", "residue_ratios", "write_top_down_updates"]


class Interneurons(nn.Module):
    """W^IP_l, b^I_l and W^PI_l for l = 1..L-1, shaped like W_{l+1}, b_{l+1} and W_{l+1}."""

    def __init__(self, upper_layers: Sequence[Layer]) -> None:
        super().__init__()
        self.pyramid_to_interneuron = nn.ParameterList(
            nn.Parameter(torch.empty_like(layer.weight.detach())) for layer in upper_layers
        )
        self.bias = nn.ParameterList(
            nn.Parameter(layer.weight.new_zeros(layer.out_features).detach())
            for layer in upper_layers
        )
        self.interneuron_to_pyramid = nn.ParameterList(
            nn.Parameter(torch.empty_like(layer.weight.detach())) for layer in upper_layers
        )
        self._zero_gradients: dict[int, Tensor] = {}  # W^PI's .grad, reused (track)

    @torch.no_grad()
    def make_self_predicting(self, upper_layers: Sequence[Layer], top_down: list[Tensor]) -> None:
        """W^IP_l := W_{l+1}, b^I_l := b_{l+1}, W^PI_l := -B_l (the apical cancels exactly)."""
        for index, layer in enumerate(upper_layers):
            self.pyramid_to_interneuron[index].copy_(layer.weight)
            self.bias[index].copy_(layer.bias if layer.bias is not None else 0.0)
            self.interneuron_to_pyramid[index].copy_(-top_down[index])

    @torch.no_grad()
    def randomise(self, upper_layers: Sequence[Layer]) -> None:
        """Redraw W^IP, b^I and W^PI at random: far from the self-predicting state."""
        for index, layer in enumerate(upper_layers):
            weight = layer.weight.detach()
            self.pyramid_to_interneuron[index].copy_(random_like(weight))
            self.bias[index].zero_()
            self.interneuron_to_pyramid[index].copy_(random_like(weight))

    def weights(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(W^IP_l, b^I_l, W^PI_l) as plain lists."""
        return (
            list(self.pyramid_to_interneuron),
            list(self.bias),
            list(self.interneuron_to_pyramid),
        )

    def dendrites(self, hidden_rates: Sequence[Tensor]) -> list[Tensor]:
        """v^_I,l = W^IP_l r_l + b^I_l from the hidden rates r_1..r_{L-1}."""
        return [
            F.linear(rates, weight, bias)
            for rates, weight, bias in zip(
                hidden_rates, self.pyramid_to_interneuron, self.bias, strict=True
            )
        ]

    @staticmethod
    def mismatches(
        upper_layers: Sequence[Layer], rates: Sequence[Tensor], dendrites: Sequence[Tensor]
    ) -> list[Tensor]:
        """f(u^I_l) - f(v^_I,l) per population, f the predicted layer's activation, from the
        interneuron rates r^I_l = f(u^I_l) a readout already holds."""
        return [
            rate - layer.activation(v)
            for layer, rate, v in zip(upper_layers, rates, dendrites, strict=True)
        ]

    def write_prediction_updates(
        self, mismatches: Sequence[Tensor], hidden_rates: Sequence[Tensor], factors: list[float]
    ) -> None:
        """Pyramid -> interneuron synapses: (f(u^I_l) - f(v^_I,l)) r_l^T times ``factors[l]``
        (negative: the step's rate and normalisation) into ``.grad``."""
        for i, (mismatch, factor) in enumerate(zip(mismatches, factors, strict=True)):
            gradient = torch.mm(mismatch.t(), hidden_rates[i]).mul_(factor)
            assign_gradient(self.pyramid_to_interneuron[i], gradient)
            assign_gradient(self.bias[i], mismatch.sum(dim=0) * factor)

    @torch.no_grad()
    def track(
        self,
        mismatches: Sequence[Tensor],
        hidden_rates: Sequence[Tensor],
        apical: Sequence[Tensor],
        rates: Sequence[Tensor],
        step: float,
        nudge: float,
        reduce: Callable[[list[Tensor]], None] | None = None,
        projection: bool = True,
    ) -> None:
        """The interneurons' own momentum-free normalised least-squares steps, applied in place
        from a phase without teacher. With ``projection`` (affine projection, the batch form of
        NLMS): W^IP_l += step M_l^T (R_l R_l^T + I)^-1 R_l / lambda_I, b^I_l likewise with a
        constant input of 1 appended to R_l, and W^PI_l -= step R^I_l^T (R^I_l R^I_l^T + I)^-1
        V_A,l, the rows of R_l, M_l = f(u^I_l) - f(v^_I,l), R^I_l and V_A,l being the batch's
        samples: every sample's error shrinks by the fraction ``step`` (the nudge lambda_I
        divided out), whatever the batch, and for one sample the step is NLMS's. Without:
        NLMS on the batch mean, W^IP_l += step M_l^T R_l / (lambda_I N (1 + mean |r_l|^2)) and
        W^PI_l -= step R^I_l^T V_A,l / (N (1 + mean |r^I_l|^2)), which removes only about
        1 / N of each sample's error per batch. ``reduce`` (the rule's ``reduce_gradients``)
        averages the steps over the processes of a data-parallel step before they are applied."""
        targets, steps = [], []
        for i, (mismatch, presynaptic) in enumerate(zip(mismatches, hidden_rates, strict=True)):
            targets += [self.pyramid_to_interneuron[i], self.bias[i]]
            if projection:
                coefficients = _projection(presynaptic, mismatch, with_bias=True).mul_(step / nudge)
                steps += [coefficients.t() @ presynaptic, coefficients.sum(dim=0)]
                continue
            scale = step / (nudge * presynaptic.shape[0] * input_power(presynaptic))
            steps += [(mismatch.t() @ presynaptic).mul_(scale), mismatch.sum(dim=0).mul_(scale)]
        for i, (potential, presynaptic) in enumerate(zip(apical, rates, strict=True)):
            targets.append(self.interneuron_to_pyramid[i])
            if projection:
                coefficients = _projection(presynaptic, potential, with_bias=False)
                steps.append((presynaptic.t() @ coefficients).mul_(-step))
                continue
            scale = step / (presynaptic.shape[0] * input_power(presynaptic))
            steps.append((presynaptic.t() @ potential).mul_(-scale))
        if reduce is not None:
            reduce(steps)
        for target, change in zip(targets, steps, strict=True):
            target.add_(change)
        # W^PI learns by these steps alone: its share of the optimiser's step is zero (the
        # contract: every trained parameter gets a .grad). The zeros are kept from batch to batch
        # (only the optimiser reads them), not allocated and filled anew.
        for index, weight in enumerate(self.interneuron_to_pyramid):
            zeros = self._zero_gradients.get(index)
            if zeros is not None and weight.grad is zeros:
                continue
            if zeros is None or not _same_layout(zeros, weight):
                zeros = self._zero_gradients[index] = torch.zeros_like(weight)
            assign_gradient(weight, zeros)

    def write_cancellation_updates(
        self, apical: Sequence[Tensor], rates: Sequence[Tensor], rate: float
    ) -> None:
        """Interneuron -> pyramid synapses drive the apical to rest, as a normalised
        least-squares filter: v_A,l r^I_l^T rate / (N (1 + mean |r^I_l|^2)) into ``.grad``."""
        for i, (potential, presynaptic) in enumerate(zip(apical, rates, strict=True)):
            gradient = presynaptic.t() @ potential
            gradient *= rate / (presynaptic.shape[0] * input_power(presynaptic))
            assign_gradient(self.interneuron_to_pyramid[i], gradient)


def _projection(presynaptic: Tensor, errors: Tensor, with_bias: bool) -> Tensor:
    """(R R^T + I)^-1 E for the batch's presynaptic rows R (with a column of ones appended for a
    bias) and errors E: the per-sample coefficients of an affine-projection step."""
    gram = presynaptic @ presynaptic.t()
    if with_bias:
        gram.add_(1.0)  # + 1 1^T
    gram.diagonal().add_(1.0)  # + I: eigenvalues >= 1, so the explicit inverse is accurate
    # (inverting the batch x batch matrix, then one product, is ~4x faster than a solve with a
    # right-hand side per unit); inv_ex does not raise, so a diverged run keeps its NaN
    return torch.linalg.inv_ex(gram).inverse @ errors


def _same_layout(tensor: Tensor, like: Tensor) -> bool:
    return (tensor.shape, tensor.dtype, tensor.device) == (like.shape, like.dtype, like.device)


def residue_ratio(forward_apical: Sequence[Tensor], taught_apical: Sequence[Tensor]) -> float:
    """RMS of the apical potential left over in the forward phase (what the interneurons fail to
    cancel) over RMS of the teaching phase's apical deflection, all hidden layers together."""
    leftover = sum(float(a.pow(2).sum()) for a in forward_apical)
    teaching = sum(
        float((t - a).pow(2).sum()) for t, a in zip(taught_apical, forward_apical, strict=True)
    )
    return (leftover / teaching) ** 0.5 if teaching else 0.0


def residue_ratios(
    forward_apical: Sequence[Tensor], taught_apical: Sequence[Tensor]
) -> tuple[float, list[float]]:
    """:func:`residue_ratio` of all hidden layers together and of each on its own."""
    pairs = list(zip(forward_apical, taught_apical, strict=True))
    leftover = [float(a.pow(2).sum()) for a, _ in pairs]
    teaching = [float((t - a).pow(2).sum()) for a, t in pairs]

    def ratio(left: float, taught: float) -> float:
        return (left / taught) ** 0.5 if taught else 0.0

    per_layer = [ratio(left, taught) for left, taught in zip(leftover, teaching, strict=True)]
    return ratio(sum(leftover), sum(teaching)), per_layer


def write_top_down_updates(
    feedback: Sequence[Tensor],
    layers: Sequence[Layer],
    somata: Sequence[Tensor],
    rates: Sequence[Tensor],
    rate: float,
) -> None:
    """Learned top-down synapses predict the lower soma, as a normalised least-squares filter:
    Delta B_l = rate (f(u_l) - f(r_{l+1} B_l))^T r_{l+1} / (N (1 + mean |r_{l+1}|^2)), written
    negated into ``.grad`` (``rates`` r_0..r_L, ``somata`` u_1..u_L)."""
    for i, top_down in enumerate(feedback):
        f = layers[i].activation
        presynaptic = rates[i + 2]
        mismatch = f(somata[i]) - f(presynaptic @ top_down)
        step = -rate / (presynaptic.shape[0] * input_power(presynaptic))
        assign_gradient(top_down, presynaptic.t() @ mismatch * step)
