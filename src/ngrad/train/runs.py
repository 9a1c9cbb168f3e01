"""Run directories: what `ngrad train` and `ngrad compare` write, how it is guarded and read back.

run = load_run("runs/fa-digits-seed0")          # the best-validation state (best.pt)
run.rule.representations(run.prepare(run.data.test_x))   # per-layer activity, any model

A run directory is locked (:class:`RunLock`) for as long as a process writes to it; a fresh run
refuses a directory that already holds files unless told to overwrite them
(:func:`claim_directory`); ``--resume`` reads the history back through :func:`read_metrics`, which
names any damage, and compares the machine it runs on with the one recorded in
``environment.json`` (:func:`record_environment`). See docs/runs.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ngrad.data import DataSplits, load_dataset
from ngrad.data.transforms import make_normalizer, resize_images
from ngrad.errors import NgradError
from ngrad.rules import LearningRule, make_rule
from ngrad.train.build import build_network, model_input_shape, sample_shape
from ngrad.train.checkpoint import atomic_write_text, load_checkpoint, to_json
from ngrad.train.config import TrainConfig, make_config

__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "LoadedRun",
    "RunLock",
    "claim_directory",
    "load_run",
    "note",
    "read_metrics",
    "record_environment",
    "remove_files",
    "warn",
]

LOCK_NAME = ".ngrad.lock"
RUN_FILES = (
    "config.json",
    "environment.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "best.pt",
    "test_correct.npy",
    "summary.json",
    "learning_curves.png",
    "angles.png",
    "weight_alignment.png",
    "rule_diagnostics.png",
    "relaxation.png",
    "tensorboard",
)


def warn(message: str) -> None:
    """Tell the user something they should know that does not stop the run."""
    print(f"ngrad: warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """Tell the user what the run does differently from what they may expect."""
    print(f"ngrad: {message}", file=sys.stderr, flush=True)


# -- the lock ----------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a directory for one writer, held while the ``with`` block runs.

    The lock is an advisory ``flock`` on ``DIR/.ngrad.lock``: the operating system releases it
    when the process ends in any way (an exception, Ctrl-C, kill -9, a crash), so a lock left by a
    dead process never blocks anybody; the file itself stays (it names the last holder).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._handle: int | None = None

    def __enter__(self) -> RunLock:
        try:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise NgradError(
                f"cannot lock {str(self.directory)!r}: {error.strerror or error}"
            ) from None
        try:
            _lock(handle)
        except BlockingIOError:
            holder = _holder(handle)
            os.close(handle)
            raise NgradError(
                f"{str(self.directory)!r} is in use by another ngrad process ({holder}); "
                "wait for it to finish, or choose another --out"
            ) from None
        except OSError as error:  # a filesystem without locks: say so, carry on
            warn(
                f"cannot lock {str(self.directory)!r} ({error.strerror}); make sure no other "
                "process writes to it"
            )
        with contextlib.suppress(OSError):  # only informative: who holds the lock
            os.ftruncate(handle, 0)
            os.lseek(handle, 0, os.SEEK_SET)
            os.write(handle, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._handle = handle
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._handle, 0)
            os.close(self._handle)  # releases the lock
            self._handle = None


def _holder(handle: int) -> str:
    try:
        os.lseek(handle, 0, os.SEEK_SET)
        return os.read(handle, 200).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _lock(handle: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            os.lseek(handle, 0, os.SEEK_SET)
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
        except OSError:
            raise BlockingIOError from None
        return
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- refusing to mix runs ------------------------------------------------------------------------
def _contents(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    ignored = {LOCK_NAME, ".ngrad-write-test"}
    return sorted(path for path in directory.iterdir() if path.name not in ignored)


def _describe_run(directory: Path) -> str | None:
    """ "a run of fa on digits (seed 0, 3 of 20 epochs trained)", or None if none is there."""
    try:
        config = json.loads((directory / "config.json").read_text())
        text = f"a run of {config['rule']} on {config['data']} (seed {config['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        summary = json.loads((directory / "summary.json").read_text())
        text += f", {summary['status']} after {summary['epochs_completed']} of "
        text += f"{config['epochs']} epochs"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return text + ")"


def is_temporary(path: Path) -> bool:
    """A temporary file that an interrupted atomic write may have left."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def remove_files(directory: Path, names: Iterable[str]) -> None:
    """Remove the named files and folders from ``directory``, and stray temporary files."""
    for name in names:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in _contents(directory):
        if is_temporary(path) or path.name == ".ngrad-write-test":
            path.unlink(missing_ok=True)


def claim_directory(directory: Path, overwrite: bool) -> None:
    """Refuse ``directory`` for a new run if it holds anything, unless ``overwrite`` (the caller
    then removes the old run's files with :func:`remove_files` once the new run is ready)."""
    present = _contents(directory)
    if not present or overwrite:
        return
    where = str(directory)
    run = _describe_run(directory)
    if run is not None:
        raise NgradError(
            f"{where!r} already holds {run}: continue it with `ngrad train --resume {where}`, "
            "replace it with --overwrite, or choose another --out"
        )
    shown = ", ".join(path.name for path in present[:4]) + (", ..." if len(present) > 4 else "")
    raise NgradError(
        f"{where!r} is not empty (it holds {shown}): choose another --out, or pass --overwrite "
        "to replace the run files in it"
    )


# -- reading the history back ---------------------------------------------------------------
def read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The epoch lines 0..``up_to_epoch`` of ``metrics.jsonl``, validated.

    A last line cut short (the disk was full, or the process died while appending) is dropped
    with a warning; lines past ``up_to_epoch`` (written after the last checkpoint) are dropped;
    any other damage, or a missing epoch, is an NgradError naming the line.
    """
    name = str(path)
    hint = "restore it from a copy, or start the run again with --overwrite"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NgradError(
            f"{name!r} is missing, so the run's history before epoch {up_to_epoch} is lost; {hint}"
        ) from None
    except OSError as error:
        raise NgradError(f"cannot read {name!r}: {error.strerror}") from None
    chunks = raw.split(b"\n")
    lines: dict[int, dict[str, Any]] = {}
    for number, chunk in enumerate(chunks, start=1):
        if not chunk.strip():
            continue
        last = number == len(chunks)  # no newline after it: an append was cut short
        try:
            line = json.loads(chunk.decode("utf-8"))
            epoch = line["epoch"]
            valid = isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0
        except (UnicodeDecodeError, ValueError, TypeError, KeyError):
            valid = False
        if not valid:
            if last:
                warn(f"{name!r}: its last line was cut off while being written; dropped it")
                continue
            raise NgradError(f"{name!r} line {number} is not an epoch record (damaged); {hint}")
        if epoch > up_to_epoch:
            continue
        if epoch in lines:
            raise NgradError(
                f"{name!r} holds epoch {epoch} twice (line {number}): two runs wrote into this "
                f"directory; {hint}"
            )
        lines[epoch] = line
    missing = [epoch for epoch in range(up_to_epoch + 1) if epoch not in lines]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise NgradError(f"{name!r} lacks epoch(s) {shown} that the checkpoint has trained; {hint}")
    return [lines[epoch] for epoch in range(up_to_epoch + 1)]


# -- where a run ran ---------------------------------------------------------------------------
ENVIRONMENT_KEYS = ("torch", "threads", "device", "device_name", "processes")
# what an entry written before a key existed stands for (runs then had one process)
ENVIRONMENT_DEFAULTS: dict[str, Any] = {"processes": 1}


def current_environment(device: str) -> dict[str, Any]:
    """What, besides the configuration, decides a run's numbers: library version, threads,
    device, data-parallel processes. Results with the same seed agree bitwise only when these
    agree too."""
    import torch

    from ngrad import __version__
    from ngrad.train import distributed

    parsed = torch.device(device)
    name = platform.processor() or platform.machine()
    if parsed.type == "cuda":
        name = torch.cuda.get_device_name(parsed)
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(parsed),
        "device_name": name,
        "processes": distributed.world_size(),
        "ngrad": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def record_environment(directory: Path, device: str, epoch: int, resume: bool) -> None:
    """Append this session's environment to ``environment.json`` (one entry per start and
    resume); on resume, warn about every difference from the session before."""
    path = directory / "environment.json"
    sessions: list[dict[str, Any]] = []
    if resume and path.is_file():
        try:
            sessions = json.loads(path.read_text())
            if not isinstance(sessions, list):
                raise ValueError
        except (OSError, ValueError):
            warn(f"{str(path)!r} is damaged; it now records this session only")
            sessions = []
    now = current_environment(device) | {"from_epoch": epoch}
    if sessions and isinstance(sessions[-1], dict):
        before = sessions[-1]
        changes = [
            f"{key} {before.get(key, ENVIRONMENT_DEFAULTS.get(key))} -> {now[key]}"
            for key in ENVIRONMENT_KEYS
            if before.get(key, ENVIRONMENT_DEFAULTS.get(key)) != now[key]
        ]
        if changes:
            warn(
                "resuming under other settings than the run had (" + "; ".join(changes) + "): "
                "the result will differ from an uninterrupted run (see docs/runs.md)"
            )
    atomic_write_text(path, to_json([*sessions, now]))


# -- loading a finished run ------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedRun:
    directory: Path
    config: TrainConfig
    rule: LearningRule
    data: DataSplits
    summary: dict[str, Any]

    def prepare(self, samples: Tensor) -> Tensor:
        """``samples`` of the run's data set (N, *data shape) as its model took them in training:
        resized (``resize``), normalised (``normalize``, with the statistics of the split it
        trained on) and shaped (flat for the mlp, images for conv models), in float32 on the
        rule's device."""
        config = self.config
        inputs = samples.float().to(config.device)
        if config.resize:
            inputs = resize_images(inputs, config.resize)
        train_x = self.data.train_x[: config.train_subset or None]
        normalizer = make_normalizer(config.normalize, config.data, self.data.input_shape, train_x)
        if normalizer is not None:
            inputs = normalizer.to(inputs.device)(inputs)
        shape = model_input_shape(self.rule.network, sample_shape(config, self.data))
        return inputs.reshape(len(inputs), *shape)


def load_run(
    directory: str | Path,
    checkpoint: str = "best.pt",
    data: DataSplits | None = None,
    device: str = "cpu",
) -> LoadedRun:
    """Rebuild the rule of a finished run with its trained weights (``best.pt`` by default,
    ``checkpoint.pt`` for the last epoch) on ``device`` (the CPU by default, wherever it was
    trained); ``data`` skips reloading an already loaded dataset."""
    directory = Path(directory)
    config = load_run_config(directory, device=device)
    if data is None:
        data = load_dataset(config.data, data_dir=config.data_dir)
    network = build_network(config, data)
    rule = make_rule(config.rule, network, config.loss, **config.rule_options)
    state = load_checkpoint(directory / checkpoint, map_location=device)
    try:
        rule.load_state_dict(state["rule_state"])
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise NgradError(
            f"{str(directory / checkpoint)!r} does not match its run's config.json: {reason}"
        ) from None
    rule.to(device).eval()
    summary_path = directory / "summary.json"
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError) as error:
            raise NgradError(f"{str(summary_path)!r} is damaged: {error}") from None
        if not isinstance(summary, dict):
            raise NgradError(f"{str(summary_path)!r} is damaged: not a table of results")
    return LoadedRun(directory, config, rule, data, summary)


def load_run_config(out_dir: str | Path, device: str | None = None) -> TrainConfig:
    """The configuration saved in a run directory (for ``--resume``); ``device`` overrides the
    saved one (to inspect on a CPU a run trained on a GPU)."""
    path = Path(out_dir) / "config.json"
    hint = "restore it from a copy, or start the run again with --overwrite"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NgradError(f"{str(out_dir)!r} is not a run directory: no config.json") from None
    except UnicodeDecodeError:
        raise NgradError(f"{str(path)!r} is damaged (not text); {hint}") from None
    except json.JSONDecodeError as error:
        raise NgradError(f"{str(path)!r} is damaged ({error}); {hint}") from None
    except OSError as error:
        raise NgradError(f"cannot read {str(path)!r}: {error.strerror}") from None
    if not isinstance(values, dict):
        raise NgradError(f"{str(path)!r} is damaged (not a table of settings); {hint}")
    if device is not None:
        values["device"] = device
    return make_config(values, owner=str(path))
