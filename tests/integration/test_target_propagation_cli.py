"""The target-propagation family through the command line, on the 8x8 digits (tiny networks)."""

import json
from pathlib import Path

import pytest

from ngrad.cli import main
from ngrad.data import load_dataset
from ngrad.rules import REGISTRY, get_rule_class
from ngrad.rules.target_propagation.targets import TrainedFeedbackRule
from ngrad.train.config import make_config
from ngrad.train.loop import build_network, run_training

LEARNED = [name for name, cls in REGISTRY.items() if issubclass(cls, TrainedFeedbackRule)]
FAST = ["--data", "digits", "--epochs", "1", "--diagnostics-samples", "64", "--no-progress"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ngrad: error: "), stderr
    return lines[0]


@pytest.mark.parametrize("rule", LEARNED)
def test_train_logs_and_plots_the_family_diagnostics(tmp_path, rule):
    feedback_key = REGISTRY[rule].feedback_loss_name
    out = tmp_path / rule
    assert main(["train", "--rule", rule, "--hidden", "16,16", "--out", str(out), *FAST]) == 0
    last = _metrics(out)[-1]
    logged = last["rule_diagnostics"]
    for key in (
        "target_difference_by_layer",
        "gauss_newton_angle_by_layer",
        "gradient_step_by_layer",
        feedback_key,
    ):
        assert len(logged[key]) == 3, key
    assert sum(value is None for value in logged[feedback_key]) == 1  # a layer without feedback
    assert all(value is not None for value in logged["gauss_newton_angle_by_layer"])
    assert len(last["angle_to_bp_deg"]) == 3 and last["val_accuracy"] > 0.3  # chance: 0.1
    assert (out / "rule_diagnostics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_tp_trains_invertible_networks_and_refuses_others(tmp_path, capsys):
    out = tmp_path / "tp"
    args = ["train", "--rule", "tp", "--hidden", "10,10", "--optimizer", "adam", "--lr", "0.001"]
    assert main([*args, "--out", str(out), *FAST]) == 0  # 64-10-10-10: square above layer 1
    assert _metrics(out)[-1]["rule_diagnostics"]["clipped_target_fraction"] is not None
    capsys.readouterr()
    assert main(["train", "--rule", "tp", "--out", str(tmp_path / "no"), *FAST]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "rule 'tp' cannot train this network" in line and "square" in line


def test_compare_leaves_exact_tp_out_of_the_default_network():
    base = make_config({})  # the digits default: 64-128-128-10 tanh
    network = build_network(base, load_dataset(base.data))
    assert not get_rule_class("tp").supports(network)
    assert all(get_rule_class(name).supports(network) for name in LEARNED)


def test_rule_options_reach_the_rule_and_bad_ones_are_named(tmp_path, capsys):
    out = tmp_path / "lee"
    options = [
        "--rule-option",
        "penultimate_target=gradient",
        "--rule-option",
        "feedback_iterations=2",
    ]
    assert (
        main(["train", "--rule", "dtp", "--hidden", "12,12", *options, "--out", str(out), *FAST])
        == 0
    )
    saved = json.loads((out / "config.json").read_text())["rule_options"]
    assert saved == {"penultimate_target": "gradient", "feedback_iterations": "2"}
    capsys.readouterr()
    assert main(["train", "--rule", "ddtp", "--rule-option", "noise=-1", *FAST]) == 2
    assert "'noise' must be positive" in _error_line(capsys.readouterr().err)


def test_check_command_lists_the_family_properties(capsys):
    assert main(["check", "--rule", "ddtp"]) == 0
    printed = capsys.readouterr().out
    assert "Gauss-Newton" in printed and "all properties hold" in printed


def test_resumed_run_draws_the_same_noise(tmp_path):
    values = {"rule": "ddtp", "epochs": 2, "hidden": (12, 12), "diagnostics_samples": 32}
    run_training(make_config(values), tmp_path / "whole", progress=False)

    def interrupt(line):
        if line["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(make_config(values), tmp_path / "cut", progress=False, on_epoch=interrupt)
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0

    def without_times(lines):
        timings = {"epoch_time_s", "epoch_cpu_s"}
        return [{k: v for k, v in line.items() if k not in timings} for line in lines]

    assert without_times(_metrics(tmp_path / "cut")) == without_times(_metrics(tmp_path / "whole"))


@pytest.mark.parametrize("rule", LEARNED)
def test_rules_train_a_pooled_vgg_with_their_diagnostics(rule, cifar, tmp_path, capsys):
    """A VGG of two pooled conv blocks from the catalogue (an ngrad Network of pooled
    Conv2dLayers): the family's series and diagnostics on every layer."""
    vgg = ["--model", "vgg", "--model-option", "channels=4,8", "--model-option", "activation=relu"]
    options = ["--rule-option", "feedback_iterations=2", "--resize", "16", *cifar]
    out = tmp_path / rule
    fast = ["--epochs", "1", "--diagnostics-samples", "16", "--no-progress"]
    run = ["train", "--rule", rule, *vgg, *options, *fast, "--out", str(out)]
    assert main(run) in (0, 1)  # random images: the verdict may find it at chance
    capsys.readouterr()
    logged = _metrics(out)[-1]["rule_diagnostics"]
    for key in (
        "target_difference_by_layer",
        "gauss_newton_angle_by_layer",
        "gradient_step_by_layer",
        REGISTRY[rule].feedback_loss_name,
    ):
        assert len(logged[key]) == 3, key
    assert all(value is not None for value in logged["gauss_newton_angle_by_layer"])


def test_exact_tp_refuses_a_conv_net_in_one_line(cifar, tmp_path, capsys):
    vgg = ["--model", "vgg", "--model-option", "channels=4", "--model-option", "activation=relu"]
    fast = ["--epochs", "1", "--no-progress", "--out", str(tmp_path / "no")]
    assert main(["train", "--rule", "tp", *vgg, *cifar, *fast]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "rule 'tp' cannot train" in line and "dense" in line
