"""The training loop: any rule, any optimiser, never asking which rule it runs.

``run_training(config, out_dir)`` trains ``config.rule`` and writes into ``out_dir``:

- ``config.json``: the full configuration (``ngrad train --config`` accepts it back);
- ``environment.json``: torch version, thread count and device of every session (start, resumes);
- ``metrics.jsonl``: one JSON line per epoch (epoch 0 = before training): losses and accuracies on
  the train/validation/test splits, per-layer angles of the update and of the error signals to
  backprop, error sizes across depth, weight alignment, the rule's own diagnostics, epoch time;
- ``checkpoint.pt``: the latest state (network, feedback pathway, optimiser, learning-rate
  schedule, random-number state, the settings and data it belongs to), atomic, loadable with
  ``torch.load(weights_only=True)``; ``--resume`` continues from it;
- ``best.pt``: the rule's state at the best validation accuracy (model selection never sees test);
- ``test_correct.npy``: per test sample, whether that state classifies it correctly (the paired
  tests of ``ngrad compare``);
- ``summary.json`` (status: completed, diverged, failed, interrupted or error, with the reason)
  and PNG plots (learning curves, angles to BP, weight alignment).

The directory is locked while the run writes to it, and a new run refuses a directory that holds
files unless ``overwrite`` is set. docs/runs.md describes the directory, resuming and the statuses.

Launched by ``torchrun``, every process trains its share of each batch
(:mod:`ngrad.train.distributed`); rank 0 alone writes the directory, and the others read a
resumed run's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ngrad.errors import ConfigError, DivergenceError, NgradError
from ngrad.train import distributed, integrity
from ngrad.train.checkpoint import (
    StorageError,
    atomic_write_text,
    load_checkpoint,
    to_json,
)
from ngrad.train.config import TrainConfig
from ngrad.train.runs import (
    RUN_FILES,
    RunLock,
    claim_directory,
    load_run_config,
    note,
    read_metrics,
    record_environment,
    remove_files,
    warn,
)
from ngrad.train.session import TrainingSession, build_network, build_optimizer, evaluate
from ngrad.train.verdict import judge

__all__ = ["RunResult", "build_network", "build_optimizer", "evaluate", "run_training"]


@dataclass(frozen=True)
class RunResult:
    out_dir: Path | None
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def prepare_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it is writable, before any work is done."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".ngrad-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise NgradError(f"output directory {str(out_dir)!r} is not writable: {reason}") from None


def _resume(config: TrainConfig, out: Path) -> TrainingSession:
    """The run saved in ``out``, every file checked before anything is written."""
    checkpoint = out / "checkpoint.pt"
    if not checkpoint.is_file():
        raise NgradError(
            f"{str(out)!r} has no checkpoint.pt: the run stopped before its first checkpoint, "
            "so there is nothing to resume; start it again with --overwrite"
        )
    saved = load_run_config(out)
    there, here = saved.to_dict(), config.to_dict()
    changed = [key for key in here if key != "epochs" and there.get(key) != here[key]]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"--resume continues the run as its config.json describes it ({key} "
            f"{there.get(key)!r} there, {here[key]!r} asked for); only --epochs may change"
        )
    if config.epochs != saved.epochs and saved.lr_schedule == "cosine":
        raise ConfigError(
            f"the run in {str(out)!r} anneals its learning rate to 0 over its {saved.epochs} "
            "epochs (lr_schedule 'cosine'), so --epochs cannot change it; start a new run"
        )
    try:
        state = load_checkpoint(checkpoint, map_location=config.device)
    except NgradError as error:
        hint = "it cannot be resumed: start the run again with --overwrite"
        raise NgradError(f"{error}; {hint}") from None
    run = TrainingSession(config, out)
    run.restore(state, checkpoint)
    if config.epochs < run.epoch:
        raise ConfigError(
            f"the run in {str(out)!r} has already trained {run.epoch} epochs; "
            f"--epochs must be at least {run.epoch}"
        )
    run.history = read_metrics(out / "metrics.jsonl", run.epoch)
    # everything checked: from here on the directory is written
    lines = "".join(to_json(line, indent=None) + "\n" for line in run.history)
    atomic_write_text(out / "metrics.jsonl", lines)  # drops lines past the checkpoint
    if config.epochs != saved.epochs:
        atomic_write_text(out / "config.json", to_json(config.to_dict()))
        note(f"extending the run in {str(out)!r} from {saved.epochs} to {config.epochs} epochs")
    elif run.epoch >= config.epochs:
        note(
            f"the run in {str(out)!r} has trained all its {config.epochs} epochs; pass a larger "
            "--epochs to train it longer"
        )
    record_environment(out, config.device, run.epoch, resume=True)
    return run


def run_training(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train ``config.rule``; with ``resume``, continue the run saved in ``out_dir`` (``config``
    must be its saved configuration; only ``epochs`` may be larger). A new run refuses an
    ``out_dir`` that holds files, unless ``overwrite`` (which removes the old run's files).

    Returns the result whatever the verdict (``summary["status"]``); raises DivergenceError on a
    non-finite loss, NgradError on unusable run files, StorageError when a write fails."""
    out = Path(out_dir) if out_dir is not None else None
    distributed.setup(config.device)
    distributed.check_batch_size(config.batch_size)
    if not distributed.is_main_process():  # rank 0 writes; the others only train with it
        return _execute(_follower(config, out, resume), False, None)
    if out is None:
        if resume:
            raise ConfigError("resuming needs the run's output directory")
        return _execute(TrainingSession(config, None), progress, on_epoch)
    if resume and not (out / "config.json").is_file():
        raise NgradError(f"{str(out)!r} is not a run directory: no config.json")
    prepare_output_dir(out)
    with RunLock(out):
        try:
            if resume:
                run = _resume(config, out)
            else:
                claim_directory(out, overwrite)
                run = TrainingSession(config, out)
                remove_files(out, RUN_FILES)  # only when overwriting: the directory was empty
                atomic_write_text(out / "config.json", to_json(config.to_dict()))
                record_environment(out, config.device, 0, resume=False)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                "training had not started; run the same command again"
            ) from None
        return _execute(run, progress, on_epoch)


def _follower(config: TrainConfig, out: Path | None, resume: bool) -> TrainingSession:
    """The session of a process other than rank 0: it writes nothing, and on resume reads the
    checkpoint rank 0 resumes from (on several machines, the run directory must be shared)."""
    run = TrainingSession(config, None)
    if resume and out is not None:
        checkpoint = out / "checkpoint.pt"
        run.restore(load_checkpoint(checkpoint, map_location=run.device), checkpoint)
        run.history = read_metrics(out / "metrics.jsonl", run.epoch)
    return run


def _execute(run: TrainingSession, progress: bool, on_epoch) -> RunResult:
    config, out = run.config, run.out_dir
    steps_per_epoch = run.steps_per_epoch
    model = "" if config.model == "mlp" else f" ({config.model})"
    label = f"{config.rule}{model} on {config.data} (seed {config.seed})"
    bar = tqdm(
        total=steps_per_epoch * config.epochs,
        initial=steps_per_epoch * run.epoch,
        desc=label,
        unit="step",
        disable=not progress,
        leave=False,
    )
    status, reason, failing = "error", None, True
    try:
        if out is not None and config.tensorboard:
            run.open_tensorboard()
        if run.epoch == 0 and not run.history:
            run.record(run.measure(0, None))
        while run.epoch < config.epochs:
            bar.set_description(f"{label}: epoch {run.epoch + 1}/{config.epochs}")
            train_metrics = run.train_epoch(bar)
            run.epoch += 1
            line = run.measure(run.epoch, train_metrics)
            run.record(line)
            bar.set_postfix(loss=f"{line['train_loss']:.3f}", val=f"{line['val_accuracy']:.3f}")
            if on_epoch is not None:
                on_epoch(line)
        status, reason = judge(run.history, run.chance)
        failing = False
    except DivergenceError as error:
        status, reason = "diverged", str(error)
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        if out is None:
            raise
        raise KeyboardInterrupt(_continue_hint(out)) from None
    except StorageError as error:
        failure = StorageError(
            error.path, error.reason, f"free some space, then {_continue_hint(out)}"
        )
        reason = str(failure)
        raise failure from None
    except Exception as error:
        if integrity.is_out_of_memory(error):
            failure = integrity.out_of_memory(config, run.data)
            reason = str(failure)
            raise failure from None
        reason = f"{type(error).__name__}: {error}"
        raise
    finally:
        bar.close()
        summary = run.summary(status, reason)
        _finish(run, summary, failing)
    return RunResult(out, summary, run.history)


def _continue_hint(out: Path | None) -> str:
    if out is not None and (out / "checkpoint.pt").is_file():
        return f"resume with `ngrad train --resume {out}`"
    return "start the run again with --overwrite (it stopped before its first checkpoint)"


def _finish(run: TrainingSession, summary: dict[str, Any], failing: bool) -> None:
    """Write summary.json and the plots; while another error is on its way, only warn."""
    out = run.out_dir
    try:
        if out is not None:
            atomic_write_text(out / "summary.json", to_json(summary))
            if run.history:
                from ngrad.plots.training import plot_run

                plot_run(run.history, out, title=f"{run.config.rule} on {run.config.data}")
    except Exception as error:
        if not failing:
            raise
        warn(f"could not write the summary and plots: {error}")
    finally:
        if run.writer is not None:
            run.writer.close()
