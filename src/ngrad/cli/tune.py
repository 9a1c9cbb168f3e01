"""``ngrad tune``: search each rule's settings on the validation split, on an equal budget of
trials per rule, and write the best ones as a preset file for ``ngrad compare --presets``.

    ngrad tune --rule NAME [--data NAME] [--model NAME] --trials N [--epochs E] [--out DIR]
    ngrad tune --rules a,b,c ...          (no --rule/--rules: every rule that can train the model)
    ngrad tune ... --storage postgresql://user@host/db --study-name S     (one worker per machine)

The run settings are those of ``ngrad train``; a shared setting given as a flag (``--lr``,
``--momentum``, ``--weight-decay``, ``--feedback-lr``) or a rule option given with
``--rule-option`` is held at that value instead of searched. See docs/tuning.md.
"""

from __future__ import annotations

import argparse

from ngrad.cli.run_options import (
    add_run_options,
    config_values,
    setting_help,
    user_models_importable,
)
from ngrad.errors import ConfigError

__all__ = ["add_arguments", "run"]

PRUNER_CHOICES = ("median", "hyperband", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ngrad.rules import available_rules

    add_run_options(parser, with_rule=True)
    parser.epilog = (
        "A shared setting given as a flag or in --config (--lr, --momentum, --weight-decay, "
        "--feedback-lr) and a rule option given with --rule-option are held at that value; "
        "everything else in the rule's search space is searched (--show-space lists it). "
        "docs/tuning.md: the search, the outputs and the recipe for many machines."
    )
    parser.add_argument(
        "--rules",
        metavar="NAMES",
        help="comma-separated rules to tune, each with the same --trials (default: --rule, or "
        f"every rule that can train the model); one of: {', '.join(available_rules())}",
    )
    parser.add_argument(
        "--seed", type=int, help=f"{setting_help()['seed']}; also seeds the sampler"
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=30,
        help="completed and pruned trials per rule; a study that has some already runs only the "
        "rest (default: %(default)s)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna database URL shared by every worker, e.g. postgresql://user@host/db "
        "(default: sqlite:///DIR/study.db, a file in --out)",
    )
    parser.add_argument(
        "--study-name",
        metavar="NAME",
        help="name of the studies in the storage; each rule's is NAME/<rule> (default: "
        "ngrad-<data>-<model>)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNER_CHOICES,
        default="median",
        help="how hopeless trials are stopped from their per-epoch validation accuracy: median "
        "(below the median of earlier trials at the same epoch), hyperband, or none "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--show-space",
        action="store_true",
        help="print what would be searched for each rule, and the ranges, then exit "
        "(default: tune)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="results/tune",
        help="output directory: presets.toml, trials.csv, plots/ and, by default, the study "
        "database; the same command run again resumes it (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from ngrad.train.tune import tune

    if args.rule is not None and args.rules is not None:
        raise ConfigError("give --rule NAME or --rules NAMES, not both")
    rules = None
    if args.rules is not None:
        rules = [name.strip() for name in args.rules.split(",") if name.strip()]
    values = config_values(args)
    if args.rule is not None:
        rules = [values.pop("rule")]
    elif rules is not None:
        values.pop("rule", None)
    user_models_importable(values.get("model", "mlp"))
    if args.show_space:
        from ngrad.train.tune import plan_search
        from ngrad.train.tune_space import describe

        for base, space in plan_search(values, rules)[1]:
            lines = describe(space).replace("\n", "\n  ")
            print(f"{base.rule} ({base.epochs} epochs a trial):\n  {lines}")
        return 0
    result = tune(
        values,
        rules,
        args.trials,
        args.out,
        storage=args.storage,
        study_name=args.study_name,
        pruner=args.pruner,
        progress=not args.no_progress,
    )
    print(format_results(result, args.trials))
    presets = result.out / "presets.toml"
    print(
        f"\nbest settings in {presets} (use them with `ngrad compare --presets {presets}`); "
        f"trials.csv and plots/ beside it; studies in {result.storage}"
    )
    return 0


def format_results(result, trials: int) -> str:
    """A markdown table: one row per rule, its trials and its best settings."""
    from ngrad.train.tune_space import split_parameters

    rows = [
        "| rule | trials (pruned) | best val acc | best settings |",
        "|---|---|---|---|",
    ]
    for study, _ in result.studies:
        counts = study.counts()
        done, pruned = study.done, counts.get("PRUNED", 0)
        running = counts.get("RUNNING", 0)
        shown = f"{done} ({pruned})" + (f", {running} running elsewhere" if running else "")
        best = study.best_trial()
        if best is None:
            rows.append(f"| {study.rule} | {shown} | - | no completed trial |")
            continue
        settings, options = split_parameters(best.params)
        described = ", ".join(f"{k}={_short(v)}" for k, v in {**settings, **options}.items())
        rows.append(f"| {study.rule} | {shown} | {best.value:.4f} | {described} |")
    short = [s.rule for s, _ in result.studies if s.done < trials]
    if short:
        rows.append(
            f"\n{', '.join(short)}: fewer than {trials} trials while other workers run theirs "
            "(or left by a killed worker); run the command again to complete them"
        )
    return "\n".join(rows)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
