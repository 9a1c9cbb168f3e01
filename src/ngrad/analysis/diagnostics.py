"""How gradient-like is a rule? Generic measurements against autograd's backprop.

Anything that fills ``.grad`` can be compared, so every function here works for every rule.

- **Update angle** per layer: arccos(<A, B>_F / (|A|_F |B|_F)) in degrees between the rule's
  weight update A and the backprop gradient B on the same mini-batch (cosine clamped to [-1, 1];
  NaN when either norm is zero).
- **Error angle** per layer: the mean over samples of the angle between the error signal the rule
  delivers to a_l and backprop's dL/da_l (Akrout et al. 2019's "delta angle").
- **Weight alignment**: the angle between vec(W_l) and vec(B_l^T), and |B| / |W|.
- **Error size across depth**: RMS of backprop's dL/da_l and of the rule's error signal per layer.

Measurements step the rule itself and then put back everything a step may change (parameters,
buffers, ``.grad``, feedback drawn lazily), with the random-number state of the CPU and of the
rule's CUDA devices restored afterwards, so measuring never changes what training does (and copies
only the rule's tensors, not the whole rule, once per measurement).

On a general ``torch.nn.Module`` (a rule that converts one, docs/feedback_alignment.md) the layers
are its nn.Linear and nn.Conv1d/2d/3d (``ngrad.rules.base.model_layers``): ``layer_names`` gives
each one's weight by its qualified name, the per-layer lists follow that order, the errors are those
at each layer's output (dL/dy, before whatever follows it), and ``weight_alignment`` names each
feedback matrix's forward weight. Batch norm's running statistics are restored after the
measurement like every other buffer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ngrad.nn.network import Network
from ngrad.numeric import angle_degrees, json_ready, nan_to_none, root_mean_square, rowwise_angles
from ngrad.rules.base import LearningRule, model_layers
from ngrad.rules.feedback_alignment.modules import module_backprop_reference
from ngrad.rules.reference import (
    BackpropReference,
    angles_to_backprop,
    backprop_reference,
    forked_rng,
)

__all__ = [
    "BackpropReference",
    "angle_degrees",
    "angles_to_backprop",
    "backprop_reference",
    "measure",
    "restored",
    "weight_alignment",
]


@torch.no_grad()
def weight_alignment(rule: LearningRule) -> list[dict[str, float]]:
    """Per feedback matrix: the layer l (numbered 1..L as in the paper), the angle between B_l^T
    and what it stands for (W_l; for DFA, W_L ... W_{l+1}) in degrees, and the norm ratio; on a
    general module also ``name``, the forward weight's qualified name."""
    items = []
    for pair in rule.feedback_pairs():
        item: dict = {
            "layer": pair.layer + 1,
            "angle_deg": angle_degrees(pair.feedback, pair.forward),
            "norm_ratio": float(
                torch.linalg.vector_norm(pair.feedback) / torch.linalg.vector_norm(pair.forward)
            ),
        }
        if not isinstance(rule.network, Network):
            item["name"] = pair.name
        items.append(item)
    return items


def _angle(update: Tensor | None, gradient: Tensor | None) -> float:
    return math.nan if update is None or gradient is None else angle_degrees(update, gradient)


@contextmanager
def restored(rule: LearningRule) -> Iterator[None]:
    """Whatever a step of ``rule`` changes inside the block is put back on exit: its parameters and
    buffers (values restored in place, so optimisers keep their references), each parameter's
    ``.grad``, and buffers that were still unset (feedback drawn on first use)."""
    saved = {name: value.clone() for name, value in rule.state_dict().items()}
    gradients = [(parameter, parameter.grad) for parameter in rule.parameters()]
    unset = [
        (module, name)
        for module in rule.modules()
        for name, buffer in module._buffers.items()
        if buffer is None
    ]
    try:
        yield
    finally:
        for module, name in unset:
            module._buffers[name] = None
        rule.load_state_dict(saved)
        for parameter, gradient in gradients:
            parameter.grad = gradient


def _measure_module(rule: LearningRule, inputs: Tensor, targets: Tensor, record) -> dict:
    with forked_rng(rule, inputs):
        reference = module_backprop_reference(rule.network, rule.loss, inputs, targets)
    updates = [module.weight.grad for _, module in model_layers(rule.network)]
    result: dict[str, list] = {
        "layer_names": list(reference.names),
        "angle_to_bp_deg": [
            nan_to_none(_angle(update, gradient))
            for update, gradient in zip(updates, reference.weight_gradients, strict=True)
        ],
    }
    if reference.errors is not None:
        result["bp_error_rms"] = [root_mean_square(e) for e in reference.errors]
        if record.layer_errors is not None:
            result["error_angle_to_bp_deg"] = [
                nan_to_none(float(rowwise_angles(mine.flatten(1), true.flatten(1)).mean()))
                for mine, true in zip(record.layer_errors, reference.errors, strict=True)
            ]
            result["rule_error_rms"] = [root_mean_square(e) for e in record.layer_errors]
    return result


def _measure_network(rule: LearningRule, inputs: Tensor, targets: Tensor, record) -> dict:
    reference = backprop_reference(rule.network, rule.loss, inputs, targets)
    update_angles = [
        angle_degrees(layer.weight.grad, gradient) if layer.weight.grad is not None else math.nan
        for layer, gradient in zip(rule.network.layers, reference.weight_gradients, strict=True)
    ]
    result: dict[str, list] = {
        "angle_to_bp_deg": [nan_to_none(a) for a in update_angles],
        "bp_error_rms": [root_mean_square(e) for e in reference.errors],
    }
    if record.layer_errors is not None:
        result["error_angle_to_bp_deg"] = [
            nan_to_none(float(rowwise_angles(mine, true).mean()))
            for mine, true in zip(record.layer_errors, reference.errors, strict=True)
        ]
        result["rule_error_rms"] = [root_mean_square(e) for e in record.layer_errors]
    return result


def measure(rule: LearningRule, inputs: Tensor, targets: Tensor) -> dict[str, list]:
    """All per-layer diagnostics on one batch, JSON-ready (NaN becomes None). The rule takes one
    step on the batch and is then restored (:func:`restored`), random state included."""
    with restored(rule):
        with forked_rng(rule, inputs):
            record = rule.backward(inputs, targets)
        if isinstance(rule.network, Network):
            result = _measure_network(rule, inputs, targets, record)
        else:
            result = _measure_module(rule, inputs, targets, record)
        rule_specific: dict[str, object] = {**record.scalars, **record.series}
        with forked_rng(rule, inputs):
            rule_specific.update(rule.diagnose(inputs, targets))
        if rule_specific:
            result["rule_diagnostics"] = json_ready(rule_specific)
    with forked_rng(rule, inputs):  # feedback redrawn per batch (brsf) draws here too
        alignment = weight_alignment(rule)
    if alignment:
        result["weight_alignment"] = [
            {
                key: nan_to_none(value) if key not in ("layer", "name") else value
                for key, value in item.items()
            }
            for item in alignment
        ]
    return result
