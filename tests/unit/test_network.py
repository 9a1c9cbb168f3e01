"""Layers, activations and losses against autograd."""

import pytest
import torch

import ngrad
from ngrad.models.common import activation_module
from ngrad.nn.activations import ACTIVATIONS, get_activation
from ngrad.nn.init import fans, random_like
from ngrad.nn.layers import Conv2dLayer, DenseLayer
from ngrad.nn.losses import LOSSES, get_loss
from ngrad.rules.energy_based.energy import ENERGY_INTEGRALS


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_autograd(name):
    activation = get_activation(name)
    a = torch.linspace(-3, 3, 41, dtype=torch.float64).requires_grad_()
    h = activation(a)
    (expected,) = torch.autograd.grad(h.sum(), a)
    torch.testing.assert_close(activation.derivative(a.detach(), h.detach()), expected)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "leaky_relu", "identity"])
def test_invertible_activations_round_trip(name):
    activation = get_activation(name)
    a = torch.linspace(-2, 2, 21, dtype=torch.float64)
    torch.testing.assert_close(activation.inverse(activation(a)), a)


def test_hard_sigmoid_is_laborieux_clip_and_its_module_twin_agrees():
    a = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.0, 0.25, 0.5, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(get_activation("hard_sigmoid")(a), expected)
    torch.testing.assert_close(activation_module("hard_sigmoid")(a), expected)
    # the energy's G(s) = s^2 on [0, 1]: G'(s) = 2 s is the unit's inverse where it is linear
    s = torch.linspace(0.05, 0.95, 7, dtype=torch.float64).requires_grad_()
    (slope,) = torch.autograd.grad(ENERGY_INTEGRALS["hard_sigmoid"](s).sum(), s)
    torch.testing.assert_close(get_activation("hard_sigmoid")(slope), s.detach())


def test_non_invertible_activation_says_so():
    with pytest.raises(ValueError, match="not invertible"):
        get_activation("relu").inverse(torch.zeros(2))


def test_unknown_activation_names_choices():
    with pytest.raises(ValueError, match="choose one of"):
        get_activation("swish")


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("output_activation", ["identity", "sigmoid", "tanh"])
def test_output_error_matches_autograd(loss_name, output_activation):
    loss = get_loss(loss_name)
    activation = get_activation(output_activation)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=generator, dtype=torch.float64).requires_grad_()
    targets = torch.randint(0, 5, (7,), generator=generator)
    h = activation(a)
    (expected,) = torch.autograd.grad(loss(h, targets), a)
    actual = loss.output_error(a.detach(), h.detach(), targets, activation)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (DenseLayer(6, 4, "tanh"), (3, 6)),
        (DenseLayer(12, 4, "tanh"), (3, 3, 2, 2)),  # flattens a convolutional input
        (Conv2dLayer(2, 3, 3, "relu", stride=2, padding=1), (3, 2, 7, 7)),
        (Conv2dLayer(2, 3, 3, "relu", stride=1, padding=0), (3, 2, 6, 6)),
    ],
)
def test_layer_adjoints_match_autograd(layer, shape):
    layer = layer.double()
    inputs = torch.randn(shape, dtype=torch.float64).requires_grad_()
    pre = layer.pre_activation(inputs)
    delta = torch.randn_like(pre)
    grad_input, grad_weight, grad_bias = torch.autograd.grad(
        pre, [inputs, layer.weight, layer.bias], delta
    )
    other = torch.randn_like(layer.weight)
    torch.testing.assert_close(layer.transpose(delta, layer.weight, inputs.shape), grad_input)
    torch.testing.assert_close(layer.weight_gradient(delta, inputs.detach()), grad_weight)
    torch.testing.assert_close(layer.bias_gradient(delta), grad_bias)
    # the adjoint with another matrix is the adjoint of the linear map with that matrix
    out = layer.linear(inputs, other)
    (expected,) = torch.autograd.grad(out, inputs, delta)
    torch.testing.assert_close(layer.transpose(delta, other, inputs.shape), expected)


POOLED = [
    (Conv2dLayer(2, 3, 3, "relu", stride=1, padding=1, pool=2), (3, 2, 6, 6)),
    (Conv2dLayer(2, 3, 3, "tanh", stride=1, padding=1, pool=2), (2, 2, 7, 7)),  # 7 // 2: drops one
    (Conv2dLayer(2, 4, 3, "relu", stride=2, padding=1, pool=3), (2, 2, 13, 13)),
]


@pytest.mark.parametrize(("layer", "shape"), POOLED)
def test_pooled_layer_adjoints_are_autograds_at_the_switches(layer, shape):
    torch.manual_seed(0)
    layer = layer.double()
    inputs = torch.randn(shape, dtype=torch.float64).requires_grad_()
    pre, switches = layer.pre_activation_and_switches(inputs)
    torch.testing.assert_close(pre, layer.pre_activation(inputs))
    torch.testing.assert_close(switches, layer.switches(inputs))
    delta = torch.randn_like(pre)
    grad_input, grad_weight, grad_bias = torch.autograd.grad(
        pre, [inputs, layer.weight, layer.bias], delta
    )
    x = inputs.detach()
    torch.testing.assert_close(layer.transpose(delta, layer.weight, shape, x), grad_input)
    torch.testing.assert_close(
        layer.transpose(delta, layer.weight, shape, switches=switches), grad_input
    )
    torch.testing.assert_close(layer.weight_gradient(delta, x), grad_weight)
    torch.testing.assert_close(layer.weight_gradient(delta, x, switches=switches), grad_weight)
    torch.testing.assert_close(layer.bias_gradient(delta), grad_bias)
    # with another matrix B: the linear map read at W's switches, and its adjoint (FA's pathway)
    other = torch.randn_like(layer.weight).requires_grad_()
    out = layer.linear(inputs, other, switches=switches)
    (expected_input, expected_weight) = torch.autograd.grad(out, [inputs, other], delta)
    torch.testing.assert_close(layer.transpose(delta, other.detach(), shape, x), expected_input)
    torch.testing.assert_close(
        layer.linear(x, layer.weight, switches=switches), layer.linear(x, layer.weight)
    )
    # the weight gradient at fixed switches is the vjp of the switched map in its weight
    (weight_vjp,) = torch.autograd.grad(
        layer.linear(x, layer.weight, switches=switches), layer.weight, delta
    )
    torch.testing.assert_close(layer.weight_gradient(delta, x), weight_vjp)
    assert expected_weight.shape == layer.weight.shape


def test_pooled_transpose_without_inputs_says_what_it_needs():
    layer = Conv2dLayer(1, 2, 3, padding=1, pool=2)
    delta = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match="inputs=h_in"):
        layer.transpose(delta, layer.weight, torch.Size([1, 1, 4, 4]))
    unpooled = Conv2dLayer(1, 2, 3, padding=1)
    assert unpooled.switches(torch.zeros(1, 1, 4, 4)) is None
    assert "pool=2" in repr(layer)


def test_pooled_convnet_backprop_matches_autograd():
    from ngrad.rules.layerwise import output_error, propagate_errors, write_layer_gradients

    torch.manual_seed(1)
    net = ngrad.convnet((1, 8, 8), (3, 4), 3, stride=1, pool=2, hidden=(5,)).double()
    assert net.layer_output_shapes()[:2] == [torch.Size([3, 4, 4]), torch.Size([4, 2, 2])]
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    loss = get_loss("cross_entropy")
    expected = torch.autograd.grad(loss(net(x), y), [layer.weight for layer in net.layers])
    with torch.no_grad():
        trace = net.trace(x)
        assert trace.switches[0] is not None and trace.switches[2] is None
        weights = [None, *(layer.weight for layer in net.layers[1:])]
        errors = propagate_errors(net, trace, output_error(net, loss, trace, y), weights)
        write_layer_gradients(net, trace, errors)
    for layer, grad in zip(net.layers, expected, strict=True):
        torch.testing.assert_close(layer.weight.grad, grad)


def test_mlp_structure_and_trace():
    net = ngrad.mlp([5, 4, 3], activation="sigmoid")
    assert [type(layer) for layer in net.layers] == [DenseLayer, DenseLayer]
    assert net.layers[0].activation.name == "sigmoid"
    assert net.layers[-1].activation.name == "identity"
    x = torch.randn(2, 5)
    trace = net.trace(x)
    assert trace.activities[0] is x
    assert len(trace.activities) == 3
    assert len(trace.pre_activations) == 2
    torch.testing.assert_close(trace.output, net(x))
    assert net.layer_output_shapes() == [torch.Size([4]), torch.Size([3])]


@pytest.mark.parametrize("sizes", [[5], [5, 0, 2]])
def test_mlp_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="positive"):
        ngrad.mlp(sizes)


def test_convnet_output_shapes():
    net = ngrad.convnet((1, 8, 8), (4, 6), num_classes=3, hidden=(5,))
    assert net.layer_output_shapes() == [
        torch.Size([4, 4, 4]),
        torch.Size([6, 2, 2]),
        torch.Size([5]),
        torch.Size([3]),
    ]
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_random_like_follows_the_scheme():
    weight = torch.empty(300, 200)
    drawn = random_like(weight, "pytorch")
    assert drawn.shape == weight.shape
    assert drawn.abs().max() <= 1 / 200**0.5
    assert fans(torch.empty(8, 3, 5, 5)) == (75, 200)
    with pytest.raises(ValueError, match="unknown initialisation"):
        random_like(weight, "orthogonal")
