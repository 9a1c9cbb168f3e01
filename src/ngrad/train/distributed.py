"""Data-parallel training on several processes, launched by ``torchrun``.

``torchrun --nproc-per-node N -m ngrad train ...`` starts N processes (ranks) with the environment
variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`setup` sees them and joins the
process group (gloo on the CPU, NCCL on CUDA, each rank on the GPU of its ``LOCAL_RANK``). Then:

- every rank starts from rank 0's network and feedback pathway (:func:`broadcast_state`), and
  every rank seeds torch's generator with the run's seed, so the rules' random draws are the same
  on every rank (a draw with one row per sample is made for the whole global batch and each rank
  keeps its rows: :func:`ngrad.rules.base.draw_for_batch`);
- the global batch (``batch_size``) is cut into N equal contiguous shards, one per rank
  (:func:`ngrad.data.loading.training_batches`);
- after ``rule.backward`` on its shard, each rank's ``.grad`` of every trained parameter (forward
  weights and learned feedback) is averaged over the ranks (:func:`average_step`), so every rank
  takes the same optimiser step, and for a rule whose update is a mean over the batch, the one
  a single process takes on the whole batch; a rule's internal optimisation steps inside
  ``backward`` average their updates through ``LearningRule.reduce_gradients``;
- only rank 0 writes files.

docs/distributed.md says what is averaged, which rules cannot match one process exactly, and
what batch normalisation does.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ngrad.errors import ConfigError
from ngrad.rules.base import BatchShard, LearningRule, StepRecord, sharded_step

__all__ = [
    "average_",
    "average_step",
    "batch_rows",
    "broadcast_state",
    "check_batch_size",
    "is_active",
    "is_main_process",
    "launched",
    "rank",
    "setup",
    "shard_of_step",
    "synchronise_batch_norm",
    "train_step",
    "world_size",
]


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The number of processes training together (1 without torchrun)."""
    if _initialised():
        return dist.get_world_size()
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    if _initialised():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched() else 0


def is_main_process() -> bool:
    """Whether this process writes the files: rank 0, or the only process."""
    return rank() == 0


def is_active() -> bool:
    """Whether this process trains together with others (a process group of 2 or more)."""
    return _initialised() and dist.get_world_size() > 1


def setup(device: str) -> torch.device:
    """The device this process trains on; under torchrun, first join the process group (once per
    process: gloo on the CPU, NCCL on CUDA, where ``device`` "cuda" means this rank's GPU,
    ``LOCAL_RANK``). ConfigError for a device that cannot train data-parallel."""
    parsed = torch.device(device)
    if not launched():
        return parsed
    if parsed.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if parsed.index is not None and parsed.index != local and world_size() > 1:
            raise ConfigError(
                f"under torchrun each process trains on the GPU of its LOCAL_RANK: give --device "
                f"cuda, not {device!r}"
            )
        parsed = torch.device("cuda", local)
        torch.cuda.set_device(parsed)
    elif parsed.type != "cpu":
        raise ConfigError(
            f"data-parallel training runs on the CPU (gloo) or on CUDA GPUs (NCCL), not on "
            f"{device!r}"
        )
    if not _initialised():
        backend = "nccl" if parsed.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_close)
    return parsed


def _close() -> None:
    if _initialised():
        dist.destroy_process_group()


def check_batch_size(batch_size: int) -> None:
    """ConfigError unless the global batch splits evenly over the processes."""
    world = world_size()
    if batch_size % world:
        raise ConfigError(
            f"batch_size {batch_size} is the global batch, split evenly over the {world} "
            f"processes: make it a multiple of {world} (each process then takes "
            f"batch_size / {world} samples)"
        )


def shard_of_step(local_size: int) -> BatchShard | None:
    """This process's share of a step whose every process holds ``local_size`` samples (None in
    one process): what the rules' per-sample draws and internal steps need to know."""
    if not is_active():
        return None
    world = dist.get_world_size()
    offset = dist.get_rank() * local_size
    return BatchShard(offset, local_size, local_size * world, average_)


def batch_rows(local_size: int) -> tuple[int, int] | None:
    """(first row, global batch size) of this process's shard of a step (None in one process)."""
    shard = shard_of_step(local_size)
    return None if shard is None else (shard.offset, shard.total)


def train_step(rule: LearningRule, inputs: Tensor, targets: Tensor) -> tuple[StepRecord, Tensor]:
    """``rule.backward`` on this process's shard of the step, then :func:`average_step`: returns
    the rule's record and the loss averaged over the global batch."""
    with sharded_step(shard_of_step(inputs.shape[0])):
        record = rule.backward(inputs, targets)
    return record, average_step(rule, record.loss)


def average_(tensors: Sequence[Tensor]) -> None:
    """Average ``tensors`` in place over the processes: one all-reduce per dtype and device, on
    the tensors flattened into one bucket. Every process must pass tensors of the same shapes in
    the same order; nothing happens in one process."""
    if not is_active() or not tensors:
        return
    world = dist.get_world_size()
    buckets: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        buckets.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for group in buckets.values():
        flat = torch.cat([tensor.detach().reshape(-1) for tensor in group])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for tensor in group:
            size = tensor.numel()
            tensor.detach().copy_(flat[offset : offset + size].view(tensor.shape))
            offset += size


def _running_statistics(module: nn.Module) -> list[Tensor]:
    """Running means and variances of the batch norms that normalise with this process's batch
    alone (not SyncBatchNorm): averaged every step, so every rank keeps the same statistics."""
    found: list[Tensor] = []
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, nn.SyncBatchNorm
        ):
            found.extend(
                buffer for buffer in (child.running_mean, child.running_var) if buffer is not None
            )
    return found


def average_step(rule: LearningRule, loss: Tensor) -> Tensor:
    """After ``rule.backward`` on this process's shard: average, over the processes, the ``.grad``
    of every trained parameter (forward weights and learned feedback), the running statistics of
    per-process batch norms and the loss, in one all-reduce per dtype and device; returns the
    averaged loss (``loss`` itself in one process)."""
    if not is_active():
        return loss
    averaged = loss.detach().clone().reshape(1)
    gradients = [p.grad for p in rule.parameters() if p.grad is not None]
    average_([*gradients, *_running_statistics(rule.network), averaged])
    return averaged.reshape(())


def synchronise_batch_norm(module: nn.Module, device: torch.device) -> None:
    """On CUDA GPUs, turn every batch norm of ``module`` into a ``SyncBatchNorm`` (in place, the
    same parameters and buffers), which normalises with the statistics of the whole global batch,
    as one process would; on the CPU torch has no SyncBatchNorm, so each rank normalises with its
    own shard and :func:`average_step` averages the running statistics."""
    if is_active() and device.type == "cuda":
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if converted is not module:
            raise ConfigError("a model that is a batch norm alone cannot train data-parallel")


def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers (network, fixed and learned feedback, batch-norm
    statistics) into every other process's ``module``."""
    if not is_active():
        return
    with torch.no_grad():
        for tensor in _unique(module.state_dict().values()):
            dist.broadcast(tensor, src=0)


def _unique(tensors: Iterable[Tensor]) -> list[Tensor]:
    seen: set[int] = set()
    kept = []
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            kept.append(tensor)
    return kept
