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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ngrad.analysis import diagnostics
from ngrad.data import load_dataset
from ngrad.data.loading import batches, training_batches
from ngrad.data.transforms import (
    check_augmentable,
    make_normalizer,
    random_crop_flip,
    resize_images,
)
from ngrad.errors import ConfigError, DivergenceError, NgradError
from ngrad.train import distributed, integrity
from ngrad.train.build import (
    build_network,
    build_optimizer,
    build_rule,
    build_scheduler,
    model_input_shape,
    sample_shape,
)
from ngrad.train.checkpoint import (
    append_line,
    random_state,
    restore_random_state,
    save_array,
    save_checkpoint,
    to_json,
)
from ngrad.train.config import TrainConfig
from ngrad.train.evaluation import evaluate
from ngrad.train.precision import MixedPrecision, check_precision
from ngrad.train.verdict import SMALLER_LR, chance_level

__all__ = [
    "CHECKPOINT_VERSION",
    "TEST_CORRECT",
    "TrainingSession",
    "build_network",
    "build_optimizer",
    "evaluate",
    "run_threads",
]

TEST_CORRECT = "test_correct.npy"
"""Per-test-sample correctness (bool, test-split order) at the best validation epoch."""

CHECKPOINT_VERSION = 2

DIVERGENCE_CHECK_EVERY = 32  # training steps between the host's looks at the loss

Batch = tuple[Tensor, Tensor]


def run_threads(config: TrainConfig) -> int:
    """The torch CPU threads a run uses: ``config.threads``, or with 0 one thread on the embedded
    data sets (small models, where threads cost more than they give and oversubscribe a shared
    machine) and torch's default on the others."""
    from ngrad.data.catalog import is_embedded

    if config.threads:
        return config.threads
    return 1 if is_embedded(config.data) else torch.get_num_threads()


class TrainingSession:
    """The state of one training run: data, rule, optimiser, history; one epoch at a time."""

    def __init__(self, config: TrainConfig, out_dir: Path | None) -> None:
        self.config, self.out_dir = config, out_dir
        self.device = distributed.setup(config.device)  # under torchrun: this rank's device
        distributed.check_batch_size(config.batch_size)
        torch.set_num_threads(run_threads(config))
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
            self.input_shape = model_input_shape(self.network, sample_shape(config, data))
            self.rule = build_rule(config, self.network)
            self.rule.to(self.device)
            check_precision(self.rule, config.precision)
            self.precision = MixedPrecision(config.precision, self.device)
            distributed.synchronise_batch_norm(self.network, self.device)
            distributed.broadcast_state(self.rule)  # every rank starts from rank 0's state
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
        shard = (distributed.rank(), distributed.world_size())  # this rank's share of each batch
        self.batches = {
            "train": training_batches(
                train_x, train_y, config.batch_size, self.shuffle, pin, *shard
            ),
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
        if self.config.resize:
            x = resize_images(x, self.config.resize)
        if train and self.config.augment:
            x = random_crop_flip(x, self.shuffle, rows=distributed.batch_rows(x.shape[0]))
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
        seen = 0
        learning_rate = self.optimizer.param_groups[0]["lr"]
        start, cpu_start = time.perf_counter(), time.process_time()
        # the first non-finite loss (step, value) is kept on the device and read every
        # DIVERGENCE_CHECK_EVERY steps, so no step waits for the device
        bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        bad_loss = torch.zeros((), device=self.device)
        for step, (inputs, targets) in enumerate(self.batches["train"]):
            x, y = self._train_prepare(inputs, targets)
            with self.precision.training_step(self.rule) as unscaled:
                record, loss = distributed.train_step(self.rule, x, y)  # the global batch's
            loss = unscaled(loss)
            first = (bad_step < 0) & ~torch.isfinite(loss)
            bad_step = torch.where(first, step, bad_step)
            bad_loss = torch.where(first, loss, bad_loss)
            if (step + 1) % DIVERGENCE_CHECK_EVERY == 0:
                self._check_finite(bad_step, bad_loss)
            self.precision.apply(self.optimizer)
            loss_sum += loss * y.shape[0]
            correct += (record.output.argmax(dim=1) == y).sum()
            seen += y.shape[0]
            if bar is not None:
                bar.update(1)
        self._check_finite(bad_step, bad_loss)  # also waits for the device: the time is true
        if self.scheduler is not None:
            self.scheduler.step()  # once per epoch: the next epoch's learning rate
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start  # this process's CPU time, all its threads
        count = max(seen, 1)  # this rank's samples: equal shares, so ranks' means average
        accuracy = correct.double() / count
        distributed.average_([accuracy])
        metrics = {
            "train_loss": float(loss_sum) / count,
            "train_accuracy": float(accuracy),
            "epoch_time_s": elapsed,
            "epoch_cpu_s": cpu,
        }
        if self.scheduler is not None:
            metrics["lr"] = learning_rate  # the forward weights' rate during this epoch
        return metrics

    def _check_finite(self, bad_step: Tensor, bad_loss: Tensor) -> None:
        """DivergenceError naming the first step of this epoch whose loss was not finite."""
        step = int(bad_step)
        if step >= 0:
            raise DivergenceError(
                f"rule {self.config.rule!r} diverged at epoch {self.epoch + 1}, "
                f"step {step + 1}: the loss is {float(bad_loss)}; {SMALLER_LR}"
            )

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
        loss, accuracy = evaluate(self.rule, self.batches["val"], prepare=self.prepare)
        line["val_loss"], line["val_accuracy"] = loss, accuracy
        self.test_correct = self._test_correctness()
        loss, accuracy = (
            self._test_loss,
            int(self.test_correct.sum()) / max(len(self.test_correct), 1),
        )
        line["test_loss"], line["test_accuracy"] = loss, accuracy
        if self.config.diagnostics_samples:
            line.update(diagnostics.measure(self.rule, *self.diagnostics_batch))
        return line

    @torch.no_grad()
    def _test_correctness(self) -> Tensor:
        """Whether each test sample is classified correctly (and the mean loss, kept in
        ``_test_loss``), in evaluation mode as :func:`evaluate` measures."""
        correct, total_loss = [], 0.0
        training = self.rule.training
        self.rule.eval()
        try:
            for inputs, targets in self.batches["test"]:
                x, y = self.prepare(inputs, targets)
                output = self.rule(x)
                total_loss += float(self.rule.loss(output, y)) * y.shape[0]
                correct.append((output.argmax(dim=1) == y).cpu())
        finally:
            self.rule.train(training)
        flags = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
        self._test_loss = total_loss / max(len(flags), 1)
        return flags

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
            **random_state(),  # torch_rng (CPU) and cuda_rng (every CUDA device's)
            "shuffle_rng": self.shuffle.get_state(),
            "precision_state": self.precision.state_dict(),  # fp16's loss scale
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
            restore_random_state(state)
            self.shuffle.set_state(state["shuffle_rng"].cpu())
            self.precision.load_state_dict(state.get("precision_state") or {})
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
                correct = getattr(self, "test_correct", None)
                if correct is not None:
                    save_array(self.out_dir / TEST_CORRECT, correct.numpy())
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
        cpu = [line["epoch_cpu_s"] for line in trained if line.get("epoch_cpu_s") is not None]
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
            "cpu_time_per_step_s": (sum(cpu) / (len(cpu) * self.steps_per_epoch) if cpu else None),
            "threads": torch.get_num_threads(),
            "final_angle_to_bp_deg": last.get("angle_to_bp_deg"),
            "final_weight_alignment": last.get("weight_alignment"),
            "final_rule_diagnostics": {  # the last epoch's scalars and per-layer values
                key: value
                for key, value in specific.items()
                if not isinstance(value, list) or key.endswith("_by_layer")
            },
        }
