"""No silent wrong results: diverged or failed runs say so, resume under other settings warns,
flags after --resume are honoured or refused, compare never repeats a rule and can be continued,
progress names the epoch, and a model too large for memory is one clear error."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from ngrad.cli import main
from ngrad.train import compare, integrity, loop, session
from ngrad.train.config import make_config
from ngrad.train.loop import run_training
from ngrad.train.verdict import chance_level, judge

SMALL = {"epochs": 2, "hidden": (16,), "diagnostics_samples": 32, "train_subset": 400}
FLAGS = ["--epochs", "2", "--hidden", "16", "--diagnostics-samples", "32"]
FLAGS += ["--train-subset", "400", "--no-progress"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_times(lines):
    timings = ("epoch_time_s", "epoch_cpu_s")
    return [{k: v for k, v in line.items() if k not in timings} for line in lines]


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("ngrad: error: ")]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ---------------------------------------------------------------- the verdict ----------------
def _line(epoch, val_loss=1.0, val_accuracy=0.9, angles=(30.0, 0.0)):
    return {
        "epoch": epoch,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "angle_to_bp_deg": list(angles),
    }


CHANCE = chance_level(torch.arange(300) % 10)  # 300 balanced labels: 0.1, counted up to ~0.15


@pytest.mark.parametrize(
    ("last", "status", "fragment"),
    [
        (_line(5), "completed", None),
        (_line(5, val_loss=None), "diverged", "not finite"),
        (_line(5, val_loss=math.inf), "diverged", "not finite"),
        (_line(5, val_loss=23.1), "diverged", "more than 10x"),
        (_line(5, val_accuracy=0.12), "failed", "at chance"),
        (_line(5, angles=(175.0, 118.0, 0.0)), "failed", "oppose the gradient"),
        (_line(5, angles=(None, 100.0, 0.0)), "completed", None),  # mean of measured: 50
    ],
)
def test_the_verdict_on_a_run_that_trained_every_epoch(last, status, fragment):
    assert CHANCE[0] == pytest.approx(0.1) and 0.14 < CHANCE[1] < 0.16
    verdict, reason = judge([_line(0, val_loss=2.3, val_accuracy=0.1), last], CHANCE)
    assert verdict == status
    assert (reason is None) if fragment is None else (fragment in reason)
    if verdict == "diverged":
        assert "smaller --lr" in reason and "--overwrite" in reason


def test_a_diverged_run_exits_1_and_its_suggestion_works(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--rule", "bp", "--lr", "1e30", "--out", str(out), *FLAGS]) == 1
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out  # the numbers are still shown
    [line] = _error_lines(captured.err)
    assert "diverged" in line and "smaller --lr" in line
    assert _summary(out)["status"] == "diverged" and _summary(out)["status_reason"]
    again = ["train", "--rule", "bp", "--lr", "0.05", "--overwrite", "--out", str(out)]
    assert main([*again, *FLAGS]) == 0


def test_a_failed_run_exits_1_with_its_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "judge", lambda history, chance: ("failed", "it did not learn"))
    assert main(["train", "--rule", "fa", "--out", str(tmp_path / "run"), *FLAGS]) == 1
    [line] = _error_lines(capsys.readouterr().err)
    assert line.endswith("fa on digits failed: it did not learn")


# ---------------------------------------------------------------- resume settings ------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    run_training(make_config(SMALL | {"rule": "kp"}), root / "two", progress=False)
    run_training(make_config(SMALL | {"rule": "kp", "epochs": 3}), root / "three", progress=False)
    return root


@pytest.mark.parametrize(
    "flags",
    [["--lr", "0.1"], ["--rule", "fa"], ["--out", "x"], ["--config", "c.toml"], ["--seed", "1"]],
)
def test_flags_after_resume_other_than_epochs_are_refused(finished, flags, capsys):
    assert main(["train", "--resume", str(finished / "two"), *flags]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert flags[0] in line and "only --epochs" in line


def test_epochs_after_resume_extends_the_run_to_the_longer_result(finished, tmp_path, capsys):
    out = Path(shutil.copytree(finished / "two", tmp_path / "two"))
    assert main(["train", "--resume", str(out), "--epochs", "1", "--no-progress"]) == 2
    assert "at least 2" in _error_lines(capsys.readouterr().err)[0]
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert "extending the run" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["epochs"] == 3
    assert _without_times(_metrics(out)) == _without_times(_metrics(finished / "three"))
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "has trained all its 3 epochs" in capsys.readouterr().err


def test_resume_under_another_thread_count_warns(finished, tmp_path, capsys):
    out = Path(shutil.copytree(finished / "two", tmp_path / "two"))
    recorded = json.loads((out / "environment.json").read_text())
    assert recorded[0]["threads"] == 1 and recorded[0]["torch"]  # embedded data: one thread
    recorded[0]["threads"] = 3  # as if the run had started on a machine that ran it on three
    (out / "environment.json").write_text(json.dumps(recorded))
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "ngrad: warning: resuming under other settings" in err and "threads 3 -> 1" in err
    assert len(json.loads((out / "environment.json").read_text())) == 2


@pytest.mark.parametrize(
    ("recorded", "warned"), [(2, "processes 2 -> 1"), (None, None)], ids=["two", "older_run"]
)
def test_resume_with_another_process_count_warns(recorded, warned, finished, tmp_path, capsys):
    """A run trained on two data-parallel processes and resumed on one warns; an entry written
    before the count was recorded stands for one process."""
    out = Path(shutil.copytree(finished / "two", tmp_path / "two"))
    sessions = json.loads((out / "environment.json").read_text())
    assert sessions[0]["processes"] == 1
    if recorded is None:
        del sessions[0]["processes"]
    else:
        sessions[0]["processes"] = recorded
    (out / "environment.json").write_text(json.dumps(sessions))
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    if warned is None:
        assert "resuming under other settings" not in err
    else:
        assert "resuming under other settings" in err and warned in err


# ---------------------------------------------------------------- compare --------------------
@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ("bp,bp,fa,fa", "'bp' more than once"),
        ("fa,dfa,fa", "'fa' more than once"),
        (",", "names no rule"),
        ("", "names no rule"),
        (" , ", "names no rule"),
    ],
)
def test_compare_rejects_repeated_or_empty_rule_lists(rules, fragment, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--rules", rules, "--seeds", "1", "--out", str(out), *FLAGS]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert fragment in line
    assert not (out / "runs").exists()


@pytest.mark.slow
def test_compare_continues_after_ctrl_c_and_keeps_finished_runs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    # one process: the patched run_training below lives in this one
    args = ["compare", "--rules", "fa", "--seeds", "1", "--jobs", "1", "--out", str(out), *FLAGS]
    real = compare.run_training

    def interrupt_fa(config, run_dir, **options):
        if config.rule == "fa":

            def stop(line):
                if line["epoch"] == 1:
                    raise KeyboardInterrupt

            options["on_epoch"] = stop
        return real(config, run_dir, **options)

    monkeypatch.setattr(compare, "run_training", interrupt_fa)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "re-run the same `ngrad compare` command" in err and "Traceback" not in err
    assert [r["rule"] for r in json.loads((out / "results.json").read_text())] == ["bp"]
    bp_checkpoint = out / "runs" / "bp-seed0" / "checkpoint.pt"
    bp_written = bp_checkpoint.stat().st_mtime_ns
    monkeypatch.undo()

    assert main(args) == 0  # bp kept, fa resumed
    assert bp_checkpoint.stat().st_mtime_ns == bp_written
    whole = tmp_path / "whole"
    assert main(["compare", "--rules", "fa", "--seeds", "1", "--out", str(whole), *FLAGS]) == 0
    for name in ("bp-seed0", "fa-seed0"):
        assert _without_times(_metrics(out / "runs" / name)) == _without_times(
            _metrics(whole / "runs" / name)
        )
    printed = capsys.readouterr().out
    assert "| status |" in printed and "| completed |" in printed

    assert main(args) == 0  # everything finished: nothing trains again
    assert bp_checkpoint.stat().st_mtime_ns == bp_written
    assert main([*args, "--lr", "0.1"]) == 1
    [line] = _error_lines(capsys.readouterr().err)
    assert "holds another comparison" in line and "--overwrite" in line
    assert main([*args, "--lr", "0.1", "--overwrite"]) == 0
    assert json.loads((out / "runs" / "fa-seed0" / "config.json").read_text())["lr"] == 0.1


def test_compare_reports_diverged_runs_in_its_table_and_exit_code(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--rules", "fa", "--seeds", "1", "--lr", "1e30", "--out", str(out)]
    assert main([*args, *FLAGS]) == 1
    captured = capsys.readouterr()
    assert "| diverged |" in captured.out
    records = json.loads((out / "results.json").read_text())
    assert {r["status"] for r in records} == {"diverged"}
    assert all(r["status_reason"] for r in records)
    assert len(_error_lines(captured.err)) == 2


# ---------------------------------------------------------------- progress and summary -------
def test_progress_names_the_epoch_and_the_run(tmp_path, capsys):
    run_training(make_config(SMALL | {"rule": "bp"}), tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert "bp on digits (seed 0): epoch 1/2" in err and "epoch 2/2" in err
    base = make_config(SMALL | {"rule": "fa", "epochs": 1})
    compare.compare_rules(base, ["fa"], 1, tmp_path / "cmp", progress=True)
    err = capsys.readouterr().err
    assert "compare" in err and "fa on digits (seed 0): epoch 1/1" in err


def test_summary_carries_the_final_rule_diagnostics(tmp_path):
    values = SMALL | {"rule": "pc", "epochs": 1, "train_subset": 200}
    result = run_training(make_config(values), tmp_path / "pc", progress=False)
    logged = _metrics(tmp_path / "pc")[-1]["rule_diagnostics"]
    summarised = _summary(tmp_path / "pc")["final_rule_diagnostics"]
    assert summarised and summarised == result.summary["final_rule_diagnostics"]
    for key, value in summarised.items():
        assert logged[key] == value
    assert not any(key.endswith("_by_step") for key in summarised)


# ---------------------------------------------------------------- memory ---------------------
def test_a_network_too_large_for_memory_is_refused_before_allocation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(integrity, "_available_bytes", lambda device: 2**30)
    out = tmp_path / "huge"
    args = ["train", "--hidden", "100000,100000", "--out", str(out), "--no-progress"]
    assert main(args) == 1
    [line] = _error_lines(capsys.readouterr().err)
    assert "1e+10 parameters" in line and "GiB" in line and "only 1.0 GiB" in line
    assert "smaller --hidden" in line
    assert not (out / "config.json").exists()


def test_a_failed_allocation_is_reported_as_out_of_memory(tmp_path, capsys, monkeypatch):
    def allocate(config, data):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 40000000000 bytes. Error code 12"
        )

    monkeypatch.setattr(session, "build_network", allocate)
    assert main(["train", "--out", str(tmp_path / "run"), *FLAGS]) == 1
    [line] = _error_lines(capsys.readouterr().err)
    assert "out of memory" in line and "smaller --hidden" in line
