"""Hyperparameter search for one rule at a time, on an equal trial budget, with Optuna.

A trial trains the rule with settings drawn from its search space (:mod:`ngrad.train.tune_space`)
and is worth its best validation accuracy over the epochs. The test split is never evaluated (the
trial's session does not even hold a loader for it). After each epoch the trial reports its
validation accuracy, and the pruner stops hopeless trials early (MedianPruner by default, or
Hyperband). The sampler is TPE, seeded: trial ``k`` of a study draws from seed ``seed + k``, so a
sequential search is reproducible and parallel workers never draw the same points.

Each (rule, data, model) has its own study in an Optuna storage: an SQLite file by default, or any
database URL, which lets workers on many machines share the study. ``trials`` counts the study's
completed and pruned trials: a worker runs only what is missing, so an interrupted search resumes
from its storage. A trial left running by a killed worker on this machine is marked failed and
its settings are tried again once; on another machine the storage's heartbeat does the same after
a grace period. docs/tuning.md describes the search and the recipe for a cluster.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ngrad.data import load_dataset
from ngrad.errors import ConfigError, DivergenceError
from ngrad.rules import available_rules, get_rule_class
from ngrad.train.build import build_network, build_optimizer, build_rule, unsupported_reason
from ngrad.train.config import TrainConfig, make_config
from ngrad.train.loop import prepare_output_dir
from ngrad.train.runs import note
from ngrad.train.session import TrainingSession, evaluate
from ngrad.train.tune_output import write_outputs
from ngrad.train.tune_space import SHARED_SETTINGS, SearchSpace, search_space, split_parameters
from ngrad.train.tune_study import (
    RuleStudy,
    TrialSeededSampler,
    as_sampler,
    hide_password,
    import_optuna,
    make_pruner,
    open_storage,
    quiet_optuna,
    recover_killed_trials,
)

__all__ = [
    "TuneResult",
    "choose_rules",
    "plan_search",
    "rule_space",
    "run_study",
    "study_identity",
    "trial_config",
    "tune",
]

# settings that may differ between the workers of one study (where each finds its data and device)
_WORKER_SETTINGS = (
    "device",
    "threads",
    "data_dir",
    "download",
    "tensorboard",
    "diagnostics_samples",
)


def trial_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """``base`` with a trial's parameters (shared settings and rule options) put in."""
    settings, options = split_parameters(params)
    values = base.to_dict() | settings
    values["rule_options"] = {**base.rule_options, **options}
    return make_config(values, owner=f"trial of rule {base.rule!r}")


def study_identity(base: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """What a study's trials must share: the settings (less where a worker finds its data and
    device) and the searched parameters. Stored with the study and checked by every worker."""
    settings = {k: v for k, v in base.to_dict().items() if k not in _WORKER_SETTINGS}
    return json.loads(
        json.dumps({"settings": settings, "searched": sorted(space.parameters())}, default=str)
    )


def _run_trial(trial, base: TrainConfig, space: SearchSpace, on_epoch=None) -> float:
    """Train one point of ``space``; report validation accuracy per epoch (to Optuna, and to
    ``on_epoch(epoch, accuracy)`` if given); return the best."""
    optuna = import_optuna()
    config = trial_config(base, space.suggest(trial))
    session = TrainingSession(config, None)
    session.batches.pop("test", None)  # tuning selects on validation: test is never read
    best = 0.0
    history = []
    for epoch in range(1, config.epochs + 1):
        try:
            session.train_epoch(None)
        except DivergenceError:
            trial.set_user_attr("status", "diverged")
            trial.set_user_attr("val_accuracy", history)
            return 0.0  # worse than any run that learns: the sampler moves away from it
        session.epoch = epoch
        _, accuracy = evaluate(session.rule, session.batches["val"], prepare=session.prepare)
        history.append(accuracy)
        best = max(best, accuracy)
        trial.set_user_attr("val_accuracy", history)
        trial.report(accuracy, epoch)
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
        if epoch < config.epochs and trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {accuracy:.4f} at epoch {epoch}")
    trial.set_user_attr("best_epoch", history.index(best) + 1)
    return best


def run_study(
    base: TrainConfig,
    space: SearchSpace,
    storage,
    study_name: str,
    trials: int,
    *,
    pruner: Any = "median",
    progress: bool = True,
) -> RuleStudy:
    """Bring the study ``study_name`` of ``base.rule`` to ``trials`` completed and pruned trials
    (fewer only while other workers still run theirs); returns it."""
    with quiet_optuna() as optuna:
        if isinstance(pruner, str):
            pruner = make_pruner(pruner, base.epochs)
        sampler = as_sampler(TrialSeededSampler(base.seed, min(10, max(2, trials // 3))))
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        _check_identity(study, study_name, study_identity(base, space))
        killed = recover_killed_trials(study)
        if killed:
            note(f"study {study_name!r}: {killed} trial(s) of a killed worker will be tried again")
        result = RuleStudy(base.rule, study_name, study, trials)
        _optimise(result, base, space, progress, optuna)
    return result


def _check_identity(study, name: str, identity: dict[str, Any]) -> None:
    saved = study.user_attrs.get("ngrad")
    if saved is None:
        if study.get_trials(deepcopy=False):
            raise ConfigError(f"study {name!r} holds trials that ngrad tune did not make")
        study.set_user_attr("ngrad", identity)
        return
    for key in sorted(set(saved["settings"]) | set(identity["settings"])):
        there, here = saved["settings"].get(key), identity["settings"].get(key)
        if there != here:
            raise ConfigError(
                f"study {name!r} in this storage tunes with {key} = {there!r}, not {here!r}; "
                "give the settings it was started with, or another --study-name"
            )
    if saved["searched"] != identity["searched"]:
        raise ConfigError(
            f"study {name!r} in this storage searches {', '.join(saved['searched'])}, not "
            f"{', '.join(identity['searched'])}; give the same fixed settings, or another "
            "--study-name"
        )


class BudgetFilledError(Exception):
    """A trial started after other workers' trials had filled the budget: it is not run."""


def _optimise(result: RuleStudy, base: TrainConfig, space: SearchSpace, progress, optuna) -> None:
    running = optuna.trial.TrialState.RUNNING
    host, pid = socket.gethostname(), os.getpid()

    def taken() -> int:  # trials counted, plus those other workers are running
        return result.done + len(result.study.get_trials(deepcopy=False, states=(running,)))

    def objective(trial) -> float:
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
        if result.ahead_of(trial.number) >= result.budget:  # another worker filled it just now
            trial.set_user_attr("status", "surplus")
            result.study.stop()
            raise BudgetFilledError(f"the study has its {result.budget} trials")

        def shown(epoch: int, accuracy: float) -> None:
            bar.set_postfix_str(
                f"trial {trial.number}: epoch {epoch}/{base.epochs}, val {accuracy:.4f}"
                + (f"; best {best.value:.4f}" if (best := result.best_trial()) else "")
            )

        try:
            return _run_trial(trial, base, space, shown)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise

    bar = tqdm(
        total=result.budget,
        initial=min(result.done, result.budget),
        desc=f"tune {base.rule}",
        unit="trial",
        disable=not progress,
        leave=False,
    )

    def after(study, frozen) -> None:
        bar.n = min(result.done, result.budget)
        best = result.best_trial()
        if best is not None:
            bar.set_postfix_str(f"best val {best.value:.4f}")
        bar.refresh()
        if taken() >= result.budget:
            study.stop()

    try:
        if taken() < result.budget:
            result.study.optimize(
                objective,
                n_trials=result.budget - result.done,
                callbacks=[after],
                catch=(BudgetFilledError,),
            )
    finally:
        bar.close()


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` did: where it wrote, the storage, and each tuned rule's study with the
    settings its trials start from."""

    out: Path
    storage: str
    studies: list[tuple[RuleStudy, TrainConfig]]


def choose_rules(values: dict[str, Any], rules: Sequence[str] | None) -> tuple[list, dict]:
    """(rules to tune, {rule left out: why}): ``rules`` each named once, all of which must train
    the model; with None every registered rule that can."""
    if rules is None:
        chosen, explicit = available_rules(), False
    else:
        chosen, explicit = list(rules), True
        if not chosen:
            raise ConfigError("--rules names no rule; give comma-separated names, e.g. fa,dfa")
        repeated = [name for name in chosen if chosen.count(name) > 1]
        if repeated:
            raise ConfigError(f"--rules names {repeated[0]!r} more than once")
        for name in chosen:
            get_rule_class(name)  # unknown names fail before any training
    base = make_config({**values, "rule": chosen[0]})
    with torch.random.fork_rng(devices=[]):  # the probe draws no trial's random numbers
        probe = build_network(base, load_dataset(base.data, base.data_dir, base.download))
    kept, left_out = [], {}
    for name in chosen:
        reason = unsupported_reason(name, probe)
        if reason is None:
            kept.append(name)
        elif explicit:
            raise ConfigError(f"rule {name!r} cannot train model {base.model!r}: {reason}")
        else:
            left_out[name] = reason
    return kept, left_out


def rule_space(config: TrainConfig, fixed: frozenset[str]) -> SearchSpace:
    """What is searched for ``config.rule``, found on the rule built on the model."""
    with torch.random.fork_rng(devices=[]):
        data = load_dataset(config.data, config.data_dir, config.download)
        rule = build_rule(config, build_network(config, data))
    rule.check_optimizer(build_optimizer(config, rule))  # e.g. Kolen-Pollack needs plain SGD
    space = search_space(config, rule, fixed)
    if not space.parameters():
        raise ConfigError(
            f"nothing to search for rule {config.rule!r}: every setting it tunes is held fixed"
        )
    return space


def plan_search(
    values: dict[str, Any], rules: Sequence[str] | None
) -> tuple[dict[str, Any], list[tuple[TrainConfig, SearchSpace]]]:
    """(the settings the trials start from, [(each rule's settings, what is searched for it)]),
    every rule checked before any trial; rules that cannot train the model are named in a note
    (with ``rules`` None) or refused (named in ``rules``)."""
    values = dict(values)
    if rules is None and "rule" in values:
        rules = [values["rule"]]
    if rules is not None and len(rules) > 1 and values.get("rule_options"):
        raise ConfigError("--rule-option applies to one rule; tune a single rule with it")
    values.setdefault("diagnostics_samples", 0)  # trials need no angles to backprop
    fixed = frozenset(key for key in SHARED_SETTINGS if key in values)
    chosen, left_out = choose_rules(values, rules)
    plan = []
    for name in chosen:
        base = make_config({**values, "rule": name})
        try:
            plan.append((base, rule_space(base, fixed)))
        except ConfigError as error:
            if rules is not None:
                raise
            left_out[name] = str(error)
    for name, reason in left_out.items():
        note(f"leaving out rule {name!r}: {reason}")
    if not plan:
        raise ConfigError("no rule can be tuned with these settings (see the notes above)")
    return values, plan


def tune(
    values: dict[str, Any],
    rules: Sequence[str] | None,
    trials: int,
    out: str | Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    pruner: Any = "median",
    progress: bool = True,
    plots: bool = True,
) -> TuneResult:
    """Tune each of ``rules`` (None: every rule that can train the model) with ``trials``
    completed and pruned trials, on the run settings ``values`` (a mapping as ``make_config``
    takes; a shared setting given there is held fixed, not searched), and write the presets,
    trials.csv and plots into ``out``. ``storage`` is a database URL (default: an SQLite file
    ``out/study.db``); each rule's study is named ``<study_name>/<rule>`` (default study name
    ``ngrad-<data>-<model>``)."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    import_optuna()
    values, plan = plan_search(values, rules)
    out = Path(out)
    prepare_output_dir(out)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    opened = open_storage(url)
    first = plan[0][0]
    prefix = study_name or f"ngrad-{first.data}-{first.model}"
    studies: list[tuple[RuleStudy, TrainConfig]] = []
    for base, space in plan:
        study = run_study(
            base, space, opened, f"{prefix}/{base.rule}", trials, pruner=pruner, progress=progress
        )
        studies.append((study, base))
        plot = [(study, base)] if plots else []
        write_outputs(out, studies, frozenset(values), trials, plot=plot)
    return TuneResult(out, hide_password(url), studies)
