"""The training loop: any rule, any optimiser, never asking which rule it runs.

``run_training(config, out_dir)`` trains ``config.rule`` and writes into ``out_dir``:

- ``config.json``: the full configuration (``ngrad train --config`` accepts it back as TOML keys);
- ``metrics.jsonl``: one JSON line per epoch (epoch 0 = before training): losses and accuracies on
  the train/validation/test splits, per-layer angles of the update and of the error signals to
  backprop, error sizes across depth, weight alignment, epoch time;
- ``checkpoint.pt``: the latest state (network, feedback pathway, optimiser, random-number state),
  atomic, loadable with ``torch.load(weights_only=True)``; ``--resume`` continues from it;
- ``best.pt``: the rule's state at the best validation accuracy (model selection never sees test);
- ``summary.json`` and PNG plots (learning curves, angles to BP, weight alignment).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ngrad.analysis import diagnostics
from ngrad.data import DataSplits, load_dataset
from ngrad.errors import ConfigError, DivergenceError, NgradError
from ngrad.nn.network import Network, mlp
from ngrad.rules import LearningRule, make_rule
from ngrad.train.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint, to_json
from ngrad.train.config import TrainConfig, make_config

__all__ = ["RunResult", "build_network", "build_optimizer", "evaluate", "run_training"]

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class RunResult:
    out_dir: Path | None
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def build_network(config: TrainConfig, data: DataSplits) -> Network:
    """An MLP from the flattened input through ``config.hidden`` to the classes."""
    inputs = math.prod(data.input_shape)
    sizes = [inputs, *config.hidden, data.num_classes]
    return mlp(sizes, activation=config.activation, init=config.init)


def build_optimizer(config: TrainConfig, rule: LearningRule) -> torch.optim.Optimizer:
    groups = rule.param_groups(config.feedback_lr)
    common = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, **common)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, **common)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, **common)
    return torch.optim.RMSprop(groups, momentum=config.momentum, **common)


@torch.no_grad()
def evaluate(rule: LearningRule, inputs: Tensor, targets: Tensor, batch: int = 2048):
    """(mean loss, accuracy) of the rule's network on a split."""
    total_loss, correct = 0.0, 0
    for start in range(0, inputs.shape[0], batch):
        output = rule(inputs[start : start + batch])
        chunk = targets[start : start + batch]
        total_loss += float(rule.loss(output, chunk)) * chunk.shape[0]
        correct += int((output.argmax(dim=1) == chunk).sum())
    count = max(inputs.shape[0], 1)
    return total_loss / count, correct / count


class _Run:
    """State of one training run (private: use :func:`run_training`)."""

    def __init__(self, config: TrainConfig, out_dir: Path | None, progress: bool) -> None:
        self.config, self.out_dir, self.progress = config, out_dir, progress
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        data = load_dataset(config.data, data_dir=config.data_dir, download=config.download)
        self.splits = self._prepare(data)
        self.network = build_network(config, data)
        self.rule = make_rule(config.rule, self.network, config.loss, **config.rule_options)
        self.rule.to(self.device)
        self.optimizer = build_optimizer(config, self.rule)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.best = {"val_accuracy": -1.0, "epoch": 0, "test_accuracy": math.nan}
        self.writer = self._tensorboard() if out_dir is not None and config.tensorboard else None

    def _prepare(self, data: DataSplits) -> dict[str, tuple[Tensor, Tensor]]:
        def move(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            return x.flatten(1).float().to(self.device), y.long().to(self.device)

        train_x, train_y = data.train_x, data.train_y
        if self.config.train_subset:
            train_x = train_x[: self.config.train_subset]
            train_y = train_y[: self.config.train_subset]
        splits = {
            "train": move(train_x, train_y),
            "val": move(data.val_x, data.val_y),
            "test": move(data.test_x, data.test_y),
        }
        count = self.config.diagnostics_samples
        splits["diagnostics"] = (splits["val"][0][:count], splits["val"][1][:count])
        return splits

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "tensorboard logging needs the tensorboard package: "
                "pip install 'ngrad[tensorboard]'"
            ) from None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # -- one epoch -------------------------------------------------------------------------
    def train_epoch(self, bar) -> dict[str, float]:
        inputs, targets = self.splits["train"]
        order = torch.randperm(inputs.shape[0], generator=self.shuffle).to(self.device)
        batch = self.config.batch_size
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        start = time.perf_counter()
        for step, first in enumerate(range(0, inputs.shape[0], batch)):
            index = order[first : first + batch]
            x, y = inputs[index], targets[index]
            record = self.rule.backward(x, y)
            if not torch.isfinite(record.loss):
                raise DivergenceError(
                    f"rule {self.config.rule!r} diverged at epoch {self.epoch + 1}, "
                    f"step {step + 1}: the loss is {float(record.loss)}; try a smaller --lr"
                )
            self.optimizer.step()
            loss_sum += record.loss.detach() * y.shape[0]
            correct += (record.output.argmax(dim=1) == y).sum()
            if bar is not None:
                bar.update(1)
        elapsed = time.perf_counter() - start
        count = inputs.shape[0]
        return {
            "train_loss": float(loss_sum) / count,
            "train_accuracy": float(correct) / count,
            "epoch_time_s": elapsed,
        }

    def measure(self, epoch: int, train_metrics: dict[str, float] | None) -> dict[str, Any]:
        line: dict[str, Any] = {"epoch": epoch}
        if train_metrics is None:
            line["train_loss"], line["train_accuracy"] = evaluate(self.rule, *self.splits["train"])
            line["epoch_time_s"] = None
        else:
            line.update(train_metrics)
        for split in ("val", "test"):
            loss, accuracy = evaluate(self.rule, *self.splits[split])
            line[f"{split}_loss"], line[f"{split}_accuracy"] = loss, accuracy
        if self.config.diagnostics_samples:
            line.update(diagnostics.measure(self.rule, *self.splits["diagnostics"]))
        return line

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": self.epoch,
            "rule": self.config.rule,
            "rule_state": self.rule.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "shuffle_rng": self.shuffle.get_state(),
            "best": dict(self.best),
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION or state.get("rule") != self.config.rule:
            raise NgradError("checkpoint does not belong to this run (version or rule differs)")
        self.rule.load_state_dict(state["rule_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        torch.set_rng_state(state["torch_rng"])
        self.shuffle.set_state(state["shuffle_rng"])
        self.epoch = int(state["epoch"])
        self.best = dict(state["best"])

    def record(self, line: dict[str, Any]) -> None:
        self.history.append(line)
        if line["val_accuracy"] > self.best["val_accuracy"]:
            self.best = {
                "val_accuracy": line["val_accuracy"],
                "epoch": line["epoch"],
                "test_accuracy": line["test_accuracy"],
            }
            if self.out_dir is not None:
                save_checkpoint(self.out_dir / "best.pt", {"rule_state": self.rule.state_dict()})
        if self.out_dir is None:
            return
        with (self.out_dir / "metrics.jsonl").open("a") as stream:
            stream.write(to_json(line, indent=None) + "\n")
        save_checkpoint(self.out_dir / "checkpoint.pt", self.state())
        if self.writer is not None:
            for key, value in line.items():
                if isinstance(value, int | float) and key != "epoch" and value is not None:
                    self.writer.add_scalar(key, value, line["epoch"])
            for index, angle in enumerate(line.get("angle_to_bp_deg", [])):
                if angle is not None:
                    self.writer.add_scalar(
                        f"angle_to_bp_deg/layer_{index + 1}", angle, line["epoch"]
                    )
            self.writer.flush()

    def summary(self, status: str) -> dict[str, Any]:
        trained = [line for line in self.history if line.get("epoch_time_s") is not None]
        last = self.history[-1] if self.history else {}
        return {
            "status": status,
            "rule": self.config.rule,
            "dataset": self.config.data,
            "seed": self.config.seed,
            "epochs_completed": self.epoch,
            "test_accuracy": self.best["test_accuracy"],
            "best_val_accuracy": self.best["val_accuracy"] if self.history else None,
            "best_epoch": self.best["epoch"],
            "final_test_accuracy": last.get("test_accuracy"),
            "epoch_time_s": (
                sum(line["epoch_time_s"] for line in trained) / len(trained) if trained else None
            ),
            "final_angle_to_bp_deg": last.get("angle_to_bp_deg"),
            "final_weight_alignment": last.get("weight_alignment"),
        }


def _read_history(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    return [line for line in lines if line["epoch"] <= up_to_epoch]


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


def run_training(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train ``config.rule``; with ``resume``, continue the run saved in ``out_dir``."""
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        prepare_output_dir(out_path)
    run = _Run(config, out_path, progress)
    if resume:
        if out_path is None:
            raise ConfigError("resuming needs the run's output directory")
        run.restore(load_checkpoint(out_path / "checkpoint.pt", map_location=run.device))
        run.history = _read_history(out_path / "metrics.jsonl", run.epoch)
        with (out_path / "metrics.jsonl").open("w") as stream:  # drop lines past the checkpoint
            stream.writelines(to_json(line, indent=None) + "\n" for line in run.history)
    elif out_path is not None:
        atomic_write_text(out_path / "config.json", to_json(config.to_dict()))
        (out_path / "metrics.jsonl").unlink(missing_ok=True)
    steps_per_epoch = math.ceil(run.splits["train"][0].shape[0] / config.batch_size)
    bar = tqdm(
        total=steps_per_epoch * config.epochs,
        initial=steps_per_epoch * run.epoch,
        desc=f"{config.rule} on {config.data}",
        unit="step",
        disable=not progress,
        leave=False,
    )
    status = "completed"
    try:
        if run.epoch == 0 and not run.history:
            run.record(run.measure(0, None))
        while run.epoch < config.epochs:
            train_metrics = run.train_epoch(bar)
            run.epoch += 1
            line = run.measure(run.epoch, train_metrics)
            run.record(line)
            bar.set_postfix(loss=f"{line['train_loss']:.3f}", val=f"{line['val_accuracy']:.3f}")
            if on_epoch is not None:
                on_epoch(line)
    except DivergenceError:
        status = "diverged"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        bar.close()
        summary = run.summary(status)
        if out_path is not None:
            atomic_write_text(out_path / "summary.json", to_json(summary))
            if run.history:
                from ngrad.plots.training import plot_run

                plot_run(run.history, out_path, title=f"{config.rule} on {config.data}")
        if run.writer is not None:
            run.writer.close()
    return RunResult(out_path, summary, run.history)


def load_run_config(out_dir: str | Path, device: str | None = None) -> TrainConfig:
    """The configuration saved in a run directory (for ``--resume``); ``device`` overrides the
    saved one (to inspect on a CPU a run trained on a GPU)."""
    path = Path(out_dir) / "config.json"
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise NgradError(f"{str(out_dir)!r} is not a run directory: no config.json") from None
    except json.JSONDecodeError as error:
        raise NgradError(f"{str(path)!r} is corrupt: {error}") from None
    if not isinstance(values, dict):
        raise NgradError(f"{str(path)!r} is corrupt: not a table of settings")
    if device is not None:
        values["device"] = device
    return make_config(values, owner=str(path))
