"""Pure functions and the shared skeleton of the target-propagation family (TP, DTP, DDTP, L-DRL).

Notation (docs/notation.md, docs/target_propagation.md): h_0 = x, a_l = W_l h_{l-1} + b_l,
h_l = f_l(a_l), l = 1..L, and the loss L = (1/N) sum_n l_n is a mean over the batch. Each layer
gets a *target* h^_l; ngrad works with the target differences Delta_l = h^_l - h_l:

    Delta_L = -eta dl_n/dh_L                  top target: a gradient step of size eta on each
                                              sample's own loss, taken on the output activity
    Delta_{l-1} = ...                         sent down by the rule's feedback (its own module)
    L_l = 1/(2 eta N) sum_n |h_l - h^_l|^2    each layer's local loss; its gradient is the update:
    delta_l = -f_l'(a_l) * Delta_l / (eta N), grad W_l = delta_l h_{l-1}^T, grad b_l = sum_n delta_l

The 1/eta makes the output layer's update backprop's exactly (delta_L = e = dL/da_L) and keeps the
optimiser's learning rate meaning the same for every eta (Meulemans et al. 2020 divide the learning
rate by the target step; Ernoult et al. 2022 scale the update by 1/beta). delta_l is the error
signal the rule reports in ``StepRecord.layer_errors``: its estimate of dL/da_l.

Layers: dense and convolutional (strided or max-pooled), the feedback of a conv block being its
reversed block (unpooling at the forward pass's switches, then a transposed convolution; see
``pathways``). Diagnostics against exact quantities, each sample's activity flattened:
J_l = dh_L/dh_l per sample by the chain rule,
the damped Gauss-Newton target difference J_l^T (J_l J_l^T + lambda I)^{-1} Delta_L, which equals
(J_l^T J_l + lambda I)^{-1} J_l^T Delta_L (lambda = 0: the pseudo-inverse J_l^+ Delta_L), and the
size eta |dl_n/dh_l| of a gradient step on the activity, next to the size |Delta_l| of the targets.

Learned feedback (DTP, DDTP, L-DRL) is trained on a loss of its own, with noise eps of covariance
s^2 I injected into the activities (``noise``, ``noise_distribution``): ``feedback_iterations``
k > 1 trains it k times per batch with fresh noise, the first k - 1 times by plain SGD steps of
size ``feedback_step`` inside ``backward``, the last gradient going into ``.grad`` for the
optimiser; the targets use the feedback after the internal steps.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ngrad.errors import ConfigError
from ngrad.nn.activations import Activation, get_activation
from ngrad.nn.init import Init
from ngrad.nn.layers import Conv2dLayer, DenseLayer
from ngrad.nn.losses import Loss
from ngrad.nn.network import ForwardTrace, Network
from ngrad.numeric import mean_angle_degrees
from ngrad.options import check_bounds
from ngrad.rules.base import LearningRule, StepRecord, assign_gradient
from ngrad.rules.layerwise import hidden_error, write_layer_gradients
from ngrad.rules.noise import NoiseDistribution
from ngrad.rules.target_propagation.pathways import (
    dense_output,
    fast_function,
    feedback_noise,
    output_jacobians,
)

__all__ = [
    "FeedbackLearningOptions",
    "FeedbackStep",
    "TargetPropagationRule",
    "TrainedFeedbackRule",
    "clamp_into_range",
    "dense_output",
    "fast_function",
    "feedback_noise",
    "gauss_newton_differences",
    "local_errors",
    "mean_sample_norm",
    "output_gradient",
    "output_jacobians",
]

_IDENTITY = get_activation("identity")
# open ranges of the bounded invertible activations: targets are kept strictly inside them
_OPEN_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
RANGE_MARGIN = 1e-6


def output_gradient(loss: Loss, trace: ForwardTrace, labels: Tensor) -> Tensor:
    """dl_n/dh_L for every sample n (N times the gradient of the batch-mean loss)."""
    output = trace.output
    return loss.output_error(output, output, labels, _IDENTITY).mul_(output.shape[0])


def local_errors(
    network: Network, trace: ForwardTrace, differences: Sequence[Tensor], step: float
) -> list[Tensor]:
    """delta_l = -f'(a_l) * Delta_l / (eta N): the gradient of 1/(2 eta N) sum |h_l - h^_l|^2
    with respect to a_l, for every layer (``differences[i]`` belongs to layer i's output)."""
    scale = -1.0 / (step * trace.output.shape[0])
    return [
        hidden_error(network, trace, index, difference).mul_(scale)
        for index, difference in enumerate(differences)
    ]


def clamp_into_range(activation: Activation, activity: Tensor) -> Tensor:
    """Keep a target strictly inside a bounded activation's range (tanh, sigmoid), so its inverse
    stays finite; other activations are returned unchanged."""
    bounds = _OPEN_RANGES.get(activation.name)
    if bounds is None:
        return activity
    return activity.clamp(bounds[0] + RANGE_MARGIN, bounds[1] - RANGE_MARGIN)


def mean_sample_norm(tensor: Tensor) -> float:
    """Mean over the batch of each sample's Euclidean norm."""
    return float(torch.linalg.vector_norm(tensor.flatten(1), dim=1).mean())


def gauss_newton_differences(
    jacobians: Sequence[Tensor], top_difference: Tensor, damping: float
) -> list[Tensor]:
    """Per sample, J^T (J J^T + lambda I)^{-1} Delta_L for each J (lambda = 0: J^+ Delta_L)."""
    column = top_difference.unsqueeze(-1)
    differences = []
    for jacobian in jacobians:
        if damping == 0:
            solved = torch.linalg.pinv(jacobian) @ column
        else:
            gram = jacobian @ jacobian.transpose(1, 2)
            gram.diagonal(dim1=1, dim2=2).add_(damping)
            solved = jacobian.transpose(1, 2) @ torch.linalg.solve(gram, column)
        differences.append(solved.squeeze(-1))
    return differences


def _nan_padded(values: dict[int, float], layers: int) -> list[float]:
    return [values.get(index, math.nan) for index in range(layers)]


@dataclass(frozen=True)
class FeedbackLearningOptions:
    """Options of every rule whose feedback is trained on a noisy loss of its own."""

    target_step: float = 0.1  # eta: size of the output target's gradient step
    noise: float = 0.1  # s: standard deviation of the noise in the feedback's loss
    noise_distribution: NoiseDistribution = "rademacher"  # law of the noise (covariance s^2 I)
    feedback_iterations: int = 1  # k: feedback updates per batch (k - 1 internal SGD steps)
    feedback_step: float = 0.01  # SGD step size of the k - 1 internal feedback updates
    init: Init = "xavier"  # initialisation scheme of the feedback weights

    def __post_init__(self) -> None:
        check_bounds(
            self,
            positive=("target_step", "noise", "feedback_step"),
            at_least_one=("feedback_iterations",),
        )


@dataclass(frozen=True)
class FeedbackStep:
    """One evaluation of a feedback loss: its value per layer index (layers without feedback left
    out), each trained feedback tensor with its gradient, and what ``propagate_targets`` may
    reuse (e.g. the feedback's pre-activation at the activities)."""

    losses: dict[int, float]
    gradients: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    reuse: Any = None


class TargetPropagationRule(LearningRule):
    """One step of any target-propagation rule: trace, feedback learning, targets, local losses.

    Subclasses send the top target difference down (``propagate_targets``) and, where they learn
    their feedback, train it (``learn_feedback``: writes the feedback parameters' ``.grad``).
    Options shared by all: ``target_step`` (eta). Cheap per-step series:
    ``target_difference_by_layer`` (mean |Delta_l|) and the feedback loss per layer
    (``feedback_loss_name``); costly ones in ``diagnose``.
    """

    feedback_loss_name: ClassVar[str] = "reconstruction_loss_by_layer"

    def __init__(self, network: Network, loss: str | Loss = "cross_entropy", **options: Any):
        super().__init__(network, loss, **options)
        reason = type(self).unsupported_reason(network)
        if reason is not None:
            raise ConfigError(f"rule {self.name!r} cannot train this network: {reason}")

    @classmethod
    def unsupported_reason(cls, network: Network) -> str | None:
        """Why the rule cannot train ``network``, or None if it can."""
        if not all(isinstance(layer, DenseLayer | Conv2dLayer) for layer in network.layers):
            return "the target-propagation rules need dense or convolutional (Conv2dLayer) layers"
        if len(network.layers) < 2:
            return "it needs at least one hidden layer"
        return None

    def learn_feedback(self, trace: ForwardTrace) -> tuple[dict[int, float], Any]:
        """Write the feedback parameters' ``.grad``; return the feedback loss per layer index
        (layers without feedback left out) and anything ``propagate_targets`` may reuse.
        Default: no feedback to learn."""
        return {}, None

    @abstractmethod
    def propagate_targets(
        self, trace: ForwardTrace, top_difference: Tensor, reuse: Any = None
    ) -> list[Tensor]:
        """Delta for every layer's output (index i: layer i), from Delta_L = ``top_difference``;
        ``reuse`` is what ``learn_feedback`` returned this step (None when it did not run)."""

    def target_scalars(
        self, trace: ForwardTrace, differences: Sequence[Tensor]
    ) -> dict[str, float]:
        """Rule-specific numbers about this step's targets, for ``StepRecord.scalars``."""
        return {}

    def gauss_newton_damping(self) -> float:
        """lambda of the Gauss-Newton targets the diagnostic compares with (0: pseudo-inverse)."""
        return 0.0

    def top_difference(self, trace: ForwardTrace, labels: Tensor) -> Tensor:
        """Delta_L = -eta dl_n/dh_L."""
        return output_gradient(self.loss, trace, labels).mul_(-self.options.target_step)

    @torch.no_grad()
    def backward(self, inputs: Tensor, targets: Tensor) -> StepRecord:
        trace = self.network.trace(inputs)
        feedback_losses, reuse = self.learn_feedback(trace)
        differences = self.propagate_targets(trace, self.top_difference(trace, targets), reuse)
        errors = local_errors(self.network, trace, differences, self.options.target_step)
        write_layer_gradients(self.network, trace, errors)
        series = {  # 0-d tensors, read only when logged: no wait for the device per step
            "target_difference_by_layer": [
                torch.linalg.vector_norm(d.flatten(1), dim=1).mean() for d in differences
            ]
        }
        if feedback_losses:
            series[self.feedback_loss_name] = _nan_padded(feedback_losses, len(differences))
        loss = self.loss(trace.output, targets)
        scalars = self.target_scalars(trace, differences)
        return StepRecord(loss, trace.output, tuple(errors), scalars=scalars, series=series)

    @torch.no_grad()
    def train_feedback(self, inputs: Tensor) -> dict[int, float]:
        """A feedback-only step on ``inputs`` (no labels needed): the feedback learns as in
        ``backward`` and its ``.grad`` is written; the network's ``.grad`` is cleared, so an
        optimiser step leaves the forward weights alone (extra feedback-only epochs, feedback
        pretraining). Returns the feedback loss per layer index."""
        losses, _ = self.learn_feedback(self.network.trace(inputs))
        for parameter in self.network.parameters():
            parameter.grad = None
        return losses

    @torch.no_grad()
    def diagnose(self, inputs: Tensor, targets: Tensor) -> dict[str, float | list[float]]:
        """Per layer: mean angle of Delta_l to the damped Gauss-Newton target difference, and the
        size eta |dl_n/dh_l| of a gradient step on the activity (compare with |Delta_l|)."""
        trace = self.network.trace(inputs)
        top = self.top_difference(trace, targets)
        differences = self.propagate_targets(trace, top)
        jacobians = output_jacobians(self.network, trace)
        gauss_newton = gauss_newton_differences(jacobians, top, self.gauss_newton_damping())
        return {
            "gauss_newton_angle_by_layer": [
                mean_angle_degrees(mine, reference)
                for mine, reference in zip(differences, gauss_newton, strict=True)
            ],
            # J_l^T Delta_L = -eta dl_n/dh_l: a gradient step on h_l, sample by sample
            "gradient_step_by_layer": [
                mean_sample_norm(jacobian.transpose(1, 2) @ top.unsqueeze(-1))
                for jacobian in jacobians
            ],
        }


class TrainedFeedbackRule(TargetPropagationRule):
    """A target-propagation rule whose feedback is trained on a noisy loss of its own
    (options: :class:`FeedbackLearningOptions`). Subclasses give one evaluation of that loss
    (``feedback_gradients``); this class runs it ``feedback_iterations`` times per batch, or, for
    a rule whose layers' feedback losses are independent and whose options set the schedule per
    layer (``feedback_schedule``), each layer's own number of times."""

    @abstractmethod
    def feedback_gradients(self, trace: ForwardTrace) -> FeedbackStep:
        """The feedback loss and its gradients on this batch, with freshly drawn noise."""

    @abstractmethod
    def feedback_matrices(self) -> list[Tensor | None]:
        """The feedback weights, in the orientation of the forward weight each stands for."""

    def feedback_schedule(self) -> dict[int, tuple[int, float]] | None:
        """(iterations, internal step size) per layer index with feedback, where the options set
        them per layer; None: ``feedback_iterations`` and ``feedback_step`` for all. A rule that
        returns one takes ``feedback_gradients(trace, indices)``: those layers' gradients alone,
        one per layer in their order."""
        return None

    def learn_feedback(self, trace: ForwardTrace) -> tuple[dict[int, float], Any]:
        """k evaluations: k - 1 internal SGD steps, the last gradient written into ``.grad``.
        With one schedule for all, k = ``feedback_iterations`` and the step ``feedback_step``;
        per layer, evaluation j covers the layers whose own k exceeds j."""
        schedule = self.feedback_schedule()
        uniform = (self.options.feedback_iterations, self.options.feedback_step)
        total = uniform[0] if schedule is None else max(k for k, _ in schedule.values())
        losses: dict[int, float] = {}
        reuse: Any = None if schedule is None else {}
        for iteration in range(total):
            if schedule is None:
                step = self.feedback_gradients(trace)
                plan, reuse = [uniform] * len(step.gradients), step.reuse
            else:
                active = [index for index, (k, _) in schedule.items() if k > iteration]
                step = self.feedback_gradients(trace, active)
                plan = [schedule[index] for index in active]
                reuse.update(step.reuse)
            losses.update(step.losses)
            internal = []
            for (parameter, gradient), (k, size) in zip(step.gradients, plan, strict=True):
                if iteration + 1 < k:
                    internal.append((parameter, gradient, size))
                else:
                    assign_gradient(parameter, gradient)
            if internal:  # the same on every process: the schedule is the options'
                self.reduce_gradients(gradient for _, gradient, _ in internal)
            for parameter, gradient, size in internal:
                parameter.sub_(gradient, alpha=size)
        return losses, reuse
