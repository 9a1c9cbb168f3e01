"""The runs of ``ngrad compare``: what to do with each run's directory (train, resume, keep),
and running them one after another or in worker processes."""

from __future__ import annotations

import json
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ngrad.errors import NgradError
from ngrad.train import integrity
from ngrad.train.checkpoint import StorageError, atomic_write_text, to_json
from ngrad.train.compare_report import make_record
from ngrad.train.config import TrainConfig
from ngrad.train.runs import (
    LOCK_NAME,
    RUN_FILES,
    is_temporary,
    load_run_config,
    read_metrics,
    remove_files,
)
from ngrad.train.runs import warn as _warn

__all__ = ["COMPARE_FILES", "CONTINUE", "check_directory", "clear", "execute", "finished", "plan"]

COMPARE_FILES = (
    "results.json",
    "statistics.json",
    "summary.md",
    "accuracy.png",
    "learning_curves.png",
    "angles.png",
)
CONTINUE = "re-run the same `ngrad compare` command to continue"


def execute(runs, todo, out: Path, jobs: int, progress: bool, one_run) -> list:
    """Each run's (summary, history) by ``one_run(config, run_dir, plan, progress)``, in the
    order of ``runs``; ``jobs`` > 1 runs them in that many worker processes."""
    outcomes: list = [None] * len(runs)

    def keep(index: int, outcome) -> None:
        outcomes[index] = outcome
        finished = [
            make_record(o[0], r[0], r[2].origins, r[2].source)
            for o, r in zip(outcomes, runs, strict=True)
            if o is not None
        ]
        atomic_write_text(out / "results.json", to_json(finished))

    with tqdm(total=len(runs), desc="compare", unit="run", disable=not progress) as bar:
        try:
            if jobs == 1:
                for index, ((config, run_dir, _), plan) in enumerate(zip(runs, todo, strict=True)):
                    bar.set_postfix(rule=config.rule, seed=config.seed)
                    keep(index, one_run(config, run_dir, plan, progress))
                    bar.update(1)
            else:
                _execute_parallel(runs, todo, jobs, keep, bar, one_run)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"{CONTINUE}: finished runs are kept, the interrupted ones resume"
            ) from None
        except StorageError as error:
            hint = f"free some space, then {CONTINUE}"
            raise StorageError(error.path, error.reason, hint) from None
    return outcomes


def _execute_parallel(runs, todo, jobs: int, keep, bar, one_run) -> None:
    context = get_context("spawn")  # a fresh interpreter per worker: no inherited torch state
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {
            pool.submit(one_run, config, run_dir, plan, False): index
            for index, ((config, run_dir, _), plan) in enumerate(zip(runs, todo, strict=True))
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    keep(futures[future], future.result())
                    bar.update(1)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def plan(config: TrainConfig, run_dir: Path, compare_dir: Path) -> str:
    """What to do with one run's directory: "new", "done", "resume" or "restart"; NgradError if it
    holds a run with other settings (another comparison)."""
    present = [p for p in run_dir.iterdir() if p.name != LOCK_NAME] if run_dir.is_dir() else []
    if not present:
        return "new"
    where = str(compare_dir)
    refuse = (
        f"{where!r} holds another comparison ({run_dir.name}: {{}}); re-run the command that made "
        "it, choose another --out, or pass --overwrite to replace it"
    )
    try:
        saved = load_run_config(run_dir)
    except NgradError as error:
        raise NgradError(refuse.format(error)) from None
    difference = integrity.identity_difference(integrity.identity(saved), config)
    if difference:
        key, there, here = difference
        raise NgradError(refuse.format(f"{key} {there!r} there, {here!r} now"))
    if saved.epochs > config.epochs:
        raise NgradError(refuse.format(f"{saved.epochs} epochs there, {config.epochs} now"))
    try:
        status = json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "diverged" or (
        status in ("completed", "failed") and saved.epochs == config.epochs
    ):
        return "done"
    return "resume" if (run_dir / "checkpoint.pt").is_file() else "restart"


def finished(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and history of a run finished in an earlier invocation."""
    summary = json.loads((run_dir / "summary.json").read_text())
    try:
        history = read_metrics(run_dir / "metrics.jsonl", summary["epochs_completed"])
    except (NgradError, KeyError, TypeError) as error:
        _warn(f"{run_dir.name}: its history cannot be plotted ({error})")
        history = []
    return summary, history


def clear(out: Path) -> None:
    """Remove an earlier comparison's outputs from ``out`` (for ``overwrite``)."""
    remove_files(out, COMPARE_FILES)
    runs = out / "runs"
    if runs.is_dir():
        for run_dir in runs.iterdir():
            if run_dir.is_dir():
                remove_files(run_dir, RUN_FILES)


def check_directory(out: Path) -> None:
    known = {*COMPARE_FILES, "runs", LOCK_NAME}
    strangers = [p.name for p in out.iterdir() if p.name not in known and not is_temporary(p)]
    if strangers:
        raise NgradError(
            f"{str(out)!r} holds files that no comparison writes ({', '.join(strangers[:4])}): "
            "choose another --out, or pass --overwrite to replace the comparison files in it"
        )
