"""The model catalogue: plain ``torch.nn.Module`` builders by name.

    model = ngrad.models.build("resnet20", (3, 32, 32), 10)
    model = ngrad.models.build("vgg", (3, 32, 32), 10, channels=(64, 128), activation="relu")
    model = ngrad.models.build("mypkg.nets:make_net", (1, 28, 28), 10, width="64")

Each builder is importable on its own (``from ngrad.models.resnet import resnet20``) and is called
as ``builder(input_shape, num_classes, **options)``; ``input_shape`` is the shape of one sample
(``(1, 28, 28)``, ``(3, 32, 32)``), without the batch dimension. The models hold no ngrad types:
any rule that takes an ``nn.Module``, any optimiser and ``state_dict`` work on them as on any
torch model.

Options are the fields of each model's frozen dataclass (``MODELS[name].options``; the comment on
a field's line is its help, as for rule options). Values may be typed (Python, TOML) or text
(the command line: ``"64"``, ``"true"``, ``"32,64"`` for a list); an unknown option, a value of
the wrong type, a non-positive size or an input shape the model cannot take raise a one-line
:class:`~ngrad.errors.ConfigError`.

Families: :mod:`~ngrad.models.mlp`, :mod:`~ngrad.models.lenet`, :mod:`~ngrad.models.vgg`,
:mod:`~ngrad.models.resnet`; and user factories ``module:factory``
(:mod:`~ngrad.models.factory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ngrad.errors import ConfigError
from ngrad.models import lenet, mlp, resnet, vgg
from ngrad.models.common import ModelSpec
from ngrad.models.factory import build_from_factory, is_factory_name

__all__ = ["MODELS", "ModelSpec", "available_models", "build", "get_model"]

MODELS: dict[str, ModelSpec] = {**mlp.MODELS, **lenet.MODELS, **vgg.MODELS, **resnet.MODELS}
"""{name: catalogue entry} of every model ``build`` knows by name."""


def available_models() -> dict[str, str]:
    """``{name: one-line description with its citation}`` for every catalogue model."""
    return {name: f"{spec.summary} [{spec.citation}]" for name, spec in MODELS.items()}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_model(name: str) -> ModelSpec:
    """The catalogue entry ``name`` (case and ``-``/``_`` ignored); ConfigError naming the
    choices if there is none."""
    if not isinstance(name, str):
        raise ConfigError(f"a model name is a string, got {name!r}")
    spec = MODELS.get(_key(name))
    if spec is None:
        choices = ", ".join(MODELS)
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {choices}, or module:factory for your own"
        )
    return spec


def build(name: str, input_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """The model ``name`` for samples of shape ``input_shape`` and ``num_classes`` classes.

    ``name`` is a catalogue name (:func:`available_models`) or ``module:factory``, a user's
    function called as ``factory(input_shape, num_classes, **options)`` that returns an
    ``nn.Module`` (see :mod:`ngrad.models.factory`).
    """
    if isinstance(name, str) and is_factory_name(name):
        return build_from_factory(name.strip(), input_shape, num_classes, options)
    return get_model(name).builder(input_shape, num_classes, **options)
