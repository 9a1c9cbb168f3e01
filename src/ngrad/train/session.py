"""One training run's state: the data, the rule and its optimiser, one epoch of training, the
measurements after it, and the checkpoint it is saved to and restored from.

:func:`ngrad.train.loop.run_training` drives it; this module knows nothing of run directories
beyond writing the files it is given.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ngrad.analysis import diagnostics
from ngrad.data import DataSplits, load_dataset
from ngrad.errors import ConfigError, DivergenceError, NgradError
from ngrad.nn.network import Network, mlp
from ngrad.rules import LearningRule, make_rule
from ngrad.train import integrity
from ngrad.train.checkpoint import append_line, save_checkpoint, to_json
from ngrad.train.config import OPTIMIZERS, TrainConfig
from ngrad.train.verdict import SMALLER_LR, chance_level

__all__ = ["CHECKPOINT_VERSION", "TrainingSession", "build_network", "build_optimizer", "evaluate"]

CHECKPOINT_VERSION = 2


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
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, momentum=config.momentum, **common)
    raise ConfigError(
        f"unknown optimizer {config.optimizer!r}; available optimizers: {', '.join(OPTIMIZERS)}"
    )


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


class TrainingSession:
    """The state of one training run: data, rule, optimiser, history; one epoch at a time."""

    def __init__(self, config: TrainConfig, out_dir: Path | None) -> None:
        self.config, self.out_dir = config, out_dir
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        data = load_dataset(config.data, data_dir=config.data_dir, download=config.download)
        self.data = data
        integrity.check_memory(config, data)
        try:
            self.splits = self._prepare(data)
            self.network = build_network(config, data)
            self.rule = make_rule(config.rule, self.network, config.loss, **config.rule_options)
            self.rule.to(self.device)
            self.optimizer = build_optimizer(config, self.rule)
            self.rule.check_optimizer(self.optimizer)
        except Exception as error:
            if integrity.is_out_of_memory(error):
                raise integrity.out_of_memory(config, data) from None
            raise
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.best = {"val_accuracy": -1.0, "epoch": 0, "test_accuracy": math.nan}
        self.chance = chance_level(self.splits["val"][1])
        self.fingerprint = integrity.data_fingerprint(data, config.train_subset)
        self.writer = None
        if out_dir is not None and config.tensorboard:
            self._summary_writer()  # fails before anything is written if tensorboard is missing

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

    @staticmethod
    def _summary_writer():
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "tensorboard logging needs the tensorboard package: "
                "pip install 'ngrad[tensorboard]'"
            ) from None
        return SummaryWriter

    def open_tensorboard(self) -> None:
        self.writer = self._summary_writer()(str(self.out_dir / "tensorboard"))

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
                    f"step {step + 1}: the loss is {float(record.loss)}; {SMALLER_LR}"
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
            "config": integrity.identity(self.config),
            "data": self.fingerprint,
            "rule_state": self.rule.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "shuffle_rng": self.shuffle.get_state(),
            "best": dict(self.best),
        }

    def restore(self, state: dict[str, Any], path: Path) -> None:
        """Continue from ``state`` after proving it belongs to this run."""
        integrity.check_state(state, path, CHECKPOINT_VERSION)
        where, hint = str(path), "resume the directory it was written in"
        if state["rule"] != self.config.rule:
            raise NgradError(
                f"{where!r} belongs to a run of rule {state['rule']!r}, not "
                f"{self.config.rule!r} as config.json says; {hint}"
            )
        saved = state.get("config")
        difference = integrity.identity_difference(saved, self.config) if saved else None
        if difference:
            key, there, here = difference
            raise NgradError(
                f"{where!r} belongs to another run (its {key} is {there!r}, config.json says "
                f"{here!r}); {hint}"
            )
        if "data" in state and state["data"] != self.fingerprint:
            raise NgradError(
                f"{where!r} was trained on other data than {self.config.data!r} loads now (the "
                "dataset files changed?); resume with the data the run started with"
            )
        try:
            self.rule.load_state_dict(state["rule_state"])
            self.optimizer.load_state_dict(state["optimizer_state"])
            torch.set_rng_state(state["torch_rng"])
            self.shuffle.set_state(state["shuffle_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            reason = integrity.first_detail(error)
            raise NgradError(
                f"{where!r} does not fit the network config.json describes ({reason}); "
                f"{hint}, or start the run again with --overwrite"
            ) from None
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
        append_line(self.out_dir / "metrics.jsonl", to_json(line, indent=None))
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

    def summary(self, status: str, reason: str | None) -> dict[str, Any]:
        trained = [line for line in self.history if line.get("epoch_time_s") is not None]
        last = self.history[-1] if self.history else {}
        specific = last.get("rule_diagnostics") or {}
        return {
            "status": status,
            "status_reason": reason,
            "rule": self.config.rule,
            "dataset": self.config.data,
            "seed": self.config.seed,
            "epochs": self.config.epochs,
            "epochs_completed": self.epoch,
            "test_accuracy": self.best["test_accuracy"],
            "best_val_accuracy": self.best["val_accuracy"] if self.history else None,
            "best_epoch": self.best["epoch"],
            "final_val_accuracy": last.get("val_accuracy"),
            "final_test_accuracy": last.get("test_accuracy"),
            "chance_val_accuracy": self.chance[0],
            "epoch_time_s": (
                sum(line["epoch_time_s"] for line in trained) / len(trained) if trained else None
            ),
            "final_angle_to_bp_deg": last.get("angle_to_bp_deg"),
            "final_weight_alignment": last.get("weight_alignment"),
            "final_rule_diagnostics": {  # the last epoch's scalars and per-layer values
                key: value
                for key, value in specific.items()
                if not isinstance(value, list) or key.endswith("_by_layer")
            },
        }
