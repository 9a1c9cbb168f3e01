"""One training run's state: the data, the rule and its optimiser, one epoch of training, the
measurements after it, and the checkpoint it is saved to and restored from.

Batches stream from the splits, which stay in CPU memory (:mod:`ngrad.data.loading`); each is moved
to the device, augmented (training batches, with ``augment``), normalised (``normalize``) and
shaped for the model: flat vectors for the mlp, images kept as images for other models.

:func:`ngrad.train.loop.run_training` drives it; this module knows nothing of run directories
beyond writing the files it is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ngrad.analysis import diagnostics
from ngrad.data import load_dataset
from ngrad.data.loading import EVALUATION_BATCH, batches, training_batches
from ngrad.data.transforms import check_augmentable, make_normalizer, random_crop_flip
from ngrad.errors import ConfigError, DivergenceError, NgradError
from ngrad.rules import LearningRule
from ngrad.train import integrity
from ngrad.train.build import (
    build_network,
    build_optimizer,
    build_rule,
    build_scheduler,
    model_input_shape,
)
from ngrad.train.checkpoint import append_line, save_checkpoint, to_json
from ngrad.train.config import TrainConfig
from ngrad.train.verdict import SMALLER_LR, chance_level

__all__ = ["CHECKPOINT_VERSION", "TrainingSession", "build_network", "build_optimizer", "evaluate"]

CHECKPOINT_VERSION = 2

Batch = tuple[Tensor, Tensor]


@torch.no_grad()
def evaluate(
    rule: LearningRule,
    inputs: Tensor | Iterable[Batch],
    targets: Tensor | None = None,
    batch: int = EVALUATION_BATCH,
    prepare: Callable[[Tensor, Tensor], Batch] | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) of the rule's network on a split: tensors ``inputs`` and
    ``targets`` taken ``batch`` samples at a time, or an iterable of (inputs, labels) batches
    (a DataLoader), each passed through ``prepare`` (to the device, normalised, shaped) if given.
    The rule is in evaluation mode meanwhile (batch norm uses its running statistics, dropout
    is off), then back in the mode it was in.
    """
    if targets is None:
        pairs = inputs
    else:
        pairs = [
            (inputs[i : i + batch], targets[i : i + batch]) for i in range(0, len(targets), batch)
        ]
    total_loss, correct, count = 0.0, 0, 0
    training = rule.training
    rule.eval()
    try:
        for x, y in pairs:
            if prepare is not None:
                x, y = prepare(x, y)
            output = rule(x)
            total_loss += float(rule.loss(output, y)) * y.shape[0]
            correct += int((output.argmax(dim=1) == y).sum())
            count += y.shape[0]
    finally:
        rule.train(training)
    count = max(count, 1)
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
        if config.augment:
            check_augmentable(config.data, data.input_shape)
        train_x, train_y = data.train_x, data.train_y
        if config.train_subset:
            train_x, train_y = train_x[: config.train_subset], train_y[: config.train_subset]
        normalizer = make_normalizer(config.normalize, config.data, data.input_shape, train_x)
        self.normalizer = normalizer.to(self.device) if normalizer is not None else None
        try:
            self.network = build_network(config, data)
            self.input_shape = model_input_shape(self.network, data.input_shape)
            self.rule = build_rule(config, self.network)
            self.rule.to(self.device)
            self.optimizer = build_optimizer(config, self.rule)
            self.rule.check_optimizer(self.optimizer)
            self.scheduler = build_scheduler(config, self.optimizer)
        except Exception as error:
            if integrity.is_out_of_memory(error):
                raise integrity.out_of_memory(config, data) from None
            raise
        # one generator draws the data order and the augmentation; the checkpoint keeps its state
        self.shuffle = torch.Generator().manual_seed(config.seed)
        pin = self.device.type == "cuda"
        self.batches = {
            "train": training_batches(train_x, train_y, config.batch_size, self.shuffle, pin),
            "train_eval": batches(train_x, train_y, pin_memory=pin),
            "val": batches(data.val_x, data.val_y, pin_memory=pin),
            "test": batches(data.test_x, data.test_y, pin_memory=pin),
        }
        count = config.diagnostics_samples
        self.diagnostics_batch = self.prepare(data.val_x[:count], data.val_y[:count])
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.best = {"val_accuracy": -1.0, "epoch": 0, "test_accuracy": math.nan}
        self.chance = chance_level(data.val_y)
        self.fingerprint = integrity.data_fingerprint(data, config.train_subset)
        self.writer = None
        if out_dir is not None and config.tensorboard:
            self._summary_writer()  # fails before anything is written if tensorboard is missing

    def prepare(self, inputs: Tensor, targets: Tensor, train: bool = False) -> Batch:
        """A batch from the data as the model takes it: on the device, augmented (training
        batches, with ``augment``), normalised, and shaped (flat for the mlp)."""
        x = inputs.to(self.device, non_blocking=True)
        y = targets.to(self.device, non_blocking=True)
        if train and self.config.augment:
            x = random_crop_flip(x, self.shuffle)
        if self.normalizer is not None:
            x = self.normalizer(x)
        return x.reshape(x.shape[0], *self.input_shape), y

    def _train_prepare(self, inputs: Tensor, targets: Tensor) -> Batch:
        return self.prepare(inputs, targets, train=True)

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
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        for step, (inputs, targets) in enumerate(self.batches["train"]):
            x, y = self._train_prepare(inputs, targets)
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
        if self.scheduler is not None:
            self.scheduler.step()  # once per epoch: the next epoch's learning rate
        elapsed = time.perf_counter() - start
        count = len(self.batches["train"].dataset)
        metrics = {
            "train_loss": float(loss_sum) / count,
            "train_accuracy": float(correct) / count,
            "epoch_time_s": elapsed,
        }
        if self.scheduler is not None:
            metrics["lr"] = learning_rate  # the forward weights' rate during this epoch
        return metrics

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches["train"])

    def measure(self, epoch: int, train_metrics: dict[str, float] | None) -> dict[str, Any]:
        line: dict[str, Any] = {"epoch": epoch}
        if train_metrics is None:
            loss, accuracy = evaluate(self.rule, self.batches["train_eval"], prepare=self.prepare)
            line["train_loss"], line["train_accuracy"] = loss, accuracy
            line["epoch_time_s"] = None
        else:
            line.update(train_metrics)
        for split in ("val", "test"):
            loss, accuracy = evaluate(self.rule, self.batches[split], prepare=self.prepare)
            line[f"{split}_loss"], line[f"{split}_accuracy"] = loss, accuracy
        if self.config.diagnostics_samples:
            line.update(diagnostics.measure(self.rule, *self.diagnostics_batch))
        return line

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        schedule = {}
        if self.scheduler is not None:
            schedule["scheduler_state"] = self.scheduler.state_dict()
        return schedule | {
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
        if self.scheduler is not None and not isinstance(state.get("scheduler_state"), dict):
            raise NgradError(
                f"{where!r} lacks the learning-rate schedule's state (damaged, or written "
                "without a schedule); start the run again with --overwrite"
            )
        try:
            self.rule.load_state_dict(state["rule_state"])
            self.optimizer.load_state_dict(state["optimizer_state"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler_state"])
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
            "model": self.config.model,
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
