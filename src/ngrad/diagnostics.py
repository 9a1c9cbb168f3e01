"""How gradient-like is a rule? Generic measurements against autograd's backprop.

Anything that fills ``.grad`` can be compared, so every function here works for every rule.

- **Update angle** per layer: arccos(<A, B>_F / (|A|_F |B|_F)) in degrees between the rule's
  weight update A and the backprop gradient B on the same mini-batch (cosine clamped to [-1, 1];
  NaN when either norm is zero).
- **Error angle** per layer: the mean over samples of the angle between the error signal the rule
  delivers to a_l and backprop's dL/da_l (Akrout et al. 2019's "delta angle").
- **Weight alignment**: the angle between vec(W_l) and vec(B_l^T), and |B| / |W|.
- **Error size across depth**: RMS of backprop's dL/da_l and of the rule's error signal per layer.

Measurements run on a deep copy of the rule with the random-number state restored afterwards, so
measuring never changes what training does.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ngrad.losses import Loss
from ngrad.network import Network
from ngrad.rules.base import LearningRule, StepRecord

__all__ = [
    "BackpropReference",
    "angle_degrees",
    "angles_to_backprop",
    "backprop_reference",
    "measure",
    "weight_alignment",
]


def angle_degrees(a: Tensor, b: Tensor) -> float:
    """Angle between two tensors seen as vectors, in degrees (NaN if either is zero)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norm_a, norm_b = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if norm_a == 0 or norm_b == 0:
        return math.nan
    cosine = torch.clamp(torch.dot(a, b) / (norm_a * norm_b), -1.0, 1.0)
    return math.degrees(math.acos(float(cosine)))


def rowwise_angles(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample angles in degrees between matching rows of a and b (zero rows are dropped)."""
    a, b = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    keep = norms > 0
    cosine = torch.clamp((a * b).sum(dim=1)[keep] / norms[keep], -1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosine))


@dataclass(frozen=True)
class BackpropReference:
    """Autograd's backprop on one batch: loss, weight gradients and dL/da_l per layer."""

    loss: float
    weight_gradients: list[Tensor]
    errors: list[Tensor]


def backprop_reference(
    network: Network, loss: Loss, inputs: Tensor, targets: Tensor
) -> BackpropReference:
    """Backprop through ``network`` with autograd (the oracle for every rule)."""
    weights = [layer.weight for layer in network.layers]
    with torch.enable_grad():
        trace = network.trace(inputs)
        value = loss(trace.output, targets)
        gradients = torch.autograd.grad(value, [*weights, *trace.pre_activations])
    count = len(weights)
    return BackpropReference(
        float(value.detach()), list(gradients[:count]), list(gradients[count:])
    )


def _rule_step_on_copy(
    rule: LearningRule, inputs: Tensor, targets: Tensor
) -> tuple[LearningRule, StepRecord]:
    with torch.random.fork_rng(devices=[]):
        twin = copy.deepcopy(rule)
        record = twin.backward(inputs, targets)
    return twin, record


def angles_to_backprop(rule: LearningRule, inputs: Tensor, targets: Tensor) -> list[float]:
    """Per layer, the angle in degrees between the rule's weight update and backprop's gradient."""
    twin, _ = _rule_step_on_copy(rule, inputs, targets)
    reference = backprop_reference(rule.network, rule.loss, inputs, targets)
    return [
        angle_degrees(layer.weight.grad, gradient) if layer.weight.grad is not None else math.nan
        for layer, gradient in zip(twin.network.layers, reference.weight_gradients, strict=True)
    ]


@torch.no_grad()
def weight_alignment(rule: LearningRule) -> list[dict[str, float]]:
    """Per feedback matrix: the layer l (numbered 1..L as in the paper), the angle between B_l^T
    and what it stands for (W_l; for DFA, W_L ... W_{l+1}) in degrees, and the norm ratio."""
    return [
        {
            "layer": pair.layer + 1,
            "angle_deg": angle_degrees(pair.feedback, pair.forward),
            "norm_ratio": float(
                torch.linalg.vector_norm(pair.feedback) / torch.linalg.vector_norm(pair.forward)
            ),
        }
        for pair in rule.feedback_pairs()
    ]


def _rms(tensor: Tensor) -> float:
    return float(tensor.detach().double().pow(2).mean().sqrt())


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json_ready(values: dict[str, object]) -> dict[str, object]:
    def clean(value):
        if isinstance(value, Tensor):
            value = value.tolist()
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        return _nan_to_none(float(value)) if value is not None else None

    return {key: clean(value) for key, value in values.items()}


def measure(rule: LearningRule, inputs: Tensor, targets: Tensor) -> dict[str, list]:
    """All per-layer diagnostics on one batch, JSON-ready (NaN becomes None)."""
    twin, record = _rule_step_on_copy(rule, inputs, targets)
    reference = backprop_reference(rule.network, rule.loss, inputs, targets)
    update_angles = [
        angle_degrees(layer.weight.grad, gradient) if layer.weight.grad is not None else math.nan
        for layer, gradient in zip(twin.network.layers, reference.weight_gradients, strict=True)
    ]
    result: dict[str, list] = {
        "angle_to_bp_deg": [_nan_to_none(a) for a in update_angles],
        "bp_error_rms": [_rms(e) for e in reference.errors],
    }
    if record.layer_errors is not None:
        result["error_angle_to_bp_deg"] = [
            _nan_to_none(float(rowwise_angles(mine, true).mean()))
            for mine, true in zip(record.layer_errors, reference.errors, strict=True)
        ]
        result["rule_error_rms"] = [_rms(e) for e in record.layer_errors]
    rule_specific: dict[str, object] = {**record.scalars, **record.series}
    with torch.random.fork_rng(devices=[]):
        rule_specific.update(twin.diagnose(inputs, targets))
    if rule_specific:
        result["rule_diagnostics"] = _json_ready(rule_specific)
    alignment = weight_alignment(rule)
    if alignment:
        result["weight_alignment"] = [
            {key: _nan_to_none(value) if key != "layer" else value for key, value in item.items()}
            for item in alignment
        ]
    return result
