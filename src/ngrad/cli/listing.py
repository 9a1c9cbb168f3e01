"""``ngrad list``: what there is to train and on what.

    ngrad list               # rules (summary and citation), models and datasets, a line each
    ngrad list --rule NAME   # one rule: summary, citation and every option with its type,
                             # default, choices and meaning

A rule's options are the fields of its ``Options`` dataclass; their meaning is the comment on the
field's line (:func:`ngrad.options.describe_options`).
"""

from __future__ import annotations

import argparse
import inspect
import typing
from collections.abc import Callable

__all__ = ["add_arguments", "describe_rule", "model_builders", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rule",
        metavar="NAME",
        help="describe this rule and every option it takes: type, default, choices, meaning "
        "(default: none, list all rules, models and datasets in one line each)",
    )


def model_builders() -> dict[str, Callable]:
    """{name: function} of the model builders in :mod:`ngrad.nn.network` (those that return a
    Network)."""
    from ngrad.nn import network

    builders = {}
    for name, value in vars(network).items():  # in the order they are defined
        if name in network.__all__ and inspect.isfunction(value):
            try:
                returns = typing.get_type_hints(value).get("return")
            except (NameError, TypeError):
                continue
            if returns is network.Network:
                builders[name] = value
    return builders


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].replace("``", "") if lines else ""


def _print_table(title: str, rows: dict[str, list[str]]) -> None:
    print(title)
    width = max(len(name) for name in rows)
    for name, lines in rows.items():
        print(f"  {name:<{width}}  {lines[0]}")
        for line in lines[1:]:
            print(f"  {'':<{width}}  {line}")


def _list_everything() -> None:
    from ngrad.data import available_datasets
    from ngrad.rules import REGISTRY

    rows = {name: [cls.summary, f"[{cls.citation}]"] for name, cls in REGISTRY.items()}
    _print_table("Rules (`ngrad list --rule NAME` shows a rule's options):", rows)
    models = {name: [_first_line(fn.__doc__)] for name, fn in model_builders().items()}
    print()
    _print_table("Models (in ngrad.nn; `ngrad train` builds an mlp with --hidden widths):", models)
    print()
    _print_table("Datasets:", {name: [text] for name, text in available_datasets().items()})


def _value(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def describe_rule(name: str) -> str:
    """A rule's summary, citation and options (type, default, choices, meaning) as text."""
    from ngrad.options import describe_options
    from ngrad.rules import get_rule_class

    cls = get_rule_class(name)  # ConfigError naming the rules for an unknown name
    lines = [f"{cls.name}: {cls.summary}", f"  [{cls.citation}]"]
    parts = cls.__module__.split(".")
    if len(parts) == 4 and parts[:2] == ["ngrad", "rules"]:
        lines.append(f"  equations and notes: docs/{parts[2]}.md in the ngrad repository")
    options = describe_options(cls.Options)
    if not options:
        lines += ["", "Options: none."]
        return "\n".join(lines)
    lines += [
        "",
        "Options (set with --rule-option KEY=VALUE, or in a [rule_options] table of a "
        "config file):",
    ]
    for option in options:
        heading = f"  {option.name}: {option.type} = {_value(option.default)}"
        if option.choices:
            heading += f"   one of: {', '.join(map(str, option.choices))}"
        lines.append(heading)
        lines.append(f"      {option.help or '(no description)'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.rule:
        print(describe_rule(args.rule))
    else:
        _list_everything()
    return 0
