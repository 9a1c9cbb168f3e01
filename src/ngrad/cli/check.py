"""``ngrad check``: run the rules' reference properties (each family's ``checks.py``) and print
one line per property: what was measured, against which tolerance, pass or FAIL."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ngrad.rules import available_rules

    parser.add_argument(
        "--rule",
        metavar="NAME",
        help=f"only this rule (default: every rule); one of: {', '.join(available_rules())}",
    )


def run(args: argparse.Namespace) -> int:
    from ngrad.cli.parser import EXIT_FAILURE
    from ngrad.rules import available_rules, get_rule_class
    from ngrad.rules.checking import run_checks

    names = [args.rule] if args.rule else available_rules()
    for name in names:
        get_rule_class(name)
    failures = 0
    print(f"{'rule':<6} {'property':<72} {'measured':>12} {'tolerance':>12}  result")
    for name in names:
        for result in run_checks(name):
            failures += not result.passed
            verdict = "pass" if result.passed else "FAIL"
            print(
                f"{name:<6} {result.name:<72} {result.measured:>12.4g} "
                f"{result.comparison} {result.tolerance:<10.4g}  {verdict}"
            )
    print(f"\n{failures} of the properties failed" if failures else "\nall properties hold")
    return EXIT_FAILURE if failures else 0
