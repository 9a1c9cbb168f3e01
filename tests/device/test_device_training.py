"""Training on a device: it runs, measuring never changes it, and --resume gives the uninterrupted
run exactly (the random state of the CPU and of the device travel through the checkpoint)."""

from __future__ import annotations

import json
import math
from functools import cache

import pytest
import torch
from device_cases import DEVICES, family, is_random, rule_cases, supports
from torch import nn

import ngrad
from ngrad.analysis import diagnostics
from ngrad.rules import REGISTRY
from ngrad.train.config import make_config
from ngrad.train.loop import run_training

SMALL = {"epochs": 2, "hidden": (16,), "diagnostics_samples": 32, "train_subset": 200}


@cache
def random_rules() -> list[str]:
    """The rules whose update draws random numbers per batch (there the random state matters)."""
    found = []
    for name in REGISTRY:
        kind = next((k for k in ("dense", "square") if supports(name, k)), None)
        if kind is not None and is_random(name, kind):
            found.append(name)
    return found


def random_rule_cases() -> list:
    """(device, rule) for the random rules: all of them on CUDA, one per family on the CPU."""
    cases, families = [], set()
    for name in random_rules():
        for device in DEVICES:
            if device.values[0] == "cpu":
                if family(name) in families:
                    continue
                families.add(family(name))
            cases.append(pytest.param(device.values[0], name, marks=device.marks,
                                      id=f"{device.id}-{name}"))  # fmt: skip
    return cases


def _config(rule_name: str, device: str, **values):
    hidden = (16,) if supports(rule_name, "dense") else (10, 10)  # square for rules that invert
    return make_config(SMALL | {"rule": rule_name, "device": device, "hidden": hidden} | values)


def _metrics(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    timing = ("epoch_time_s", "epoch_cpu_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize(("device", "rule_name"), rule_cases())
def test_a_short_training_runs_on_the_device(device, rule_name):
    result = run_training(_config(rule_name, device, epochs=1), progress=False)
    assert result.summary["status"] != "diverged", result.summary["status_reason"]
    assert len(result.history) == 2
    assert math.isfinite(result.history[-1]["train_loss"])


@pytest.mark.slow
@pytest.mark.parametrize(("device", "rule_name"), random_rule_cases())
def test_measuring_never_changes_training_on_the_device(device, rule_name):
    measured = run_training(_config(rule_name, device), progress=False)
    unmeasured = run_training(_config(rule_name, device, diagnostics_samples=0), progress=False)
    for with_, without in zip(measured.history, unmeasured.history, strict=True):
        for key in ("train_loss", "val_loss", "test_loss"):
            if with_[key] is not None or without[key] is not None:
                assert with_[key] == without[key], (key, with_["epoch"])


@pytest.mark.slow
@pytest.mark.parametrize(("device", "rule_name"), random_rule_cases())
def test_resume_gives_the_uninterrupted_run_on_the_device(device, rule_name, tmp_path):
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    run_training(_config(rule_name, device, epochs=1), cut, progress=False)
    run_training(_config(rule_name, device), cut, resume=True, progress=False)
    run_training(_config(rule_name, device), whole, progress=False)
    assert _metrics(cut) == _metrics(whole)


@pytest.mark.parametrize("device", DEVICES)
def test_measure_restores_the_rule_and_the_random_state(device):
    """A general module (lazily drawn feedback, batch norm): after a measurement every tensor,
    every ``.grad``, the unset feedback and the CPU's and device's random state are as before."""
    for name, cls in REGISTRY.items():
        if not cls.trains_modules:
            continue
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
        rule = ngrad.make_rule(name, model).to(device)
        inputs, targets = (
            torch.randn(16, 6, device=device),
            torch.randint(0, 3, (16,), device=device),
        )
        before = {key: value.clone() for key, value in rule.state_dict().items()}
        grads = [p.grad for p in rule.parameters()]
        cpu_state = torch.get_rng_state()
        device_state = torch.cuda.get_rng_state() if device == "cuda" else None
        result = diagnostics.measure(rule, inputs, targets)
        assert result["angle_to_bp_deg"], name
        after = rule.state_dict()
        assert after.keys() == before.keys(), f"{name}: measuring left state behind"
        for key, value in before.items():
            assert torch.equal(after[key], value), f"{name}: {key} changed"
        assert all(p.grad is g for p, g in zip(rule.parameters(), grads, strict=True)), name
        assert torch.equal(torch.get_rng_state(), cpu_state), name
        if device_state is not None:
            assert torch.equal(torch.cuda.get_rng_state(), device_state), name
