"""Direct feedback alignment (DFA): every hidden layer hears the output error directly.

    e = dL/da_L,   delta_L = e
    delta_l = f'(a_l) * (B_l e),   B_l fixed, random, n_l x n_out      (l < L)
    dW_l = delta_l h_{l-1}^T

Nokland (2016). Direct feedback alignment provides learning in deep neural networks. NeurIPS 29.

All hidden errors come from one product: ngrad stacks the B_l^T side by side into one
n_out x (n_1 + ... + n_{L-1}) matrix, multiplies the output error by it once, and splits the result
by layer, so no layer waits for the one above it (the layer parallelism DFA promises).
Property: in a linear network with B_l := (W_L ... W_{l+1})^T the update equals backprop's.

On a general ``torch.nn.Module`` (BioTorch's choice, Sanfiz & Akrout 2021, and Nokland's: the
error reaches a hidden layer's activity h_l, then its activation's derivative applies): each
nn.Linear and nn.Conv1d/2d/3d sends D e to its input in place of W^T delta, D a fixed random
n_out x (its input size per sample) matrix, drawn at the first batch. The signal enters where the
layer's input is, i.e. after whatever follows the layer below (its batch norm, activation,
pooling); those, and residual additions, backpropagate it as usual, so a skip connection carries the
signals that enter above it down to the layers below, added to their own. In an MLP this is the
rule above exactly (D of layer l + 1 = B_l). With ``conv_feedback="kernel"`` a convolution's D is
BioTorch's instead: a fixed random kernel K (n_out x C_in x k...), applied to e tiled over the
layer's output map by the transposed convolution of the layer's own geometry,
conv_transpose(tile(e), K), one projection of e shared by every position.
Locality: no weight transport; each hidden layer needs the output error, broadcast.
Notation and settings: docs/feedback_alignment.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ngrad.errors import ConfigError
from ngrad.nn.init import Init, initialise_
from ngrad.nn.layers import DenseLayer
from ngrad.nn.network import Network
from ngrad.options import check_bounds
from ngrad.rules.base import FeedbackPair, LearningRule, StepRecord
from ngrad.rules.feedback_alignment.modules import (
    LazyFeedbackBuffers,
    ModulePathway,
    conversion_refusal,
)
from ngrad.rules.layerwise import hidden_error, output_error, write_layer_gradients
from ngrad.search_space import LogUniform, tunable

__all__ = ["DirectFeedbackAlignment"]

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class DirectFeedbackAlignmentOptions:
    init: Init = "pytorch"  # scheme each B_l is drawn with (fan-in n_l, fan-out n_out)
    scale: float = 1.0  # factor multiplying B after it is drawn
    conv_feedback: Literal["dense", "kernel"] = "dense"  # a module's conv: dense D, or a kernel

    def __post_init__(self) -> None:
        check_bounds(self, positive=("scale",))


class DirectFeedbackAlignment(LearningRule):
    name = "dfa"
    summary = "direct feedback alignment: the output error reaches each hidden layer via fixed B_l"
    citation = "Nokland 2016, NeurIPS"
    Options = DirectFeedbackAlignmentOptions
    search_space = tunable(scale=LogUniform(0.1, 10.0))
    trains_modules = True
    supports_mixed_precision = True
    scales_with_loss = True

    def __init__(self, network: nn.Module, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        if not isinstance(network, Network):
            self.pathway: ModulePathway | None = ModulePathway(network)
            if self.options.conv_feedback == "kernel":
                names = self.pathway.weight_names()
                for name, (_, module) in zip(names, self.pathway.layers, strict=True):
                    if isinstance(module, CONVOLUTIONS):
                        _check_kernel_geometry(name, module)
            # one n_out x (input size) matrix per layer, drawn when the first batch shows its size
            self.feedback = LazyFeedbackBuffers(len(self.pathway.layers))
            return
        if self.options.conv_feedback != "dense":
            raise ConfigError(
                "dfa option conv_feedback='kernel' applies to a torch module's convolutions; "
                "an ngrad Network's layers take dense feedback"
            )
        self.pathway = None
        self.hidden_shapes = network.layer_output_shapes()[:-1]
        widths = [shape.numel() for shape in self.hidden_shapes]
        n_out = network.layers[-1].weight.shape[0]
        reference = network.layers[-1].weight
        stacked = torch.empty(n_out, sum(widths), dtype=reference.dtype, device=reference.device)
        for block, width in zip(stacked.split(widths, dim=1), widths, strict=True):
            self._draw(block, width, n_out)
        # one buffer, not one per layer: the backward pass multiplies by all of it at once
        self.register_buffer("feedback_stack", stacked)
        self.widths = widths

    @classmethod
    def unsupported_reason(cls, network: nn.Module) -> str | None:
        return None if isinstance(network, Network) else conversion_refusal(network)

    def _draw(self, block: Tensor, fan_in: int, fan_out: int) -> Tensor:
        return initialise_(block, self.options.init, fan_in, fan_out).mul_(self.options.scale)

    def feedback_matrices(self) -> list[Tensor | None]:
        """B_l^T, shape n_out x n_l: in a Network, for each hidden layer l (views into the stacked
        matrix); in a general module, for each layer's input (None until the first batch, and for
        a layer whose input never needs an error)."""
        if self.pathway is not None:
            return [self.feedback[index] for index in range(len(self.feedback))]
        return list(self.feedback_stack.split(self.widths, dim=1))

    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        if self.pathway is not None:
            step = self.pathway.run(
                inputs, targets, self.loss, self._send_down, prepare=self._draw_missing
            )
            return StepRecord(step.loss, step.output, step.layer_errors)
        return self._layerwise_backward(inputs, targets)

    @torch.no_grad()
    def _layerwise_backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
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

    def _send_down(self, index: int, module: nn.Module, inputs: Tensor, session) -> object:
        """Layer ``index`` sends D_index e to its input, ignoring the error at its output."""
        shape = inputs.shape

        def broadcast(delta: Tensor) -> Tensor:
            error = session.output_error
            if error.shape[0] != shape[0]:
                raise ValueError(
                    f"dfa: layer {self.pathway.weight_names()[index]!r} ran on a batch of "
                    f"{shape[0]}, the output has {error.shape[0]}: each layer's input must keep "
                    "the batch dimension first"
                )
            if self.feedback[index].dim() > 2:  # a kernel, tiled over the output map
                return _kernel_feedback(module, self.feedback[index], error, delta, shape)
            return (error.flatten(1) @ self.feedback[index]).view(shape)

        return broadcast

    @torch.no_grad()
    def _draw_missing(self, session) -> None:
        """Draw D_l (n_out x the layer's input size per sample, or a kernel n_out x C_in x k...
        with ``conv_feedback="kernel"``) for each layer whose input needed an error for the first
        time, in the order of the forward pass."""
        n_out = session.output_error[0].numel()
        for index in session.used:
            width = session.input_shapes[index][1:].numel()
            matrix, module = self.feedback[index], self.pathway.layers[index][1]
            shape: tuple[int, ...] = (n_out, width)
            if self.options.conv_feedback == "kernel" and isinstance(module, CONVOLUTIONS):
                shape = (n_out, *module.weight.shape[1:])  # n_out x C_in x k...
            if matrix is None:
                weight = module.weight
                fresh = torch.empty(shape, dtype=weight.dtype, device=weight.device)
                self.feedback[index] = self._draw(fresh, *_fans(shape))
            elif matrix.shape != shape:
                raise ValueError(
                    f"dfa: layer {self.pathway.weight_names()[index]!r} takes {width} inputs per "
                    f"sample and the model {n_out} outputs, so its feedback must be {shape}, but "
                    f"the fixed one is {tuple(matrix.shape)} (drawn for the first batch's sizes)"
                )

    def feedback_pairs(self) -> list[FeedbackPair]:
        """B_l^T against W_L ... W_{l+1} (what B_l stands in for; dense layers above l only). A
        general module has no such product in general: none."""
        if self.pathway is not None:
            return []
        pairs = []
        layers = self.network.layers
        for index, block in enumerate(self.feedback_matrices()):
            above = layers[index + 1 :]
            if not all(isinstance(layer, DenseLayer) for layer in above):
                continue
            product = above[-1].weight
            for layer in reversed(above[:-1]):
                product = product @ layer.weight
            # named after the layer whose input the block feeds (as on a general module)
            pairs.append(FeedbackPair(index, block, product, f"layers.{index + 1}.weight"))
        return pairs

    def release_model(self) -> None:
        """Remove the hooks conversion put on a general module (the rule cannot train it after)."""
        if self.pathway is not None:
            self.pathway.remove()


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan-in, fan-out) of feedback shaped n_out x width, or n_out x C_in x k... (a kernel: as
    torch's initialisers count them, which is what BioTorch's Xavier draw of it uses)."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _check_kernel_geometry(name: str, module: nn.Module) -> None:
    if module.groups != 1 or isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise ConfigError(
            f"dfa conv_feedback='kernel': layer {name!r} has groups={module.groups}, padding="
            f"{module.padding!r}, padding_mode={module.padding_mode!r}; the kernel feedback takes "
            "groups=1 and numeric zero padding (use conv_feedback='dense')"
        )


_CONV_INPUT = {
    1: torch.nn.grad.conv1d_input,
    2: torch.nn.grad.conv2d_input,
    3: torch.nn.grad.conv3d_input,
}


def _kernel_feedback(
    module: nn.Module, kernel: Tensor, error: Tensor, delta: Tensor, shape: torch.Size
) -> Tensor:
    """K's transposed convolution of e tiled over the layer's output map (``delta``'s shape), in
    the layer's stride, padding and dilation: the signal the layer sends to its input."""
    spatial = delta.shape[2:]
    tiled = error.flatten(1).reshape(*error.shape[:1], -1, *(1,) * len(spatial))
    tiled = tiled.expand(-1, -1, *spatial)
    send = _CONV_INPUT[len(spatial)]
    return send(shape, kernel, tiled, module.stride, module.padding, module.dilation)
