"""Optuna's side of ``ngrad tune``: the storage, the seeded sampler, the pruners, one rule's study
and the recovery of trials that a killed worker left behind.

Optuna is imported only when a function here needs it, so the rest of ngrad works without it;
:func:`import_optuna` says how to install it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ngrad.errors import ConfigError, NgradError

__all__ = [
    "GRACE_S",
    "HEARTBEAT_S",
    "PRUNERS",
    "RuleStudy",
    "TrialSeededSampler",
    "as_sampler",
    "hide_password",
    "import_optuna",
    "make_pruner",
    "open_storage",
    "quiet_optuna",
    "recover_killed_trials",
    "retry_trial",
]

HEARTBEAT_S, GRACE_S = 30, 120  # a worker silent for GRACE_S seconds is taken for dead
PRUNERS = ("median", "hyperband", "none")
OPEN_ATTEMPTS = 5  # tries to open a storage, against workers creating its tables at once


def import_optuna():
    """The ``optuna`` module, or a ConfigError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("ngrad tune needs Optuna: pip install 'ngrad[tune]'") from None
    return optuna


@contextlib.contextmanager
def quiet_optuna() -> Iterator[Any]:
    """Optuna without its per-trial log lines (ngrad reports what matters itself) and warnings
    about experimental features."""
    optuna = import_optuna()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # ngrad reports failures itself
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
            yield optuna
    finally:
        optuna.logging.set_verbosity(verbosity)


def hide_password(url: str) -> str:
    """``url`` as it may be printed: any password replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def open_storage(url: str):
    """Optuna's RDB storage at ``url`` (sqlite:///FILE, postgresql://..., mysql://...), with a
    heartbeat so that the trials of a dead worker are failed and tried again."""
    optuna = import_optuna()
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

    shown = hide_password(url)
    parameters = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = (  # renamed in Optuna 4.9
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in parameters
        else "failed_trial_callback"
    )
    try:
        for attempt in range(OPEN_ATTEMPTS):
            try:
                with quiet_optuna():
                    return optuna.storages.RDBStorage(
                        url,
                        heartbeat_interval=HEARTBEAT_S,
                        grace_period=GRACE_S,
                        **{callback: retry_trial},
                    )
            except (OperationalError, IntegrityError):  # workers racing to create the tables
                if attempt == OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 + random.random() * (attempt + 1))
    except ArgumentError as error:
        raise ConfigError(
            f"--storage {shown!r} is not a database URL Optuna can use (e.g. sqlite:///study.db, "
            f"postgresql://user@host/db): {str(error).splitlines()[0]}"
        ) from None
    except ImportError:
        raise ConfigError(
            f"--storage {shown!r} needs the Python driver of its database (e.g. psycopg2 for "
            "postgresql, pymysql for mysql+pymysql); install it"
        ) from None
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise NgradError(f"cannot open the storage {shown!r}: {reason}") from None


def retry_trial(study, trial) -> None:
    """Try the settings of an interrupted ``trial`` once more (a retry is not retried)."""
    if "retry_of" in trial.user_attrs or not trial.params:
        return
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    if trial.number not in retried:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


class TrialSeededSampler:
    """TPE whose random draws for trial ``k`` come from seed ``seed + k``.

    Trial numbers are unique within a study, so workers sharing a study never propose the same
    points, and a sequential search is reproducible (the same history gives the same proposals).
    Optuna's own interface (``optuna.samplers.BaseSampler``) is delegated to one TPE per trial.
    """

    def __init__(self, seed: int, n_startup_trials: int) -> None:
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._samplers: dict[int, Any] = {}

    def _for(self, trial) -> Any:
        sampler = self._samplers.get(trial.number)
        if sampler is None:
            optuna = import_optuna()
            sampler = optuna.samplers.TPESampler(
                seed=(self.seed + trial.number) % 2**32,
                n_startup_trials=self.n_startup_trials,
                multivariate=True,
                constant_liar=True,
            )
            self._samplers[trial.number] = sampler
        return sampler

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's draws are already seeded by its number."""


def as_sampler(sampler: TrialSeededSampler):
    """``sampler`` as an ``optuna.samplers.BaseSampler`` (registered as a virtual subclass)."""
    optuna = import_optuna()
    optuna.samplers.BaseSampler.register(TrialSeededSampler)
    return sampler


def make_pruner(name: str, epochs: int):
    """The pruner ``name`` (median, hyperband or none) for trials of ``epochs`` epochs."""
    optuna = import_optuna()
    if name == "median":  # from the second epoch on, once five trials have finished
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min(2, epochs))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; one of: {', '.join(PRUNERS)}")


@dataclass
class RuleStudy:
    """One rule's study: its name and state after this worker's share of the budget."""

    rule: str
    name: str
    study: Any
    budget: int

    def counts(self) -> dict[str, int]:
        """How many trials the study holds in each state (COMPLETE, PRUNED, RUNNING, ...)."""
        counts: dict[str, int] = {}
        for trial in self.study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts

    @property
    def done(self) -> int:
        counts = self.counts()
        return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)

    def ahead_of(self, number: int) -> int:
        """Trials numbered below ``number`` that count or may count: completed, pruned, running.
        Trial numbers are handed out in order by the storage, so when workers start trials at
        the same moment, the lower numbers take the budget and the others stand down."""
        counting = ("COMPLETE", "PRUNED", "RUNNING")
        trials = self.study.get_trials(deepcopy=False)
        return sum(t.number < number and t.state.name in counting for t in trials)

    def best_trial(self):
        """The completed trial of highest validation accuracy, or None."""
        complete = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        return max(complete, key=lambda t: (t.value, -t.number), default=None)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_killed_trials(study) -> int:
    """Mark failed the running trials whose worker on this machine is gone (killed), and queue
    their settings (and those of trials interrupted with Ctrl-C) for one more try."""
    optuna = import_optuna()
    host, killed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == host and not _alive(attrs.get("pid")):
            storage, trial_id = study._storage, trial._trial_id  # Optuna has no public setter
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
            killed += 1
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if trial.user_attrs.get("interrupted"):
            retry_trial(study, trial)
    return killed
