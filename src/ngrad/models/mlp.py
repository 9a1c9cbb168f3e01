"""Multilayer perceptron as a plain ``nn.Sequential``.

    flatten -> fc1 -> act1 -> ... -> fcL -> act{L} -> fc{L+1}   (logits: no output activation,
                                                                 unless output_activation)

``hidden=(128, 128)`` on a 1x28x28 input gives 784 -> 128 -> 128 -> 10: 118,282 parameters. Any
input shape works (each sample is flattened). The activations are those of
:mod:`ngrad.nn.activations`, as torch modules (``leaky_relu`` keeps ngrad's slope 0.1), and the
options mirror :func:`ngrad.mlp`, so the same MLP exists as an ngrad ``Network``.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ngrad.models.common import (
    Activation,
    ModelSpec,
    activation_module,
    check_positive,
    checked_classes,
    checked_shape,
    initialise,
    parse_options,
)
from ngrad.nn.init import Init

__all__ = ["MLPOptions", "mlp"]


@dataclass(frozen=True)
class MLPOptions:
    hidden: tuple[int, ...] = (128, 128)  # widths of the hidden layers (empty: a linear classifier)
    activation: Activation = "tanh"  # hidden layers' nonlinearity
    output_activation: Activation = "identity"  # the output layer's (identity: logits); e.g.
    #     sigmoid with the squared error, burstprop's authors' output
    bias: bool = True  # give every linear layer a bias
    init: Init = "pytorch"  # weight initialisation: pytorch keeps torch's default; xavier,
    #     kaiming and gaussian redraw the weights (ngrad.nn.init) and zero the biases

    def __post_init__(self) -> None:
        check_positive(self, "hidden")


def mlp(
    input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, **options: Any
) -> nn.Sequential:
    """Flatten, then linear layers of widths ``hidden`` with ``activation``, then a linear
    classifier to ``num_classes`` logits (through ``output_activation`` if it is not the
    identity). Options: see :class:`MLPOptions`."""
    shape = checked_shape(input_shape, "mlp")
    classes = checked_classes(num_classes, "mlp")
    config = parse_options(MLPOptions, options, "mlp")
    widths = [math.prod(shape), *config.hidden, classes]
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for index, (n_in, n_out) in enumerate(itertools.pairwise(widths), start=1):
        layers[f"fc{index}"] = nn.Linear(n_in, n_out, bias=config.bias)
        if index < len(widths) - 1:
            layers[f"act{index}"] = activation_module(config.activation)
        elif config.output_activation != "identity":
            layers["output_activation"] = activation_module(config.output_activation)
    return initialise(nn.Sequential(layers), config.init)


MODELS = {
    "mlp": ModelSpec(
        builder=mlp,
        options=MLPOptions,
        summary="multilayer perceptron: flatten, hidden linear layers, linear classifier",
        citation="Rumelhart, Hinton & Williams 1986",
        inputs="any shape (flattened)",
    ),
}
