"""Models from the command line and the config: --model, --model-option, the mlp's settings,
refusals in one line, images streamed in their shape, learning-rate schedules resumed exactly,
normalisation and augmentation, `ngrad list --model`, and user factories beside the user."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from ngrad.cli import main
from ngrad.nn.losses import get_loss
from ngrad.rules import REGISTRY, StepRecord, available_rules
from ngrad.rules.base import NoOptions
from ngrad.train import build, integrity
from ngrad.train.build import build_model, unsupported_reason
from ngrad.train.config import TrainConfig, load_config_file, make_config
from ngrad.train.loop import run_training

FAST = ["--epochs", "1", "--hidden", "16", "--diagnostics-samples", "32", "--no-progress"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_times(lines):
    timings = ("epoch_time_s", "epoch_cpu_s")
    return [{k: v for k, v in line.items() if k not in timings} for line in lines]


def _one_error_line(stderr: str, *fragments: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ngrad: error: ") and "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _stop_at(epoch):
    def stop(line):
        if line["epoch"] == epoch:
            raise KeyboardInterrupt

    return stop


# ---------------------------------------------------------------- fixtures ------------------


class ModuleBackprop(nn.Module):
    """A stand-in for a rule that trains any nn.Module (autograd's gradient), recording the
    shapes of the batches it is handed."""

    name, summary, citation, Options = "module_bp", "autograd on any module", "test", NoOptions
    shapes: ClassVar[list[tuple[int, ...]]] = []
    modes: ClassVar[dict[str, set[bool]]] = {}

    @classmethod
    def supports(cls, model) -> bool:
        return True

    @classmethod
    def unsupported_reason(cls, model) -> None:
        return None

    def __init__(self, network: nn.Module, loss="cross_entropy", **options) -> None:
        super().__init__()
        self.network, self.loss = network, get_loss(loss)

    def forward(self, inputs):
        type(self).modes.setdefault("evaluate", set()).add(self.network.training)
        return self.network(inputs)

    def backward(self, inputs, targets) -> StepRecord:
        type(self).shapes.append(tuple(inputs.shape))
        type(self).modes.setdefault("train", set()).add(self.network.training)
        self.network.zero_grad(set_to_none=True)
        output = self.network(inputs)
        loss = self.loss(output, targets)
        loss.backward()
        return StepRecord(loss.detach(), output.detach())

    def param_groups(self, feedback_lr=None):
        return [{"params": list(self.network.parameters())}]

    def check_optimizer(self, optimizer) -> None:
        pass


@pytest.fixture
def module_rule(monkeypatch):
    """Register ModuleBackprop, and let the registry build it on a plain module (the seam the
    rules that convert modules will use)."""
    monkeypatch.setitem(REGISTRY, ModuleBackprop.name, ModuleBackprop)
    monkeypatch.setattr(
        build, "make_rule", lambda name, model, loss, **options: REGISTRY[name](model, loss)
    )
    ModuleBackprop.shapes, ModuleBackprop.modes = [], {}
    return ModuleBackprop


# ---------------------------------------------------------------- the mlp as before ---------
def test_an_existing_digits_run_keeps_its_numbers():
    """The mlp is still built as an ngrad Network and fed the same batches in the same order:
    these are the numbers ngrad gave before models, data loaders and schedules existed."""
    values = {"rule": "bp", "epochs": 2, "hidden": (16,), "train_subset": 300}
    history = run_training(make_config(values), None, progress=False).history
    expected = [  # epoch: train loss, val loss, test loss, train / val / test accuracy
        (2.3714935779571533, 2.3504905700683594, 2.3436381816864014, 0.04, 17, 14),
        (2.3071748860677084, 2.189347982406616, 2.187213182449341, 0.16, 74, 74),
        (2.041204427083333, 1.875365972518921, 1.8765921592712402, 0.44666666666666666, 203, 198),
    ]
    assert len(history) == 3 and "lr" not in history[-1]
    for line, (train, val, test, train_acc, val_right, test_right) in zip(
        history, expected, strict=True
    ):  # exact on this machine; the tolerance only absorbs another BLAS's rounding
        assert line["train_loss"] == pytest.approx(train, rel=1e-6)
        assert line["val_loss"] == pytest.approx(val, rel=1e-6)
        assert line["test_loss"] == pytest.approx(test, rel=1e-6)
        assert line["train_accuracy"] == pytest.approx(train_acc, rel=1e-9)
        assert round(line["val_accuracy"] * 300) == val_right
        assert round(line["test_accuracy"] * 300) == test_right


def test_mlp_model_options_are_the_mlp_settings(tmp_path):
    by_option, by_flag = tmp_path / "option", tmp_path / "flag"
    common = ["train", "--rule", "fa", "--model", "mlp", *FAST[:2], *FAST[4:]]
    assert main([*common, "--model-option", "hidden=16", "--out", str(by_option)]) == 0
    assert main([*common, "--hidden", "16", "--out", str(by_flag)]) == 0
    assert (by_option / "config.json").read_text() == (by_flag / "config.json").read_text()
    assert _without_times(_metrics(by_option)) == _without_times(_metrics(by_flag))
    saved = json.loads((by_option / "config.json").read_text())
    assert saved["model"] == "mlp" and saved["hidden"] == [16] and saved["model_options"] == {}

    no_bias = tmp_path / "no_bias"
    assert main([*common, "--model-option", "bias=false", *FAST[2:4], "--out", str(no_bias)]) == 0
    assert json.loads((no_bias / "config.json").read_text())["model_options"] == {"bias": False}
    state = torch.load(no_bias / "checkpoint.pt", weights_only=True)["rule_state"]
    assert "network.layers.0.weight" in state and "network.layers.0.bias" not in state


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--hidden", "32", "--model-option", "hidden=16"], ["'hidden' is given twice"]),
        (["--model", "lenet", "--hidden", "32"], ["is a setting of the mlp", "--model-option"]),
        (["--model", "lenet", "--model-option", "nope=1"], ["model 'lenet' has no option 'nope'"]),
        (["--model", "lenet", "--model-option", "activation=swish"], ["'activation'", "swish"]),
        (["--model-option", "hidden"], ["--model-option takes KEY=VALUE"]),
        (["--model", "nosuch"], ["unknown model 'nosuch'", "lenet", "module:factory"]),
        (["--model", "lenet"], ["model 'lenet' takes images", "(64,)"]),
        (["--model", "no_such_module_x:make"], ["cannot import module 'no_such_module_x'"]),
        (["--lr-schedule", "step"], ["needs lr_milestones"]),
        (["--lr-milestones", "5"], ["belongs to the step schedule"]),
        (["--lr-schedule", "step", "--lr-milestones", "3,2"], ["increasing"]),
        (["--lr-schedule", "cosine", "--lr-gamma", "0.5"], ["'lr_gamma' belongs to the step"]),
        (["--lr-schedule", "warm"], ["'lr_schedule'", "'none', 'step', 'cosine'"]),
        (["--normalize", "standard"], ["'digits' has no published mean"]),
        (["--normalize", "zscore"], ["'normalize'"]),
        (["--augment"], ["--augment crops and flips images", "'digits'"]),
    ],
)
def test_bad_models_and_settings_exit_2_in_one_line(args, fragments, tmp_path, capsys):
    assert main(["train", *args, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    _one_error_line(capsys.readouterr().err, *fragments)


def test_config_file_keys_and_flag_precedence(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        textwrap.dedent(
            """
            rule = "fa"
            epochs = 1
            model = "MLP"
            lr_schedule = "step"
            lr_milestones = [1]
            lr_gamma = 0.5
            normalize = "train"
            [model_options]
            hidden = [12]
            bias = false
            """
        )
    )
    config = make_config(load_config_file(path))
    assert config.model == "mlp" and config.hidden == (12,)
    assert config.model_options == {"bias": False}
    assert (config.lr_schedule, config.lr_milestones, config.lr_gamma) == ("step", (1,), 0.5)
    assert config.normalize == "train" and not config.augment
    assert make_config(config.to_dict()) == config  # config.json round trip
    same = make_config({"hidden": [12], "model_options": {"hidden": "12"}})  # agreeing: fine
    assert same.hidden == (12,) and same.model_options == {}

    out = tmp_path / "run"
    flags = ["--hidden", "20", "--diagnostics-samples", "16", "--no-progress"]
    assert main(["train", "--config", str(path), *flags, "--out", str(out)]) == 0  # flag wins
    saved = json.loads((out / "config.json").read_text())
    assert saved["hidden"] == [20] and saved["model_options"] == {"bias": False}
    again = tmp_path / "again"
    assert (
        main(["train", "--config", str(out / "config.json"), "--out", str(again), *flags[4:]]) == 0
    )
    assert (again / "config.json").read_text() == (out / "config.json").read_text()
    assert _without_times(_metrics(again)) == _without_times(_metrics(out))

    lenet = make_config({"model": "LeNet", "model_options": {"init": "pytorch"}})
    assert lenet.model == "lenet" and lenet.model_options == {"init": "pytorch"}
    assert make_config(lenet.to_dict()) == lenet
    switched = tmp_path / "switch.toml"  # --model replaces the file's model and its options
    switched.write_text('model = "mlp"\nhidden = [12]\n[model_options]\nbias = false\n')
    from ngrad.cli import build_parser
    from ngrad.cli.run_options import config_values

    args = build_parser(["train"]).parse_args(
        ["train", "--config", str(switched), "--model", "vgg"]
    )
    assert make_config(config_values(args)).model_options == {}


def test_the_resume_check_includes_the_model():
    config = make_config({"model_options": {"bias": False}})
    saved = integrity.identity(make_config({}))
    assert integrity.identity_difference(saved, config) == ("model_options", {}, {"bias": False})
    older = {k: v for k, v in saved.items() if k not in ("model", "model_options", "lr_schedule")}
    assert integrity.identity_difference(older, make_config({})) is None  # defaults then


# ---------------------------------------------------------------- other models --------------
def _refusing_rule(model: nn.Module) -> tuple[str, str] | None:
    for rule in available_rules():
        reason = unsupported_reason(rule, model)
        if reason is not None:
            return rule, reason
    return None


def test_a_rule_that_cannot_train_the_model_says_so_in_one_line(cifar, tmp_path, capsys):
    refusing = _refusing_rule(build_model("lenet", {}, (3, 32, 32), 10))
    if refusing is None:
        pytest.skip("every rule trains lenet")
    rule, reason = refusing
    args = ["train", "--rule", rule, "--model", "lenet", *cifar, "--out", str(tmp_path / "r")]
    assert main([*args, "--no-progress"]) == 2
    _one_error_line(capsys.readouterr().err, f"rule {rule!r} cannot train model 'lenet': ", reason)


@pytest.mark.slow
def test_images_stream_to_the_model_in_their_shape(cifar, module_rule, tmp_path):
    values = {
        "rule": module_rule.name,
        "model": "lenet",
        "data": "cifar10",
        "data_dir": cifar[-1],
        "epochs": 2,
        "batch_size": 50,
        "diagnostics_samples": 0,
        "normalize": "standard",
        "augment": True,
        "lr_schedule": "cosine",
    }
    whole = run_training(make_config(values), tmp_path / "whole", progress=False)
    assert module_rule.shapes[:4] == [
        (50, 3, 32, 32),
        (50, 3, 32, 32),
        (50, 3, 32, 32),
        (10, 3, 32, 32),
    ]
    assert [line.get("lr") for line in whole.history] == [None, 0.05, pytest.approx(0.025)]
    assert whole.summary["model"] == "lenet"
    assert module_rule.modes == {"train": {True}, "evaluate": {False}}  # batch norm, dropout

    with pytest.raises(KeyboardInterrupt):  # resumed: the same crops, order and schedule
        run_training(make_config(values), tmp_path / "cut", progress=False, on_epoch=_stop_at(1))
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) in (0, 1)
    assert _without_times(_metrics(tmp_path / "cut")) == _without_times(whole.history)

    again = run_training(make_config(values | {"augment": False}), None, progress=False)
    assert _without_times(again.history) != _without_times(whole.history)


def test_a_cosine_run_cannot_be_extended(cifar, module_rule, tmp_path, capsys):
    values = {"rule": module_rule.name, "model": "lenet", "data": "cifar10", "data_dir": cifar[-1]}
    values |= {"epochs": 1, "diagnostics_samples": 0, "lr_schedule": "cosine"}
    run_training(make_config(values), tmp_path / "run", progress=False)
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2"]) == 2
    _one_error_line(capsys.readouterr().err, "lr_schedule 'cosine'", "cannot change")


def test_step_schedule_is_saved_and_resumed_exactly(tmp_path):
    values = {"rule": "fa", "epochs": 3, "hidden": (16,), "diagnostics_samples": 32}
    values |= {"train_subset": 300, "lr_schedule": "step", "lr_milestones": (1, 2), "lr_gamma": 0.5}
    whole = run_training(make_config(values), tmp_path / "whole", progress=False)
    assert [line.get("lr") for line in whole.history] == [None, 0.05, 0.025, 0.0125]
    state = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert state["scheduler_state"]["last_epoch"] == 3
    with pytest.raises(KeyboardInterrupt):
        run_training(make_config(values), tmp_path / "cut", progress=False, on_epoch=_stop_at(1))
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    assert _without_times(_metrics(tmp_path / "cut")) == _without_times(
        _metrics(tmp_path / "whole")
    )


def test_mlp_on_images_with_normalisation_and_augmentation_is_repeatable(cifar, tmp_path):
    args = ["train", "--rule", "fa", *cifar, *FAST, "--normalize", "train", "--augment"]
    for run in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / run)]) in (0, 1)  # random images: at chance
    assert _without_times(_metrics(tmp_path / "a")) == _without_times(_metrics(tmp_path / "b"))
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["normalize"] == "train" and saved["augment"] is True


# ---------------------------------------------------------------- list and compare ----------
def test_list_shows_the_catalogue_and_one_model(capsys):
    from ngrad.models import MODELS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, spec in MODELS.items():
        assert f"  {name} " in out and spec.summary in out, name
    assert main(["list", "--model", "lenet"]) == 0
    out = capsys.readouterr().out
    spec = MODELS["lenet"]
    for fragment in (spec.summary, spec.citation, f"inputs: {spec.inputs}", "  activation: str"):
        assert fragment in out, fragment
    assert "Rules that can train it:" in out and "  can: " in out
    assert main(["list", "--model", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "  hidden: tuple[int, ...] = (128, 128)" in out and "--hidden" in out
    assert "  can: bp, fa" in out and "cannot: tp" in out  # tp needs square layers
    assert main(["list", "--model", "nosuch"]) == 2
    _one_error_line(capsys.readouterr().err, "unknown model 'nosuch'")


def test_compare_leaves_out_rules_that_cannot_train_the_model(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--rules", "fa,tp", "--seeds", "1", "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "leaving out rule 'tp': it cannot train model 'mlp'" in err and "square" in err
    assert [r["rule"] for r in json.loads((out / "results.json").read_text())] == ["bp", "fa"]


def test_compare_chooses_the_rules_that_train_another_model(cifar, capsys):
    from ngrad.errors import ConfigError
    from ngrad.train.compare import choose_rules

    base = make_config({"model": "lenet", "data": "cifar10", "data_dir": cifar[-1]})
    model = build_model("lenet", {}, (3, 32, 32), 10)
    able = [name for name in available_rules() if unsupported_reason(name, model) is None]
    if "bp" not in able:
        with pytest.raises(ConfigError, match="rule 'bp' cannot train model 'lenet'"):
            choose_rules(base, None)
        return
    assert choose_rules(base, None) == able
    err = capsys.readouterr().err
    assert all(
        f"leaving out rule {name!r}" in err for name in available_rules() if name not in able
    )


# ---------------------------------------------------------------- user factories -----------
@pytest.mark.slow
def test_a_user_factory_beside_the_user_resolves_under_the_ngrad_command(tmp_path):
    script = shutil.which("ngrad", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the ngrad console script is not installed")
    (tmp_path / "tinynets.py").write_text(
        textwrap.dedent(
            '''
            import math
            from torch import nn

            def make(input_shape, num_classes, width: int = 8):
                """A tiny two-layer network."""
                inputs = math.prod(input_shape)
                return nn.Sequential(
                    nn.Flatten(), nn.Linear(inputs, width), nn.Tanh(), nn.Linear(width, num_classes)
                )
            '''
        )
    )
    listed = subprocess.run(
        [script, "list", "--model", "tinynets:make"], capture_output=True, text=True, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    assert "A tiny two-layer network." in listed.stdout and "width = 8" in listed.stdout

    sys.path.insert(0, str(tmp_path))
    try:
        from tinynets import make
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tinynets", None)
    refusing = _refusing_rule(make((64,), 10, width=4))
    if refusing is None:
        pytest.skip("every rule trains plain modules")
    rule, _ = refusing
    args = ["train", "--rule", rule, "--model", "tinynets:make", "--model-option", "width=4"]
    trained = subprocess.run(
        [script, *args, "--epochs", "1", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert trained.returncode == 2
    _one_error_line(trained.stderr, f"rule {rule!r} cannot train model 'tinynets:make'")


def test_train_config_defaults_are_the_mlp_of_before():
    config = TrainConfig()
    assert (config.model, config.model_options, config.hidden) == ("mlp", {}, (128, 128))
    assert (config.normalize, config.augment, config.lr_schedule) == ("none", False, "none")


# ---------------------------------------------------------------- resize and loading --------
def test_resize_scales_the_images_the_model_sees(cifar, module_rule, tmp_path, capsys):
    values = {"rule": module_rule.name, "model": "lenet_dtp", "data": "cifar10"}
    values |= {"data_dir": cifar[-1], "epochs": 1, "diagnostics_samples": 0, "resize": 16}
    run_training(make_config(values | {"batch_size": 40}), tmp_path / "run", progress=False)
    assert module_rule.shapes[0] == (40, 3, 16, 16)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resize"] == 16
    assert main(["train", "--rule", "fa", "--resize", "16", "--out", str(tmp_path / "x")]) == 2
    _one_error_line(capsys.readouterr().err, "--resize", "images")


def test_a_conv_run_loads_and_compares_by_similarity(cifar, tmp_path, capsys):
    """load_run rebuilds a non-mlp run and feeds it as in training (normalised images); `ngrad
    similarity` compares conv runs layer by layer."""
    from ngrad.train.runs import load_run

    common = ["--model", "lenet", *cifar, "--epochs", "1", "--batch-size", "40"]
    common += ["--normalize", "standard", "--diagnostics-samples", "0", "--no-progress"]
    for rule in ("bp", "fa"):
        assert main(["train", "--rule", rule, *common, "--out", str(tmp_path / rule)]) in (0, 1)
    run = load_run(tmp_path / "fa")
    images = run.data.test_x[:8]
    inputs = run.prepare(images)
    mean, std = torch.tensor([0.4914, 0.4821, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    assert torch.allclose(inputs, (images - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    layers = run.rule.representations(inputs)
    assert len(layers) == 5 and layers[-1].shape == (8, 10)  # 3 convs, 2 linear layers
    out = tmp_path / "similarity"
    args = ["similarity", str(tmp_path / "bp"), str(tmp_path / "fa"), "--out", str(out)]
    assert main([*args, "--samples", "40", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results and (out / "similarity_heatmap.png").is_file()
