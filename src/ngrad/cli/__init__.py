"""The ``ngrad`` command: list, train, compare, check, and the analyses of trained runs.

Every failure a user can cause ends in one line ``ngrad: error: ...`` and a non-zero exit: 2 for
usage (unknown rule or dataset, bad option or config key), 1 for run failures (missing or corrupt
data, unwritable output, divergence). What was computed before a failure stays on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ngrad.errors import ConfigError, DivergenceError, NgradError

EXIT_USAGE, EXIT_FAILURE = 2, 1

TRAIN_FLAGS = (
    ("--epochs", int),
    ("--batch-size", int),
    ("--lr", float),
    ("--optimizer", str),
    ("--momentum", float),
    ("--weight-decay", float),
    ("--feedback-lr", float),
    ("--activation", str),
    ("--init", str),
    ("--loss", str),
    ("--device", str),
    ("--data-dir", str),
    ("--train-subset", int),
    ("--diagnostics-samples", int),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: one line, exit 2
        raise ConfigError(message)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated widths, got {text!r}") from None
    return widths


def _add_run_options(parser: argparse.ArgumentParser, with_rule: bool) -> None:
    if with_rule:
        parser.add_argument("--rule", help="learning rule (see `ngrad list`)")
    parser.add_argument("--data", help="dataset (see `ngrad list`)")
    for flag, kind in TRAIN_FLAGS:
        parser.add_argument(flag, type=kind)
    parser.add_argument("--hidden", type=_hidden, help="hidden widths, e.g. 256,256")
    parser.add_argument("--config", help="TOML file of run settings (flags override it)")
    parser.add_argument(
        "--rule-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="rule option (repeatable), e.g. --rule-option weight_decay=1e-3",
    )
    parser.add_argument("--download", action="store_true", help="fetch missing data files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ngrad", description="Brain-plausible learning rules, measured against backprop."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("list", help="rules (with citations) and datasets")

    train = commands.add_parser("train", help="train one rule")
    _add_run_options(train, with_rule=True)
    train.add_argument("--seed", type=int)
    train.add_argument("--out", help="output directory (default runs/<rule>-<data>-seed<k>)")
    train.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    train.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")

    compare = commands.add_parser("compare", help="train several rules and tabulate them")
    compare.add_argument("--rules", help="comma-separated rule names (default: all)")
    _add_run_options(compare, with_rule=False)
    compare.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    compare.add_argument("--out", default="results/compare", help="output directory")

    check = commands.add_parser("check", help="run the rules' reference properties")
    check.add_argument("--rule", help="only this rule")

    inspect = commands.add_parser("inspect", help="one neuron's compartments, forward vs teaching")
    inspect.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by ngrad train")
    inspect.add_argument("--layer", type=int, help="layer 1..L (default: the last hidden layer)")
    inspect.add_argument("--neuron", type=int, default=0, help="unit index in the layer")
    inspect.add_argument("--sample", type=int, default=0, help="index of the test image")
    inspect.add_argument("--out", required=True, help="PNG file to write")

    similar = commands.add_parser(
        "similarity", help="representational similarity to a reference rule; neural predictivity"
    )
    similar.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or compare directories")
    similar.add_argument("--reference", default="bp", help="reference rule (default: bp)")
    similar.add_argument("--layer", help="comma-separated layers to compare (default: all)")
    similar.add_argument("--neural", metavar="FILE", help="recordings, .npz or NetCDF")
    similar.add_argument("--samples", type=int, default=1000, help="test images used as stimuli")
    similar.add_argument("--bootstrap", type=int, default=1000, help="RSA bootstrap resamples")
    similar.add_argument("--data-dir", help="data directory (default: the runs' own)")
    similar.add_argument("--out", required=True, help="output directory")
    similar.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _parse_rule_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--rule-option takes KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    from ngrad.train.config import load_config_file

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for flag, _ in TRAIN_FLAGS:
        key = flag[2:].replace("-", "_")
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
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
            **_parse_rule_options(args.rule_option),
        }
    return values


def command_list(_: argparse.Namespace) -> int:
    from ngrad.data import available_datasets
    from ngrad.rules import REGISTRY

    print("Rules:")
    width = max(len(name) for name in REGISTRY)
    for name, cls in REGISTRY.items():
        print(f"  {name:<{width}}  {cls.summary}")
        print(f"  {'':<{width}}  [{cls.citation}]")
    print("\nDatasets:")
    datasets = available_datasets()
    width = max(len(name) for name in datasets)
    for name, description in datasets.items():
        print(f"  {name:<{width}}  {description}")
    return 0


def command_train(args: argparse.Namespace) -> int:
    from ngrad.train.config import make_config
    from ngrad.train.loop import load_run_config, run_training

    if args.resume:
        config = load_run_config(args.resume)
        out = Path(args.resume)
    else:
        config = make_config(_config_values(args), owner="config")
        out = Path(args.out or f"runs/{config.rule}-{config.data}-seed{config.seed}")
    result = run_training(config, out, resume=bool(args.resume), progress=not args.no_progress)
    summary = result.summary
    angles = ", ".join(
        "-" if a is None else f"{a:.1f}" for a in summary["final_angle_to_bp_deg"] or []
    )
    print(
        f"{config.rule} on {config.data}: test accuracy {summary['test_accuracy']:.4f} "
        f"(best validation {summary['best_val_accuracy']:.4f} at epoch {summary['best_epoch']}); "
        f"angles to BP per layer [{angles}] deg; results in {out}/"
    )
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from ngrad.train.compare import compare_rules, format_table
    from ngrad.train.config import make_config

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    rules = [name.strip() for name in args.rules.split(",") if name.strip()] if args.rules else None
    values = _config_values(args)
    if rules and values.get("rule_options") and len(rules) > 1:
        raise ConfigError("--rule-option applies to one rule; compare with a single --rules entry")
    if rules and len(rules) == 1:
        values["rule"] = rules[0]
    base = make_config(values, owner="config")
    records = compare_rules(base, rules, args.seeds, args.out, progress=not args.no_progress)
    print(format_table(records))
    print(f"\nresults in {args.out}/ (results.json, summary.md, accuracy.png, angles.png)")
    failed = [r for r in records if r["status"] != "completed"]
    for record in failed:
        print(
            f"ngrad: error: {record['rule']} seed {record['seed']}: {record['status']}",
            file=sys.stderr,
        )
    return EXIT_FAILURE if failed else 0


def command_check(args: argparse.Namespace) -> int:
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


def command_inspect(args: argparse.Namespace) -> int:
    from ngrad.cli.inspect import command_inspect as inspect

    return inspect(args)


def command_similarity(args: argparse.Namespace) -> int:
    from ngrad.cli.similarity import command_similarity as similarity

    return similarity(args)


COMMANDS = {
    "list": command_list,
    "train": command_train,
    "compare": command_compare,
    "check": command_check,
    "inspect": command_inspect,
    "similarity": command_similarity,
}


def main(argv: list[str] | None = None) -> int:
    from ngrad.data import DataError

    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"ngrad: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, DivergenceError, NgradError) as error:
        print(f"ngrad: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("ngrad: interrupted; resume with `ngrad train --resume DIR`", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"ngrad: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("NGRAD_DEBUG"):
            raise
        print(
            f"ngrad: error: internal error ({type(error).__name__}: {error}); "
            "rerun with NGRAD_DEBUG=1 for the traceback and please report it",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
