"""Target propagation (TP) through exact layer inverses (the review's Figure 3a).

    h^_L = h_L - eta dl_n/dh_L                                  (top target, per sample)
    h^_{l-1} = f_l^{-1}_layer(h^_l) = W_l^{-1} (f_l^{-1}(h^_l) - b_l)      (l = L..2, exact inverse)
    L_l = 1/(2 eta N) sum_n |h_l - h^_l|^2,   grad W_l = delta_l h_{l-1}^T,
    delta_l = -f_l'(a_l) * (h^_l - h_l) / (eta N)

Bengio (2014). How auto-encoders could provide credit assignment in deep networks via target
propagation. arXiv:1407.7906. Lillicrap, Santoro, Marris, Akerman & Hinton (2020), Fig. 3a.

To first order in eta, h^_{l-1} - h_{l-1} = J_l^{-1} (h^_L - h_L) with J_l = dh_L/dh_{l-1} square:
the hidden targets are Gauss-Newton steps, not gradient steps (Meulemans et al. 2020), and the
output layer's update is backprop's exactly. The network must be invertible above the first layer:
every layer l >= 2 square (n_l = n_{l-1}) with an invertible activation (tanh, sigmoid, leaky_relu,
identity); the first layer needs no inverse (no target for the input). Targets that leave a bounded
activation's range (tanh, sigmoid) are clipped just inside it before inversion; the fraction of
clipped entries is reported as the scalar ``clipped_target_fraction``.

Stability: the hidden targets are undamped Gauss-Newton steps, whose size grows with the condition
number of the W_l, so exact-inverse TP needs a small learning rate (or Adam) and learns slowly
(docs/target_propagation.md); DTP and DDTP replace the inverse with learned (and, for DDTP,
damped) feedback.

Locality: each layer needs only its own activity, its target and its input (a local delta rule);
the inverse W_l^{-1} is not local, which is what DTP's learned inverses replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ngrad.nn.layers import DenseLayer
from ngrad.nn.network import ForwardTrace, Network
from ngrad.options import check_bounds
from ngrad.rules.target_propagation.targets import TargetPropagationRule, clamp_into_range
from ngrad.search_space import LogUniform, tunable

__all__ = ["TargetPropagation", "invert_layer"]


@dataclass(frozen=True)
class TargetPropagationOptions:
    target_step: float = 0.01  # eta: size of the output target's gradient step

    def __post_init__(self) -> None:
        check_bounds(self, positive=("target_step",))


def invert_layer(layer: DenseLayer, activity: Tensor) -> Tensor:
    """The input that makes ``layer`` output ``activity``: W^{-1} (f^{-1}(h) - b)."""
    pre_activation = layer.activation.inverse(activity)
    if layer.bias is not None:
        pre_activation = pre_activation - layer.bias
    return torch.linalg.solve(layer.weight, pre_activation.t()).t()


class TargetPropagation(TargetPropagationRule):
    name = "tp"
    summary = "target propagation through exact inverses (needs square, invertible layers >= 2)"
    citation = "Bengio 2014, arXiv:1407.7906; Lillicrap et al. 2020, Fig. 3a"
    Options = TargetPropagationOptions
    search_space = tunable(target_step=LogUniform(1e-3, 0.3))

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        reason = super().unsupported_reason(network)
        if reason is not None:
            return reason
        if not all(isinstance(layer, DenseLayer) for layer in network.layers):
            return "exact inverses need fully connected (dense) layers (dtp, ddtp, ldrl take convs)"
        for number, layer in enumerate(network.layers[1:], start=2):
            rows, columns = layer.weight.shape
            if rows != columns:
                return (
                    f"exact inverses need square weights above the first layer; layer {number} "
                    f"maps {columns} -> {rows} (use equal hidden and output widths)"
                )
            if layer.activation.inverse_fn is None:
                return (
                    f"layer {number}'s activation {layer.activation.name!r} has no inverse "
                    "(use tanh, sigmoid, leaky_relu or identity)"
                )
        return None

    def propagate_targets(
        self, trace: ForwardTrace, top_difference: Tensor, reuse: Any = None
    ) -> list[Tensor]:
        layers = self.network.layers
        target = trace.output + top_difference
        differences = [top_difference]
        for index in range(len(layers) - 1, 0, -1):
            layer = layers[index]
            target = invert_layer(layer, clamp_into_range(layer.activation, target))
            differences.append(target - trace.activities[index])
        differences.reverse()
        return differences

    def target_scalars(
        self, trace: ForwardTrace, differences: Sequence[Tensor]
    ) -> dict[str, Tensor]:
        """``clipped_target_fraction``: the fraction of hidden and output target entries that
        lay outside their layer's activation range and were clipped before inversion (a 0-d
        tensor, counted on the device)."""
        clipped = trace.output.new_zeros(())
        for index in range(1, len(self.network.layers)):
            target = trace.activities[index + 1] + differences[index]
            inside = clamp_into_range(self.network.layers[index].activation, target)
            clipped = clipped + (inside != target).sum()
        hidden = sum(difference.numel() for difference in differences[1:])
        return {"clipped_target_fraction": clipped / hidden}
