"""What a run trains, built from its configuration: the model, the rule on it, the optimiser and
the learning-rate schedule.

The model comes from the :mod:`ngrad.models` catalogue. The ``mlp`` is built as an ngrad
:class:`~ngrad.nn.network.Network` (:func:`ngrad.mlp`, the same weights as ever for a given
seed), which every rule trains; any other model is the plain ``nn.Module`` that
:func:`ngrad.models.build` returns. Either way the rule registry builds the rule on it
(:func:`ngrad.rules.make_rule`), and a rule that cannot train the model (its
``unsupported_reason``, or its refusal of the model's type) says why in one line.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ngrad.data import DataSplits
from ngrad.data.transforms import resized_shape
from ngrad.errors import ConfigError
from ngrad.nn.network import Network, mlp
from ngrad.rules import LearningRule, get_rule_class, make_rule
from ngrad.train.config import OPTIMIZERS, TrainConfig

__all__ = [
    "build_model",
    "build_network",
    "build_optimizer",
    "build_rule",
    "build_scheduler",
    "model_input_shape",
    "sample_shape",
    "unsupported_reason",
]

Scheduler = torch.optim.lr_scheduler.LRScheduler


def build_model(
    model: str,
    options: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    mlp_settings: TrainConfig | None = None,
) -> nn.Module:
    """The model ``model`` with ``options`` for samples of ``input_shape``: an ngrad Network for
    the mlp (``hidden``, ``activation`` and ``init`` from ``mlp_settings``, by default
    TrainConfig's defaults), else the catalogue's (or a ``module:factory``'s) ``nn.Module``."""
    if model == "mlp":
        settings = mlp_settings or TrainConfig()
        sizes = [math.prod(input_shape), *settings.hidden, num_classes]
        extra = {
            key: value for key, value in options.items() if key in ("bias", "output_activation")
        }
        return mlp(sizes, activation=settings.activation, init=settings.init, **extra)
    from ngrad import models

    return models.build(model, input_shape, num_classes, **options)


def sample_shape(config: TrainConfig, data: DataSplits) -> tuple[int, ...]:
    """The shape of one of ``data``'s samples as the run feeds it (after ``config.resize``)."""
    return resized_shape(data.input_shape, config.resize)


def build_network(config: TrainConfig, data: DataSplits) -> nn.Module:
    """The model ``config`` describes, for ``data``'s samples (as resized) and classes."""
    return build_model(
        config.model, config.model_options, sample_shape(config, data), data.num_classes, config
    )


def model_input_shape(model: nn.Module, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample as ``model`` takes it: an ngrad Network's own ``input_shape`` (the
    mlp takes flat vectors), else the data's shape (images stay images)."""
    if isinstance(model, Network) and model.input_shape is not None:
        return model.input_shape
    return tuple(data_shape)


def unsupported_reason(rule: str, model: nn.Module) -> str | None:
    """Why rule ``rule`` cannot train ``model`` (its ``unsupported_reason``, or the rule's refusal
    of the model's type), or None where it can."""
    cls = get_rule_class(rule)
    try:
        if cls.supports(model):
            return None
    except TypeError as refusal:  # a model of a type the rule does not take
        return str(refusal)
    return cls.unsupported_reason(model) or f"see its description: {cls.summary}"


def build_rule(config: TrainConfig, model: nn.Module) -> LearningRule:
    """Rule ``config.rule`` on ``model``, by the registry; ConfigError ``rule 'X' cannot train
    model 'Y': why`` where it cannot."""
    if isinstance(model, Network):  # the registry's own message names the network's problem
        return make_rule(config.rule, model, config.loss, **config.rule_options)
    refusal = f"rule {config.rule!r} cannot train model {config.model!r}"
    reason = unsupported_reason(config.rule, model)
    if reason is not None:
        raise ConfigError(f"{refusal}: {reason}")
    try:
        return make_rule(config.rule, model, config.loss, **config.rule_options)
    except TypeError as error:
        raise ConfigError(f"{refusal}: {error}") from None


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


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Scheduler | None:
    """The learning-rate schedule, stepped once after every epoch (None for ``none``). It scales
    every parameter group (forward weights and learned feedback) by the same factor."""
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(config.lr_milestones), gamma=config.lr_gamma
        )
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None
