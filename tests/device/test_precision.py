"""Mixed precision: the rules that allow it train in bf16/fp16 close to fp32, the loss scaling of
fp16 is exact for the rules that declare it, and every other rule refuses with a clear error."""

from __future__ import annotations

import copy

import pytest
import torch
from device_cases import (
    DEVICES,
    family,
    relative_difference,
    rule_updates,
    small_batch,
    small_network,
    supports,
)

import ngrad
from ngrad.errors import ConfigError
from ngrad.rules import REGISTRY
from ngrad.train.config import make_config
from ngrad.train.loop import run_training
from ngrad.train.precision import ScaledLoss, check_precision, mixed_precision_rules

SMALL = {"epochs": 2, "hidden": (32,), "diagnostics_samples": 0, "train_subset": 600, "lr": 0.1}


def _kind(name: str) -> str | None:
    return next((k for k in ("dense", "square") if supports(name, k)), None)


def _precision_cases() -> list:
    """(device, precision, rule): on CUDA every rule that allows the precision, on the CPU the
    first of each family (bp, fa)."""
    cases = []
    for precision in ("bf16", "fp16"):
        seen = set()
        for name in mixed_precision_rules(precision):
            for device in DEVICES:
                if device.values[0] == "cpu":
                    if family(name) in seen:
                        continue
                    seen.add(family(name))
                cases.append(pytest.param(device.values[0], precision, name, marks=device.marks,
                                          id=f"{device.id}-{precision}-{name}"))  # fmt: skip
    return cases


@pytest.mark.slow
@pytest.mark.parametrize(("device", "precision", "rule_name"), _precision_cases())
def test_mixed_precision_trains_close_to_fp32(device, precision, rule_name):
    values = SMALL | {"rule": rule_name, "device": device}
    full = run_training(make_config(values), progress=False).history
    mixed = run_training(make_config(values | {"precision": precision}), progress=False).history
    assert mixed[-1]["train_loss"] < 0.8 * mixed[0]["train_loss"]  # it learned
    assert mixed[-1]["train_loss"] == pytest.approx(full[-1]["train_loss"], rel=0.1)
    assert abs(mixed[-1]["val_accuracy"] - full[-1]["val_accuracy"]) < 0.05


@pytest.mark.parametrize("name", list(REGISTRY))
def test_loss_scaling_scales_the_update_exactly_where_declared(name):
    kind = _kind(name)
    if kind is None:
        pytest.skip(f"{name} trains neither small dense network")
    rule = ngrad.make_rule(name, small_network(kind))
    inputs, targets = small_batch(kind)
    scale = 1024.0
    plain = rule_updates(copy.deepcopy(rule), inputs, targets, seed=3)
    scaled_rule = copy.deepcopy(rule)
    scaled_rule.loss = ScaledLoss(rule.loss, torch.tensor(scale, dtype=torch.float64))
    scaled = rule_updates(scaled_rule, inputs, targets, seed=3)
    difference = relative_difference([u * scale for u in plain], scaled)
    if rule.scales_with_loss:
        assert difference < 1e-12, f"{name} declares scales_with_loss, but: {difference:.3g}"
    elif rule.supports_mixed_precision:
        assert difference > 1e-6, f"{name} scales with the loss: declare scales_with_loss"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_rule_says_which_precisions_it_allows(name):
    cls = REGISTRY[name]
    check_precision(cls, "fp32")
    for precision in ("bf16", "fp16"):
        allowed = name in mixed_precision_rules(precision)
        if allowed:
            check_precision(cls, precision)
        else:
            with pytest.raises(ConfigError, match=f"{name!r}.*--precision"):
                check_precision(cls, precision)


def test_a_run_refuses_a_precision_its_rule_does_not_allow():
    refusing = next(
        name
        for name in REGISTRY
        if name not in mixed_precision_rules("bf16") and _kind(name) == "dense"
    )
    config = make_config(SMALL | {"rule": refusing, "precision": "bf16", "epochs": 1})
    with pytest.raises(ConfigError, match="does not support mixed precision"):
        run_training(config, progress=False)
    with pytest.raises(ValueError, match="'precision' must be one of"):
        make_config(SMALL | {"precision": "fp8"})


@pytest.mark.parametrize("device", DEVICES)
def test_updates_under_autocast_are_written_in_the_parameters_dtype(device):
    for name in mixed_precision_rules("bf16"):
        torch.manual_seed(0)
        rule = ngrad.make_rule(name, ngrad.mlp([12, 10, 4])).to(device)
        inputs = torch.randn(8, 12, device=device)
        targets = torch.randint(0, 4, (8,), device=device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            rule.backward(inputs, targets)
        for parameter in rule.parameters():
            assert parameter.grad is not None and parameter.grad.dtype == parameter.dtype, name
