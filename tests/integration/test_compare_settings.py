"""ngrad compare's per-rule settings: presets, the compare configuration's [rules.NAME] tables,
the checks before the first run, parallel runs, and what results.json / summary.md record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ngrad.cli import main
from ngrad.rules import available_rules
from ngrad.train.compare import compare_rules, plan_rules
from ngrad.train.compare_config import load_presets, parse_rule_tables, shipped_preset_names
from ngrad.train.config import make_config

TINY = ["--data", "digits", "--epochs", "2", "--hidden", "16", "--train-subset", "400"]
TINY += ["--diagnostics-samples", "16", "--seeds", "1", "--no-progress"]
SMALL = {"data": "digits", "epochs": 2, "hidden": (16,), "train_subset": 400}
SMALL |= {"diagnostics_samples": 16}


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("ngrad: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- presets --------------------
@pytest.mark.parametrize("data", shipped_preset_names())
def test_every_shipped_preset_loads_and_names_its_sources(data):
    presets = load_presets(None, data)
    assert presets is not None and presets.data == data
    assert presets.rules and set(presets.rules) <= set(available_rules())
    assert all(settings.source for settings in presets.rules.values())


def test_the_digits_preset_covers_every_rule_and_data_without_one_has_none():
    assert set(load_presets(None, "digits").rules) == set(available_rules())
    assert load_presets(None, "cifar10") is None or "cifar10" in shipped_preset_names()


def test_presets_are_recorded_with_every_run(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--rules", "fa", "--out", str(out), *TINY]) == 0
    records = json.loads((out / "results.json").read_text())
    assert [r["rule"] for r in records] == ["bp", "fa"]
    for record in records:
        assert record["settings"]["lr"] == 0.05 and record["settings_from"]["lr"] == "preset"
        assert "not tuned" in record["settings_source"]
        assert record["threads"] == 1 and record["cpu_time_per_step_s"] > 0
    summary = (out / "summary.md").read_text()
    assert "Presets: ngrad's presets for digits" in summary and "## Settings per rule" in summary
    assert "torch" in summary and "commit" in summary and "thread(s) per run" in summary
    assert "Seeds vary the initial weights, the order of the training data" in summary
    saved = json.loads((out / "runs" / "fa-seed0" / "config.json").read_text())
    assert saved["threads"] == 1


# ---------------------------------------------------------------- per-rule overrides ---------
def test_compare_gives_each_rule_its_own_settings_and_options(tmp_path):
    config = _write(
        tmp_path / "compare.toml",
        "weight_decay = 0.0001\n[rules.fa]\nlr = 0.1\nsource = 'my choice'\n"
        "[rules.fa.options]\nscale = 2.0\n[rules.bp]\noptimizer = 'adam'\nlr = 0.001\n",
    )
    out = tmp_path / "cmp"
    args = ["compare", "--rules", "fa", "--config", str(config), "--out", str(out), *TINY]
    assert main([*args, "--no-presets"]) in (0, 1)  # 1: a run did not learn on this tiny budget
    records = {r["rule"]: r for r in json.loads((out / "results.json").read_text())}
    fa, bp = records["fa"]["settings"], records["bp"]["settings"]
    assert (fa["lr"], fa["weight_decay"], fa["rule_options"]) == (0.1, 0.0001, {"scale": 2.0})
    assert (bp["optimizer"], bp["lr"], bp["rule_options"]) == ("adam", 0.001, {})
    assert records["fa"]["settings_from"] == {"lr": "config", "rule_options": "config"}
    assert records["fa"]["settings_source"] == "my choice"
    saved = json.loads((out / "runs" / "fa-seed0" / "config.json").read_text())
    assert saved["lr"] == 0.1 and saved["rule_options"] == {"scale": 2.0}
    summary = (out / "summary.md").read_text()
    assert "| fa | 0.1 | sgd | 0.9 | 0.0001 |" in summary and "scale=2.0" in summary
    # the per-test-sample results the paired tests use are the reported accuracy's
    correct = np.load(out / "runs" / "fa-seed0" / "test_correct.npy")
    assert correct.dtype == bool and correct.mean() == pytest.approx(records["fa"]["test_accuracy"])
    assert "## Statistics against backprop" in summary and "p (Holm)" in summary


def test_a_flag_given_overrides_the_presets_for_every_rule():
    presets = load_presets(None, "digits")
    base = make_config(SMALL | {"lr": 0.01})
    plans, _ = plan_rules(base, ["fa"], presets, explicit={"lr": 0.01})
    assert [p.config.lr for p in plans] == [0.01, 0.01]
    plans, _ = plan_rules(base, ["fa"], presets)
    assert [p.config.lr for p in plans] == [0.05, 0.05]  # the preset beats the shared setting


def test_a_shared_feedback_lr_reaches_only_rules_whose_feedback_takes_it():
    learned = [name for name in ("kp", "wm") if name in available_rules()]
    plans, _ = plan_rules(make_config(SMALL | {"feedback_lr": 0.01}), learned)
    rates = {p.config.rule: p.config.feedback_lr for p in plans}
    assert rates["bp"] is None and rates["kp"] is None and rates["wm"] == 0.01


# ---------------------------------------------------------------- checks before training -----
def test_rules_that_cannot_train_the_model_are_left_out_before_any_run(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--rules", "bp,tp", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "leaving out rule 'tp'" in err
    assert [r["rule"] for r in json.loads((out / "results.json").read_text())] == ["bp"]
    summary = (out / "summary.md").read_text()
    assert "## Rules left out" in summary and "- tp: cannot train model 'mlp'" in summary
    left = json.loads((out / "statistics.json").read_text())["left_out"]
    assert [entry["rule"] for entry in left] == ["tp"]


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("[rules.kp]\nfeedback_lr = 0.01\n", "rule 'kp'"),
        ("[rules.kp]\noptimizer = 'adam'\n", "rule 'kp' with its settings"),
    ],
)
def test_a_bad_rule_setting_stops_the_comparison_before_any_run(tmp_path, capsys, table, fragment):
    config = _write(tmp_path / "compare.toml", table)
    out = tmp_path / "cmp"
    args = ["compare", "--rules", "kp", "--config", str(config), "--out", str(out), *TINY]
    assert main(args) == 2
    assert fragment in _error_line(capsys.readouterr().err)
    assert not (out / "runs").exists()


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        ({"nope": {"lr": 0.1}}, "[rules.nope] names no rule"),
        ({"fa": {"lrr": 0.1}}, "has no setting 'lrr'"),
        ({"fa": {"lr": "fast"}}, "'lr'"),
        ({"fa": {"lr": -1.0}}, "'lr' must be positive"),
        ({"fa": {"options": {"nope": 1}}}, "has no option 'nope'"),
        ({"fa": {"source": 3}}, "'source' must be text"),
        ({"fa": 0.1}, "[rules.fa] must be a table"),
    ],
)
def test_bad_rule_tables_name_the_key(tables, fragment):
    from ngrad.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_rule_tables(tables, "compare.toml")
    assert fragment in str(caught.value) and "compare.toml" in str(caught.value)


def test_a_preset_file_takes_rule_tables_only(tmp_path, capsys):
    presets = _write(tmp_path / "p.toml", "epochs = 3\n[rules.fa]\nlr = 0.1\n")
    args = ["compare", "--rules", "fa", "--presets", str(presets), "--out", str(tmp_path / "c")]
    assert main([*args, *TINY]) == 2
    assert "has no setting 'epochs'" in _error_line(capsys.readouterr().err)
    assert main([*args, "--no-presets", *TINY]) == 2
    assert "exclude each other" in _error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- parallel runs --------------
@pytest.mark.slow
def test_parallel_runs_equal_the_runs_one_after_another(tmp_path):
    base = make_config(SMALL | {"epochs": 2})
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        records = compare_rules(base, ["fa"], 2, out, progress=False, jobs=jobs)
        results[jobs] = [(r["rule"], r["seed"], r["test_accuracy"]) for r in records]
        for name in ("bp-seed1", "fa-seed0"):
            lines = (out / "runs" / name / "metrics.jsonl").read_text().splitlines()
            drop = ("epoch_time_s", "epoch_cpu_s")
            metrics = [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]
            results[(jobs, name)] = metrics
    assert results[1] == results[2]
    for name in ("bp-seed1", "fa-seed0"):
        assert results[(1, name)] == results[(2, name)]
