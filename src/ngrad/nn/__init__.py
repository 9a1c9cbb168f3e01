"""What a learning rule sees of a model: activations, losses, initialisation, layers (linear maps
with their adjoints and outer-product updates), forward traces and the model builders."""

from ngrad.nn.activations import ACTIVATIONS, Activation, get_activation
from ngrad.nn.init import INITIALISATIONS
from ngrad.nn.layers import Conv2dLayer, DenseLayer, Layer
from ngrad.nn.losses import LOSSES, Loss, get_loss
from ngrad.nn.network import ForwardTrace, Network, convnet, mlp

__all__ = [
    "ACTIVATIONS",
    "INITIALISATIONS",
    "LOSSES",
    "Activation",
    "Conv2dLayer",
    "DenseLayer",
    "ForwardTrace",
    "Layer",
    "Loss",
    "Network",
    "convnet",
    "get_activation",
    "get_loss",
    "mlp",
]
