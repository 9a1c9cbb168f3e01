"""``ngrad list``: what there is to train and on what.

    ngrad list               # rules (summary and citation), models and datasets, a line each
    ngrad list --rule NAME   # one rule: summary, citation and every option with its type,
                             # default, choices and meaning
    ngrad list --model NAME  # one model: summary, citation, the inputs it takes, its options,
                             # and which rules can train it

A rule's (a model's) options are the fields of its ``Options`` dataclass; their meaning is the
comment on the field's line (:func:`ngrad.options.describe_options`).
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable

__all__ = ["add_arguments", "describe_model", "describe_rule", "model_builders", "run"]

PROBE_SHAPES = ((3, 32, 32), (1, 28, 28), (64,))
"""Sample shapes (CIFAR-10, MNIST, digits) on which a model is built to ask the rules whether
they can train it: the first one it takes."""
PROBE_CLASSES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rule",
        metavar="NAME",
        help="describe this rule and every option it takes: type, default, choices, meaning "
        "(default: none, list all rules, models and datasets in one line each)",
    )
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="describe this model (a catalogue name or module:factory): inputs, options and "
        "the rules that can train it (default: none)",
    )


def model_builders() -> dict[str, Callable]:
    """{name: builder} of the :mod:`ngrad.models` catalogue, the models ``--model`` names."""
    from ngrad.models import MODELS

    return {name: spec.builder for name, spec in MODELS.items()}


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
    from ngrad.models import MODELS

    models = {name: [spec.summary, f"[{spec.citation}]"] for name, spec in MODELS.items()}
    print()
    _print_table(
        "Models (`ngrad train --model NAME`, or module:factory for your own; `ngrad list "
        "--model NAME` shows a model's options and the rules that can train it):",
        models,
    )
    print()
    _print_table("Datasets:", {name: [text] for name, text in available_datasets().items()})


def _value(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _options_lines(options: list, how: str) -> list[str]:
    if not options:
        return ["", "Options: none."]
    lines = ["", f"Options ({how}):"]
    for option in options:
        heading = f"  {option.name}: {option.type} = {_value(option.default)}"
        if option.choices:
            heading += f"   one of: {', '.join(map(str, option.choices))}"
        lines.append(heading)
        lines.append(f"      {option.help or '(no description)'}")
    return lines


def _probe(name: str, options: dict) -> tuple[object, tuple[int, ...]] | tuple[None, str]:
    """(the model built on the first probe shape it takes, that shape), or (None, why not)."""
    import torch

    from ngrad.errors import ConfigError
    from ngrad.train.build import build_model

    failure = "it takes none of the probe inputs"
    for shape in PROBE_SHAPES:
        with torch.random.fork_rng(devices=[]):
            try:
                return build_model(name, options, shape, PROBE_CLASSES), shape
            except (ConfigError, ValueError, TypeError, RuntimeError) as error:
                failure = str(error)  # a user's factory may refuse a shape its own way
    return None, failure


def rules_that_train(name: str) -> list[str]:
    """Which registered rules can train model ``name`` with its default options, grouped: the
    rules that can, then one line per reason the others cannot."""
    from ngrad.models.common import shape_text
    from ngrad.rules import available_rules
    from ngrad.train.build import unsupported_reason

    model, shape = _probe(name, {})
    if model is None:
        return [f"  (could not build it to ask the rules: {shape})"]
    can, cannot = [], {}
    for rule in available_rules():
        reason = unsupported_reason(rule, model)
        if reason is None:
            can.append(rule)
        else:
            cannot.setdefault(reason, []).append(rule)
    lines = [
        f"  (asked with its default options on {shape_text(shape)} inputs, {PROBE_CLASSES} "
        "classes)",
        f"  can: {', '.join(can) or 'none'}",
    ]
    for reason, rules in cannot.items():
        lines.append(f"  cannot: {', '.join(rules)}")
        lines.append(f"      {reason}")
    return lines


def describe_model(name: str) -> str:
    """A model's summary, citation, the inputs it takes, its options and which rules can train
    it, as text."""
    from ngrad.models import MODELS, get_model
    from ngrad.models.factory import is_factory_name, load_factory
    from ngrad.options import describe_options

    if is_factory_name(name):
        factory = load_factory(name.strip())  # ConfigError if it cannot be imported
        lines = [f"{name.strip()}: {_first_line(factory.__doc__) or 'a user factory'}"]
        lines.append("  your factory, called as factory(input_shape, num_classes, **options)")
        try:
            parameters = list(inspect.signature(factory).parameters.values())[2:]
        except (TypeError, ValueError):
            parameters = []
        options = [
            f"  {p.name}"
            + ("" if p.default is inspect.Parameter.empty else f" = {_value(p.default)}")
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        lines += ["", "Options (set with --model-option KEY=VALUE):", *options] if options else []
    else:
        spec = get_model(name)  # ConfigError naming the models for an unknown name
        name = next(key for key, entry in MODELS.items() if entry is spec)
        lines = [f"{name}: {spec.summary}", f"  [{spec.citation}]", f"  inputs: {spec.inputs}"]
        how = "set with --model-option KEY=VALUE, or in a [model_options] table of a config file"
        if name == "mlp":
            how += "; hidden, activation and init are also --hidden, --activation and --init"
        lines += _options_lines(describe_options(spec.options), how)
    lines += ["", "Rules that can train it:", *rules_that_train(name.strip())]
    return "\n".join(lines)


def describe_rule(name: str) -> str:
    """A rule's summary, citation and options (type, default, choices, meaning) as text."""
    from ngrad.options import describe_options
    from ngrad.rules import get_rule_class

    cls = get_rule_class(name)  # ConfigError naming the rules for an unknown name
    lines = [f"{cls.name}: {cls.summary}", f"  [{cls.citation}]"]
    parts = cls.__module__.split(".")
    if len(parts) == 4 and parts[:2] == ["ngrad", "rules"]:
        lines.append(f"  equations and notes: docs/{parts[2]}.md in the ngrad repository")
    how = "set with --rule-option KEY=VALUE, or in a [rule_options] table of a config file"
    lines += _options_lines(describe_options(cls.Options), how)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ngrad.cli.run_options import user_models_importable

    if args.rule and args.model:
        print(describe_rule(args.rule))
        print()
    if args.model:
        user_models_importable(args.model)
        print(describe_model(args.model))
    elif args.rule:
        print(describe_rule(args.rule))
    else:
        _list_everything()
    return 0
