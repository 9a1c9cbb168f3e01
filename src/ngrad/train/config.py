"""Run configuration: one frozen dataclass, read from a TOML file (or a run's own
``config.json``) and/or command-line flags.

Unknown keys and bad values fail with a :class:`~ngrad.errors.ConfigError` naming the key. Rule
options go in a ``[rule_options]`` table (``--rule-option key=value`` on the command line) and are
checked against the rule's own option dataclass.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ngrad.errors import ConfigError
from ngrad.nn.activations import ACTIVATIONS
from ngrad.nn.init import INITIALISATIONS, Init
from ngrad.nn.losses import LOSSES
from ngrad.options import build_options

__all__ = ["OPTIMIZERS", "Optimizer", "TrainConfig", "load_config_file", "make_config"]

Optimizer = Literal["sgd", "adam", "adamw", "rmsprop"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and so its result, given the seed)."""

    rule: str = "bp"  # learning rule (`ngrad list` describes them)
    data: str = "digits"  # dataset (`ngrad list` describes them)
    epochs: int = 20  # passes over the training split
    batch_size: int = 32  # samples per mini-batch
    lr: float = 0.05  # learning rate of the forward weights
    optimizer: Optimizer = "sgd"  # torch optimiser applied to every rule's update
    momentum: float = 0.9  # momentum of sgd and rmsprop
    weight_decay: float = 0.0  # optimiser weight decay, on every trained parameter
    feedback_lr: float | None = None  # learning rate of learned feedback weights (None: lr)
    hidden: tuple[int, ...] = (128, 128)  # widths of the MLP's hidden layers
    activation: str = "tanh"  # hidden layers' nonlinearity (the output layer is linear)
    init: Init = "pytorch"  # initialisation of the forward weights
    loss: str = "cross_entropy"  # output loss
    seed: int = 0  # seeds weights, data order and the rule's own randomness
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1, mps
    data_dir: str | None = None  # data directory (None: $NGRAD_DATA or ~/.cache/ngrad/data)
    download: bool = False  # fetch missing data files
    train_subset: int = 0  # use only the first N training samples (0: all)
    diagnostics_samples: int = 256  # validation samples on which angles to BP are measured
    tensorboard: bool = False  # also write TensorBoard logs
    rule_options: dict[str, Any] = field(default_factory=dict)  # the rule's own options

    def __post_init__(self) -> None:
        for key in ("lr", "momentum", "weight_decay", "feedback_lr"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{key!r} must be a finite number, got {value!r}")
        if isinstance(self.seed, bool) or not 0 <= self.seed < 2**64:
            raise ValueError(f"'seed' must be an integer in [0, 2**64), got {self.seed!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        for key, value in positive.items():
            if not value > 0:
                raise ValueError(f"{key!r} must be positive, got {value!r}")
        for key in ("momentum", "weight_decay", "train_subset", "diagnostics_samples"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key!r} must be >= 0, got {getattr(self, key)!r}")
        if self.feedback_lr is not None and not self.feedback_lr > 0:
            raise ValueError(f"'feedback_lr' must be positive, got {self.feedback_lr!r}")
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.hidden):
            raise ValueError(f"'hidden' widths must be positive integers, got {self.hidden!r}")
        choices = {"activation": ACTIVATIONS, "init": INITIALISATIONS, "loss": LOSSES}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"{key!r} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}"
                )
        if not isinstance(self.rule_options, dict):
            raise ValueError("'rule_options' must be a table of option = value")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden"] = list(self.hidden)
        return values


def make_config(values: dict[str, Any], owner: str = "config") -> TrainConfig:
    """A validated TrainConfig from a mapping (unknown keys and bad values raise ConfigError)."""
    config = build_options(TrainConfig, values, owner)
    _validate_names(config)
    return config


def _validate_names(config: TrainConfig) -> None:
    from ngrad.data import available_datasets
    from ngrad.rules import get_rule_class

    rule_class = get_rule_class(config.rule)  # ConfigError for unknown rules
    build_options(rule_class.Options, config.rule_options, f"rule {config.rule!r}")
    _validate_device(config.device)
    datasets = available_datasets()
    if config.data not in datasets:
        raise ConfigError(
            f"unknown dataset {config.data!r}; available datasets: {', '.join(datasets)}"
        )


def _validate_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"'device' {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(parsed.type, False):
        raise ConfigError(f"'device' {device!r} is not available on this machine")
    if (
        parsed.type == "cuda"
        and parsed.index is not None
        and parsed.index >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"'device' {device!r}: this machine has {torch.cuda.device_count()} GPU(s)"
        )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a run configuration into a plain mapping (validated later by make_config): a TOML
    file, or a run's own ``config.json`` (JSON by its ``.json`` suffix or its opening ``{``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {str(path)!r} is not a text file (TOML or JSON): byte {error.start} is "
            "not UTF-8"
        ) from None
    except OSError as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {str(path)!r} is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {str(path)!r} is not a table of settings")
        return values
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None
