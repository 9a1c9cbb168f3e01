"""The run settings that ``ngrad train`` and ``ngrad compare`` share: flags, their help, and the
mapping of parsed flags (over a config file) onto :class:`~ngrad.train.config.TrainConfig` keys.

Each flag's help is the meaning, default and choices of its ``TrainConfig`` field (the comment on
the field's line, read by :func:`ngrad.options.describe_options`), so the flags, the config file
and ``ngrad list`` describe a setting in the same words.

Flags override the config file, whichever way each gives the mlp's ``hidden``, ``activation`` and
``init`` (``--hidden`` replaces a ``[model_options]`` ``hidden`` of the file, ``--model-option
hidden=...`` a top-level ``hidden`` of the file); given twice on the same level they must agree.
``--model`` naming another model than the file's drops the file's model options (and its mlp
settings), which belong to that other model.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from ngrad.errors import ConfigError

__all__ = [
    "RUN_FLAGS",
    "add_run_options",
    "config_values",
    "hidden_widths",
    "parse_key_values",
    "parse_rule_options",
    "setting_help",
    "user_models_importable",
]

# flag -> type; the TrainConfig key is the flag without dashes ("--batch-size": batch_size)
RUN_FLAGS: dict[str, type] = {
    "--model": str,
    "--epochs": int,
    "--batch-size": int,
    "--lr": float,
    "--optimizer": str,
    "--momentum": float,
    "--weight-decay": float,
    "--feedback-lr": float,
    "--lr-schedule": str,
    "--lr-gamma": float,
    "--activation": str,
    "--init": str,
    "--loss": str,
    "--device": str,
    "--threads": int,
    "--precision": str,
    "--data-dir": str,
    "--train-subset": int,
    "--normalize": str,
    "--resize": int,
    "--diagnostics-samples": int,
}


def hidden_widths(text: str) -> tuple[int, ...]:
    """``--hidden 256,256`` -> (256, 256)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated widths, got {text!r}") from None


def epoch_list(text: str) -> tuple[int, ...]:
    """``--lr-milestones 50,75`` -> (50, 75)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated epochs, got {text!r}") from None


def _key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _named_choices() -> dict[str, tuple[str, ...]]:
    """Settings whose values are names in a registry (the Literal ones come with their field)."""
    from ngrad.data import available_datasets
    from ngrad.models import available_models
    from ngrad.nn.activations import ACTIVATIONS
    from ngrad.nn.losses import LOSSES
    from ngrad.rules import available_rules

    return {
        "rule": tuple(available_rules()),
        "data": tuple(available_datasets()),
        "model": (*available_models(), "module:factory"),
        "activation": tuple(ACTIVATIONS),
        "loss": tuple(LOSSES),
    }


@functools.cache
def setting_help() -> dict[str, str]:
    """{TrainConfig key: "meaning (default: X; one of: a, b)"} for every run setting."""
    from ngrad.options import describe_options
    from ngrad.train.config import TrainConfig

    named = _named_choices()
    helps = {}
    for option in describe_options(TrainConfig):
        choices = option.choices or named.get(option.name)
        text = f"default: {_format(option.default)}"
        if choices:
            text += f"; one of: {', '.join(map(str, choices))}"
        if option.help.endswith(")"):  # "meaning (note)" -> "meaning (note; default: X)"
            helps[option.name] = f"{option.help[:-1]}; {text})"
        else:
            helps[option.name] = f"{option.help} ({text})".strip()
    return helps


def add_run_options(parser: argparse.ArgumentParser, with_rule: bool) -> None:
    """The settings flags (their defaults stay None so that only given flags override a
    ``--config`` file; the help states TrainConfig's defaults)."""
    helps = setting_help()
    if with_rule:
        parser.add_argument(
            "--rule",
            metavar="NAME",
            help=f"{helps['rule']}; `ngrad list --rule NAME` shows its options",
        )
    parser.add_argument("--data", metavar="NAME", help=helps["data"])
    for flag, kind in RUN_FLAGS.items():
        parser.add_argument(flag, type=kind, help=helps[_key(flag)])
    parser.add_argument(
        "--lr-milestones", type=epoch_list, metavar="E1,E2,...", help=helps["lr_milestones"]
    )
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the model, repeatable, e.g. --model-option channels=64,128; `ngrad "
        "list --model NAME` lists them (default: the model's own defaults)",
    )
    parser.add_argument("--hidden", type=hidden_widths, metavar="W1,W2,...", help=helps["hidden"])
    parser.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None, help=helps["augment"]
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="run settings from a TOML file or a run's own config.json; flags override it "
        "(default: none)",
    )
    parser.add_argument(
        "--rule-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the rule, repeatable, e.g. --rule-option nudging_strength=0.1; "
        "`ngrad list --rule NAME` lists them (default: the rule's own defaults)",
    )
    parser.add_argument("--download", action="store_true", help=helps["download"])
    parser.add_argument(
        "--no-progress", action="store_true", help="hide progress bars (default: shown)"
    )


def parse_key_values(pairs: list[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` (the values of a repeatable ``flag KEY=VALUE``) -> {"a": "1", ...}."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def parse_rule_options(pairs: list[str]) -> dict[str, str]:
    return parse_key_values(pairs, "--rule-option")


def _table(values: dict[str, Any], key: str) -> dict[str, Any]:
    table = values.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config option {key!r} must be a table of option = value")
    return dict(table)


def _model_key(name: Any) -> Any:
    return name.strip().lower().replace("-", "_") if isinstance(name, str) else name


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--config`` file's settings, overridden by every flag given."""
    from ngrad.train.config import MLP_SETTINGS, load_config_file

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    model_options = parse_key_values(args.model_option, "--model-option")
    if args.model is not None and _model_key(args.model) != _model_key(values.get("model", "mlp")):
        values.pop("model_options", None)  # the file's options belong to the file's model
        for key in MLP_SETTINGS:
            values.pop(key, None)
    for flag in RUN_FLAGS:
        if getattr(args, _key(flag)) is not None:
            values[_key(flag)] = getattr(args, _key(flag))
    for key in ("rule", "data", "hidden", "seed", "lr_milestones", "augment"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    for key in MLP_SETTINGS:  # a flag overrides the file's value, given either way
        flag_given = getattr(args, key, None) is not None
        if flag_given and key in _table(values, "model_options"):
            values["model_options"] = _table(values, "model_options")
            del values["model_options"][key]
        if key in model_options and not flag_given:
            values.pop(key, None)
    if args.download:
        values["download"] = True
    if getattr(args, "tensorboard", False):
        values["tensorboard"] = True
    if args.rule_option:
        values["rule_options"] = {
            **_table(values, "rule_options"),
            **parse_rule_options(args.rule_option),
        }
    if model_options:
        values["model_options"] = {**_table(values, "model_options"), **model_options}
    return values


def user_models_importable(model: str) -> None:
    """Put the current directory on ``sys.path`` (last) when ``model`` is a user's
    ``module:factory``, so that a module beside the user imports as it does under
    ``python -m ngrad``; the ``ngrad`` command itself does not have it there."""
    if ":" not in model:
        return
    here = str(Path.cwd())
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
