"""The run settings that ``ngrad train`` and ``ngrad compare`` share: flags, their help, and the
mapping of parsed flags (over a config file) onto :class:`~ngrad.train.config.TrainConfig` keys.

Each flag's help is the meaning, default and choices of its ``TrainConfig`` field (the comment on
the field's line, read by :func:`ngrad.options.describe_options`), so the flags, the config file
and ``ngrad list`` describe a setting in the same words.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from ngrad.errors import ConfigError

__all__ = [
    "RUN_FLAGS",
    "add_run_options",
    "config_values",
    "hidden_widths",
    "parse_rule_options",
    "setting_help",
]

# flag -> type; the TrainConfig key is the flag without dashes ("--batch-size": batch_size)
RUN_FLAGS: dict[str, type] = {
    "--epochs": int,
    "--batch-size": int,
    "--lr": float,
    "--optimizer": str,
    "--momentum": float,
    "--weight-decay": float,
    "--feedback-lr": float,
    "--activation": str,
    "--init": str,
    "--loss": str,
    "--device": str,
    "--data-dir": str,
    "--train-subset": int,
    "--diagnostics-samples": int,
}


def hidden_widths(text: str) -> tuple[int, ...]:
    """``--hidden 256,256`` -> (256, 256)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated widths, got {text!r}") from None


def _key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _named_choices() -> dict[str, tuple[str, ...]]:
    """Settings whose values are names in a registry (the Literal ones come with their field)."""
    from ngrad.data import available_datasets
    from ngrad.nn.activations import ACTIVATIONS
    from ngrad.nn.losses import LOSSES
    from ngrad.rules import available_rules

    return {
        "rule": tuple(available_rules()),
        "data": tuple(available_datasets()),
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
    parser.add_argument("--hidden", type=hidden_widths, metavar="W1,W2,...", help=helps["hidden"])
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


def parse_rule_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--rule-option takes KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--config`` file's settings, overridden by every flag given."""
    from ngrad.train.config import load_config_file

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for flag in RUN_FLAGS:
        if getattr(args, _key(flag)) is not None:
            values[_key(flag)] = getattr(args, _key(flag))
    for key in ("rule", "data", "hidden", "seed"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    if args.download:
        values["download"] = True
    if getattr(args, "tensorboard", False):
        values["tensorboard"] = True
    if args.rule_option:
        values["rule_options"] = {
            **values.get("rule_options", {}),
            **parse_rule_options(args.rule_option),
        }
    return values
