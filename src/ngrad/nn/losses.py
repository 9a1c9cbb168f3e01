"""Output losses and their error at the output pre-activation, e = dL/da_L.

Every loss is a mean over the batch, so all rules' updates share one scale with autograd's.

- ``cross_entropy``: softmax cross-entropy on logits; e = (softmax(a_L) - onehot(y)) / N.
- ``bce``: sigmoid cross-entropy summed over the outputs (Akrout et al. 2019's loss);
  e = (sigmoid(a_L) - onehot(y)) / N.
- ``mse``: 1/2 |h_L - onehot(y)|^2 summed over outputs; e = (h_L - onehot(y)) f'(a_L) / N.

The first two treat the network's output as logits (use a linear output layer); with another
output activation f, the error is chained through f'(a_L).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.nn import functional as F

from ngrad.nn.activations import Activation

__all__ = ["LOSSES", "Loss", "get_loss"]


class Loss(ABC):
    name: str

    @abstractmethod
    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the batch (differentiable with autograd)."""

    @abstractmethod
    def output_error(
        self, pre_activation: Tensor, output: Tensor, target: Tensor, activation: Activation
    ) -> Tensor:
        """e = dL/da_L in closed form (no autograd)."""


def _one_hot(target: Tensor, like: Tensor) -> Tensor:
    return F.one_hot(target, like.shape[1]).to(like.dtype)


def _through_activation(
    error_at_output: Tensor, pre_activation: Tensor, output: Tensor, activation: Activation
) -> Tensor:
    """dL/da_L = dL/dh_L * f'(a_L); skipped for the identity (the logits case)."""
    if activation.name == "identity":
        return error_at_output
    return error_at_output * activation.derivative(pre_activation, output)


class CrossEntropy(Loss):
    name = "cross_entropy"

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    def output_error(self, pre_activation, output, target, activation):
        probs = torch.softmax(output, dim=1)
        error = (probs - _one_hot(target, output)) / output.shape[0]
        return _through_activation(error, pre_activation, output, activation)


class SigmoidCrossEntropy(Loss):
    name = "bce"

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        per_unit = F.binary_cross_entropy_with_logits(
            output, _one_hot(target, output), reduction="none"
        )
        return per_unit.sum(dim=1).mean()

    def output_error(self, pre_activation, output, target, activation):
        error = (torch.sigmoid(output) - _one_hot(target, output)) / output.shape[0]
        return _through_activation(error, pre_activation, output, activation)


class SquaredError(Loss):
    name = "mse"

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (output - _one_hot(target, output)).pow(2).sum(dim=1).mean()

    def output_error(self, pre_activation, output, target, activation):
        error = (output - _one_hot(target, output)) / output.shape[0]
        return _through_activation(error, pre_activation, output, activation)


LOSSES: dict[str, Loss] = {
    loss.name: loss for loss in (CrossEntropy(), SigmoidCrossEntropy(), SquaredError())
}


def get_loss(name: str | Loss) -> Loss:
    if isinstance(name, Loss):
        return name
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
