"""Backpropagation: the reference every other rule is measured against.

    delta_L = dL/da_L
    delta_l = f'(a_l) * (W_{l+1}^T delta_{l+1})
    dW_l = delta_l h_{l-1}^T,   db_l = sum_batch delta_l

Rumelhart, Hinton & Williams (1986). Learning representations by back-propagating errors.
Nature 323, 533-536.

Computed with PyTorch autograd, as a researcher's own backprop baseline would be: speed ratios of
the other rules are quoted against this implementation. It trains an ngrad Network or any
``torch.nn.Module`` (autograd's gradient of every parameter that requires one). Not local: the
error at layer l needs the transpose of every forward weight above it (weight transport).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ngrad.nn.network import Network
from ngrad.nn.validation import check_label_range
from ngrad.rules.base import LearningRule, StepRecord, assign_gradients, write_layer_update
from ngrad.search_space import tunable

__all__ = ["Backprop"]


class Backprop(LearningRule):
    name = "bp"
    summary = "backpropagation via autograd (the reference)"
    citation = "Rumelhart, Hinton & Williams 1986, Nature 323:533"
    trains_modules = True  # any nn.Module: autograd's gradient of every trained parameter
    search_space = tunable()  # only the shared settings (learning rate, momentum, decay)
    supports_mixed_precision = True
    scales_with_loss = True

    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        if not isinstance(self.network, Network):
            return self._module_backward(inputs, targets)
        layers = self.network.layers
        weights = [layer.weight for layer in layers]
        biases = [layer.bias for layer in layers if layer.bias is not None]
        with torch.enable_grad():
            output = self.network(inputs)
            loss = self.loss(output, targets)
            gradients = torch.autograd.grad(loss, [*weights, *biases])
        bias_gradients = iter(gradients[len(weights) :])
        for layer, weight_gradient in zip(layers, gradients[: len(weights)], strict=True):
            bias_gradient = next(bias_gradients) if layer.bias is not None else None
            write_layer_update(layer, weight_gradient, bias_gradient)
        return StepRecord(loss.detach(), output.detach())

    def _module_backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        parameters = [p for p in self.network.parameters() if p.requires_grad]
        with torch.enable_grad():
            output = self.network(inputs)
            check_label_range(targets, output.shape[-1])
            loss = self.loss(output, targets)
            gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
        assign_gradients(parameters, gradients)
        return StepRecord(loss.detach(), output.detach())
