"""What the device tests share: the devices, a mode that builds every tensor on one device, and the
comparison of one rule's update on the CPU with the same update on another device.

Every test here takes a ``device``: "cpu" runs everywhere (so the comparison and the harness are
exercised by the normal suite, CPU against CPU), "cuda" only where torch.cuda.is_available().
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

import ngrad
from ngrad.rules import REGISTRY, get_rule_class

NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False here)"

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA),
        ],
    ),
]


def family(rule_name: str) -> str:
    """The package a rule's class lives in (its family)."""
    return get_rule_class(rule_name).__module__.rpartition(".")[0]


def one_rule_per_family() -> list[str]:
    """The first registered rule of each family (on the CPU, where tests/reference already runs
    every rule's checks, one per family exercises the device harness)."""
    seen: dict[str, str] = {}
    for name in REGISTRY:
        seen.setdefault(family(name), name)
    return list(seen.values())


def rule_cases() -> list:
    """(device, rule) for the device tests: every rule on CUDA, one per family on the CPU."""
    cpu = set(one_rule_per_family())
    cases = []
    for name in REGISTRY:
        for device in DEVICES:
            if device.values[0] == "cpu" and name not in cpu:
                continue
            cases.append(pytest.param(device.values[0], name, marks=device.marks,
                                      id=f"{device.id}-{name}"))  # fmt: skip
    return cases


class OnDevice(TorchFunctionMode):
    """Every tensor factory without a device builds on ``device``; one drawing from a CPU
    ``torch.Generator`` (the reference checks seed theirs) draws on the CPU and moves the result,
    so the numbers are the CPU's on any device."""

    def __init__(self, device: str | torch.device) -> None:
        super().__init__()
        self.device = torch.device(device)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None:
            generator = kwargs.get("generator")
            if generator is not None and generator.device.type != self.device.type:
                return func(*args, **kwargs).to(self.device)
            kwargs["device"] = self.device
        return func(*args, **kwargs)


@contextmanager
def on_device(device: str) -> Iterator[None]:
    with OnDevice(device):
        yield


def small_network(kind: str) -> ngrad.Network:
    """A float64 network on the CPU: "dense" (12-10-9-4, tanh), "square" (12-6-6-6, for rules that
    invert layers) or "conv" (2x8x8 images)."""
    torch.manual_seed(0)
    if kind in ("dense", "square"):
        sizes = [12, 10, 9, 4] if kind == "dense" else [12, 6, 6, 6]
        return ngrad.mlp(sizes, activation="tanh").double()
    return ngrad.convnet(
        (2, 8, 8), channels=(3, 4), num_classes=4, hidden=(6,), activation="tanh"
    ).double()


def small_batch(kind: str, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = (2, 8, 8) if kind == "conv" else (12,)
    inputs = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    return inputs, torch.randint(0, 4, (n,), generator=generator)


def rule_updates(rule, inputs, targets, seed: int) -> list[torch.Tensor]:
    """The update ``rule`` writes into ``.grad`` on one batch (every trained parameter), on the
    CPU, with the random state seeded by ``seed`` first."""
    torch.manual_seed(seed)
    rule.backward(inputs, targets)
    return [
        torch.zeros(p.shape, dtype=p.dtype) if p.grad is None else p.grad.detach().cpu().clone()
        for p in rule.parameters()
    ]


def relative_difference(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    """max over tensors of max |a - b| / max |a| (0 for equal lists)."""
    worst = 0.0
    for a, b in zip(first, second, strict=True):
        scale = float(a.abs().max()) if a.numel() else 0.0
        gap = float((a - b).abs().max()) if a.numel() else 0.0
        worst = max(worst, gap / (scale or 1.0))
    return worst


def is_random(rule_name: str, kind: str) -> bool:
    """Whether the rule's update on one batch depends on the random state (per-batch draws)."""
    rule = ngrad.make_rule(rule_name, small_network(kind))
    inputs, targets = small_batch(kind)
    first = rule_updates(copy.deepcopy(rule), inputs, targets, seed=1)
    second = rule_updates(copy.deepcopy(rule), inputs, targets, seed=2)
    return relative_difference(first, second) > 0


def cpu_versus_device(rule_name: str, kind: str, device: str) -> float:
    """Build ``rule_name`` on a float64 network on the CPU, copy it to ``device``, take one step
    on the same batch on both, and return the largest relative difference of the updates."""
    rule = ngrad.make_rule(rule_name, small_network(kind))
    inputs, targets = small_batch(kind)
    there = copy.deepcopy(rule).to(device)
    here = rule_updates(rule, inputs, targets, seed=3)
    moved = rule_updates(there, inputs.to(device), targets.to(device), seed=3)
    return relative_difference(here, moved)


def supports(rule_name: str, kind: str) -> bool:
    return get_rule_class(rule_name).supports(small_network(kind))
