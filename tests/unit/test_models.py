"""The model catalogue: shapes, parameter counts, options, batch norm, user factories, errors."""

import math
import sys
import textwrap

import pytest
import torch
from torch import nn

import ngrad
from ngrad.errors import ConfigError
from ngrad.models import MODELS, available_models, build
from ngrad.models.lenet import lenet
from ngrad.models.mlp import mlp
from ngrad.models.resnet import resnet20
from ngrad.models.vgg import vgg
from ngrad.nn.activations import ACTIVATIONS
from ngrad.nn.layers import Layer
from ngrad.options import describe_options

# A small input each catalogue model takes (the reference shape where the model needs it).
SHAPES = {
    "mlp": [(1, 28, 28), (5,)],
    "lenet": [(1, 28, 28), (1, 32, 32), (3, 32, 32)],
    "lenet_dtp": [(1, 28, 28), (3, 32, 32)],
    "vgg": [(3, 32, 32)],
    "vgg5": [(3, 32, 32)],
    "vgg7": [(3, 32, 32)],
    "simple_vgg": [(3, 32, 32)],
    "resnet20": [(3, 32, 32), (1, 9, 7)],
    "resnet56": [(3, 8, 8)],
    "resnet": [(3, 8, 8)],
}

# Parameter counts with 10 classes (the docstrings quote them; BioTorch's ResNet file quotes
# ResNet-20 0.27M and ResNet-56 0.85M).
PARAMETERS = {
    ("mlp", (1, 28, 28)): 118_282,
    ("lenet", (1, 32, 32)): 61_706,
    ("lenet", (1, 28, 28)): 61_706,
    ("lenet", (3, 32, 32)): 128_842,
    ("lenet_dtp", (3, 32, 32)): 2_156_490,
    ("lenet_dtp", (1, 28, 28)): 1_663_370,
    ("vgg5", (3, 32, 32)): 3_859_210,
    ("vgg7", (3, 32, 32)): 4_581_514,
    ("simple_vgg", (3, 32, 32)): 2_221_706,
    ("resnet20", (3, 32, 32)): 269_722,
    ("resnet56", (3, 32, 32)): 853_018,
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def one_line_config_error(call, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_catalogue_model_is_tested():
    assert set(SHAPES) == set(MODELS)
    assert set(available_models()) == set(MODELS)


@pytest.mark.parametrize(
    ("name", "shape"), [(name, shape) for name, shapes in SHAPES.items() for shape in shapes]
)
def test_output_is_one_logit_per_class(name, shape):
    model = build(name, shape, 7)
    assert isinstance(model, nn.Module)
    assert model(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize(("name", "shape"), list(PARAMETERS))
def test_parameter_counts(name, shape):
    assert count(build(name, shape, 10)) == PARAMETERS[name, shape]


def test_resnet_sizes_match_the_reference_code():
    assert round(count(build("resnet20", (3, 32, 32), 10)) / 1e6, 2) == 0.27
    assert round(count(build("resnet56", (3, 32, 32), 10)) / 1e6, 2) == 0.85
    assert count(build("resnet", (3, 32, 32), 10, depth=56)) == PARAMETERS["resnet56", (3, 32, 32)]


@pytest.mark.parametrize("name", list(MODELS))
def test_models_are_made_of_plain_torch_layers(name):
    model = build(name, SHAPES[name][0], 3)
    if isinstance(model, ngrad.Network):  # a VGG with a monotone activation: ngrad's layers
        assert name == "vgg" and all(isinstance(layer, Layer) for layer in model.layers)
        model = build(name, SHAPES[name][0], 3, activation="gelu")
    for module in model.modules():
        assert not isinstance(module, ngrad.Network | Layer)
        if any(True for _ in module.parameters(recurse=False)):
            assert type(module).__module__.startswith("torch.nn"), type(module)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_option_has_help_and_options_are_frozen(name):
    spec = MODELS[name]
    assert spec.options.__dataclass_params__.frozen
    assert all(info.help for info in describe_options(spec.options))


def test_builders_import_on_their_own_and_validate_too():
    assert MODELS["resnet20"].builder is resnet20
    assert MODELS["lenet"].builder is lenet
    assert count(resnet20()) == PARAMETERS["resnet20", (3, 32, 32)]
    small = vgg((3, 8, 8), 4, channels="4,8", hidden="16")  # command-line text is converted
    assert small(torch.randn(1, 3, 8, 8)).shape == (1, 4)
    one_line_config_error(lambda: mlp((4,), 2, hidden="0"), "positive integers")


def test_lenet_picks_its_variant_from_the_input_shape():
    mnist28, mnist32, cifar = (
        build("lenet", s, 10) for s in [(1, 28, 28), (1, 32, 32), (3, 32, 32)]
    )
    assert mnist28.conv1.padding == (2, 2) and mnist32.conv1.padding == (0, 0)
    assert mnist32.conv1.kernel_size == (5, 5) and mnist32.fc1.in_features == 120
    assert cifar.conv1.kernel_size == (3, 3) and cifar.fc1.out_features == 256
    message = one_line_config_error(lambda: build("lenet", (3, 28, 28), 10), "LeNetCIFAR")
    assert "3x28x28" in message
    one_line_config_error(lambda: build("lenet", (784,), 10), "channels, height, width")


def test_biotorch_models_default_to_xavier_with_zero_biases():
    model = build("lenet", (1, 32, 32), 10)
    for layer in (model.conv1, model.fc1):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        assert layer.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
        assert torch.count_nonzero(layer.bias) == 0
    assert torch.count_nonzero(build("lenet", (1, 32, 32), 10, init="pytorch").fc1.bias) > 0
    net = build("resnet20", (3, 8, 8), 10)
    assert torch.count_nonzero(net.fc.bias) == 0
    assert torch.equal(net.bn1.weight, torch.ones(16))  # batch norm keeps torch's default
    assert torch.count_nonzero(build("mlp", (4,), 2).fc1.bias) > 0  # mlp: torch's default


def block_shapes(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    if isinstance(model, ngrad.Network):  # a VGG of ngrad layers: each conv layer is a block
        shapes = model.layer_output_shapes()
        return [tuple(s) for s, layer in zip(shapes, model.layers, strict=True) if s.numel() > 0
                and isinstance(layer, ngrad.nn.Conv2dLayer)]  # fmt: skip
    shapes = []
    blocks = [m for n, m in model.named_children() if n.startswith("block")]
    hooks = [
        b.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape[1:])) for b in blocks
    ]
    model(torch.randn(1, *shape))
    for hook in hooks:
        hook.remove()
    return [tuple(s) for s in shapes]


def test_vgg_presets_follow_the_benchmarks_maps():
    assert block_shapes(build("vgg5", (3, 32, 32), 10), (3, 32, 32)) == [
        (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)
    ]  # fmt: skip
    assert block_shapes(build("vgg7", (3, 32, 32), 10), (3, 32, 32)) == [
        (128, 16, 16), (128, 16, 16), (256, 8, 8), (256, 6, 6), (512, 3, 3), (512, 1, 1)
    ]  # fmt: skip
    simple = build("simple_vgg", (3, 32, 32), 10)
    assert block_shapes(simple, (3, 32, 32))[-1] == (512, 1, 1)
    assert isinstance(simple.block1.act, nn.ELU)
    assert isinstance(build("vgg5", (3, 32, 32), 10).block1.act, nn.GELU)


def test_vgg_options_from_text():
    model = build(
        "vgg", (3, 12, 12), 5, channels="4,6,8", pool="1", unpadded="3", hidden="9",
        activation="tanh", batch_norm="true", kernel_size="3",
    )  # fmt: skip
    assert block_shapes(model, (3, 12, 12)) == [(4, 6, 6), (6, 6, 6), (8, 4, 4)]
    assert isinstance(model.block2.bn, nn.BatchNorm2d) and model.block2.conv.bias is None
    assert isinstance(model.block2.act, nn.Tanh) and model.fc1.out_features == 9
    unpooled = build("vgg", (1, 5, 5), 2, channels=(3,), pool=())
    assert block_shapes(unpooled, (1, 5, 5)) == [(3, 5, 5)]


def test_vgg_with_a_monotone_activation_is_a_network_of_pooled_ngrad_layers():
    from ngrad.models.vgg import VGGOptions, _build_module

    options = {"channels": (4, 6), "pool": (1, 2), "hidden": (7,), "activation": "relu"}
    torch.manual_seed(0)
    network = build("vgg", (3, 9, 9), 5, **options)
    torch.manual_seed(0)
    module = _build_module("vgg", (3, 9, 9), 5, VGGOptions(**options))
    assert isinstance(network, ngrad.Network) and not isinstance(module, ngrad.Network)
    assert [getattr(layer, "pool", 1) for layer in network.layers] == [2, 2, 1, 1]
    assert block_shapes(network, (3, 9, 9)) == block_shapes(module, (3, 9, 9))
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(network(x), module(x))  # conv -> relu -> pool, same weights
    assert count(network) == count(module)
    assert isinstance(build("vgg5", (3, 32, 32), 10, activation="tanh"), ngrad.Network)
    for plain in ({"activation": "gelu"}, {"batch_norm": True}):  # gelu is not monotone
        assert not isinstance(build("vgg7", (3, 32, 32), 10, **plain), ngrad.Network)


def test_rules_train_the_vgg_network_or_say_why():
    from ngrad.rules import REGISTRY
    from ngrad.train.build import unsupported_reason

    network = build("vgg", (1, 8, 8), 3, channels=(2, 3), activation="relu")
    refusals = {name: unsupported_reason(name, network) for name in REGISTRY}
    for name in ("bp", "fa", "ep", "chl", "pc"):
        assert refusals[name] is None, (name, refusals[name])
    signed = build("vgg", (1, 8, 8), 3, channels=(2, 3), activation="tanh")
    assert "non-negative" in unsupported_reason("ep", signed)


def test_vgg_refuses_inputs_its_pooling_empties():
    message = one_line_config_error(lambda: build("vgg5", (3, 8, 8), 10), "too small")
    assert "block 4" in message and "3x8x8" in message
    one_line_config_error(lambda: build("vgg", (3, 8, 8), 10, pool=(5,)), "blocks 1 to 4")


def test_resnet_structure_and_shortcuts():
    net = build("resnet20", (3, 8, 8), 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 20  # 19 convs and the classifier are the 20 weighted layers
    option_b = build("resnet20", (3, 8, 8), 10, shortcut="B")
    assert len([m for m in option_b.modules() if isinstance(m, nn.Conv2d)]) == 21
    assert count(option_b) > count(net)
    assert len(build("resnet", (3, 8, 8), 10, depth="32").layer2) == 5
    one_line_config_error(lambda: build("resnet", (3, 8, 8), 10, depth=21), "6n\\+2")
    one_line_config_error(lambda: build("resnet20", (3, 8, 8), 10, shortcut="C"), "'A', 'B'")


def test_batch_norm_train_and_eval_modes():
    net = build("resnet20", (3, 8, 8), 4)
    x = torch.randn(6, 3, 8, 8)
    net.train()
    before = net.bn1.running_mean.clone()
    batch_out = net(x)
    assert not torch.equal(net.bn1.running_mean, before)  # train mode updates running stats
    assert not torch.allclose(net(x[:1]), batch_out[:1])  # and normalises with batch statistics
    net.eval()
    frozen = net.bn1.running_mean.clone()
    torch.testing.assert_close(net(x[:1]), net(x)[:1], rtol=1e-5, atol=1e-6)
    assert torch.equal(net.bn1.running_mean, frozen)


def test_every_parameter_gets_a_gradient_under_backward_hooks():
    """No in-place residual addition or ReLU: hooks on every layer may see the gradients."""
    net = build("resnet20", (3, 8, 8), 4)
    seen = []
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            module.register_full_backward_hook(lambda _m, _gi, go: seen.append(go[0].shape))
    x = torch.randn(3, 3, 8, 8, requires_grad=True)  # so the first conv's hook has an input
    nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 3])).backward()
    assert all(p.grad is not None for p in net.parameters())
    assert len(seen) == 20 + 19


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_mlp_has_every_ngrad_activation_and_an_ngrad_twin(name):
    torch.manual_seed(1)
    model = build("mlp", (2, 3), 4, hidden=(5,), activation=name).double()
    twin = ngrad.mlp([6, 5, 4], activation=name).double()
    with torch.no_grad():
        for ours, theirs in zip((model.fc1, model.fc2), twin.layers, strict=True):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x), twin(x.flatten(1)))


def test_mlp_options():
    linear = build("mlp", (4,), 3, hidden="", bias="false")
    assert [type(m) for m in linear] == [nn.Flatten, nn.Linear] and linear.fc1.bias is None
    assert build("mlp", (4,), 3, init="xavier").fc1.bias.count_nonzero() == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build("resnet21", (3, 8, 8), 10), "unknown model 'resnet21'; choose one of: mlp"),
        (lambda: build("mlp", (4,), 3, width=3), "has no option 'width'; its options are"),
        (lambda: build("mlp", (4,), 3, hidden="a,b"), "option 'hidden' expects a list of int"),
        (lambda: build("mlp", (4,), 3, hidden=(4, 0)), "positive integers"),
        (lambda: build("mlp", (4,), 3, hidden=(2.5,)), "option 'hidden'"),
        (lambda: build("mlp", (4,), 3, activation="swish"), "must be one of"),
        (lambda: build("vgg", (3, 8, 8), 3, channels="0"), "positive integers"),
        (lambda: build("lenet_dtp", (3, 8, 8), 3, hidden=0), "positive integers"),
        (lambda: build("mlp", (4,), 0), "num_classes must be positive"),
        (lambda: build("mlp", (4,), 2.0), "num_classes must be an integer"),
        (lambda: build("mlp", (0, 4), 2), "input_shape takes positive integers"),
        (lambda: build("mlp", "1x28x28", 2), "shape of one sample"),
        (lambda: build("resnet20", (32, 32), 2), "channels, height, width"),
    ],
)
def test_errors_are_one_line_config_errors(call, match):
    one_line_config_error(call, match)


USER_MODULE = "ngrad_test_user_nets"
USER_SOURCE = """
    from torch import nn


    def make_net(input_shape, num_classes, width: int = 8, bias: bool = True):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1], width, bias=bias),
            nn.ReLU(), nn.Linear(width, num_classes),
        )


    class Net(nn.Module):
        def __init__(self, input_shape, num_classes, scale=1.0):
            super().__init__()
            self.scale = scale
            self.fc = nn.Linear(input_shape[-1], num_classes)

        def forward(self, x):
            return self.fc(x) * self.scale


    class Holder:
        make = staticmethod(make_net)


    def returns_a_number(input_shape, num_classes):
        return 3


    def takes_nothing():
        return nn.Linear(1, 1)


    NOT_CALLABLE = 5
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / f"{USER_MODULE}.py").write_text(textwrap.dedent(USER_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, USER_MODULE, raising=False)
    yield USER_MODULE
    sys.modules.pop(USER_MODULE, None)


def test_user_factory_builds_with_converted_options(user_module):
    model = build(f"{user_module}:make_net", (2, 3), 4, width="5", bias="false")
    assert model[1].out_features == 5 and model[1].bias is None
    assert model(torch.randn(2, 2, 3)).shape == (2, 4)
    net = build(f"{user_module}:Net", [6], 2, scale="2")  # unannotated: passed as given
    assert isinstance(net, nn.Module) and net.scale == "2"
    assert build(f"{user_module}:Holder.make", (1, 2), 3)[1].in_features == 2


@pytest.mark.parametrize(
    ("factory", "options", "match"),
    [
        ("no_such_module_xyz:make", {}, "cannot import module 'no_such_module_xyz'"),
        ("{m}:missing", {}, "has no attribute 'missing'"),
        ("{m}:Holder.missing", {}, "has no attribute 'missing'"),
        ("{m}:NOT_CALLABLE", {}, "is a int, not a callable factory"),
        ("{m}:returns_a_number", {}, "returned a int, not a torch.nn.Module"),
        ("{m}:takes_nothing", {}, "cannot call it as factory\\(input_shape, num_classes"),
        ("{m}:make_net", {"depth": 3}, "its options are: width, bias"),
        ("{m}:make_net", {"width": "wide"}, "option 'width' expects int"),
        ("{m}:", {}, "named module:factory"),
    ],
)
def test_user_factory_errors(user_module, factory, options, match):
    name = factory.format(m=user_module)
    one_line_config_error(lambda: build(name, (2, 3), 4, **options), match)
