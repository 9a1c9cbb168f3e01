"""The command line on tiny data: outputs, determinism, resume, compare, check, bad input."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ngrad.cli import main
from ngrad.train.config import make_config
from ngrad.train.loop import run_training

FAST = ["--epochs", "2", "--hidden", "16", "--diagnostics-samples", "64", "--no-progress"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_times(lines):
    timings = ("epoch_time_s", "epoch_cpu_s")
    return [{k: v for k, v in line.items() if k not in timings} for line in lines]


def _one_error_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ngrad: error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_list_names_rules_citations_models_and_datasets(capsys):
    from ngrad.cli.listing import model_builders
    from ngrad.data import available_datasets
    from ngrad.rules import REGISTRY

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, cls in REGISTRY.items():
        assert f"  {name} " in out and cls.summary in out and cls.citation in out
    assert "mlp" in model_builders()
    for name in [*model_builders(), *available_datasets()]:
        assert f"  {name} " in out, name


def test_train_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--rule", "fa", "--data", "digits", "--out", str(out), *FAST]) == 0
    assert "test accuracy" in capsys.readouterr().out
    for name in ["config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "summary.json"]:
        assert (out / name).is_file(), name
    for name in ["learning_curves.png", "angles.png", "weight_alignment.png"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    lines = _metrics(out)
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    last = lines[-1]
    for key in ["train_loss", "val_accuracy", "test_accuracy", "epoch_time_s", "angle_to_bp_deg"]:
        assert last[key] is not None, key
    assert len(last["angle_to_bp_deg"]) == 2 and len(last["weight_alignment"]) == 1
    assert lines[0]["epoch_time_s"] is None
    assert last["val_accuracy"] > 0.5
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and "network.layers.0.weight" in state["rule_state"]
    assert any(key.startswith("feedback") for key in state["rule_state"])  # B of layer 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best_epoch"] in (1, 2)


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path):
    for run in ("a", "b"):
        args = ["train", "--rule", "brsf", "--seed", "3", "--out", str(tmp_path / run), *FAST]
        assert main(args) == 0
    assert _without_times(_metrics(tmp_path / "a")) == _without_times(_metrics(tmp_path / "b"))
    args = ["train", "--rule", "brsf", "--seed", "4", "--out", str(tmp_path / "c"), *FAST]
    assert main(args) == 0
    assert _without_times(_metrics(tmp_path / "a")) != _without_times(_metrics(tmp_path / "c"))


@pytest.mark.parametrize("rule", ["wm", "kp"])
def test_resume_continues_to_the_same_result(tmp_path, rule):
    values = {"rule": rule, "epochs": 3, "hidden": (16,), "diagnostics_samples": 64}
    run_training(make_config(values), tmp_path / "whole", progress=False)

    def interrupt(line):
        if line["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(make_config(values), tmp_path / "cut", progress=False, on_epoch=interrupt)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"
    # a metrics line past the checkpoint (written, then the process died) must be dropped
    with (tmp_path / "cut" / "metrics.jsonl").open("a") as stream:
        stream.write(json.dumps({"epoch": 2, "val_accuracy": 0.0}) + "\n")
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    assert _without_times(_metrics(tmp_path / "cut")) == _without_times(
        _metrics(tmp_path / "whole")
    )


def test_config_file_and_flags(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        'rule = "kp"\ndata = "digits"\nepochs = 1\nhidden = [12]\nlr = 0.1\n'
        "[rule_options]\nweight_decay = 0.001\n"
    )
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(config), "--lr", "0.2", "--out", str(out), "--no-progress"])
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["rule"] == "kp" and saved["lr"] == 0.2 and saved["hidden"] == [12]
    assert saved["rule_options"] == {"weight_decay": 0.001}


def test_tensorboard_logs(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard extra not installed")
    out = tmp_path / "run"
    assert main(["train", "--rule", "fa", "--tensorboard", "--out", str(out), *FAST]) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_compare_writes_results_table_and_plots(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--rules", "fa,dfa", "--data", "digits", "--seeds", "2", "--out", str(out)]
    args += FAST
    assert main(args) == 0
    printed = capsys.readouterr().out
    records = json.loads((out / "results.json").read_text())
    assert [(r["rule"], r["seed"]) for r in records] == [
        ("bp", 0),
        ("fa", 0),
        ("dfa", 0),
        ("bp", 1),
        ("fa", 1),
        ("dfa", 1),
    ]
    for record in records:
        for key in [
            "dataset",
            "test_accuracy",
            "best_val_accuracy",
            "epoch_time_s",
            "time_ratio_to_bp",
            "final_angle_to_bp_deg",
        ]:
            assert record[key] is not None, key
        assert record["dataset"] == "digits"
    assert all(r["time_ratio_to_bp"] == 1.0 for r in records if r["rule"] == "bp")
    summary = (out / "summary.md").read_text()
    for rule in ["bp", "fa", "dfa"]:
        assert f"| {rule} | 2 |" in summary and f"| {rule} | 2 |" in printed
    assert "±" in summary
    for name in ["accuracy.png", "angles.png"]:
        assert (out / name).is_file()
    assert (out / "runs" / "dfa-seed1" / "metrics.jsonl").is_file()


def test_check_reports_each_property(capsys):
    assert main(["check", "--rule", "kp"]) == 0
    out = capsys.readouterr().out
    assert "kp" in out and "pass" in out and "FAIL" not in out and "all properties hold" in out


# ---------------------------------------------------------------- bad input ----------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "--rule", "nope"], ["unknown rule 'nope'", "available rules"]),
        (["train", "--data", "imagenet"], ["unknown dataset 'imagenet'", "digits"]),
        (["train", "--epochs", "0"], ["'epochs' must be positive"]),
        (["train", "--optimizer", "lbfgs"], ["'optimizer'", "lbfgs", "rmsprop"]),
        (["train", "--activation", "swish"], ["'activation'", "swish", "tanh"]),
        (["train", "--init", "he"], ["'init'", "he", "xavier"]),
        (["train", "--loss", "hinge"], ["'loss'", "hinge", "cross_entropy"]),
        (["train", "--rule", "fa", "--rule-option", "bogus=1"], ["no option 'bogus'"]),
        (["train", "--rule", "kp", "--rule-option", "weight_decay=abc"], ["weight_decay", "abc"]),
        (["train", "--hidden", "1,x"], ["--hidden"]),
        (["train", "--device", "gpu0"], ["'device'", "gpu0"]),
        (["compare", "--rules", "bp,nope"], ["unknown rule 'nope'"]),
        (["check", "--rule", "nope"], ["unknown rule 'nope'"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_usage_errors_exit_2_with_one_message(args, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    _one_error_line(capsys.readouterr().err, *fragments)


def test_bad_config_key_and_value(tmp_path, capsys):
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text('rule = "fa"\nlearning_rate = 0.1\n')
    assert main(["train", "--config", str(bad_key)]) == 2
    _one_error_line(capsys.readouterr().err, "learning_rate")
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text('rule = "fa"\nbatch_size = "big"\n')
    assert main(["train", "--config", str(bad_value)]) == 2
    _one_error_line(capsys.readouterr().err, "batch_size", "big")
    broken = tmp_path / "broken.toml"
    broken.write_text("rule = \n")
    assert main(["train", "--config", str(broken)]) == 2
    _one_error_line(capsys.readouterr().err, "not valid TOML")
    assert main(["train", "--config", str(tmp_path / "absent.toml")]) == 2
    _one_error_line(capsys.readouterr().err, "does not exist")
    broken_json = tmp_path / "config.json"
    broken_json.write_text('{"rule": "fa",')
    assert main(["train", "--config", str(broken_json)]) == 2
    _one_error_line(capsys.readouterr().err, "not valid JSON")


def test_missing_and_corrupt_data_exit_1(tmp_path, capsys):
    data_dir = tmp_path / "data"
    args = ["train", "--data", "mnist", "--data-dir", str(data_dir), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    _one_error_line(capsys.readouterr().err, "missing", "--download")
    (data_dir / "mnist").mkdir(parents=True)
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]:
        (data_dir / "mnist" / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01garbage"))
    assert main(args) == 1
    _one_error_line(capsys.readouterr().err, "mnist")


def test_unwritable_output_directory_exits_1(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", "--out", str(blocker / "run"), *FAST]) == 1
    _one_error_line(capsys.readouterr().err, "not writable")


def test_divergence_exits_1_and_keeps_what_was_computed(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--rule",
        "bp",
        "--loss",
        "mse",
        "--activation",
        "relu",
        "--lr",
        "1e8",
        "--out",
        str(out),
        *FAST,
    ]
    assert main(args) == 1
    _one_error_line(capsys.readouterr().err, "diverged", "--lr")
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    assert [line["epoch"] for line in _metrics(out)] == [0]
    assert (out / "config.json").is_file() and (out / "learning_curves.png").is_file()


def test_console_entry_point_exit_codes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ngrad", "train", "--rule", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    _one_error_line(result.stderr, "unknown rule")


def test_load_run_restores_the_best_state(tmp_path):
    from ngrad.train.loop import evaluate
    from ngrad.train.runs import load_run

    out = tmp_path / "run"
    assert main(["train", "--rule", "kp", "--out", str(out), *FAST]) == 0
    run = load_run(out)
    assert run.config.rule == "kp"
    x, y = run.data.val_x.flatten(1), run.data.val_y
    _, accuracy = evaluate(run.rule, x, y)
    assert accuracy == pytest.approx(run.summary["best_val_accuracy"])


def test_config_json_of_a_run_repeats_it(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    tiny = ["--epochs", "1", "--train-subset", "300", "--batch-size", "16", "--lr", "0.1"]
    args = ["train", "--rule", "fa", "--seed", "2", *tiny, "--hidden", "32", *FAST[4:]]
    assert main([*args, "--out", str(first)]) == 0
    config = str(first / "config.json")
    assert main(["train", "--config", config, "--out", str(second), "--no-progress"]) == 0
    assert (second / "config.json").read_text() == (first / "config.json").read_text()
    assert _without_times(_metrics(second)) == _without_times(_metrics(first))
