"""The compartmental rules through the command line: train, diagnostics, ``ngrad inspect``."""

import json

import pytest
import torch

import ngrad
from ngrad.cli import main
from ngrad.rules import REGISTRY

FAST = ["--epochs", "1", "--hidden", "12,12", "--diagnostics-samples", "32", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"
COMPARTMENTAL = [name for name, cls in REGISTRY.items() if hasattr(cls, "compartment_trace")]
WITHOUT_COMPARTMENTS = next(
    name for name, cls in REGISTRY.items() if not hasattr(cls, "compartment_trace")
)


def series_names(rule: str) -> list[str]:
    """The per-layer series one ``backward`` of ``rule`` reports."""
    record = ngrad.make_rule(rule, ngrad.mlp([6, 12, 12, 3])).backward(
        torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    )
    return [name for name in record.series if name.endswith("_by_layer")]


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for rule in [*COMPARTMENTAL, WITHOUT_COMPARTMENTS]:
        assert main(["train", "--rule", rule, "--out", str(root / rule), *FAST]) == 0
    return root


@pytest.mark.parametrize("rule", COMPARTMENTAL)
def test_train_logs_and_plots_the_compartment_diagnostics(trained_runs, rule):
    run = trained_runs / rule
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = lines[-1]["rule_diagnostics"]
    names = series_names(rule)
    assert len(names) >= 2
    for key in names:
        assert len(logged[key]) == 2 and all(value is not None for value in logged[key])
    assert len(lines[-1]["angle_to_bp_deg"]) == 3
    assert (run / "rule_diagnostics.png").read_bytes()[:8] == PNG
    assert lines[-1]["val_accuracy"] > lines[0]["val_accuracy"] + 0.05  # one epoch learns


@pytest.mark.parametrize("rule", COMPARTMENTAL)
def test_inspect_draws_one_neuron(trained_runs, rule, tmp_path, capsys):
    out = tmp_path / "deep" / "neuron.png"
    args = ["inspect", str(trained_runs / rule), "--layer", "1", "--neuron", "3", "--out", str(out)]
    assert main([*args, "--sample", "7"]) == 0
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    population = out.with_name("neuron-error.png")  # every hidden unit against BP's error
    assert population.read_bytes()[:8] == PNG and population.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert str(out) in printed and str(population) in printed


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
    assert main(["inspect", str(trained_runs / COMPARTMENTAL[0]), "--out", out, *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ngrad: error: ") and fragment in lines[0]


def test_inspect_refuses_rules_without_compartments_and_missing_runs(
    trained_runs, tmp_path, capsys
):
    out = str(tmp_path / "n.png")
    assert main(["inspect", str(trained_runs / WITHOUT_COMPARTMENTS), "--out", out]) == 2
    assert "has no compartments" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nothing"), "--out", out]) == 1
    assert "not a run directory" in capsys.readouterr().err
    assert main(["inspect", str(trained_runs / COMPARTMENTAL[-1])]) == 2
    assert "--out" in capsys.readouterr().err


def test_inspect_writes_and_names_the_file_it_writes(trained_runs, tmp_path, capsys):
    run = str(trained_runs / COMPARTMENTAL[0])
    # no extension: a PNG with .png added, and that path printed
    assert main(["inspect", run, "--layer", "1", "--out", str(tmp_path / "plain")]) == 0
    assert (tmp_path / "plain.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "plain").exists()
    assert str(tmp_path / "plain.png") in capsys.readouterr().out
    # a directory: a file named after the neuron inside it
    folder = tmp_path / "figures"
    folder.mkdir()
    assert main(["inspect", run, "--neuron", "2", "--out", str(folder)]) == 0
    written = folder / f"{COMPARTMENTAL[0]}-layer2-neuron2-sample0.png"
    assert written.read_bytes()[:8] == PNG and str(written) in capsys.readouterr().out
    # another format matplotlib writes
    assert main(["inspect", run, "--out", str(tmp_path / "n.svg")]) == 0
    assert b"<svg" in (tmp_path / "n.svg").read_bytes()[:400]
    capsys.readouterr()
    # a format it does not
    assert main(["inspect", run, "--out", str(tmp_path / "x.xyz")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ngrad: error: ") and "'.xyz'" in lines[0]
    assert ".png" in lines[0] and not (tmp_path / "x.xyz").exists()
