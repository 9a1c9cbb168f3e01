"""The energy-based rules through the command line on tiny data: training, relaxation diagnostics
and plots, checks, options, compare."""

import json

import pytest

from ngrad.cli import main

FAST = ["--epochs", "2", "--hidden", "16,16", "--diagnostics-samples", "64", "--no-progress"]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("rule", "specific"),
    [
        ("ep", ["nudged_residual", "angle_to_fixed_point_gradient_deg_by_layer"]),
        ("chl", ["clamped_residual", "clamped_settled_fraction", "clamped_steps_used"]),
        ("pc", ["inference_residual", "inference_settled_fraction", "rate_halvings"]),
    ],
)
def test_train_logs_and_plots_the_relaxation(tmp_path, capsys, rule, specific):
    out = tmp_path / rule
    assert main(["train", "--rule", rule, "--data", "digits", "--out", str(out), *FAST]) == 0
    assert "test accuracy" in capsys.readouterr().out
    last = _metrics(out)[-1]
    assert last["val_accuracy"] > 0.5
    assert len(last["angle_to_bp_deg"]) == 3 and None not in last["angle_to_bp_deg"]
    assert len(last["error_angle_to_bp_deg"]) == 3
    diagnostics = last["rule_diagnostics"]
    energy = diagnostics["energy_by_step"]
    assert len(energy) > 3 and energy[-1] < energy[0]
    assert len(diagnostics["residual_by_step"]) >= len(energy) - 1
    for key in specific:
        assert diagnostics[key] is not None, key
    phase = "inference" if rule == "pc" else "free"  # whether the relaxation settled, every epoch
    for record in _metrics(out):
        assert record["rule_diagnostics"][f"{phase}_residual"] >= 0
        assert 0 <= record["rule_diagnostics"][f"{phase}_settled_fraction"] <= 1
    for name in ["relaxation.png", "rule_diagnostics.png", "angles.png"]:
        if name == "rule_diagnostics.png" and rule != "ep":
            continue  # only EP reports per-layer rule diagnostics
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_rule_options_reach_the_rule_and_bad_ones_exit_2(tmp_path, capsys):
    out = tmp_path / "ep"
    args = ["train", "--rule", "ep", "--out", str(out), *FAST]
    options = ["--rule-option", "free_steps=30", "--rule-option", "nudging=one_sided"]
    fixed = ["--rule-option", "tolerance=0"]  # every phase runs all its steps
    assert main([*args, *options, *fixed, "--rule-option", "schedule=synchronous"]) == 0
    saved = json.loads((out / "config.json").read_text())["rule_options"]
    assert saved == {
        "free_steps": "30",
        "nudging": "one_sided",
        "tolerance": "0",
        "schedule": "synchronous",
    }
    assert _metrics(out)[-1]["rule_diagnostics"]["free_steps_used"] == 30
    capsys.readouterr()
    for bad, fragment in [
        ("schedule=random", "schedule"),
        ("nudging_strength=-1", "nudging_strength"),
        ("steps=2", "no option 'steps'"),
    ]:
        assert main(["train", "--rule", "ep", "--rule-option", bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ngrad: error: ") and fragment in err[0]


@pytest.mark.parametrize("rule", ["ep", "chl", "pc"])
def test_check_reports_every_property_passing(capsys, rule):
    assert main(["check", "--rule", rule]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "all properties hold" in out
    assert out.count(f"\n{rule} ") >= 4


@pytest.mark.slow
def test_compare_times_the_energy_rules_against_bp(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--rules", "ep,pc", "--seeds", "1", "--out", str(out), *FAST]
    assert main(args) == 0
    records = json.loads((out / "results.json").read_text())
    assert [r["rule"] for r in records] == ["bp", "ep", "pc"]
    for record in records:
        assert record["status"] == "completed" and record["time_ratio_to_bp"] > 0
    assert "| ep | 1 |" in capsys.readouterr().out
