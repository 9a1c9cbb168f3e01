"""Direct feedback alignment (DFA): every hidden layer hears the output error directly.

    e = dL/da_L,   delta_L = e
    delta_l = f'(a_l) * (B_l e),   B_l fixed, random, n_l x n_out      (l < L)
    dW_l = delta_l h_{l-1}^T

Nokland (2016). Direct feedback alignment provides learning in deep neural networks. NeurIPS 29.

All hidden errors come from one product: ngrad stacks the B_l^T side by side into one
n_out x (n_1 + ... + n_{L-1}) matrix, multiplies the output error by it once, and splits the result
by layer, so no layer waits for the one above it (the layer parallelism DFA promises).
Property: in a linear network with B_l := (W_L ... W_{l+1})^T the update equals backprop's.
Locality: no weight transport; each hidden layer needs the output error, broadcast.
Notation and settings: docs/feedback_alignment.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.nn.init import Init, initialise_
from ngrad.nn.layers import DenseLayer
from ngrad.nn.network import Network
from ngrad.options import check_bounds
from ngrad.rules.base import FeedbackPair, LearningRule, StepRecord
from ngrad.rules.layerwise import hidden_error, output_error, write_layer_gradients

__all__ = ["DirectFeedbackAlignment"]


@dataclass(frozen=True)
class DirectFeedbackAlignmentOptions:
    init: Init = "pytorch"  # scheme each B_l is drawn with (fan-in n_l, fan-out n_out)
    scale: float = 1.0  # factor multiplying B after it is drawn

    def __post_init__(self) -> None:
        check_bounds(self, positive=("scale",))


class DirectFeedbackAlignment(LearningRule):
    name = "dfa"
    summary = "direct feedback alignment: the output error reaches each hidden layer via fixed B_l"
    citation = "Nokland 2016, NeurIPS"
    Options = DirectFeedbackAlignmentOptions

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        self.hidden_shapes = network.layer_output_shapes()[:-1]
        widths = [shape.numel() for shape in self.hidden_shapes]
        n_out = network.layers[-1].weight.shape[0]
        reference = network.layers[-1].weight
        stacked = torch.empty(n_out, sum(widths), dtype=reference.dtype, device=reference.device)
        for block, width in zip(stacked.split(widths, dim=1), widths, strict=True):
            initialise_(block, self.options.init, width, n_out).mul_(self.options.scale)
        # one buffer, not one per layer: the backward pass multiplies by all of it at once
        self.register_buffer("feedback_stack", stacked)
        self.widths = widths

    def feedback_matrices(self) -> list[Tensor]:
        """B_l^T for each hidden layer l, shape n_out x n_l (views into the stacked matrix)."""
        return list(self.feedback_stack.split(self.widths, dim=1))

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        trace = self.network.trace(inputs)
        top_error = output_error(self.network, self.loss, trace, targets)
        broadcast = top_error.flatten(1) @ self.feedback_stack  # one product for all layers
        errors = [
            hidden_error(self.network, trace, index, block.view(-1, *shape))
            for index, (block, shape) in enumerate(
                zip(broadcast.split(self.widths, dim=1), self.hidden_shapes, strict=True)
            )
        ]
        errors.append(top_error)
        write_layer_gradients(self.network, trace, errors)
        loss = self.loss(trace.output, targets)
        return StepRecord(loss, trace.output, tuple(errors))

    def feedback_pairs(self) -> list[FeedbackPair]:
        """B_l^T against W_L ... W_{l+1} (what B_l stands in for; dense layers above l only)."""
        pairs = []
        layers = self.network.layers
        for index, block in enumerate(self.feedback_matrices()):
            above = layers[index + 1 :]
            if not all(isinstance(layer, DenseLayer) for layer in above):
                continue
            product = above[-1].weight
            for layer in reversed(above[:-1]):
                product = product @ layer.weight
            pairs.append(FeedbackPair(index, block, product))
        return pairs
