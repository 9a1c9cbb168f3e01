"""Run configuration: one frozen dataclass, read from a TOML file (or a run's own
``config.json``) and/or command-line flags.

Unknown keys and bad values fail with a :class:`~ngrad.errors.ConfigError` naming the key. Rule
options go in a ``[rule_options]`` table (``--rule-option key=value`` on the command line) and are
checked against the rule's own option dataclass.

The model is ``model`` (a name of the :mod:`ngrad.models` catalogue, or ``module:factory``) with
its options in a ``[model_options]`` table (``--model-option key=value``). The mlp's ``hidden``,
``activation`` and ``init`` are also top-level settings (``--hidden``, ``--activation``,
``--init``), and that is where a run records them: given as model options they move there, given
both ways they must agree. Any other model refuses those three settings at values other than
their defaults (its own options, which may share a name such as ``activation``, are model
options).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ngrad.data.transforms import NORMALIZATIONS, Normalization
from ngrad.errors import ConfigError
from ngrad.nn.activations import ACTIVATIONS
from ngrad.nn.init import INITIALISATIONS, Init
from ngrad.nn.losses import LOSSES
from ngrad.options import build_options

PRECISIONS = ("fp32", "bf16", "fp16")  # training precision (ngrad.train.precision)

__all__ = [
    "LR_SCHEDULES",
    "MLP_SETTINGS",
    "OPTIMIZERS",
    "LRSchedule",
    "Optimizer",
    "TrainConfig",
    "load_config_file",
    "make_config",
]

Optimizer = Literal["sgd", "adam", "adamw", "rmsprop"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
LRSchedule = Literal["none", "step", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)
MLP_SETTINGS = ("hidden", "activation", "init")
"""The top-level settings that are the mlp's options."""


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
    lr_schedule: LRSchedule = "none"  # learning-rate schedule, stepped once per epoch: step
    #     multiplies it by lr_gamma at each of lr_milestones, cosine anneals it to 0 over epochs
    lr_milestones: tuple[int, ...] = ()  # epochs after which the step schedule multiplies the lr
    lr_gamma: float = 0.1  # factor of the step schedule at each milestone
    model: str = "mlp"  # model to train: a catalogue name (`ngrad list`) or module:factory
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's own options
    hidden: tuple[int, ...] = (128, 128)  # widths of the mlp's hidden layers
    activation: str = "tanh"  # the mlp's hidden nonlinearity (the output layer is linear)
    init: Init = "pytorch"  # initialisation of the mlp's weights
    loss: str = "cross_entropy"  # output loss
    seed: int = 0  # seeds weights, data order and the rule's own randomness
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1, mps
    precision: str = "fp32"  # training steps in fp32, or under autocast in bf16 or fp16 (with
    #     loss scaling), for the rules that support it (bp and the feedback-alignment family)
    threads: int = 0  # torch CPU threads (0: 1 on the embedded data sets, whose small models
    #     lose more to thread hand-offs than they gain; torch's default on the others)
    data_dir: str | None = None  # data directory (None: $NGRAD_DATA or ~/.cache/ngrad/data)
    download: bool = False  # fetch missing data files
    train_subset: int = 0  # use only the first N training samples (0: all)
    normalize: Normalization = "none"  # input normalisation: none (pixels in [0, 1]), train
    #     (mean and std of the training split) or standard (published constants)
    augment: bool = False  # random crops (4-pixel padding) and flips of training images
    resize: int = 0  # scale images to resize x resize pixels (bilinear), e.g. 32 for BioTorch's
    #     LeNet on MNIST; 0 keeps the data's size
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
        for key in (
            "momentum",
            "weight_decay",
            "train_subset",
            "diagnostics_samples",
            "resize",
            "threads",
        ):
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
        if not isinstance(self.model_options, dict):
            raise ValueError("'model_options' must be a table of option = value")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"'model' must be a model's name, got {self.model!r}")
        self._check_schedule()
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"'normalize' must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"'precision' must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def _check_schedule(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"'lr_schedule' must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if not (math.isfinite(self.lr_gamma) and self.lr_gamma > 0):
            raise ValueError(f"'lr_gamma' must be a positive number, got {self.lr_gamma!r}")
        milestones = self.lr_milestones
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones):
            raise ValueError(f"'lr_milestones' must be positive epochs, got {list(milestones)!r}")
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(
                f"'lr_milestones' must be increasing epochs, each once, got {list(milestones)!r}"
            )
        if self.lr_schedule == "step" and not milestones:
            raise ValueError("lr_schedule 'step' needs lr_milestones (e.g. --lr-milestones 50,75)")
        if self.lr_schedule != "step" and (milestones or self.lr_gamma != 0.1):
            given = "lr_milestones" if milestones else "lr_gamma"
            raise ValueError(
                f"{given!r} belongs to the step schedule, but lr_schedule is "
                f"{self.lr_schedule!r} (add --lr-schedule step)"
            )

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden"] = list(self.hidden)
        values["lr_milestones"] = list(self.lr_milestones)
        values["model_options"] = _plain(self.model_options)
        return values


def _plain(value: Any) -> Any:
    """``value`` with every tuple a list (as JSON gives it back), so that settings compare equal
    before and after a round trip through config.json."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def make_config(values: dict[str, Any], owner: str = "config") -> TrainConfig:
    """A validated TrainConfig from a mapping (unknown keys and bad values raise ConfigError)."""
    config = build_options(TrainConfig, _resolve_model(dict(values), owner), owner)
    _validate_names(config)
    return config


def _resolve_model(values: dict[str, Any], owner: str) -> dict[str, Any]:
    """``values`` with the model named canonically, its options checked and typed, and the
    mlp's options in the top-level settings (see the module's docstring)."""
    from ngrad.models import MODELS, get_model
    from ngrad.models.factory import is_factory_name

    name, given = values.get("model", "mlp"), values.get("model_options", {})
    if not isinstance(name, str) or not isinstance(given, dict):
        return values  # the dataclass names the wrong type
    given = dict(given)
    if is_factory_name(name):
        spec = None  # a user's factory: its options are checked when it is called
        name = name.strip()
    else:
        spec = get_model(name)  # ConfigError naming the models
        name = next(key for key, entry in MODELS.items() if entry is spec)
    defaults = TrainConfig()
    if name == "mlp":
        options_type = spec.options
        for key in MLP_SETTINGS:
            if key not in given:
                continue
            if key in values:
                here = build_options(options_type, {key: values[key]}, owner)
                there = build_options(options_type, {key: given[key]}, "model 'mlp'")
                if getattr(here, key) != getattr(there, key):
                    raise ConfigError(
                        f"the mlp's {key!r} is given twice: {values[key]!r} as --{key} (or "
                        f"{key} =) and {given[key]!r} as a model option; give it once"
                    )
            values[key] = given.pop(key)
    else:
        for key in MLP_SETTINGS:
            if key in values and _differs(values[key], getattr(defaults, key)):
                raise ConfigError(
                    f"--{key} ({key} = {values[key]!r}) is a setting of the mlp; model {name!r} "
                    f"takes its own options with --model-option KEY=VALUE (a [model_options] "
                    f"table), listed by `ngrad list --model {name}`"
                )
    if spec is not None:
        parsed = build_options(spec.options, given, f"model {name!r}")
        given = {key: getattr(parsed, key) for key in given}
    values["model"], values["model_options"] = name, _plain(given)
    return values


def _differs(value: Any, default: Any) -> bool:
    if isinstance(value, list | tuple) and isinstance(default, tuple):
        return tuple(value) != default
    return value != default


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
