"""The feedback-alignment family on any torch.nn.Module, in float64: converted layers against
autograd (B := W^T gives backprop's gradients through conv, batch norm, max-pool and residual
blocks), against the layerwise path (the oracle) on an MLP and a conv net, DFA's error injection
points, and mutants that one of these comparisons catches."""

import copy
import math

import pytest
import torch
from fa_module_cases import (
    EXACT,
    FAMILY,
    LEARNED,
    MODELS,
    MODULE_RULES,
    TRANSPOSABLE,
    autograd_gradients,
    batch,
    conv_bn_pool_residual,
    copy_network_feedback,
    dfa_oracle,
    mixed_convolutions,
    network_twins,
    options_for,
    relative_error,
    set_feedback_transposed,
)

import ngrad
from ngrad.numeric import angle_degrees, root_mean_square
from ngrad.rules import REGISTRY
from ngrad.rules.base import model_layers
from ngrad.rules.checking import max_relative_error
from ngrad.rules.feedback_alignment.modules import module_backprop_reference


def test_the_feedback_of_four_rules_can_be_set_to_w_transpose():
    assert len(TRANSPOSABLE) >= 4  # fa, frsf, kp, wm


# ----------------------------------------------------------------- against autograd -----------
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("rule_name", TRANSPOSABLE)
def test_transposed_feedback_gives_autograds_gradients(rule_name, model_name):
    """With B := W^T the converted model's update is backprop's, every parameter (conv, dense,
    batch norm), and so are the loss and the error at every layer's output."""
    factory, shape = MODELS[model_name]
    model = factory()
    rule = ngrad.make_rule(rule_name, model, **options_for(rule_name))
    assert set_feedback_transposed(rule)
    x, y = batch(shape)
    expected, loss = autograd_gradients(model, rule.loss, x, y)
    reference = module_backprop_reference(copy.deepcopy(model), rule.loss, x, y)
    record = rule.backward(x, y)
    assert relative_error([p.grad for p in model.parameters()], expected) < EXACT
    assert math.isclose(float(record.loss), loss, rel_tol=EXACT)
    assert max_relative_error(list(record.layer_errors), reference.errors) < EXACT


def test_uniform_sign_symmetry_on_weights_of_one_magnitude_is_backprop():
    """usf's B = sign(W) s_l is W^T exactly when every entry of W_l is +-s_l."""
    model = conv_bn_pool_residual()
    with torch.no_grad():
        for _, layer in model_layers(model):
            layer.weight.copy_(torch.sign(layer.weight) * root_mean_square(layer.weight))
    rule = ngrad.make_rule("usf", model)
    x, y = batch((2, 8, 8))
    expected, _ = autograd_gradients(model, rule.loss, x, y)
    rule.backward(x, y)
    assert relative_error([p.grad for p in model.parameters()], expected) < EXACT


@pytest.mark.parametrize("rule_name", MODULE_RULES)
def test_every_parameter_gets_a_grad(rule_name):
    model = conv_bn_pool_residual()
    rule = ngrad.make_rule(rule_name, model, **options_for(rule_name))
    x, y = batch((2, 8, 8))
    rule.backward(x, y)
    trained = list(rule.parameters())
    assert len(trained) >= len(list(model.parameters()))
    for parameter in trained:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
    # random feedback differs from backprop below the top, whose update is backprop's exactly
    expected, _ = autograd_gradients(model, rule.loss, x, y)
    top = [p.grad for p in model.fc2.parameters()]
    assert max_relative_error(top, expected[-2:]) < EXACT
    if rule_name != "bp":
        assert max_relative_error([model.conv.weight.grad], expected[:1]) > 1e-3


# ----------------------------------------------------------------- against the oracle ---------
@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("rule_name", FAMILY)
def test_module_path_agrees_with_the_layerwise_oracle(rule_name, kind):
    """Same weights, same feedback, same random draws (brsf's magnitudes, WM's mirror noise):
    the converted torch model and the ngrad Network get the same update to float64 rounding."""
    network, model, shape = network_twins(kind)
    x, y = batch(shape, n=12)
    network_rule = ngrad.make_rule(rule_name, network)
    module_rule = ngrad.make_rule(rule_name, model)
    if rule_name == "dfa":
        module_rule.backward(x, y)  # its matrices are drawn at the first batch
    copy_network_feedback(network_rule, module_rule)
    torch.manual_seed(9)
    expected = network_rule.backward(x, y)
    torch.manual_seed(9)
    found = module_rule.backward(x, y)
    updates = [p.grad for p in model.parameters()]
    assert max_relative_error(updates, [p.grad for p in network.parameters()]) < EXACT
    assert max_relative_error(list(found.layer_errors), list(expected.layer_errors)) < EXACT
    assert math.isclose(float(found.loss), float(expected.loss), rel_tol=EXACT)
    if rule_name in LEARNED:
        learned = [p.grad for p in module_rule.feedback[1:]]
        assert max_relative_error(learned, [p.grad for p in network_rule.feedback]) < EXACT


# ----------------------------------------------------------------- DFA ------------------------
@pytest.mark.parametrize("model_name", ["conv_bn_pool_residual", "resnet20_shortcut_b"])
def test_dfa_error_enters_at_each_layers_input_and_backpropagates_as_usual(model_name):
    factory, shape = MODELS[model_name]
    model = factory()
    rule = ngrad.make_rule("dfa", model)
    x, y = batch(shape)
    rule.backward(x, y)  # draws D_l
    rule.backward(x, y)
    expected = dfa_oracle(model, rule, x, y)
    assert relative_error([p.grad for p in model.parameters()], expected) < EXACT
    # D_l is n_out x (the layer's input per sample); the first layer's input needs none
    sizes = {name: m.weight.shape[1] for name, m in model_layers(model)}
    matrices = rule.feedback_matrices()
    assert matrices[0] is None
    assert all(m is not None and m.shape[0] == 3 for m in matrices[1:])
    if model_name == "conv_bn_pool_residual":
        assert matrices[-1].shape == (3, sizes["fc2"])
        assert matrices[1].shape == (3, 4 * 4 * 4)  # the block's input, after the max-pool


def test_dfa_signal_is_what_reaches_an_input_with_no_other_consumer():
    """Where a layer's input feeds nothing else (fc2 after the tanh, conv2 inside the block after
    its ReLU), the gradient there is exactly D_l e."""
    model = conv_bn_pool_residual()
    rule = ngrad.make_rule("dfa", model)
    x, y = batch((2, 8, 8))
    rule.backward(x, y)
    seen = {}

    def watch(name):
        def hook(_module, _args, output):
            output.register_hook(lambda grad: seen.__setitem__(name, grad))

        return hook

    handles = [
        model.act2.register_forward_hook(watch("fc2")),
        model.block.relu1.register_forward_hook(watch("block.conv2")),
    ]
    record = rule.backward(x, y)
    for handle in handles:
        handle.remove()
    leaf = record.output.clone().requires_grad_(True)
    (error,) = torch.autograd.grad(rule.loss(leaf, y), leaf)
    positions = {name: index for index, (name, _) in enumerate(model_layers(model))}
    for name, grad in seen.items():
        expected = (error @ rule.feedback[positions[name]]).view_as(grad)
        torch.testing.assert_close(grad, expected, rtol=1e-13, atol=0)


# ----------------------------------------------------------------- mutants --------------------
def _transposed_error(rule_name, mutate=None):
    """Max relative error against autograd of the rule with B := W^T on the conv/BN/pool/
    residual model, after ``mutate(rule)`` and with the update written by ``rule_class``."""
    model = conv_bn_pool_residual()
    rule = ngrad.make_rule(rule_name, model, **options_for(rule_name))
    assert set_feedback_transposed(rule)
    if mutate is not None:
        mutate(rule)
    x, y = batch((2, 8, 8))
    expected, _ = autograd_gradients(model, rule.loss, x, y)
    rule.backward(x, y)
    return relative_error([p.grad for p in model.parameters()], expected)


@pytest.mark.parametrize("rule_name", TRANSPOSABLE)
def test_a_sign_flipped_feedback_is_caught(rule_name):
    assert _transposed_error(rule_name) < EXACT

    def flip_one(rule):  # one layer's feedback, B := -W^T (the block's second conv)
        position = [name for _, name in rule.feedback_layers()].index("block.conv2.weight")
        with torch.no_grad():
            if hasattr(rule, "magnitudes"):
                rule.magnitudes[position].neg_()
            else:
                rule.feedback_pairs()[position].feedback.neg_()

    assert _transposed_error(rule_name, flip_one) > 0.1


@pytest.mark.parametrize("flipped", ["conv.weight", "fc2.weight", "block.bn1.weight"])
def test_a_sign_flipped_update_of_one_parameter_is_caught(flipped, monkeypatch):
    original = REGISTRY["fa"]

    class Mutant(original):
        def backward(self, inputs, targets):
            record = super().backward(inputs, targets)
            self.network.get_parameter(flipped).grad.neg_()
            return record

    monkeypatch.setitem(REGISTRY, "fa", Mutant)
    assert _transposed_error("fa") > 0.1


def _kolen_pollack_decay(rule_class):
    lr, decay = 0.1, 0.05
    model = conv_bn_pool_residual()
    rule = rule_class(model, weight_decay=decay)
    optimiser = torch.optim.SGD(rule.parameters(), lr=lr)
    before = rule.feedback_mismatch()
    for step in range(10):
        rule.backward(*batch((2, 8, 8), seed=step))
        optimiser.step()
    ratios = [a / b for a, b in zip(rule.feedback_mismatch(), before, strict=True)]
    return max(abs(r - (1 - lr * decay) ** 10) for r in ratios)


def _flipping_feedback_updates(cls):
    class Mutant(cls):
        def backward(self, inputs, targets):
            record = super().backward(inputs, targets)
            for parameter in self.feedback_parameters():
                parameter.grad.neg_()
            return record

    return Mutant


def test_kolen_pollack_decays_every_converted_layers_mismatch():
    assert _kolen_pollack_decay(REGISTRY["kp"]) < 1e-9
    assert _kolen_pollack_decay(_flipping_feedback_updates(REGISTRY["kp"])) > 0.1


def _mirror_angle(rule_class):
    model = mixed_convolutions()
    rule = rule_class(model, decay=0.5)
    optimiser = torch.optim.SGD(rule.feedback_parameters(), lr=0.05 / rule.options.rate)
    for step in range(150):
        rule.backward(*batch((2, 16), n=32, seed=step))
        optimiser.step()
    pairs = rule.feedback_pairs()
    with torch.no_grad():  # B -> W^T / lambda = 2 W^T
        ratio = max(float(abs(p.feedback.norm() / p.forward.norm() * 0.5 - 1)) for p in pairs)
    return max(angle_degrees(p.feedback, p.forward) for p in pairs), ratio


def test_weight_mirror_aligns_dense_and_conv_feedback_including_grouped():
    angle, size = _mirror_angle(REGISTRY["wm"])
    assert angle < 10 and size < 0.2
    assert _mirror_angle(_flipping_feedback_updates(REGISTRY["wm"]))[0] > 90
