"""Pure functions shared by rules that send an error down layer by layer through some matrix.

    delta_L = e = dL/da_L
    delta_{l-1} = f'(a_{l-1}) * T_l(delta_l; M_l)      (T_l the adjoint of layer l's linear map)
    dW_l = delta_l h_{l-1}^T,  db_l = sum_batch delta_l

With M_l = W_l this is backprop; with a fixed random M_l it is feedback alignment; with
M_l = sign(W_l) * magnitude it is sign symmetry; with a learned M_l it is Kolen-Pollack or weight
mirroring. All of it runs without autograd.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ngrad.nn.init import random_like
from ngrad.nn.losses import Loss
from ngrad.nn.network import ForwardTrace, Network
from ngrad.rules.base import FeedbackPair, LearningRule, StepRecord, write_layer_update

__all__ = [
    "FeedbackPathwayRule",
    "LearnedFeedbackRule",
    "hidden_error",
    "output_error",
    "propagate_errors",
    "write_layer_gradients",
]


def output_error(network: Network, loss: Loss, trace: ForwardTrace, targets: Tensor) -> Tensor:
    """e = dL/da_L for the last layer, in closed form."""
    return loss.output_error(
        trace.pre_activations[-1], trace.output, targets, network.layers[-1].activation
    )


def hidden_error(network: Network, trace: ForwardTrace, index: int, signal: Tensor) -> Tensor:
    """delta_i = f'(a_i) * signal, where signal arrives at layer ``index``'s activity."""
    layer = network.layers[index]
    return signal * layer.activation.derivative(
        trace.pre_activations[index], trace.activities[index + 1]
    )


def propagate_errors(
    network: Network,
    trace: ForwardTrace,
    top_error: Tensor,
    feedback_matrices: Sequence[Tensor | None],
) -> list[Tensor]:
    """Errors at every layer's pre-activation, sent down through ``feedback_matrices[i]``
    (W-shaped; entry i carries layer i's error to layer i - 1; entry 0 is unused)."""
    errors = [top_error]
    for index in range(len(network.layers) - 1, 0, -1):
        layer = network.layers[index]
        signal = layer.transpose(
            errors[-1], feedback_matrices[index], trace.activities[index].shape
        )
        errors.append(hidden_error(network, trace, index - 1, signal))
    errors.reverse()
    return errors


def write_layer_gradients(
    network: Network, trace: ForwardTrace, errors: Sequence[Tensor], weight_decay: float = 0.0
) -> None:
    """dW_l = delta_l h_{l-1}^T (+ weight_decay W_l) and db_l = sum delta_l, into ``.grad``."""
    for layer, inputs, error in zip(network.layers, trace.activities, errors, strict=False):
        weight_update = layer.weight_gradient(error, inputs)
        if weight_decay:
            weight_update.add_(layer.weight, alpha=weight_decay)
        bias_update = layer.bias_gradient(error) if layer.bias is not None else None
        write_layer_update(layer, weight_update, bias_update)


class FeedbackPathwayRule(LearningRule):
    """A rule that sends errors down through one W-shaped feedback matrix per layer.

    Subclasses say which matrices (``feedback_matrices``) and how, if at all, they learn them
    (``learn_feedback``, which writes the feedback weights' ``.grad`` and returns scalars to log).
    """

    def forward_weight_decay(self) -> float:
        """lambda added to every forward weight's update, lambda W_l (0: none)."""
        return 0.0

    @abstractmethod
    def feedback_matrices(self) -> list[Tensor | None]:
        """Entry i (i >= 1) carries layer i's error down to layer i - 1; entry 0 is None."""

    @abstractmethod
    def learn_feedback(self, trace: ForwardTrace, errors: Sequence[Tensor]) -> dict[str, float]:
        """Write the update of learned feedback weights into ``.grad`` (no-op for fixed ones)."""

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        trace = self.network.trace(inputs)
        top_error = output_error(self.network, self.loss, trace, targets)
        errors = propagate_errors(self.network, trace, top_error, self.feedback_matrices())
        write_layer_gradients(self.network, trace, errors, self.forward_weight_decay())
        scalars = self.learn_feedback(trace, errors)
        loss = self.loss(trace.output, targets)
        return StepRecord(loss, trace.output, tuple(errors), scalars)

    def feedback_pairs(self) -> list[FeedbackPair]:
        return [
            FeedbackPair(index, matrix, layer.weight)
            for index, (matrix, layer) in enumerate(
                zip(self.feedback_matrices(), self.network.layers, strict=True)
            )
            if matrix is not None
        ]


class LearnedFeedbackRule(FeedbackPathwayRule):
    """A feedback pathway of trained parameters ``self.feedback[i - 1]`` = B_i^T (W_i-shaped),
    drawn at construction with the ``init`` option's scheme (an :data:`~ngrad.nn.init.Init`)."""

    def __init__(self, network: Network, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        self.feedback = nn.ParameterList(
            nn.Parameter(random_like(layer.weight.detach(), self.options.init))
            for layer in network.layers[1:]
        )

    def feedback_matrices(self) -> list[Tensor | None]:
        return [None, *self.feedback]
