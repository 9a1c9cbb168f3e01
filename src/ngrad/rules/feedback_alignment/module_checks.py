"""Reference properties of the feedback-alignment family on a general ``torch.nn.Module``
(docs/feedback_alignment.md, "Any model"), which ``ngrad check`` runs beside the network checks.

The model (:func:`conv_bn_pool_residual`) has what the layerwise path cannot express: a
convolution followed by batch norm, an in-place ReLU, max-pooling and a residual block with its own
batch norms. In float64:

- with every feedback matrix set to its forward weight (B := W^T), the converted model's update is
  autograd's gradient for every parameter (convolutions, dense layers, batch norm);
- on an MLP and a strided conv net given as torch modules, the module path gives the same update
  as the layerwise path of the ngrad Network holding the same weights and feedback (the
  closed-form oracle);
- every trained parameter of the model gets a ``.grad``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ngrad.nn.network import Network, convnet, mlp
from ngrad.rules import REGISTRY, make_rule
from ngrad.rules.base import LearningRule
from ngrad.rules.checking import CheckResult, check_of, set_feedback_to_forward

__all__ = [
    "autograd_gradients",
    "conv_bn_pool_residual",
    "copy_network_feedback",
    "network_twins",
    "relative_error",
    "set_feedback_transposed",
]

MODULE_RULES = tuple(cls for cls in REGISTRY.values() if cls.trains_modules)
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

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


def conv_bn_pool_residual(seed: int = 0) -> nn.Module:
    """2x8x8 -> conv, BN, in-place ReLU, max-pool, residual block, two dense layers -> 3
    (float64)."""
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


def autograd_gradients(model: nn.Module, loss, x: Tensor, y: Tensor) -> tuple[list[Tensor], float]:
    """Backprop through a copy of ``model`` (batch norm in the same mode): every parameter's
    gradient, in ``model.parameters()`` order, and the loss."""
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


def set_feedback_transposed(rule: LearningRule) -> bool:
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


def _batch(shape: tuple[int, ...], n: int = 6, classes: int = 3) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn((n, *shape), generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def _options(rule_name: str) -> dict:
    return {"weight_decay": 0.0} if rule_name == "kp" else {}


@check_of(*MODULE_RULES)
def check_module_path_every_parameter_gets_a_grad(rule_name: str) -> list[CheckResult]:
    """Conv, batch norm, max-pool, residual block: count the trained parameters left without a
    ``.grad`` after one ``backward`` (must be 0)."""
    model = conv_bn_pool_residual()
    rule = make_rule(rule_name, model, **_options(rule_name))
    rule.backward(*_batch((2, 8, 8)))
    missing = sum(p.grad is None for p in rule.parameters() if p.requires_grad)
    return [
        CheckResult(
            rule_name,
            "any nn.Module (conv, BN, max-pool, residual): parameters without a .grad",
            float(missing),
            0.5,
            "<",
        )
    ]


@check_of(*MODULE_RULES)
def check_module_path_with_transposed_feedback_is_autograd(rule_name: str) -> list[CheckResult]:
    """With B := W^T (where the rule's feedback can be set so), the update on the conv / BN /
    max-pool / residual model is autograd's gradient of every parameter."""
    model = conv_bn_pool_residual()
    rule = make_rule(rule_name, model, **_options(rule_name))
    if rule_name != "bp" and not set_feedback_transposed(rule):
        return []  # DFA, usf and brsf: their feedback is never W^T
    x, y = _batch((2, 8, 8))
    expected, _ = autograd_gradients(model, rule.loss, x, y)
    rule.backward(x, y)
    return [
        CheckResult(
            rule_name,
            "any nn.Module, B := W^T: update vs autograd's gradient (max rel. error)",
            relative_error([p.grad for p in model.parameters()], expected),
            EXACT,
            "<",
        )
    ]


def network_twins(kind: str) -> tuple[Network, nn.Sequential, tuple[int, ...]]:
    """A float64 ngrad Network (``dense``: an MLP; ``conv``: two strided convs and a dense
    layer) and the same model built from torch layers with the same weights; the input shape."""
    torch.manual_seed(3)
    if kind == "dense":
        network, shape = mlp([10, 8, 7, 3], activation="tanh").double(), (10,)
    else:
        network = convnet((1, 6, 6), (2, 3), num_classes=3, hidden=(5,), activation="tanh")
        network, shape = network.double(), (1, 6, 6)
    modules: list[nn.Module] = []
    for index, layer in enumerate(network.layers):
        if layer.weight.dim() == 4:
            out_c, in_c, k, _ = layer.weight.shape
            torch_layer = nn.Conv2d(in_c, out_c, k, stride=layer.stride, padding=layer.padding)
        else:
            if not any(isinstance(m, nn.Flatten) for m in modules):
                modules.append(nn.Flatten())
            torch_layer = nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
        torch_layer = torch_layer.double()
        with torch.no_grad():
            torch_layer.weight.copy_(layer.weight)
            torch_layer.bias.copy_(layer.bias)
        modules.append(torch_layer)
        if index < len(network.layers) - 1:
            modules.append(nn.Tanh())
    return network, nn.Sequential(*modules), shape


def copy_network_feedback(network_rule: LearningRule, module_rule: LearningRule) -> None:
    """The module rule gets the Network rule's feedback (its first layer has one more, unused).
    DFA's module matrices are drawn at its first batch: run one before copying."""
    if network_rule.name == "dfa":
        with torch.no_grad():
            for index, block in enumerate(network_rule.feedback_matrices(), start=1):
                module_rule.feedback[index].copy_(block)
        return
    theirs = network_rule.state_dict()
    with torch.no_grad():
        for key, value in module_rule.state_dict().items():
            if key.startswith("network."):
                continue
            prefix, _, position = key.rpartition(".")
            if position.isdigit():
                if int(position) >= 1:
                    value.copy_(theirs[f"{prefix}.{int(position) - 1}"])
            else:  # one number per layer (sign symmetry's scales)
                value[1:].copy_(theirs[key])


@check_of(*MODULE_RULES)
def check_module_path_matches_the_layerwise_oracle(rule_name: str) -> list[CheckResult]:
    """The same MLP and strided conv net as ngrad Networks and as torch modules, with the same
    weights, feedback and random draws: the two paths write the same update."""
    results = []
    for kind in ("dense", "conv"):
        network, model, shape = network_twins(kind)
        x, y = _batch(shape, n=12)
        network_rule = make_rule(rule_name, network)
        module_rule = make_rule(rule_name, model)
        if rule_name == "dfa":
            module_rule.backward(x, y)
        copy_network_feedback(network_rule, module_rule)
        torch.manual_seed(9)
        network_rule.backward(x, y)
        torch.manual_seed(9)
        module_rule.backward(x, y)
        expected = [p.grad for p in network.parameters()]
        error = relative_error([p.grad for p in model.parameters()], expected)
        results.append(
            CheckResult(
                rule_name,
                f"torch {kind} model vs the layerwise path, same weights and B (max rel. err.)",
                error,
                EXACT,
                "<",
            )
        )
    return results
