"""What a newcomer meets: help for every flag, the version, `ngrad list` and a rule's options,
and usage errors that name the choices; `ngrad --help` answers without importing torch."""

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest

from ngrad.cli import main
from ngrad.options import describe_options
from ngrad.rules import REGISTRY, available_rules, get_rule_class


def _one_error_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ngrad: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_help_and_version_do_not_import_torch():
    script = (
        "import sys; from ngrad.cli import main; "
        "codes = [main(['--help']), main(['--version'])]; "
        "print('torch' in sys.modules, codes)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False [0, 0]", result.stdout
    assert "usage: ngrad" in result.stdout and "list" in result.stdout


def test_version(capsys):
    from importlib.metadata import version

    import ngrad

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ngrad {ngrad.__version__}"
    assert ngrad.__version__ == version("ngrad")


def test_every_flag_has_help_with_its_default():
    from ngrad.cli.parser import COMMANDS, build_parser

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert set(action.choices) == set(COMMANDS)
                for command, subparser in action.choices.items():
                    yield from walk(subparser, f"{name} {command}")
            elif action.option_strings:
                yield name, action

    checked = 0
    for name, action in walk(build_parser(), "ngrad"):
        flag = f"{name} {action.option_strings[-1]}"
        assert action.help and action.help.strip(), flag
        if not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            assert "default" in action.help or "required" in action.help, flag
            checked += 1
    assert checked > 40


def test_run_flags_name_their_choices(capsys):
    from ngrad.nn.activations import ACTIVATIONS
    from ngrad.nn.init import INITIALISATIONS
    from ngrad.nn.losses import LOSSES
    from ngrad.train.config import OPTIMIZERS

    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for names in (ACTIVATIONS, INITIALISATIONS, LOSSES, OPTIMIZERS, available_rules()):
        assert f"one of: {', '.join(names)}" in out
    assert "(default: 20)" in out and "(default: 128,128)" in out


def test_unknown_optimizer_does_not_fall_through():
    from ngrad.errors import ConfigError
    from ngrad.nn.network import mlp
    from ngrad.rules import make_rule
    from ngrad.train.config import make_config
    from ngrad.train.loop import build_optimizer

    config = dataclasses.replace(make_config({}), optimizer="lbfgs")
    with pytest.raises(ConfigError, match=r"lbfgs.*sgd, adam, adamw, rmsprop"):
        build_optimizer(config, make_rule("bp", mlp([4, 3, 2])))


@dataclass(frozen=True)
class _BaseOptions:
    steps: int = 5  # T, relaxation steps
    mode: Literal["a", "b"] = "a"  # how to relax: a or b;
    #                                continued on the next line


@dataclass(frozen=True)
class _Options(_BaseOptions):
    """Docstring."""

    widths: tuple[int, ...] = (  # layer widths
        3,
        4,
    )
    rate: float | None = None
    steps: int = 7  # T, more steps

    def __post_init__(self) -> None:
        inner: int = 1  # not an option
        del inner


def test_describe_options_reads_types_defaults_choices_and_comments():
    info = {option.name: option for option in describe_options(_Options)}
    assert list(info) == ["steps", "mode", "widths", "rate"]
    assert (info["steps"].type, info["steps"].default, info["steps"].help) == (
        "int",
        7,
        "T, more steps",
    )
    assert info["mode"].choices == ("a", "b") and info["mode"].type == "str"
    assert info["mode"].help == "how to relax: a or b; continued on the next line"
    assert info["widths"].help == "layer widths" and info["widths"].type == "tuple[int, ...]"
    assert info["rate"].help == "" and info["rate"].type == "float | None"


@pytest.mark.parametrize("rule", available_rules())
def test_list_rule_shows_every_option(rule, capsys):
    assert main(["list", "--rule", rule]) == 0
    out = capsys.readouterr().out
    cls = get_rule_class(rule)
    assert out.startswith(f"{rule}: {cls.summary}") and cls.citation in out
    for option in describe_options(cls.Options):
        assert f"  {option.name}: {option.type} = " in out
        if option.choices:
            assert f"one of: {', '.join(map(str, option.choices))}" in out
        if option.help:
            assert option.help in out


def test_list_rule_reads_the_option_comments(capsys):
    assert main(["list", "--rule", "ep"]) == 0
    out = capsys.readouterr().out
    assert "  nudging_strength: float = 0.1" in out and "beta" in out
    assert main(["list", "--rule", "nope"]) == 2
    _one_error_line(capsys.readouterr().err, "unknown rule 'nope'")


def test_every_rule_option_has_help():
    undocumented = [
        f"{name}.{option.name}"
        for name, cls in REGISTRY.items()
        for option in describe_options(cls.Options)
        if not option.help
    ]
    assert not undocumented
