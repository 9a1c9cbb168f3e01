"""Reference properties of backprop and the feedback-alignment family (docs/feedback_alignment.md).

Every check measures one number on a small float64 network against an oracle (autograd's backprop
or a closed form) that a wrong update would miss.
"""

from __future__ import annotations

import torch

from ngrad.numeric import angle_degrees
from ngrad.rules import make_rule
from ngrad.rules.backprop import Backprop
from ngrad.rules.checking import (
    CheckResult,
    bp_gradients,
    check_of,
    conv_network,
    dense_network,
    max_relative_error,
    random_batch,
    set_feedback_to_forward,
    train_on_teacher,
    weight_updates,
)
from ngrad.rules.feedback_alignment import module_checks  # noqa: F401  (registers its checks)
from ngrad.rules.feedback_alignment.direct_feedback_alignment import DirectFeedbackAlignment
from ngrad.rules.feedback_alignment.feedback_alignment import FeedbackAlignment
from ngrad.rules.feedback_alignment.kolen_pollack import KolenPollack
from ngrad.rules.feedback_alignment.sign_symmetry import (
    BatchRandomSignSymmetry,
    FixedRandomSignSymmetry,
    UniformSignSymmetry,
)
from ngrad.rules.feedback_alignment.weight_mirror import WeightMirror
from ngrad.rules.layerwise import propagate_errors
from ngrad.rules.reference import angles_to_backprop

SIGN_RULES = (UniformSignSymmetry, BatchRandomSignSymmetry, FixedRandomSignSymmetry)
FAMILY = (FeedbackAlignment, DirectFeedbackAlignment, *SIGN_RULES, KolenPollack, WeightMirror)
# two hidden layers: with one, DFA's feedback reaches the same layer as FA's and they coincide
TRAINING_SIZES = (12, 24, 24, 4)


def dense_and_conv_cases():
    """(label, fresh float64 network, per-sample input shape) for a dense and a conv network."""
    return (("dense", dense_network(), (12,)), ("conv", conv_network(), (2, 8, 8)))


@check_of(Backprop)
def check_layerwise_machinery(rule_name: str, **options) -> list[CheckResult]:
    """The layerwise error propagation with M_l = W_l reproduces autograd (dense and conv)."""
    results = []
    for label, network, shape in dense_and_conv_cases():
        inputs, targets = random_batch(shape, 4)
        rule = make_rule(rule_name, network, **options)
        reference = bp_gradients(network, inputs, targets)
        with torch.no_grad():
            trace = network.trace(inputs)
            errors = propagate_errors(
                network, trace, reference.errors[-1], [layer.weight for layer in network.layers]
            )
        rule.backward(inputs, targets)
        error = max(
            max_relative_error(errors, reference.errors),
            max_relative_error(weight_updates(rule), reference.weight_gradients),
        )
        results.append(
            CheckResult(
                rule_name, f"layerwise errors with M=W equal autograd ({label})", error, 1e-10, "<"
            )
        )
    return results


@check_of(FeedbackAlignment, KolenPollack, WeightMirror, KolenPollack={"weight_decay": 0.0})
def check_equals_backprop_with_transposed_feedback(rule_name: str, **options) -> list[CheckResult]:
    """With B := W^T the rule's forward update is backprop's gradient (dense and conv)."""
    results = []
    for label, network, shape in dense_and_conv_cases():
        inputs, targets = random_batch(shape, 4)
        rule = make_rule(rule_name, network, **options)
        set_feedback_to_forward(rule)
        rule.backward(inputs, targets)
        reference = bp_gradients(network, inputs, targets)
        error = max_relative_error(weight_updates(rule), reference.weight_gradients)
        results.append(
            CheckResult(rule_name, f"B := W^T gives the BP update ({label})", error, 1e-10, "<")
        )
    return results


@check_of(DirectFeedbackAlignment)
def check_dfa_linear_equals_backprop(rule_name: str, **options) -> list[CheckResult]:
    """Linear network, B_l := (W_L ... W_{l+1})^T: DFA's update equals backprop's."""
    network = dense_network(activation="identity")
    inputs, targets = random_batch((12,), 4)
    rule = make_rule(rule_name, network, **options)
    set_feedback_to_forward(rule)
    rule.backward(inputs, targets)
    reference = bp_gradients(network, inputs, targets)
    error = max_relative_error(weight_updates(rule), reference.weight_gradients)
    return [CheckResult(rule_name, "linear net, B_l := (W_L..W_l+1)^T gives BP", error, 1e-10, "<")]


@check_of(UniformSignSymmetry, BatchRandomSignSymmetry, FixedRandomSignSymmetry)
def check_sign_concordance(rule_name: str, **options) -> list[CheckResult]:
    """sign(B) = sign(W^T) at every step of training (count of sign disagreements)."""
    rule = make_rule(rule_name, dense_network(), **options)
    disagreements = 0
    for _ in range(5):
        train_on_teacher(rule, steps=20, lr=0.2)
        for pair in rule.feedback_pairs():
            disagreements += int((torch.sign(pair.feedback) != torch.sign(pair.forward)).sum())
    return [
        CheckResult(
            rule_name, "sign(B) != sign(W^T) entries over training", disagreements, 0.5, "<"
        )
    ]


@check_of(FixedRandomSignSymmetry)
def check_fixed_magnitude_equals_backprop(rule_name: str, **options) -> list[CheckResult]:
    """With the fixed magnitude set to |W|, sign(W) o |W| = W and the update is backprop's."""
    network = dense_network()
    inputs, targets = random_batch((12,), 4)
    rule = make_rule(rule_name, network, **options)
    with torch.no_grad():
        for magnitude, layer in zip(rule.magnitudes, network.layers[1:], strict=True):
            magnitude.copy_(layer.weight.abs())
    rule.backward(inputs, targets)
    reference = bp_gradients(network, inputs, targets)
    error = max_relative_error(weight_updates(rule), reference.weight_gradients)
    return [CheckResult(rule_name, "magnitude := |W| gives the BP update", error, 1e-10, "<")]


@check_of(*FAMILY, KolenPollack={"weight_decay": 0.0})
def check_output_layer_learns_by_the_delta_rule(rule_name: str, **options) -> list[CheckResult]:
    """The output layer hears e directly and needs no feedback: its weight and bias updates are
    backprop's exactly, whatever the feedback (dense and conv)."""
    results = []
    for label, network, shape in dense_and_conv_cases():
        inputs, targets = random_batch(shape, 4)
        rule = make_rule(rule_name, network, **options)
        rule.backward(inputs, targets)
        reference = bp_gradients(network, inputs, targets)
        top = network.layers[-1]
        error = max_relative_error(
            [top.weight.grad, top.bias.grad],
            [reference.weight_gradients[-1], top.bias_gradient(reference.errors[-1])],
        )
        results.append(
            CheckResult(rule_name, f"output layer's update is BP's ({label})", error, 1e-10, "<")
        )
    return results


@check_of(FeedbackAlignment, DirectFeedbackAlignment, *SIGN_RULES)
def check_update_aligns_during_training(rule_name: str, **options) -> list[CheckResult]:
    """After training, every hidden layer's update is within 90 degrees of backprop's."""
    rule = make_rule(rule_name, dense_network(sizes=TRAINING_SIZES), **options)
    inputs, targets = train_on_teacher(rule, steps=300, lr=0.1)
    worst = max(angles_to_backprop(rule, inputs, targets)[:-1])
    return [
        CheckResult(
            rule_name, "largest hidden update angle to BP after training (deg)", worst, 90.0, "<"
        )
    ]


@check_of(FeedbackAlignment, DirectFeedbackAlignment)
def check_forward_weights_align(rule_name: str, **options) -> list[CheckResult]:
    """Training turns the forward weights toward the fixed feedback: every angle(B, W^T) falls,
    by 10 degrees or more on average."""
    rule = make_rule(rule_name, dense_network(sizes=TRAINING_SIZES), **options)
    before = [angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs()]
    train_on_teacher(rule, steps=300, lr=0.1)
    after = [angle_degrees(p.feedback, p.forward) for p in rule.feedback_pairs()]
    changes = [a - b for a, b in zip(after, before, strict=True)]
    return [
        CheckResult(
            rule_name, "largest change of angle(B, W^T) in training (deg)", max(changes), 0.0, "<"
        ),
        CheckResult(
            rule_name,
            "mean change of angle(B, W^T) in training (deg)",
            sum(changes) / len(changes),
            -10.0,
            "<",
        ),
    ]


@check_of(KolenPollack)
def check_kolen_pollack_decay(rule_name: str, **options) -> list[CheckResult]:
    """Under SGD, |B - W^T| shrinks by exactly (1 - lr * lambda) per step."""
    lr, decay, steps = 0.1, 0.05, 30
    rule = make_rule(rule_name, dense_network(), weight_decay=decay, **options)
    before = rule.feedback_mismatch()
    train_on_teacher(rule, steps=steps, lr=lr)
    after = rule.feedback_mismatch()
    expected = (1 - lr * decay) ** steps
    deviation = max(abs(a / b - expected) / expected for a, b in zip(after, before, strict=True))
    return [
        CheckResult(
            rule_name,
            f"|B-W^T| ratio after {steps} steps vs (1-lr*lambda)^t = {expected:.4f} (rel. dev.)",
            deviation,
            1e-9,
            "<",
        )
    ]


@check_of(WeightMirror)
def check_weight_mirror_alignment(rule_name: str, **options) -> list[CheckResult]:
    """Training B with the gradient ``backward`` writes (forward weights held still) brings every B
    within 10 degrees of W^T, at the fixed point's size |B| = |W| / lambda."""
    network = dense_network(sizes=(12, 20, 16, 4))
    rule = make_rule(rule_name, network, **options)
    # the mirror's own step eta_B = 0.05 whatever the rate option
    optimiser = torch.optim.SGD(rule.feedback_parameters(), lr=0.05 / rule.options.rate)
    for step in range(200):
        inputs, targets = random_batch((12,), 4, n=64, seed=step)
        rule.backward(inputs, targets)
        optimiser.step()
    pairs = rule.feedback_pairs()
    worst = max(angle_degrees(p.feedback, p.forward) for p in pairs)
    size = max(
        abs(float(p.feedback.detach().norm() / p.forward.detach().norm()) * rule.options.decay - 1)
        for p in pairs
    )
    return [
        CheckResult(
            rule_name, "largest angle(B, W^T) after 200 backward steps (deg)", worst, 10.0, "<"
        ),
        CheckResult(
            rule_name, "largest |lambda |B| / |W| - 1| after 200 backward steps", size, 0.2, "<"
        ),
    ]
