"""The oracle every rule is measured against: backprop through the network by autograd.

``backprop_reference`` gives the loss, the weight gradients and dL/da_l per layer on one batch;
``angles_to_backprop`` compares a rule's update with it. Rules, their reference checks and the
analysis package all use this module, so it lives beside the rules and imports nothing above them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ngrad.nn.losses import Loss
from ngrad.nn.network import Network
from ngrad.numeric import angle_degrees
from ngrad.rules.base import LearningRule, StepRecord

__all__ = [
    "BackpropReference",
    "angles_to_backprop",
    "backprop_reference",
    "cuda_devices",
    "forked_rng",
    "rule_step_on_copy",
]


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


def cuda_devices(*items: nn.Module | Tensor) -> list[int]:
    """The indices of the CUDA devices that ``items`` live on (a module: its parameters and
    buffers)."""
    found: set[int] = set()
    for item in items:
        tensors = [*item.parameters(), *item.buffers()] if isinstance(item, nn.Module) else [item]
        found.update(t.device.index or 0 for t in tensors if t.device.type == "cuda")
    return sorted(found)


@contextmanager
def forked_rng(*items: nn.Module | Tensor) -> Iterator[None]:
    """Random numbers drawn inside the block leave the random state of the CPU, and of every CUDA
    device that ``items`` live on, as it was: measuring never changes what training draws."""
    with torch.random.fork_rng(devices=cuda_devices(*items)):
        yield


def rule_step_on_copy(
    rule: LearningRule, inputs: Tensor, targets: Tensor
) -> tuple[LearningRule, StepRecord]:
    """One ``backward`` on a deep copy of ``rule``, with the random state restored afterwards."""
    with forked_rng(rule, inputs):
        twin = copy.deepcopy(rule)
        record = twin.backward(inputs, targets)
    return twin, record


def angles_to_backprop(rule: LearningRule, inputs: Tensor, targets: Tensor) -> list[float]:
    """Per layer, the angle in degrees between the rule's weight update and backprop's gradient."""
    twin, _ = rule_step_on_copy(rule, inputs, targets)
    reference = backprop_reference(rule.network, rule.loss, inputs, targets)
    return [
        angle_degrees(layer.weight.grad, gradient) if layer.weight.grad is not None else math.nan
        for layer, gradient in zip(twin.network.layers, reference.weight_gradients, strict=True)
    ]
