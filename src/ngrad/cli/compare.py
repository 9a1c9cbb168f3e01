"""``ngrad compare``: train several rules on the same model, data and seeds (backprop always
first, as the reference) and tabulate them; rules that cannot train the model are left out with
the reason printed. See :mod:`ngrad.train.compare` for what it writes."""

from __future__ import annotations

import argparse
import sys

from ngrad.cli.run_options import add_run_options, config_values, user_models_importable
from ngrad.errors import ConfigError

__all__ = ["add_arguments", "run"]


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
    parser.add_argument(
        "--seeds", type=int, default=3, help="number of seeds, run as 0..N-1 (default: 3)"
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


def run(args: argparse.Namespace) -> int:
    from ngrad.cli.parser import EXIT_FAILURE
    from ngrad.train.compare import compare_rules, format_table
    from ngrad.train.config import make_config

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    rules = None if args.rules is None else [n.strip() for n in args.rules.split(",") if n.strip()]
    values = config_values(args)
    if rules and values.get("rule_options") and len(rules) > 1:
        raise ConfigError("--rule-option applies to one rule; compare with a single --rules entry")
    if rules and len(rules) == 1:
        values["rule"] = rules[0]
    base = make_config(values, owner="config")
    user_models_importable(base.model)
    records = compare_rules(
        base, rules, args.seeds, args.out, progress=not args.no_progress, overwrite=args.overwrite
    )
    print(format_table(records))
    print(f"\nresults in {args.out}/ (results.json, summary.md, accuracy.png, angles.png)")
    failed = [r for r in records if r["status"] != "completed"]
    for record in failed:
        print(
            f"ngrad: error: {record['rule']} seed {record['seed']} {record['status']}: "
            f"{record['status_reason']}",
            file=sys.stderr,
        )
    return EXIT_FAILURE if failed else 0
