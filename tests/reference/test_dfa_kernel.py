"""DFA with BioTorch's convolutional feedback (``conv_feedback="kernel"``), float64: a conv layer
sends its input the transposed convolution of e tiled over its output map by a fixed kernel
K (n_out x C_in x k x k), shared by every position (Sanfiz & Akrout 2021, biotorch/layers/dfa)."""

import pytest
import torch
from fa_module_cases import batch, conv_bn_pool_residual, dfa_oracle, relative_error
from torch import nn
from torch.nn import functional as F

import ngrad
from ngrad.errors import ConfigError
from ngrad.rules.base import model_layers

EXACT = 1e-12
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def strided_net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1),
        nn.Tanh(),
        nn.Conv2d(4, 5, 2, dilation=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 2 * 2, 3),
    ).double()


def _tiled_conv_signal(model):
    """The independent oracle of the injected signal: the gradient with respect to x_l of
    <tile(e), conv(x_l, K)>, autograd through the forward convolution (the rule computes it with
    the transposed one)."""
    layers = [module for _, module in model_layers(model)]

    def inject(index, error, value, rule):
        feedback, module = rule.feedback[index], layers[index]
        if feedback.dim() == 2:
            return (error.flatten(1) @ feedback).view_as(value)
        leaf = value.detach().requires_grad_(True)
        conv = CONV[leaf.dim() - 2]
        out = conv(leaf, feedback, None, module.stride, module.padding, module.dilation)
        tiled = error.view(*error.shape, *(1,) * (out.dim() - 2)).expand_as(out)
        (signal,) = torch.autograd.grad((out * tiled).sum(), leaf)
        return signal

    return inject


@pytest.mark.parametrize(
    ("factory", "shape"),
    [(strided_net, (2, 9, 9)), (conv_bn_pool_residual, (2, 8, 8))],
    ids=["strided_dilated", "conv_bn_pool_residual"],
)
def test_kernel_feedback_is_the_transposed_conv_of_the_tiled_error(factory, shape):
    model = factory()
    rule = ngrad.make_rule("dfa", model, conv_feedback="kernel")
    x, y = batch(shape)
    rule.backward(x, y)  # draws the feedback
    rule.backward(x, y)
    inject = _tiled_conv_signal(model)
    expected = dfa_oracle(model, rule, x, y, lambda i, e, v: inject(i, e, v, rule))
    assert relative_error([p.grad for p in model.parameters()], expected) < EXACT
    # a conv's feedback is a kernel n_out x C_in x k x k, a linear layer's a dense matrix
    for (_, module), feedback in zip(model_layers(model), rule.feedback_matrices(), strict=True):
        if feedback is None:
            continue
        if isinstance(module, nn.Conv2d):
            assert feedback.shape == (3, *module.weight.shape[1:])
        else:
            assert feedback.shape == (3, module.in_features)


def test_kernel_feedback_is_shared_across_positions():
    """Unlike the dense D, one projection of e serves every position: on a 1x1 convolution with
    stride 1 the signal is the same vector K^T e at every position of the input map."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    ).double()
    rule = ngrad.make_rule("dfa", model, conv_feedback="kernel")
    x, y = batch((2, 6, 6))
    rule.backward(x, y)
    seen = {}

    def watch(_module, _args, output):
        output.register_hook(lambda grad: seen.__setitem__("signal", grad))

    model[1].register_forward_hook(watch)
    record = rule.backward(x, y)
    leaf = record.output.clone().requires_grad_(True)
    (error,) = torch.autograd.grad(rule.loss(leaf, y), leaf)
    kernel = rule.feedback[1].flatten(1)  # 3 outputs x 3 channels (1x1)
    expected = (error @ kernel)[:, :, None, None].expand(-1, -1, 4, 4)
    torch.testing.assert_close(seen["signal"], expected, rtol=1e-13, atol=0)


def test_kernel_feedback_survives_a_state_dict_round_trip():
    model = strided_net()
    rule = ngrad.make_rule("dfa", model, conv_feedback="kernel")
    x, y = batch((2, 9, 9))
    rule.backward(x, y)
    fresh = ngrad.make_rule("dfa", strided_net(), conv_feedback="kernel")
    fresh.load_state_dict(rule.state_dict())
    rule.backward(x, y)
    fresh.backward(x, y)
    for ours, theirs in zip(rule.network.parameters(), fresh.network.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=0)


def test_kernel_feedback_refuses_what_it_cannot_mirror():
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(16, 3)).double()
    with pytest.raises(ConfigError, match="groups=2"):
        ngrad.make_rule("dfa", grouped, conv_feedback="kernel")
    with pytest.raises(ConfigError, match="torch module"):
        ngrad.make_rule("dfa", ngrad.mlp([4, 5, 3]), conv_feedback="kernel")
