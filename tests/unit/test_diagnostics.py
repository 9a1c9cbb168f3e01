import math

import pytest
import torch

import ngrad
from ngrad.analysis.diagnostics import angle_degrees, angles_to_backprop, measure, weight_alignment


def test_angle_closed_forms():
    a = torch.tensor([1.0, 0.0])
    assert angle_degrees(a, a) == pytest.approx(0.0, abs=1e-6)
    assert angle_degrees(a, torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert angle_degrees(a, -3 * a) == pytest.approx(180.0)
    assert angle_degrees(a, torch.tensor([1.0, 1.0])) == pytest.approx(45.0)
    assert math.isnan(angle_degrees(a, torch.zeros(2)))


def test_measurement_leaves_rule_and_random_state_untouched():
    torch.manual_seed(0)
    rule = ngrad.make_rule("wm", ngrad.mlp([6, 5, 4, 3]))
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    before = {k: v.clone() for k, v in rule.state_dict().items()}
    rng = torch.get_rng_state()
    result = measure(rule, x, y)
    assert torch.equal(rng, torch.get_rng_state())
    for key, value in rule.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in rule.parameters())
    assert len(result["angle_to_bp_deg"]) == 3
    assert [item["layer"] for item in result["weight_alignment"]] == [2, 3]
    assert result["angle_to_bp_deg"][-1] == pytest.approx(0.0, abs=1e-2)  # top layer sees e


def test_backprop_angles_are_zero_and_fa_top_layer_is_exact():
    torch.manual_seed(0)
    net = ngrad.mlp([6, 5, 4, 3]).double()
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 3, (10,))
    assert max(angles_to_backprop(ngrad.make_rule("bp", net), x, y)) < 1e-5
    fa_angles = angles_to_backprop(ngrad.make_rule("fa", net), x, y)
    assert fa_angles[-1] < 1e-5
    assert fa_angles[0] > 1


def test_weight_alignment_of_transposed_feedback_is_zero_with_unit_ratio():
    net = ngrad.mlp([6, 5, 4, 3])
    rule = ngrad.make_rule("fa", net)
    for index, layer in enumerate(net.layers):
        if index:
            rule.set_feedback(index, 2 * layer.weight.detach())
    for item in weight_alignment(rule):
        assert item["angle_deg"] == pytest.approx(0.0, abs=1e-3)
        assert item["norm_ratio"] == pytest.approx(2.0)
    assert weight_alignment(ngrad.make_rule("bp", net)) == []
