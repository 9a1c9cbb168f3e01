"""Every rule on a device: its reference checks hold there, and its update equals the CPU's.

On CUDA every rule runs; on the CPU one rule per family runs the same code (the CPU against
itself), so the harness and the comparison are exercised everywhere.
"""

from __future__ import annotations

import copy

import pytest
import torch
from device_cases import (
    DEVICES,
    OnDevice,
    cpu_versus_device,
    is_random,
    relative_difference,
    rule_cases,
    rule_updates,
    small_batch,
    small_network,
    supports,
)

import ngrad
from ngrad.rules.checking import run_checks

# float64 on both sides; only the order of summation differs (relaxations iterate it)
CPU_TOLERANCE = 1e-7


@pytest.mark.parametrize(("device", "rule_name"), rule_cases())
def test_reference_checks_hold_on_the_device(device, rule_name):
    with OnDevice(device):
        results = run_checks(rule_name)
    failed = [f"{r.name}: {r.measured:.3g} {r.comparison} {r.tolerance}" for r in results
              if not r.passed]  # fmt: skip
    assert results, f"{rule_name} has no reference checks"
    assert not failed, f"{rule_name} on {device}: " + "; ".join(failed)


@pytest.mark.parametrize("kind", ["dense", "square", "conv"])
@pytest.mark.parametrize(("device", "rule_name"), rule_cases())
def test_the_update_on_the_device_equals_the_cpu_update(device, rule_name, kind):
    if not supports(rule_name, kind):
        pytest.skip(f"{rule_name} does not train a {kind} network")
    if kind == "square" and supports(rule_name, "dense"):
        pytest.skip(f"{rule_name} runs on the dense network (square: for rules that need it)")
    if device != "cpu" and is_random(rule_name, kind):
        # its per-batch draws come from the device's generator, which differs from the CPU's:
        # the same seed must give the same update on the device
        rule = ngrad.make_rule(rule_name, small_network(kind)).to(device)
        inputs, targets = (t.to(device) for t in small_batch(kind))
        first = rule_updates(copy.deepcopy(rule), inputs, targets, seed=5)
        second = rule_updates(copy.deepcopy(rule), inputs, targets, seed=5)
        assert relative_difference(first, second) == 0
        return
    difference = cpu_versus_device(rule_name, kind, device)
    if device == "cpu":
        assert difference == 0  # the same arithmetic: any difference is a bug of the harness
    else:
        assert difference < CPU_TOLERANCE, f"{rule_name} ({kind}): {difference:.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_the_comparison_sees_a_changed_update(device):
    """The comparison is not blind: a rule whose update differs is caught."""
    rule = ngrad.make_rule("bp", small_network("dense"))
    inputs, targets = small_batch("dense")
    here = rule_updates(rule, inputs, targets, seed=0)
    changed = [t * (1 + 1e-5) for t in here]
    assert relative_difference(here, here) == 0
    assert relative_difference(here, changed) > 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_tensors_built_under_the_mode_live_on_the_device(device):
    generator = torch.Generator().manual_seed(0)
    with OnDevice(device):
        drawn = torch.randn(3, generator=generator)
        plain = torch.zeros(2)
        network = ngrad.mlp([4, 3])
    assert drawn.device.type == plain.device.type == device
    assert all(p.device.type == device for p in network.parameters())
    expected = torch.randn(3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(drawn.cpu(), expected, rtol=0, atol=0)  # the CPU's numbers
