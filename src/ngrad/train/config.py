"""Run configuration: one frozen dataclass, read from a TOML file and/or command-line flags.

Unknown keys and bad values fail with a :class:`~ngrad.errors.ConfigError` naming the key. Rule
options go in a ``[rule_options]`` table (``--rule-option key=value`` on the command line) and are
checked against the rule's own option dataclass.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ngrad.errors import ConfigError
from ngrad.nn.activations import ACTIVATIONS
from ngrad.nn.init import INITIALISATIONS
from ngrad.nn.losses import LOSSES
from ngrad.options import build_options

__all__ = ["OPTIMIZERS", "TrainConfig", "load_config_file", "make_config"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and so its result, given the seed)."""

    rule: str = "bp"
    data: str = "digits"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    momentum: float = 0.9  # sgd and rmsprop
    weight_decay: float = 0.0  # optimiser weight decay, on every trained parameter
    feedback_lr: float | None = None  # learning rate of learned feedback weights (None: lr)
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"
    init: str = "pytorch"
    loss: str = "cross_entropy"
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    download: bool = False
    train_subset: int = 0  # use only the first N training samples (0: all)
    diagnostics_samples: int = 256  # validation samples on which angles to BP are measured
    tensorboard: bool = False
    rule_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        for key, value in positive.items():
            if not value > 0:
                raise ValueError(f"{key!r} must be positive, got {value!r}")
        for key in ("momentum", "weight_decay", "train_subset", "diagnostics_samples"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key!r} must be >= 0, got {getattr(self, key)!r}")
        if self.feedback_lr is not None and not self.feedback_lr > 0:
            raise ValueError(f"'feedback_lr' must be positive, got {self.feedback_lr!r}")
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"'hidden' widths must be positive, got {self.hidden!r}")
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
    """Read a TOML run configuration into a plain mapping (validated later by make_config)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
