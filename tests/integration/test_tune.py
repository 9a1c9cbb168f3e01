"""``ngrad tune`` on tiny data against SQLite: presets that load back, resuming after an
interruption (and after a killed worker), pruning, a test split that is never read, and the
messages for a missing Optuna, a bad storage and a study with other settings."""

import os
import socket
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

import ngrad.train.session as session_module  # noqa: E402
import ngrad.train.tune as tune_module  # noqa: E402
from ngrad.cli import main  # noqa: E402
from ngrad.errors import ConfigError  # noqa: E402
from ngrad.train.compare_config import load_presets  # noqa: E402
from ngrad.train.tune import tune  # noqa: E402
from ngrad.train.tune_study import RuleStudy  # noqa: E402

TINY = {"data": "digits", "epochs": 1, "hidden": [16], "batch_size": 64}


def _tune(out, trials, rules=("bp",), **settings):
    return tune({**TINY, **settings}, list(rules), trials, out, progress=False)


def _study(out, rule="bp"):
    return optuna.load_study(
        study_name=f"ngrad-digits-mlp/{rule}", storage=f"sqlite:///{out / 'study.db'}"
    )


def _counted(study) -> int:
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials())


def test_tune_writes_presets_that_load_back(tmp_path):
    result = _tune(tmp_path, 3, rules=("bp", "fa"))
    presets = load_presets(tmp_path / "presets.toml", "digits")
    assert (presets.data, presets.model) == ("digits", "mlp")
    for study, _ in result.studies:
        best = study.best_trial()
        table = presets.rules[study.rule]
        assert table.settings["lr"] == pytest.approx(best.params["lr"])
        assert table.settings["epochs"] == 1
        assert "3 trials" in table.source
    assert presets.rules["fa"].options["scale"] == pytest.approx(
        result.studies[1][0].best_trial().params["options.scale"]
    )
    rows = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 6  # a header and three trials per rule
    for rule in ("bp", "fa"):
        assert (tmp_path / "plots" / f"{rule}_history.png").is_file()
        assert (tmp_path / "plots" / f"{rule}_importance.png").is_file()


def test_a_setting_given_is_held_fixed_and_written_to_the_preset(tmp_path):
    result = _tune(tmp_path, 2, lr=0.07, optimizer="sgd")
    study, _ = result.studies[0]
    assert all("lr" not in t.params for t in study.study.get_trials())
    table = load_presets(tmp_path / "presets.toml", "digits").rules["bp"]
    assert table.settings["lr"] == 0.07
    assert table.settings["optimizer"] == "sgd"
    assert "momentum" in table.settings  # searched


def test_a_sequential_search_is_reproducible(tmp_path):
    def trials(out):
        study, _ = _tune(out, 3).studies[0]  # two random trials, then one from TPE
        return [(t.params, t.value) for t in study.study.get_trials()]

    assert trials(tmp_path / "a") == trials(tmp_path / "b")


def test_an_interrupted_tune_resumes_and_runs_only_the_missing_trials(tmp_path, monkeypatch):
    calls = []
    real = tune_module._run_trial
    monkeypatch.setattr(
        tune_module, "_run_trial", lambda trial, *a: calls.append(trial.number) or real(trial, *a)
    )
    _tune(tmp_path, 2)
    assert calls == [0, 1]
    _tune(tmp_path, 3)
    assert calls == [0, 1, 2]  # exactly one more
    _tune(tmp_path, 3)
    assert calls == [0, 1, 2]  # nothing left to do
    assert _counted(_study(tmp_path)) == 3


def test_a_trial_left_running_by_a_killed_worker_is_failed_and_tried_again(tmp_path):
    _tune(tmp_path, 2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    study = _study(tmp_path)
    orphan = study.ask()
    lr = orphan.suggest_float("lr", 1e-3, 1.0, log=True)
    orphan.set_user_attr("host", socket.gethostname())
    orphan.set_user_attr("pid", dead.pid)
    _tune(tmp_path, 3)
    trials = _study(tmp_path).get_trials()
    assert trials[orphan.number].state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retries) == 1
    assert retries[0].state.name == "COMPLETE"
    assert retries[0].params["lr"] == pytest.approx(lr)
    assert _counted(_study(tmp_path)) == 3


def test_a_trial_stopped_with_ctrl_c_is_tried_again_when_tuning_resumes(tmp_path, monkeypatch):
    real = tune_module._run_trial

    def interrupted(trial, *args):
        if trial.number == 1:
            trial.suggest_float("lr", 1e-3, 1.0, log=True)
            raise KeyboardInterrupt
        return real(trial, *args)

    monkeypatch.setattr(tune_module, "_run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, 3)
    monkeypatch.setattr(tune_module, "_run_trial", real)
    stopped = _study(tmp_path).get_trials()[1]
    assert stopped.state.name == "FAIL"
    _tune(tmp_path, 3)
    trials = _study(tmp_path).get_trials()
    retry = trials[2]  # the first trial of the resumed tuning
    assert retry.user_attrs["retry_of"] == 1
    assert retry.params["lr"] == pytest.approx(stopped.params["lr"])
    assert _counted(_study(tmp_path)) == 3


def test_trials_other_workers_are_running_count_toward_the_budget(tmp_path, monkeypatch):
    _tune(tmp_path, 2)
    running = _study(tmp_path).ask()  # a live worker's trial (this process is alive)
    running.set_user_attr("host", socket.gethostname())
    running.set_user_attr("pid", os.getpid())
    result = _tune(tmp_path, 3)
    assert result.studies[0][0].counts() == {"COMPLETE": 2, "RUNNING": 1}
    # a trial started when the budget is already full stands down without training
    monkeypatch.setattr(RuleStudy, "ahead_of", lambda self, number: self.budget)
    trained = []
    monkeypatch.setattr(tune_module, "_run_trial", lambda *a: trained.append(a) or 1.0)
    _study(tmp_path).tell(running, 0.5)
    _tune(tmp_path, 4)
    last = _study(tmp_path).get_trials()[-1]
    assert (last.state.name, last.user_attrs["status"]) == ("FAIL", "surplus")
    assert not trained


def test_pruning_is_asked_after_every_epoch_but_the_last(tmp_path):
    asked = []

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            asked.append((trial.number, max(trial.intermediate_values)))
            return True

    result = tune({**TINY, "epochs": 2}, ["bp"], 2, tmp_path, pruner=AlwaysPrune(), progress=False)
    study, _ = result.studies[0]
    assert asked == [(0, 1), (1, 1)]
    assert [t.state.name for t in study.study.get_trials()] == ["PRUNED", "PRUNED"]
    assert study.done == 2  # pruned trials count toward the budget
    assert "no completed trial" in (tmp_path / "presets.toml").read_text()


def test_tuning_never_reads_the_test_split(tmp_path, monkeypatch):
    real_load, real_batches, real_evaluate = (
        session_module.load_dataset,
        session_module.batches,
        tune_module.evaluate,
    )
    test_inputs = set()

    class Tripwire:
        def __iter__(self):
            raise AssertionError("a trial read the test split")

        def __len__(self):
            raise AssertionError("a trial read the test split")

    def load(*args, **kwargs):
        data = real_load(*args, **kwargs)
        test_inputs.add(id(data.test_x))
        return data

    evaluated = []

    def evaluate(rule, batches, **kwargs):
        evaluated.append(batches)
        return real_evaluate(rule, batches, **kwargs)

    monkeypatch.setattr(session_module, "load_dataset", load)
    monkeypatch.setattr(
        session_module,
        "batches",
        lambda x, y, **kw: Tripwire() if id(x) in test_inputs else real_batches(x, y, **kw),
    )
    monkeypatch.setattr(tune_module, "evaluate", evaluate)
    _tune(tmp_path, 2, epochs=2)
    assert len(evaluated) == 4  # two epochs of two trials, each on the validation split
    assert not any(isinstance(batches, Tripwire) for batches in evaluated)


def test_missing_optuna_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    code = main(["tune", "--rule", "bp", "--trials", "1", "--out", str(tmp_path / "t")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "pip install 'ngrad[tune]'" in error


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [("not a url", "not a database URL"), ("nosuchdb://x/y", "not a database URL")],
)
def test_a_bad_storage_is_a_config_error(tmp_path, storage, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tune(TINY, ["bp"], 1, tmp_path, storage=storage, progress=False)


def test_a_study_with_other_settings_is_refused(tmp_path):
    _tune(tmp_path, 1)
    with pytest.raises(ConfigError, match="epochs = 1, not 2"):
        _tune(tmp_path, 1, epochs=2)


def test_unknown_rule_and_a_rule_that_cannot_train_the_model_fail_before_tuning(tmp_path):
    with pytest.raises(ConfigError, match="unknown rule"):
        _tune(tmp_path, 1, rules=("bp", "nope"))
    with pytest.raises(ConfigError, match="rule 'tp' cannot train model 'mlp'"):
        _tune(tmp_path, 1, rules=("bp", "tp"))  # tp needs square layers above the first
    assert not (tmp_path / "study.db").exists()


def test_cli_tunes_and_prints_the_best_settings(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["tune", "--rule", "bp", "--trials", "2", "--epochs", "1", "--hidden", "16"]
    code = main([*args, "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| bp | 2 (0) |" in printed
    assert f"ngrad compare --presets {out / 'presets.toml'}" in printed
