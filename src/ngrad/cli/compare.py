"""``ngrad compare``: train several rules on the same model, data and seeds (backprop always
first, as the reference) and tabulate them with statistics against backprop. Every rule runs
with its own settings: ngrad's preset for the data set (``--presets FILE`` for another one,
``--no-presets`` for the shared settings only), then the ``[rules.NAME]`` tables of ``--config``,
then the flags given. See :mod:`ngrad.train.compare` for what it writes, docs/compare.md for the
files and the recipe for a paper-grade table."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ngrad.cli.run_options import add_run_options, config_values, user_models_importable
from ngrad.errors import ConfigError

__all__ = ["COMPARE_DEFAULTS", "add_arguments", "run"]

COMPARE_DEFAULTS = {"data": "mnist1d", "epochs": 8}
"""What ``ngrad compare`` runs when neither the command line nor ``--config`` says otherwise: the
main job, a ranking of every rule on generated MNIST-1D (1000 test signals) in minutes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ngrad.rules import available_rules

    parser.add_argument(
        "--rules",
        metavar="NAMES",
        help="comma-separated rules, e.g. fa,dfa (default: every rule that can train the model); "
        "one of: "
        f"{', '.join(available_rules())}",
    )
    add_run_options(parser, with_rule=False)
    for action in parser._actions:  # compare's own defaults, where they differ from train's
        if action.dest in COMPARE_DEFAULTS and action.help:
            action.help = re.sub(
                r"default: [^;)]*", f"default: {COMPARE_DEFAULTS[action.dest]}", action.help
            )
    parser.add_argument(
        "--seeds", type=int, default=3, help="number of seeds, run as 0..N-1 (default: 3)"
    )
    parser.add_argument(
        "--presets",
        metavar="FILE",
        help="per-rule settings from this preset file (e.g. one `ngrad tune` wrote) instead of "
        "ngrad's presets for the data set (default: ngrad's, where it ships them)",
    )
    parser.add_argument(
        "--no-presets",
        action="store_true",
        help="every rule with the shared settings only (default: presets on)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="(rule, seed) runs at once, each in its own process; results equal the runs one "
        "after another (default: 0 = every usable core on the embedded data sets, else 1)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="results/compare",
        help="output directory; the same command run again continues it (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a comparison with other settings in --out (default: refuse it)",
    )


def _flags_only(args: argparse.Namespace) -> dict:
    """The settings the command line gives (without the config file)."""
    return config_values(argparse.Namespace(**(vars(args) | {"config": None})))


def run(args: argparse.Namespace) -> int:
    from ngrad.cli.parser import EXIT_FAILURE
    from ngrad.train.compare import compare_rules, format_table
    from ngrad.train.compare_config import PER_RULE_KEYS, load_presets, split_compare_values
    from ngrad.train.config import make_config

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    if args.presets and args.no_presets:
        raise ConfigError("--presets FILE and --no-presets exclude each other; give one")
    rules = None if args.rules is None else [n.strip() for n in args.rules.split(",") if n.strip()]
    values, overrides = split_compare_values(
        config_values(args), f"config file {args.config!r}" if args.config else "the flags"
    )
    for key, value in COMPARE_DEFAULTS.items():
        values.setdefault(key, value)
    if values.get("rule_options") and not (rules and len(rules) == 1):
        raise ConfigError(
            "--rule-option (or a top-level [rule_options]) applies to one rule; compare with a "
            "single --rules entry, or give each rule's options in [rules.NAME.options]"
        )
    if rules and len(rules) == 1:
        values["rule"] = rules[0]
    base = make_config(values, owner="config")
    user_models_importable(base.model)
    presets = None if args.no_presets else load_presets(args.presets, base.data)
    if presets is None and not args.no_presets:
        print(
            f"ngrad: note: ngrad ships no presets for {base.data!r}: every rule runs with the "
            "shared settings (--presets FILE gives per-rule ones)",
            file=sys.stderr,
        )
    if presets is not None and presets.data not in (None, base.data):
        print(
            f"ngrad: note: the presets in {presets.origin} were chosen on {presets.data!r}, "
            f"this comparison trains on {base.data!r}",
            file=sys.stderr,
        )
    flags = _flags_only(args)
    explicit = {key: flags[key] for key in PER_RULE_KEYS if key in flags}
    records = compare_rules(
        base,
        rules,
        args.seeds,
        args.out,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        presets=presets,
        overrides=overrides,
        explicit=explicit,
        jobs=args.jobs,
    )
    print(format_table(records))
    summary = (Path(args.out) / "summary.md").read_text(encoding="utf-8")
    start, end = summary.find("## Statistics against backprop"), summary.find("## Runs")
    if 0 <= start < end:
        print("\n" + summary[start:end].strip())
    print(f"\nresults in {args.out}/ (summary.md with the statistics, results.json, figures)")
    failed = [r for r in records if r["status"] != "completed"]
    for record in failed:
        print(
            f"ngrad: error: {record['rule']} seed {record['seed']} {record['status']}: "
            f"{record['status_reason']}",
            file=sys.stderr,
        )
    return EXIT_FAILURE if failed else 0
