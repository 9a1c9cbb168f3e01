"""The compartmental rules through the command line: train, diagnostics, ``ngrad inspect``."""

import json

import pytest

from ngrad.cli import main

FAST = ["--epochs", "1", "--hidden", "12,12", "--diagnostics-samples", "32", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"
SERIES = {
    "microcircuit": ["apical_potential_by_layer", "interneuron_prediction_error_by_layer"],
    "burstprop": ["burst_probability_deviation_by_layer", "apical_potential_by_layer"],
    "segregated": ["plateau_difference_by_layer", "apical_potential_by_layer"],
}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for rule in SERIES:
        assert main(["train", "--rule", rule, "--out", str(root / rule), *FAST]) == 0
    assert main(["train", "--rule", "fa", "--out", str(root / "fa"), *FAST]) == 0
    return root


@pytest.mark.parametrize("rule", list(SERIES))
def test_train_logs_and_plots_the_compartment_diagnostics(trained_runs, rule):
    run = trained_runs / rule
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = lines[-1]["rule_diagnostics"]
    for key in SERIES[rule]:
        assert len(logged[key]) == 2 and all(value is not None for value in logged[key])
    assert len(lines[-1]["angle_to_bp_deg"]) == 3
    assert (run / "rule_diagnostics.png").read_bytes()[:8] == PNG
    assert lines[-1]["val_accuracy"] > lines[0]["val_accuracy"] + 0.05  # one epoch learns


@pytest.mark.parametrize("rule", list(SERIES))
def test_inspect_draws_one_neuron(trained_runs, rule, tmp_path, capsys):
    out = tmp_path / "deep" / "neuron.png"
    args = ["inspect", str(trained_runs / rule), "--layer", "1", "--neuron", "3", "--out", str(out)]
    assert main([*args, "--sample", "7"]) == 0
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--layer", "4"], "--layer must be between 1 and 3"),
        (["--neuron", "12"], "--neuron must be between 0 and 11"),
        (["--sample", "-1"], "--sample must be between 0 and"),
    ],
)
def test_inspect_bad_input_is_one_usage_error(trained_runs, extra, fragment, tmp_path, capsys):
    out = str(tmp_path / "n.png")
    assert main(["inspect", str(trained_runs / "microcircuit"), "--out", out, *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ngrad: error: ") and fragment in lines[0]


def test_inspect_refuses_rules_without_compartments_and_missing_runs(
    trained_runs, tmp_path, capsys
):
    out = str(tmp_path / "n.png")
    assert main(["inspect", str(trained_runs / "fa"), "--out", out]) == 2
    assert "has no compartments" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nothing"), "--out", out]) == 1
    assert "not a run directory" in capsys.readouterr().err
    assert main(["inspect", str(trained_runs / "burstprop")]) == 2
    assert "--out" in capsys.readouterr().err
