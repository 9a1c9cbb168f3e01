"""Models and helpers of the tests of the feedback-alignment family on general torch modules
(test_fa_modules.py, test_fa_modules_api.py), all float64."""

import copy
from collections import OrderedDict

import torch
from torch import nn

import ngrad
from ngrad import models
from ngrad.rules import REGISTRY
from ngrad.rules.checking import set_feedback_to_forward

FAMILY = [
    name
    for name, cls in REGISTRY.items()
    if cls.__module__.startswith("ngrad.rules.feedback_alignment.")
]
MODULE_RULES = [name for name, cls in REGISTRY.items() if cls.trains_modules]
NETWORK_ONLY = [name for name, cls in REGISTRY.items() if not cls.trains_modules]
LEARNED = [name for name in FAMILY if ngrad.make_rule(name, nn.Linear(2, 2)).feedback_parameters()]
EXACT = 1e-12


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (He et al.'s basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


def conv_bn_pool_residual(seed: int = 0) -> nn.Module:
    """2x8x8 -> conv, BN, in-place ReLU, max-pool, residual block, two dense layers -> 3."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(2, 4, 3, padding=1),
            bn=nn.BatchNorm2d(4),
            act=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2),
            block=Residual(4),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64, 6),
            act2=nn.Tanh(),
            fc2=nn.Linear(6, 3),
        )
    ).double()
    with torch.no_grad():  # batch norm's affine parameters away from (1, 0)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


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


def autograd_gradients(model, loss, x, y):
    """Backprop through a copy of ``model`` (batch norm in the same mode): every parameter's
    gradient, in ``model.parameters()`` order."""
    twin = copy.deepcopy(model)
    value = loss(twin(x), y)
    return list(torch.autograd.grad(value, list(twin.parameters()))), float(value.detach())


def relative_error(actual, expected) -> float:
    """max over tensors of |actual - expected|_max / |expected|_max, where the scale of a
    gradient that vanishes analytically (a conv bias before batch norm: float64 noise) is taken
    at 1e-3 of the largest gradient."""
    floor = 1e-3 * max(float(e.abs().max()) for e in expected)
    return max(
        float((a - e).abs().max()) / max(float(e.abs().max()), floor)
        for a, e in zip(actual, expected, strict=True)
    )


def set_feedback_transposed(rule) -> bool:
    """Every feedback matrix := its forward weight (B := W^T), through what the rule exposes:
    its stored matrices, or sign symmetry's fixed magnitudes := |W|. False if it cannot be."""
    with torch.no_grad():
        if hasattr(rule, "magnitudes"):
            for magnitude, weight in zip(rule.magnitudes, rule.fed_weights(), strict=True):
                magnitude.copy_(weight.abs())
        else:
            set_feedback_to_forward(rule)
    pairs = rule.feedback_pairs()
    return bool(pairs) and all(torch.equal(p.feedback, p.forward) for p in pairs)


def options_for(name):
    return {"weight_decay": 0.0} if name == "kp" else {}


# the rules whose feedback can be set to W^T (not DFA's, not usf's one magnitude or brsf's
# random ones): found by trying
TRANSPOSABLE = [
    name
    for name in FAMILY
    if set_feedback_transposed(ngrad.make_rule(name, nn.Sequential(nn.Linear(3, 2))))
]
