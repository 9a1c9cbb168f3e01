"""What ``ngrad tune`` writes: the best settings as a preset file, every trial as CSV, plots.

- ``presets.toml``: one ``[rules.<rule>]`` table per tuned rule with the best trial's settings (the
  searched ones, the epochs, and the per-rule settings the user held fixed) and its rule options,
  in the format ``ngrad compare --presets FILE`` reads;
- ``trials.csv``: one row per trial of every tuned rule (state, validation accuracy, parameters);
- ``plots/<rule>_history.png`` and ``plots/<rule>_importance.png``: the optimisation history and,
  once two trials have completed, the parameter importances (fANOVA).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ngrad.options import build_options
from ngrad.rules import get_rule_class
from ngrad.train.checkpoint import atomic_write_text
from ngrad.train.compare_config import PER_RULE_KEYS
from ngrad.train.config import TrainConfig
from ngrad.train.runs import warn
from ngrad.train.tune_space import split_parameters
from ngrad.train.tune_study import RuleStudy, quiet_optuna

__all__ = ["preset_text", "write_outputs", "write_plots", "write_presets", "write_trials_csv"]


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (floats exactly as Python writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"a preset cannot hold {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"a preset cannot hold {value!r}")


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)


def rule_table(study: RuleStudy, base: TrainConfig, given: frozenset[str]) -> str | None:
    """The ``[rules.<rule>]`` table of the best trial of ``study`` (None without one): the
    searched settings, the epochs, and the per-rule settings in ``given`` (set by the user)."""
    best = study.best_trial()
    if best is None:
        return None
    settings, options = split_parameters(best.params)
    values = {key: getattr(base, key) for key in PER_RULE_KEYS if key in given}
    values["epochs"] = base.epochs
    values.update(settings)
    options = {**base.rule_options, **options}
    typed = build_options(get_rule_class(base.rule).Options, options, f"rule {base.rule!r}")
    counts = study.counts()
    source = (
        f"tuned with ngrad tune on {base.data} ({base.model}), "
        f"{counts.get('COMPLETE', 0) + counts.get('PRUNED', 0)} trials "
        f"({counts.get('PRUNED', 0)} pruned), TPE, best val acc {best.value:.4f} "
        f"(trial {best.number})"
    )
    lines = [f"[rules.{_key(base.rule)}]", f"source = {toml_value(source)}"]
    for key in PER_RULE_KEYS:
        if key in values and values[key] is not None:
            lines.append(f"{key} = {toml_value(_plain(values[key]))}")
    if options:
        lines.append("")
        lines.append(f"[rules.{_key(base.rule)}.options]")
        for key in options:
            lines.append(f"{_key(key)} = {toml_value(_plain(getattr(typed, key)))}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _model(config: TrainConfig) -> str:
    if config.model == "mlp":
        widths = ",".join(map(str, config.hidden))
        return f"mlp (hidden {widths}, {config.activation}, init {config.init})"
    options = ", ".join(f"{key} {value}" for key, value in config.model_options.items())
    return f"{config.model} ({options})" if options else config.model


def preset_text(
    studies: Sequence[tuple[RuleStudy, TrainConfig]], given: frozenset[str], trials: int
) -> str:
    """The preset file for the best trial of each study (rules without a completed trial are
    named in a comment)."""
    first = studies[0][1]
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Presets tuned by `ngrad tune` on data set {first.data}, model {_model(first)}:",
        f"# {trials} trials per rule (completed and pruned), {first.epochs} epochs each, TPE;",
        "# each rule's settings are those of its best validation accuracy (test never seen).",
        f"# Trials ran with seed {first.seed}, batch size {first.batch_size}, optimizer "
        f"{first.optimizer}, normalize {first.normalize}"
        + (f", the first {first.train_subset} training samples." if first.train_subset else "."),
        f"# Written {today}. Use them with `ngrad compare --presets FILE`.",
        f"data = {toml_value(first.data)}",
        f"model = {toml_value(first.model)}",
    ]
    missing = []
    for study, base in studies:
        table = rule_table(study, base, given)
        if table is None:
            missing.append(study.rule)
            continue
        lines += ["", table]
    if missing:
        lines += ["", f"# no completed trial yet, so no settings: {', '.join(missing)}"]
    return "\n".join(lines) + "\n"


def write_presets(
    path: Path,
    studies: Sequence[tuple[RuleStudy, TrainConfig]],
    given: frozenset[str],
    trials: int,
) -> None:
    atomic_write_text(path, preset_text(studies, given, trials))


def write_trials_csv(path: Path, studies: Sequence[RuleStudy]) -> None:
    """One row per trial of every study: rule, number, state, value, duration, parameters."""
    rows, names = [], []
    for study in studies:
        for trial in study.study.get_trials(deepcopy=False):
            params = {f"param_{key}": value for key, value in trial.params.items()}
            names += [name for name in params if name not in names]
            duration = trial.duration.total_seconds() if trial.duration is not None else None
            curve = trial.user_attrs.get("val_accuracy", [])
            rows.append(
                {
                    "rule": study.rule,
                    "study": study.name,
                    "number": trial.number,
                    "state": trial.state.name,
                    "best_val_accuracy": trial.value,
                    "epochs_trained": len(curve),
                    "status": trial.user_attrs.get("status", ""),
                    "duration_s": duration,
                    **params,
                }
            )
    header = [
        "rule",
        "study",
        "number",
        "state",
        "best_val_accuracy",
        "epochs_trained",
        "status",
        "duration_s",
        *names,
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_plots(folder: Path, study: RuleStudy, data: str) -> list[Path]:
    """The optimisation history and (with two completed trials or more) the parameter
    importances of ``study``; returns the files written."""
    from ngrad.plots.tuning import plot_history, plot_importances

    folder.mkdir(parents=True, exist_ok=True)
    trials = study.study.get_trials(deepcopy=False)
    title = f"{study.rule} on {data}"
    written = [plot_history(trials, folder / f"{study.rule}_history.png", title)]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return written
    with quiet_optuna() as optuna:
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=0)
            importances = optuna.importance.get_param_importances(study.study, evaluator=evaluator)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            warn(f"no parameter importances for {study.rule}: {error}")
            return written
    if importances:
        written.append(
            plot_importances(importances, folder / f"{study.rule}_importance.png", title)
        )
    return written


def write_outputs(
    out: Path,
    studies: Sequence[tuple[RuleStudy, TrainConfig]],
    given: frozenset[str],
    trials: int,
    plot: Sequence[tuple[RuleStudy, TrainConfig]] = (),
) -> None:
    """presets.toml and trials.csv of ``studies`` into ``out``, and the plots of those in
    ``plot``; ``given``: the settings the user set (the per-rule ones go into the presets)."""
    write_presets(out / "presets.toml", studies, given, trials)
    write_trials_csv(out / "trials.csv", [study for study, _ in studies])
    for study, base in plot:
        write_plots(out / "plots", study, base.data)
