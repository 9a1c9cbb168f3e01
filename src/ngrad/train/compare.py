"""Train several rules on the same model, data and seeds, and tabulate them against backprop.

Each rule runs with its own settings: the shared ones, then the preset for the rule (ngrad ships
one per data set, :mod:`ngrad.train.compare_config`), then the compare configuration's table for
the rule, then the flags given on the command line. Before the first run starts, every rule is
built on the model with its settings and optimiser: a rule that cannot train the model (its
``unsupported_reason``) is left out with the reason, a bad setting stops the comparison.

Writes into the output directory:
- ``runs/<rule>-seed<k>/``: each run's own outputs (as ``ngrad train`` writes them), with
  ``test_correct.npy``, which test samples the run classifies correctly;
- ``results.json``: one record per rule and seed (status, test_accuracy, best_val_accuracy,
  cpu_time_per_step_s, time_ratio_to_bp, final per-layer angles to BP, the effective settings);
- ``statistics.json``: the comparison's environment, the rules left out, and per rule the mean
  test accuracy with its interval and the paired tests against backprop;
- ``summary.md``: the statistics, the table of runs, the settings per rule, the rules left out;
  and the figures.

``test_accuracy`` is measured at the epoch of best validation accuracy (selection never sees the
test set). ``time_ratio_to_bp`` divides a run's CPU time per training step by backprop's with the
same seed. ``jobs`` runs that many (rule, seed) runs at once, each in its own process; each run
seeds its own random numbers, so the results are those of the runs one after another (at the
same thread count per run).

A comparison can be continued: running the same command again keeps the runs that finished,
resumes the interrupted ones from their checkpoints and trains the missing ones. A directory that
holds another comparison (runs with other settings) is refused unless ``overwrite`` is set.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ngrad.data import load_dataset
from ngrad.errors import ConfigError, DivergenceError
from ngrad.rules import available_rules, get_rule_class
from ngrad.train.build import build_network, build_optimizer, build_rule, unsupported_reason
from ngrad.train.checkpoint import StorageError, atomic_write_text, to_json
from ngrad.train.compare_config import Presets, RuleSettings, rule_values
from ngrad.train.compare_report import (
    REFERENCE_RULE,
    environment,
    fill_time_ratios,
    format_table,
    make_record,
    run_statistics,
    summary_markdown,
)
from ngrad.train.compare_runs import (
    COMPARE_FILES,
    CONTINUE,
    check_directory,
    clear,
    execute,
    finished,
)
from ngrad.train.compare_runs import plan as plan_directory
from ngrad.train.config import TrainConfig, make_config
from ngrad.train.loop import prepare_output_dir, run_training
from ngrad.train.runs import RunLock, load_run_config, note

__all__ = [
    "COMPARE_FILES",
    "CONTINUE",
    "RulePlan",
    "choose_rules",
    "compare_rules",
    "format_table",
    "plan_rules",
    "usable_cores",
]


@dataclass(frozen=True)
class RulePlan:
    """One rule's settings in a comparison (seed 0; each seed replaces it), where the settings
    that are not the shared ones came from, and the preset's source note."""

    config: TrainConfig
    origins: dict[str, str] = field(default_factory=dict)
    source: str | None = None


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _named_rules(rules: Sequence[str] | None) -> list[str]:
    if rules is None:
        chosen = available_rules()
    else:
        chosen = list(rules)
        if not chosen:
            raise ConfigError("--rules names no rule; give comma-separated names, e.g. fa,dfa")
        repeated = [name for name, count in Counter(chosen).items() if count > 1]
        if repeated:
            raise ConfigError(
                f"--rules names {repeated[0]!r} more than once; each rule runs once per seed "
                "(use --seeds for repetitions)"
            )
        for name in chosen:
            get_rule_class(name)  # unknown names fail before any training
    return [REFERENCE_RULE] + [name for name in chosen if name != REFERENCE_RULE]


def _probe(base: TrainConfig):
    """A network of ``base``'s model, built without drawing any run's random numbers."""
    with torch.random.fork_rng(devices=[]):
        return build_network(base, load_dataset(base.data, base.data_dir, base.download))


def _able(
    base: TrainConfig, names: Sequence[str], probe=None
) -> tuple[list[str], list[tuple[str, str]]]:
    """(rules that can train ``base``'s model, [(rule, why not)]); ConfigError if bp cannot."""
    probe = _probe(base) if probe is None else probe
    kept, left_out = [], []
    for name in names:
        reason = unsupported_reason(name, probe)
        if reason is None:
            kept.append(name)
        elif name == REFERENCE_RULE:
            raise ConfigError(
                f"ngrad compare measures every rule against backprop, and rule {name!r} cannot "
                f"train model {base.model!r}: {reason}"
            )
        else:
            note(f"leaving out rule {name!r}: it cannot train model {base.model!r}: {reason}")
            left_out.append((name, f"cannot train model {base.model!r}: {reason}"))
    return kept, left_out


def choose_rules(base: TrainConfig, rules: Sequence[str] | None) -> list[str]:
    """The rules to compare, backprop first: ``rules`` (each named once), or with None every
    registered rule; those that cannot train ``base``'s model are left out, with the reason
    printed (ConfigError if backprop cannot)."""
    return _able(base, _named_rules(rules))[0]


def _takes_feedback_lr(config: TrainConfig, probe) -> bool:
    """Whether rule ``config.rule`` has learned feedback that takes its own learning rate."""
    with torch.random.fork_rng(devices=[]):
        rule = build_rule(dataclasses.replace(config, feedback_lr=None), copy.deepcopy(probe))
    if not rule.feedback_parameters():
        return False
    try:
        rule.param_groups(1.0)
    except ConfigError:
        return False
    return True


def plan_rules(
    base: TrainConfig,
    rules: Sequence[str] | None,
    presets: Presets | None = None,
    overrides: dict[str, RuleSettings] | None = None,
    explicit: dict[str, Any] | None = None,
) -> tuple[list[RulePlan], list[tuple[str, str]]]:
    """Every rule's settings, each checked by building the rule and its optimiser on the model,
    before anything trains: (plans, [(rule left out, why)]). ConfigError for a bad setting."""
    overrides, explicit = overrides or {}, explicit or {}
    names = _named_rules(rules)
    unused = sorted(set(overrides) - set(names))
    if unused:
        note(
            f"the compare configuration's [rules.{unused[0]}] is not used: {unused[0]!r} is "
            "not among the compared rules"
        )
    probe = _probe(base)
    kept, left_out = _able(base, names, probe)
    shared = base.to_dict()
    plans = []
    for name in kept:
        preset = presets.rules.get(name) if presets is not None else None
        override = overrides.get(name)
        values, origins = rule_values(
            shared | ({} if name == base.rule else {"rule_options": {}}),
            name,
            preset,
            override,
            explicit,
        )
        config = make_config(values | {"seed": 0}, owner=f"rule {name!r}")
        if config.feedback_lr is not None and not _takes_feedback_lr(config, probe):
            if origins.get("feedback_lr") in ("preset", "config"):
                raise ConfigError(
                    f"[rules.{name}] sets feedback_lr, but rule {name!r} has no learned feedback "
                    "with a learning rate of its own (drop feedback_lr from its table)"
                )
            config = dataclasses.replace(config, feedback_lr=None)  # the shared one: not for it
        _check_builds(config, probe)
        source = next((t.source for t in (override, preset) if t is not None and t.source), None)
        plans.append(RulePlan(config, origins, source))
    return plans, left_out


def _check_builds(config: TrainConfig, probe) -> None:
    """Build the rule and its optimiser as a run will (ConfigError naming the rule if not)."""
    with torch.random.fork_rng(devices=[]):
        try:
            rule = build_rule(config, copy.deepcopy(probe))
            optimizer = build_optimizer(config, rule)
            rule.check_optimizer(optimizer)
        except ConfigError as error:
            raise ConfigError(f"rule {config.rule!r} with its settings: {error}") from None


def resolve_parallelism(base: TrainConfig, jobs: int, runs: int) -> tuple[int, int]:
    """(runs at once, threads per run): ``jobs`` (0: every usable core on the embedded data
    sets, else 1) and ``base.threads`` (0: 1 on the embedded data sets, else the cores shared
    out among the jobs), so that jobs x threads stays within the cores unless both are given."""
    from ngrad.data.catalog import is_embedded

    cores, small = usable_cores(), is_embedded(base.data)
    if jobs < 0:
        raise ConfigError(f"--jobs must be >= 0 (0: choose), got {jobs}")
    if jobs == 0:
        jobs = cores if small else 1
    jobs = max(1, min(jobs, runs))
    threads = base.threads or (1 if small else max(1, cores // jobs))
    if jobs * threads > cores:
        note(
            f"{jobs} parallel runs x {threads} threads exceed the {cores} usable cores: runs "
            "will slow each other down (lower --jobs or --threads)"
        )
    return jobs, threads


def compare_rules(
    base: TrainConfig,
    rules: Sequence[str] | None,
    seeds: int,
    out_dir: str | Path,
    progress: bool = True,
    overwrite: bool = False,
    *,
    presets: Presets | None = None,
    overrides: dict[str, RuleSettings] | None = None,
    explicit: dict[str, Any] | None = None,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Train each rule for each seed (0..seeds-1) with its settings (``base``'s, the ``presets``'
    table for the rule, ``overrides``' table, then ``explicit``: the flags a user gave); returns
    the records. Runs already finished in ``out_dir`` by the same comparison are kept,
    interrupted ones resumed; ``overwrite`` replaces a comparison with other settings. ``jobs``
    runs at once in separate processes (0: choose by the cores)."""
    out = Path(out_dir)
    plans, left_out = plan_rules(base, rules, presets, overrides, explicit)
    jobs, threads = resolve_parallelism(base, jobs, len(plans) * seeds)
    runs = []
    for seed in range(seeds):
        for plan in plans:
            config = dataclasses.replace(plan.config, seed=seed, threads=threads)
            runs.append((config, out / "runs" / f"{config.rule}-seed{seed}", plan))
    prepare_output_dir(out)
    with RunLock(out):
        if overwrite:
            clear(out)
        else:
            check_directory(out)
        # every directory checked before any is written
        todo = [plan_directory(config, run_dir, out) for config, run_dir, _ in runs]
        context = {
            "environment": environment(base, jobs, threads),
            "presets": presets.origin if presets is not None else "none (shared settings only)",
            "left_out": [{"rule": name, "reason": reason} for name, reason in left_out],
        }
        outcomes = execute(runs, todo, out, jobs, progress, _one_run)
        return _report(base, seeds, out, runs, outcomes, plans, left_out, context)


def _report(base, seeds, out, runs, outcomes, plans, left_out, context) -> list[dict[str, Any]]:
    records, histories = [], {}
    for (config, _, plan), (summary, history) in zip(runs, outcomes, strict=True):
        records.append(make_record(summary, config, plan.origins, plan.source))
        histories.setdefault(config.rule, []).append(history)
    fill_time_ratios(records)
    atomic_write_text(out / "results.json", to_json(records))
    rows = run_statistics(records, [run_dir for _, run_dir, _ in runs])
    tests = {row.rule: row.mcnemar for row in rows or []}
    for record in records:  # the exact McNemar test of the run against bp's run, same seed
        per_seed = tests.get(record["rule"], ())
        found = per_seed[record["seed"]] if record["seed"] < len(per_seed) else None
        record["mcnemar_vs_bp"] = dataclasses.asdict(found) if found is not None else None
    atomic_write_text(out / "results.json", to_json(records))
    context = context | {
        "statistics": [row.as_record() for row in rows] if rows is not None else None
    }
    atomic_write_text(out / "statistics.json", to_json(context))
    text = summary_markdown(base, seeds, records, plans, left_out, rows, context)
    atomic_write_text(out / "summary.md", text)
    _plot(base, seeds, out, histories, rows)
    return records


def _plot(base: TrainConfig, seeds: int, out: Path, histories, rows) -> None:
    drawn = {rule: runs for rule, runs in histories.items() if any(runs)}
    try:
        from ngrad.plots.comparison import plot_comparison
    except ImportError:  # pragma: no cover - the comparison figures' module is optional here
        from ngrad.plots.training import plot_comparison as plain

        plain(drawn, out, base.data)
        return
    budget = f"{base.epochs} epochs, {seeds} seed(s)"
    plot_comparison(drawn, out, base.data, model=base.model, budget=budget, statistics=rows)


def _one_run(config: TrainConfig, run_dir: Path, plan: str, progress: bool):
    if plan == "done":
        return finished(run_dir)
    try:
        if plan == "resume":
            saved = load_run_config(run_dir)
            resumed = dataclasses.replace(saved, epochs=config.epochs)  # its own threads
            result = run_training(resumed, run_dir, resume=True, progress=progress)
        else:
            result = run_training(config, run_dir, overwrite=True, progress=progress)
        return result.summary, result.history
    except (KeyboardInterrupt, StorageError):
        raise
    except DivergenceError as error:
        try:
            return finished(run_dir)  # its summary.json says where, with the numbers so far
        except (OSError, ValueError, KeyError):
            return _failed_summary(config, error) | {"status": "diverged"}, []
    except Exception as error:  # one failing rule must not lose the others' results
        return _failed_summary(config, error), []


def _failed_summary(config: TrainConfig, error: Exception) -> dict[str, Any]:
    return {
        "status": "error",
        "status_reason": str(error) or type(error).__name__,
        "rule": config.rule,
        "model": config.model,
        "dataset": config.data,
        "seed": config.seed,
    }
