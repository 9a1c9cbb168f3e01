"""Checks made before a run writes anything: the model fits in memory, and a checkpoint is whole
and belongs to the run that resumes it (same rule, model shape, seed, settings and data)."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ngrad.data import DataSplits
from ngrad.errors import NgradError
from ngrad.train.config import TrainConfig

__all__ = [
    "OutOfMemoryError",
    "check_memory",
    "check_state",
    "data_fingerprint",
    "first_detail",
    "identity",
    "identity_difference",
    "is_out_of_memory",
]

# settings a resumed run may change without becoming another run: its length and where data lives
NOT_IDENTITY = frozenset({"epochs", "data_dir", "download", "tensorboard", "device", "threads"})

STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "version": int,
    "epoch": int,
    "rule": str,
    "rule_state": dict,
    "optimizer_state": dict,
    "torch_rng": Tensor,
    "shuffle_rng": Tensor,
    "best": dict,
}
OPTIMIZER_STATE_FACTOR = {"sgd": 1, "adam": 2, "adamw": 2, "rmsprop": 2}


class OutOfMemoryError(NgradError):
    """The model (or a batch) does not fit in the device's memory."""


# -- memory --------------------------------------------------------------------------------------
def _parameters(config: TrainConfig, data: DataSplits) -> int | None:
    """The mlp's parameter count from its widths (None for other models: the catalogue's are
    small, and the allocation itself is watched)."""
    if config.model != "mlp":
        return None
    sizes = [math.prod(data.input_shape), *config.hidden, data.num_classes]
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(sizes))


def _needed_bytes(config: TrainConfig, data: DataSplits) -> tuple[int, int]:
    """(parameters, bytes): float32 weights, their updates and the optimiser's state; a lower
    bound (feedback weights and activations come on top)."""
    parameters = _parameters(config, data) or 0
    copies = 2 + OPTIMIZER_STATE_FACTOR.get(config.optimizer, 2)
    if config.optimizer == "sgd" and config.momentum == 0:
        copies -= 1
    return parameters, parameters * 4 * copies


def _available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can still get on ``device`` (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    available = None
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # a container's own limit (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = int(limit) - used
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def _gib(count: float) -> str:
    return f"{count / 2**30:.1f} GiB"


def _shape(config: TrainConfig) -> str:
    if config.model != "mlp":
        return f"--model {config.model}"
    return f"--hidden {','.join(map(str, config.hidden))}"


def _smaller(config: TrainConfig) -> str:
    return "smaller --hidden widths" if config.model == "mlp" else "a smaller model"


def check_memory(config: TrainConfig, data: DataSplits) -> None:
    """OutOfMemoryError, before anything is allocated, if the model cannot fit on its device."""
    if _parameters(config, data) is None:
        return
    parameters, needed = _needed_bytes(config, data)
    available = _available_bytes(torch.device(config.device))
    if available is not None and needed > available:
        raise OutOfMemoryError(
            f"the network ({_shape(config)}) has {parameters:.3g} parameters and needs at least "
            f"{_gib(needed)} of memory for its weights, their updates and the optimiser's state; "
            f"only {_gib(available)} is free on {config.device}: choose {_smaller(config)}"
        )


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def out_of_memory(config: TrainConfig, data: DataSplits) -> OutOfMemoryError:
    """The error to raise when an allocation failed during the run."""
    if _parameters(config, data) is None:
        return OutOfMemoryError(
            f"out of memory on {config.device}: the model ({_shape(config)}) and batches of "
            f"{config.batch_size} do not fit; choose a smaller model or a smaller --batch-size"
        )
    parameters, needed = _needed_bytes(config, data)
    return OutOfMemoryError(
        f"out of memory on {config.device}: the network ({_shape(config)}, {parameters:.3g} "
        f"parameters, at least {_gib(needed)}) and batches of {config.batch_size} do not fit; "
        "choose smaller --hidden widths or a smaller --batch-size"
    )


# -- the run a checkpoint belongs to -------------------------------------------------------------
def identity(config: TrainConfig) -> dict[str, Any]:
    """The settings that make a run this run (everything but its length and data location),
    the model and its options included."""
    return {k: v for k, v in config.to_dict().items() if k not in NOT_IDENTITY}


def identity_difference(saved: dict[str, Any], config: TrainConfig) -> tuple[str, Any, Any] | None:
    """(setting, saved value, ``config``'s value) for the first setting that differs, or None.
    A setting ``saved`` lacks (a checkpoint written before it existed) counts as its default,
    the value such a run had."""
    mine, defaults = identity(config), identity(TrainConfig())
    for key in sorted(set(saved) | set(mine)):
        there = saved.get(key, defaults.get(key))
        if key not in NOT_IDENTITY and there != mine.get(key):
            return key, there, mine.get(key)
    return None


def data_fingerprint(data: DataSplits, train_subset: int) -> str:
    """A hash of the split sizes, labels and a sample of the inputs."""
    digest = hashlib.sha256()
    splits = [(data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y)]
    for index, (inputs, labels) in enumerate(splits):
        if index == 0 and train_subset:
            inputs, labels = inputs[:train_subset], labels[:train_subset]
        digest.update(repr((tuple(inputs.shape), tuple(labels.shape))).encode())
        digest.update(labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        step = max(1, inputs.shape[0] // 64)
        sample = inputs[::step].detach().to("cpu", torch.float32).contiguous()
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def first_detail(error: BaseException) -> str:
    """The informative line of a torch error ("size mismatch for ...", "Missing key(s) ...")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    details = [line for line in lines if not line.startswith("Error(s) in loading")]
    return (details or lines or [type(error).__name__])[0].rstrip(".")


def check_state(state: dict[str, Any], path: Path, version: int) -> None:
    """NgradError naming what is missing or of the wrong type in a loaded checkpoint."""
    where = str(path)
    hint = "start the run again with --overwrite"
    if state.get("version") not in (1, version):
        raise NgradError(
            f"{where!r} is a checkpoint of version {state.get('version')!r}, which this ngrad "
            f"cannot resume (it writes version {version}); {hint}"
        )
    for key, kind in STATE_TYPES.items():
        if key not in state:
            raise NgradError(f"{where!r} lacks {key!r} (damaged or not ngrad's); {hint}")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise NgradError(
                f"{where!r}: {key!r} is of type {type(state[key]).__name__}, expected "
                f"{getattr(kind, '__name__', kind)} (damaged or not ngrad's); {hint}"
            )
    for key in ("torch_rng", "shuffle_rng"):
        if state[key].dtype != torch.uint8 or state[key].dim() != 1:
            raise NgradError(f"{where!r}: {key!r} is not a random-number state; {hint}")
    best = state["best"]
    if not {"val_accuracy", "epoch", "test_accuracy"} <= set(best):
        raise NgradError(f"{where!r}: 'best' lacks the best epoch's record; {hint}")
    if state["epoch"] < 0:
        raise NgradError(f"{where!r}: epoch {state['epoch']} is negative (damaged); {hint}")
