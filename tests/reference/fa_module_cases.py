"""Models and helpers of the tests of the feedback-alignment family on general torch modules
(test_fa_modules.py, test_fa_modules_api.py), all float64."""

import copy

import torch
from torch import nn

import ngrad
from ngrad import models
from ngrad.rules import REGISTRY
from ngrad.rules.base import model_layers
from ngrad.rules.feedback_alignment.module_checks import (  # noqa: F401  (the tests' helpers)
    autograd_gradients,
    conv_bn_pool_residual,
    copy_network_feedback,
    network_twins,
    relative_error,
    set_feedback_transposed,
)

FAMILY = [
    name
    for name, cls in REGISTRY.items()
    if cls.__module__.startswith("ngrad.rules.feedback_alignment.")
]
MODULE_RULES = [name for name, cls in REGISTRY.items() if cls.trains_modules]
NETWORK_ONLY = [name for name, cls in REGISTRY.items() if not cls.trains_modules]
LEARNED = [name for name in FAMILY if ngrad.make_rule(name, nn.Linear(2, 2)).feedback_parameters()]
EXACT = 1e-12


class Mixed(nn.Module):
    """Conv1d with "same" padding, a grouped Conv2d with reflect padding, a strided Conv3d."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding="same")
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, groups=2, padding_mode="reflect")
        self.c3 = nn.Conv3d(1, 2, 2, stride=2)
        self.c4 = nn.Conv2d(2, 2, 2, dilation=2, padding="valid")
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        n = x.shape[0]
        h = torch.tanh(self.c1(x)).view(n, 4, 4, 4)
        h = torch.tanh(self.c2(h)).view(n, 1, 4, 4, 4)
        h = torch.tanh(self.c3(h)).view(n, 2, 4, 2)
        h = torch.tanh(self.c4(torch.nn.functional.pad(h, (2, 2))))
        return self.fc(h.flatten(1))


def mixed_convolutions() -> nn.Module:
    torch.manual_seed(4)
    return Mixed().double()


MODELS = {
    "conv_bn_pool_residual": (conv_bn_pool_residual, (2, 8, 8)),
    "resnet20": (lambda: models.build("resnet20", (3, 8, 8), 3, width=2).double(), (3, 8, 8)),
    "resnet20_shortcut_b": (
        lambda: models.build("resnet20", (3, 8, 8), 3, width=2, shortcut="B").double(),
        (3, 8, 8),
    ),
    "lenet": (lambda: models.build("lenet", (1, 28, 28), 3).double(), (1, 28, 28)),
    "conv1d_3d_grouped_padded": (mixed_convolutions, (2, 16)),
}


def batch(shape, n=6, classes=3, seed=5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def options_for(name):
    return {"weight_decay": 0.0} if name == "kp" else {}


# the rules whose feedback can be set to W^T (not DFA's, not usf's one magnitude or brsf's
# random ones): found by trying
TRANSPOSABLE = [
    name
    for name in FAMILY
    if set_feedback_transposed(ngrad.make_rule(name, nn.Sequential(nn.Linear(3, 2))))
]


def dfa_oracle(model, rule, x, y, inject=None):
    """Autograd on  <e, output> + sum_l <D_l e, x_l>  (x_l the input of layer l, detached inside
    the layer so that W_l is reached only through its own output; e and D_l e held fixed): the
    gradient DFA promises when D_l e enters at each layer's input and everything else
    backpropagates as usual. ``inject(index, error, x_l)`` gives the signal entering at layer
    ``index``'s input (default e D_l with the rule's dense D_l)."""
    twin = copy.deepcopy(model)
    layers = model_layers(twin)
    inputs = {}

    def detach(index, _module, args):
        inputs[index] = args[0]
        return (args[0].detach(), *args[1:])

    handles = [
        module.register_forward_pre_hook(lambda m, a, i=i: detach(i, m, a))
        for i, (_, module) in enumerate(layers)
    ]
    output = twin(x)
    for handle in handles:
        handle.remove()
    leaf = output.detach().requires_grad_(True)
    (error,) = torch.autograd.grad(rule.loss(leaf, y), leaf)
    surrogate = (error * output).sum()
    for index, value in inputs.items():
        if value.requires_grad:
            if inject is None:
                injected = (error.flatten(1) @ rule.feedback[index]).view_as(value)
            else:
                injected = inject(index, error, value)
            surrogate = surrogate + (injected * value).sum()
    return list(torch.autograd.grad(surrogate, list(twin.parameters())))
