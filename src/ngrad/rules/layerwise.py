"""Pure functions shared by rules that send an error down layer by layer through some matrix.

    delta_L = e = dL/da_L
    delta_{l-1} = f'(a_{l-1}) * T_l(delta_l; M_l)      (T_l the adjoint of layer l's linear map)
    dW_l = delta_l h_{l-1}^T,  db_l = sum_batch delta_l

With M_l = W_l this is backprop; with a fixed random M_l it is feedback alignment; with
M_l = sign(W_l) * magnitude it is sign symmetry; with a learned M_l it is Kolen-Pollack or weight
mirroring. All of it runs without autograd.

:class:`FeedbackPathwayRule`, the base of those rules, trains an ngrad Network with this closed
form (fast, and ngrad's float64 oracle: ``ngrad check`` and the tests measure against it) and any
other ``torch.nn.Module`` by converting its layers
(:mod:`ngrad.rules.feedback_alignment.modules`): the same feedback matrices, one implementation of
each rule's feedback, two ways of sending the error down.
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
from ngrad.rules.feedback_alignment.modules import ModulePathway, conversion_refusal, send_through

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
            errors[-1],
            feedback_matrices[index],
            trace.activities[index].shape,
            trace.activities[index],
            switches=trace.switches_of(index),
        )
        errors.append(hidden_error(network, trace, index - 1, signal))
    errors.reverse()
    return errors


def write_layer_gradients(
    network: Network, trace: ForwardTrace, errors: Sequence[Tensor], weight_decay: float = 0.0
) -> None:
    """dW_l = delta_l h_{l-1}^T (+ weight_decay W_l) and db_l = sum delta_l, into ``.grad``."""
    for index, (layer, inputs, error) in enumerate(
        zip(network.layers, trace.activities, errors, strict=False)
    ):
        weight_update = layer.weight_gradient(error, inputs, switches=trace.switches_of(index))
        if weight_decay:
            weight_update.add_(layer.weight, alpha=weight_decay)
        bias_update = layer.bias_gradient(error) if layer.bias is not None else None
        write_layer_update(layer, weight_update, bias_update)


class FeedbackPathwayRule(LearningRule):
    """A rule that sends errors down through one W-shaped feedback matrix per layer.

    Subclasses say which matrix each layer uses (``feedback_matrix``) and how, if at all, they
    learn them (``learn_feedback``, which writes the feedback weights' ``.grad`` and returns
    scalars to log). The feedback belongs to the *fed* weights (``fed_weights``): W_2..W_L of an
    ngrad Network, whose first layer's input needs no error, and the weight of every layer of a
    general module (any of them may follow something that trains).
    """

    trains_modules = True
    supports_mixed_precision = True
    scales_with_loss = True  # subclasses whose feedback learns otherwise say False

    def __init__(self, network: nn.Module, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        self.pathway = None if isinstance(network, Network) else ModulePathway(network)

    @classmethod
    def unsupported_reason(cls, network: nn.Module) -> str | None:
        return None if isinstance(network, Network) else conversion_refusal(network)

    def fed_weights(self) -> list[Tensor]:
        """The forward weights that own a feedback matrix, in order."""
        if self.pathway is None:
            return [layer.weight for layer in self.network.layers[1:]]
        return self.pathway.weights()

    def feedback_layers(self) -> list[tuple[int, str]]:
        """(layer position, qualified weight name) of each fed weight, in order."""
        if self.pathway is None:
            return [(index, f"layers.{index}.weight") for index in range(1, len(self.network))]
        return list(enumerate(self.pathway.weight_names()))

    def feedback_position(self, layer: int | str) -> int:
        """Index among the fed weights of ``layer``: its position (in a Network, 1..L-1; in a
        module, 0..) or its (weight's) qualified name."""
        for position, (index, name) in enumerate(self.feedback_layers()):
            if layer in (index, name, name.removesuffix(".weight")):
                return position
        if layer == 0 and self.pathway is None:
            raise IndexError("layer 0 has no feedback matrix: the input needs no error")
        raise IndexError(f"no layer {layer!r} with a feedback matrix")

    def forward_weight_decay(self) -> float:
        """lambda added to every forward weight's update, lambda W_l (0: none)."""
        return 0.0

    @abstractmethod
    def feedback_matrix(self, index: int) -> Tensor:
        """B^T (W-shaped) of fed weight ``index`` for this batch (drawn or computed if need be)."""

    def feedback_matrices(self) -> list[Tensor | None]:
        """Entry i carries layer i's error down to layer i - 1 (in a Network, entry 0 is None:
        the input needs no error; in a general module, one per converted layer)."""
        matrices = [self.feedback_matrix(index) for index in range(len(self.fed_weights()))]
        return matrices if self.pathway is not None else [None, *matrices]

    @abstractmethod
    def learn_feedback(self, batch_size: int, carried: Sequence[int]) -> dict[str, float]:
        """Write the update of learned feedback weights into ``.grad`` (no-op for fixed ones).
        ``carried``: the fed weights whose feedback carried an error in this batch, in the order
        of the forward pass (every one, in order, in a Network)."""

    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        if self.pathway is None:
            return self._layerwise_backward(inputs, targets)
        step = self.pathway.run(inputs, targets, self.loss, self._send_down)
        decay = self.forward_weight_decay()
        if decay:
            for weight in self.fed_weights():
                if weight.grad is not None:
                    weight.grad.add_(weight.detach(), alpha=decay)
        with torch.no_grad():
            scalars = self.learn_feedback(inputs.shape[0], step.used)
        return StepRecord(step.loss, step.output, step.layer_errors, scalars)

    @torch.no_grad()
    def _layerwise_backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        trace = self.network.trace(inputs)
        top_error = output_error(self.network, self.loss, trace, targets)
        errors = propagate_errors(self.network, trace, top_error, self.feedback_matrices())
        write_layer_gradients(self.network, trace, errors, self.forward_weight_decay())
        scalars = self.learn_feedback(inputs.shape[0], range(len(self.network.layers) - 1))
        loss = self.loss(trace.output, targets)
        return StepRecord(loss, trace.output, tuple(errors), scalars)

    @torch.no_grad()
    def _send_down(self, index: int, module: nn.Module, inputs: Tensor, _session) -> object:
        """During the forward pass: what sends the error at layer ``index``'s output down to
        its input, through this batch's B (computed now, in the order of the forward pass)."""
        matrix = self.feedback_matrix(index).detach()
        return lambda delta: send_through(module, matrix, inputs, delta)

    def feedback_pairs(self) -> list[FeedbackPair]:
        matrices = [matrix for matrix in self.feedback_matrices() if matrix is not None]
        return [
            FeedbackPair(index, matrix, weight, name)
            for (index, name), matrix, weight in zip(
                self.feedback_layers(), matrices, self.fed_weights(), strict=True
            )
        ]

    def release_model(self) -> None:
        """Remove the hooks conversion put on a general module (the rule cannot train it after)."""
        if self.pathway is not None:
            self.pathway.remove()


class LearnedFeedbackRule(FeedbackPathwayRule):
    """A feedback pathway of trained parameters ``self.feedback[i]`` = B^T of fed weight i
    (W-shaped), drawn at construction with the ``init`` option's scheme (an
    :data:`~ngrad.nn.init.Init`)."""

    def __init__(self, network: nn.Module, loss="cross_entropy", **options) -> None:
        super().__init__(network, loss, **options)
        self.feedback = nn.ParameterList(
            nn.Parameter(random_like(weight.detach(), self.options.init))
            for weight in self.fed_weights()
        )

    def feedback_matrix(self, index: int) -> Tensor:
        return self.feedback[index]
