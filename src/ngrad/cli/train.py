"""``ngrad train``: train one rule and write its run directory.

    ngrad train [--rule NAME] [--model NAME] [--data NAME] [--epochs N] ... [--config FILE]
                [--out DIR]
    ngrad train --resume DIR

The settings come from ``--config`` (a TOML file, or a run's own ``config.json`` to repeat that
run) with the flags given on top; ``ngrad train --help`` lists every flag with its default. A rule
that cannot train the model ends in one line ``ngrad: error: rule 'X' cannot train model 'Y':
why`` (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ngrad.cli.run_options import (
    add_run_options,
    config_values,
    setting_help,
    user_models_importable,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser, with_rule=True)
    helps = setting_help()
    parser.add_argument("--seed", type=int, help=helps["seed"])
    parser.add_argument(
        "--out", metavar="DIR", help="output directory (default: runs/<rule>-<data>-seed<k>)"
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted run in DIR with its saved settings (default: none, "
        "start a new run)",
    )
    parser.add_argument("--tensorboard", action="store_true", help=helps["tensorboard"])
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out, removing its files first (default: refuse a "
        "directory that is not empty)",
    )


def run(args: argparse.Namespace) -> int:
    from ngrad.train import distributed
    from ngrad.train.config import make_config
    from ngrad.train.loop import run_training
    from ngrad.train.runs import load_run_config

    if args.resume:
        config = _resumed_config(args, load_run_config(args.resume))
        out = Path(args.resume)
    else:
        config = make_config(config_values(args), owner="config")
        out = Path(args.out or f"runs/{config.rule}-{config.data}-seed{config.seed}")
    user_models_importable(config.model)
    result = run_training(
        config,
        out,
        resume=bool(args.resume),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    summary = result.summary
    if not distributed.is_main_process():  # under torchrun, rank 0 reports the run
        return 0 if summary["status"] == "completed" else 1
    angles = ", ".join(
        "-" if a is None else f"{a:.1f}" for a in summary["final_angle_to_bp_deg"] or []
    )
    model = "" if config.model == "mlp" else f" ({config.model})"
    print(
        f"{config.rule}{model} on {config.data}: test accuracy {summary['test_accuracy']:.4f} "
        f"(best validation {summary['best_val_accuracy']:.4f} at epoch {summary['best_epoch']}); "
        f"angles to BP per layer [{angles}] deg; results in {out}/"
    )
    if summary["status"] != "completed":  # diverged or failed: see docs/runs.md
        print(
            f"ngrad: error: {config.rule} on {config.data} {summary['status']}: "
            f"{summary['status_reason']}",
            file=sys.stderr,
        )
        return 1
    return 0


def _resumed_config(args: argparse.Namespace, config):
    """The run's saved settings; --epochs may extend it, any other setting flag is refused."""
    from ngrad.errors import ConfigError
    from ngrad.train.config import make_config

    given = [flag for flag in ("--config", "--out", "--overwrite") if getattr(args, flag[2:])]
    if not given:
        flags = {"rule_options": "--rule-option", "model_options": "--model-option"}
        given = [
            flags.get(key, f"--{key.replace('_', '-')}")
            for key in config_values(args)
            if key != "epochs"
        ]
    if given:
        raise ConfigError(
            f"--resume continues a run with the settings it started with, so {given[0]} cannot "
            "be given with it (only --epochs, to train longer); start a new run to change them"
        )
    if args.epochs is None:
        return config
    return make_config(config.to_dict() | {"epochs": args.epochs}, owner="--epochs")
