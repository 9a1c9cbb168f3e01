"""Bad input ends in one clear error at every boundary: the Python API raises one TypeError or
ValueError naming what was expected (the same for every rule); config values and command-line flags
are checked, never rounded, and end in one line ``ngrad: error: ...`` with exit code 2."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import typing

import pytest
import torch
from torch import nn

import ngrad
from ngrad.cli import main
from ngrad.errors import ConfigError
from ngrad.nn.layers import DenseLayer
from ngrad.nn.network import Network
from ngrad.options import FLOAT32_MAX, coerce_value
from ngrad.rules import REGISTRY
from ngrad.train.config import TrainConfig, make_config

RULES = ngrad.available_rules()


def _batch(n=8, features=4, classes=4):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, features, generator=generator), torch.randint(
        0, classes, (n,), generator=generator
    )


def _one_error_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ngrad: error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ------------------------------------------------------------- the Python API -----------------

X, Y = _batch()
BAD_BATCHES = {
    "wrong feature count": (torch.randn(8, 5), Y, ValueError, r"shape \(N, 4\), got \(8, 5\)"),
    "float64 inputs": (X.double(), Y, TypeError, "torch.float32 like the network"),
    "integer inputs": (X.long(), Y, TypeError, "torch.float32 like the network.*torch.int64"),
    "a single sample": (X[0], Y[:1], ValueError, r"shape \(N, 4\).*unsqueeze"),
    "not a tensor": (X.numpy(), Y, TypeError, "must be a torch.Tensor, got ndarray"),
    "labels of shape (N, 1)": (X, Y[:, None], ValueError, r"shape \(8,\).*got shape \(8, 1\)"),
    "one-hot labels": (X, nn.functional.one_hot(Y, 4).float(), ValueError, "one-hot"),
    "too few labels": (X, Y[:5], ValueError, r"shape \(8,\), one per input, got shape \(5,\)"),
    "float labels": (X, Y.float(), TypeError, "int64 class indices"),
    "int32 labels": (X, Y.int(), TypeError, "int64 class indices"),
    "label too large": (X, Y + 4, ValueError, r"in \[0, 3\] \(the network has 4 outputs\)"),
    "negative label": (X, Y - 4, ValueError, r"in \[0, 3\]"),
    "empty batch": (X[:0], Y[:0], ValueError, "non-empty batch"),
}


@pytest.mark.parametrize("name", RULES)
def test_every_rule_refuses_a_bad_batch_with_one_error_naming_what_was_expected(name):
    rule = ngrad.make_rule(name, ngrad.mlp([4, 4, 4, 4]))
    for case, (inputs, labels, kind, message) in BAD_BATCHES.items():
        with pytest.raises(kind, match=message):
            rule.backward(inputs, labels)
        if case in ("wrong feature count", "float64 inputs", "empty batch"):
            with pytest.raises(kind, match=message):
                rule(inputs)
    record = rule.backward(X, Y)  # the refusals left the rule usable
    assert torch.isfinite(record.loss)
    assert rule(X).shape == (8, 4)


def test_networks_of_other_dtypes_and_shapes_take_their_own_inputs():
    rule = ngrad.make_rule("fa", ngrad.mlp([4, 4, 4]).double())
    rule.backward(X.double(), Y % 4)
    with pytest.raises(TypeError, match=r"torch.float64 like the network"):
        rule.backward(X, Y)
    conv = ngrad.make_rule("fa", ngrad.convnet((1, 8, 8), (4,), num_classes=3))
    conv.backward(torch.randn(2, 1, 8, 8), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\), got \(2, 64\)"):
        conv.backward(torch.randn(2, 64), torch.tensor([0, 2]))
    flat_images = ngrad.make_rule("bp", ngrad.mlp([64, 3]))
    with pytest.raises(ValueError, match=r"flatten each sample first"):
        flat_images.backward(torch.randn(2, 1, 8, 8), torch.tensor([0, 2]))
    # a network built without input_shape: the first layer says what it takes
    bare = ngrad.make_rule("bp", Network([DenseLayer(4, 3)]))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        bare.backward(torch.randn(2, 5), torch.tensor([0, 2]))


@pytest.mark.parametrize("name", RULES)
def test_the_batch_is_checked_once_per_call_through_super_and_nested_calls(name, monkeypatch):
    import ngrad.rules.base as base

    calls = []
    original = base.check_labels
    monkeypatch.setattr(base, "check_labels", lambda *a, **k: calls.append(1) or original(*a, **k))
    rule = ngrad.make_rule(name, ngrad.mlp([4, 4, 4, 4]))
    rule.backward(X, Y)
    assert len(calls) == 1
    rule.diagnose(X, Y)  # diagnose may run backward itself
    assert len(calls) == 2


@pytest.mark.parametrize("network", ["mlp", None], ids=["str", "None"])
def test_make_rule_wants_an_ngrad_network_or_a_module(network):
    with pytest.raises(TypeError, match=r"ngrad Network.*ngrad.mlp.*torch.nn.Module"):
        ngrad.make_rule("fa", network)
    with pytest.raises(TypeError, match="ngrad Network"):
        REGISTRY["bp"](network)
    with pytest.raises(TypeError, match="ngrad Network"):
        REGISTRY["tp"].supports(network)


def test_a_plain_module_is_trained_by_the_rules_that_can_and_refused_by_the_others():
    module = nn.Linear(4, 2)
    ngrad.make_rule("fa", module)
    REGISTRY["bp"](module)
    assert not REGISTRY["tp"].supports(module)
    assert "trains ngrad Networks only" in REGISTRY["tp"].unsupported_reason(module)
    with pytest.raises(ConfigError, match="rule 'tp' cannot train this model: it trains ngrad"):
        ngrad.make_rule("tp", module)
    with pytest.raises(TypeError, match="trains ngrad Networks only"):
        REGISTRY["tp"](module)


def test_make_rule_wants_a_rule_name():
    with pytest.raises(TypeError, match="rule's name"):
        ngrad.make_rule(None, ngrad.mlp([4, 3]))


# ------------------------------------------------------------- widths ---------------------------


@pytest.mark.parametrize(
    ("sizes", "kind"),
    [([64, 2.7, 10], TypeError), ([16, True, 3], TypeError), ([4, "8", 2], TypeError),
     ([4, 2.0, 2], TypeError), ([4, 0, 2], ValueError), ([4, -3, 2], ValueError),
     (64, TypeError), ("64,10", TypeError)],
)  # fmt: skip
def test_mlp_refuses_widths_that_are_not_positive_integers(sizes, kind):
    with pytest.raises(kind, match="positive integer"):
        ngrad.mlp(sizes)


@pytest.mark.parametrize(
    "arguments",
    [{"input_shape": (1, 8, 8.5)}, {"channels": (4.5,)}, {"hidden": (True,)},
     {"num_classes": 2.7}, {"kernel_size": 0}],
)  # fmt: skip
def test_convnet_refuses_sizes_that_are_not_positive_integers(arguments):
    settings = {"input_shape": (1, 8, 8), "channels": (4,), "num_classes": 3, **arguments}
    with pytest.raises((TypeError, ValueError), match="positive integer"):
        ngrad.convnet(**settings)


@pytest.mark.parametrize("hidden", [[1.5], [16, True], ["a"], [16, 2.0], 16])
def test_config_refuses_widths_that_are_not_integers(hidden):
    with pytest.raises(ConfigError, match="'hidden' expects a list of int"):
        make_config({"hidden": hidden})
    if isinstance(hidden, list):
        with pytest.raises(ValueError, match="'hidden' widths must be positive integers"):
            TrainConfig(hidden=tuple(hidden))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [("hidden = [1.5]\n", ["'hidden'", "1.5"]), ("hidden = [16, true]\n", ["'hidden'", "True"]),
     ('hidden = ["a"]\n', ["'hidden'", "'a'"]), ("hidden = [16, 0]\n", ["'hidden'", "positive"])],
)  # fmt: skip
def test_toml_widths_that_are_not_positive_integers_exit_2(text, fragments, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(text)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, *fragments)


@pytest.mark.parametrize("hidden", ["1.5", "16,true", "16,0", "-4"])
def test_command_line_widths_that_are_not_positive_integers_exit_2(hidden, tmp_path, capsys):
    assert main(["train", f"--hidden={hidden}", "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, "hidden")


# ------------------------------------------------------------- non-finite numbers, seeds -------


def _float_options():
    for name, cls in REGISTRY.items():
        hints = typing.get_type_hints(cls.Options)
        for field in dataclasses.fields(cls.Options):
            annotation = hints[field.name]
            kinds = typing.get_args(annotation) or (annotation,)
            if float in kinds:
                yield name, field.name


FLOAT_OPTIONS = list(_float_options())


def test_every_float_rule_option_refuses_non_finite_values():
    assert len(FLOAT_OPTIONS) >= 20  # derived from the registry: every rule's float options
    network = ngrad.mlp([4, 4, 4, 4])
    for rule, option in FLOAT_OPTIONS:
        for value in (math.inf, -math.inf, math.nan, "inf", "nan", "1e400"):
            with pytest.raises(ConfigError, match=f"'{option}' must be a finite number"):
                ngrad.make_rule(rule, network, **{option: value})
        with pytest.raises(ConfigError, match=f"'{option}' must lie within the float32 range"):
            ngrad.make_rule(rule, network, **{option: 10 * FLOAT32_MAX})


def test_coercion_checks_numbers_instead_of_rounding_them():
    assert coerce_value(3, float, "x") == 3.0
    assert coerce_value("16,32", tuple[int, ...], "x") == (16, 32)
    refused = {
        (2.0, int): "expects int, got 2.0",
        ("2.0", int): "expects int, got '2.0'",
        (True, float): "expects float, got True",
        (10**400, float): "finite number, got an integer of 401 digits",
    }
    for (value, annotation), message in refused.items():
        with pytest.raises(ConfigError, match=message):
            coerce_value(value, annotation, "option 'x'")


@pytest.mark.parametrize("key", ["lr", "momentum", "weight_decay", "feedback_lr"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_train_config_refuses_non_finite_values(key, value):
    with pytest.raises(ConfigError, match=f"'{key}' must be a finite number"):
        make_config({key: value})
    with pytest.raises(ValueError, match=f"'{key}' must be a finite number"):
        TrainConfig(**{key: value})


def test_seeds_must_fit_in_64_bits_and_be_non_negative():
    assert make_config({"seed": 2**64 - 1}).seed == 2**64 - 1
    for seed in (2**64, -1):
        with pytest.raises(ConfigError, match="'seed' must be an integer in"):
            make_config({"seed": seed})


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [(["--momentum", "nan"], ["'momentum'", "finite"]), (["--lr", "inf"], ["'lr'", "finite"]),
     (["--weight-decay=-inf"], ["'weight_decay'", "finite"]),
     (["--feedback-lr", "nan"], ["'feedback_lr'", "finite"]),
     (["--rule", "fa", "--rule-option", "scale=inf"], ["'scale'", "finite"]),
     (["--rule", "microcircuit", "--rule-option", "g_leak=inf"], ["'g_leak'", "finite"]),
     (["--seed", str(2**64)], ["'seed'"]), (["--seed", "-1"], ["'seed'"])],
)  # fmt: skip
def test_non_finite_values_and_huge_seeds_exit_2(flags, fragments, tmp_path, capsys):
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text", ["lr = inf\n", "momentum = nan\n", "[rule_options]\nscale = inf\n"]
)
def test_non_finite_toml_values_exit_2(text, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(f'rule = "fa"\n{text}')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, "finite")


@pytest.mark.parametrize(
    "content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(128, 256)) * 4]
)
def test_binary_config_file_exits_2(content, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_bytes(content)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys.readouterr().err, "run.toml", "not a text file")


# ------------------------------------------------------------- Ctrl-C at start-up --------------


@pytest.mark.parametrize("command", [["list"], ["train", "--epochs", "1"]])
def test_ctrl_c_during_start_up_ends_in_one_line(command, tmp_path):
    """SIGINT while ``ngrad`` is still importing its modules: one line, no traceback. (A Ctrl-C
    before ngrad's own code runs, within the interpreter's start-up, is Python's to report.)"""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # inherited by the child, which then
        pytest.skip("SIGINT is ignored here (a shell's background job): Ctrl-C cannot be sent")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "ngrad", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    lines = []
    for line in process.stderr:  # -X importtime reports each import as it finishes
        lines.append(line)
        if line.split("|")[-1].strip() == "ngrad.errors":
            break  # main() has begun importing the parser; torch and the registry come next
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    stderr = "".join(lines) + rest
    messages = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    assert "Traceback" not in stderr, stderr
    # 130 from ngrad's handler; -SIGINT when the interpreter itself ends by the signal after the
    # handler has printed its line (CPython does so when the interrupt also reached its own code);
    # either way the shell sees an interrupted command, and the user one line
    assert process.returncode in (130, 1, -signal.SIGINT), (process.returncode, messages)
    assert len(messages) == 1 and messages[0].startswith("ngrad: "), messages
