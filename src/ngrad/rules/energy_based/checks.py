"""Reference properties of the energy-based rules: EP, CHL and predictive coding.

Oracles: the gradient at the free fixed point by implicit differentiation (recurrent backprop,
``fixed_point.fixed_point_gradient``; the tests also run autograd through the relaxation),
autograd's backprop, and closed forms (the delta rule; PC's equilibrium on a linear network).
Phases that must reach their fixed point run a fixed, generous number of steps (tolerance 0).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from ngrad.nn.network import Network, convnet
from ngrad.rules import LearningRule, make_rule
from ngrad.rules.checking import (
    CheckResult,
    bp_gradients,
    check_of,
    dense_network,
    max_relative_error,
    random_batch,
    weight_updates,
)
from ngrad.rules.energy_based.contrastive_hebbian import ContrastiveHebbian
from ngrad.rules.energy_based.energy import hopfield_energy, relax
from ngrad.rules.energy_based.equilibrium_propagation import EquilibriumPropagation
from ngrad.rules.energy_based.predictive_coding import PredictiveCoding, free_energy

SETTLED = {"free_steps": 200, "nudged_steps": 200, "tolerance": 0.0}  # to a fixed point (1e-15)


def parameter_updates(rule: LearningRule) -> list[Tensor]:
    layers = rule.network.layers
    return [layer.weight.grad.clone() for layer in layers] + [
        layer.bias.grad.clone() for layer in layers
    ]


def min_cosine(updates: list[Tensor], references: list[Tensor]) -> float:
    """Smallest cosine similarity over pairs of tensors (seen as vectors)."""
    worst = 1.0
    for update, reference in zip(updates, references, strict=True):
        a, b = update.flatten(), reference.flatten()
        worst = min(worst, float(a @ b / (a.norm() * b.norm())))
    return worst


def relative_error(updates: list[Tensor], references: list[Tensor]) -> float:
    """|update - reference| / |reference| over all tensors together."""
    difference = sum(float((u - r).pow(2).sum()) for u, r in zip(updates, references, strict=True))
    size = sum(float(r.pow(2).sum()) for r in references)
    return (difference / size) ** 0.5


def pooled_network(activation: str = "sigmoid", seed: int = 0) -> Network:
    """A tiny VGG-style net: two max-pooled 3x3 conv layers (Laborieux et al. 2021's conv+pool
    couplings), a dense layer and the classifier: 1x8x8 -> 2x4x4 -> 3x2x2 -> 5 -> 4."""
    torch.manual_seed(seed)
    network = convnet((1, 8, 8), (2, 3), 4, stride=1, pool=2, hidden=(5,), activation=activation)
    return network.double()


def ep_error_to_fixed_point_gradient(
    rule_name: str, network: Network, loss: str, beta: float, nudging: str, **options
) -> tuple[float, float]:
    """(relative error, min cosine) of EP's update to dC/dtheta at the free fixed point."""
    inputs, targets = random_batch(network.input_shape, 4)
    rule = make_rule(
        rule_name, network, loss, nudging_strength=beta, nudging=nudging, **SETTLED, **options
    )
    rule.backward(inputs, targets)
    states = rule.free_phase(rule.input_drive(inputs)).states
    weights, biases = rule.fixed_point_gradients(inputs, targets, states)
    updates, exact = parameter_updates(rule), [*weights, *biases]
    return relative_error(updates, exact), min_cosine(updates, exact)


@check_of(EquilibriumPropagation)
def check_ep_equals_fixed_point_gradient(rule_name: str, **options) -> list[CheckResult]:
    """Symmetric nudging at small beta: the update is the gradient at the free fixed point."""
    results = []
    for loss, gamma in (("cross_entropy", 1.0), ("mse", 0.5)):
        _, cosine = ep_error_to_fixed_point_gradient(
            rule_name, dense_network(), loss, 1e-3, "symmetric", feedback_strength=gamma, **options
        )
        label = f"1-cos(EP beta=1e-3, RBP grad at free fixed pt), {loss}, gamma={gamma:g}"
        results.append(CheckResult(rule_name, label, 1.0 - cosine, 1e-3, "<"))
    return results


@check_of(EquilibriumPropagation)
def check_ep_on_a_pooled_conv_energy(rule_name: str, **options) -> list[CheckResult]:
    """Conv + max-pool couplings: symmetric EP at small beta is the gradient at the free fixed
    point (with the switches held there), its error O(beta^2); one-sided O(beta). Sigmoid units,
    and Laborieux et al.'s hard sigmoid clip(a/2, 0, 1), whose kinks break the O(beta^2)
    cancellation for a unit that the +-beta phases push across one (measured on this net: error
    3.7e-4 at beta = 1e-3, 2.7e-10 at 1e-4): its rows use beta = 1e-4 and 1e-5, where symmetric
    EP is the fixed point's gradient to the relaxation's precision."""
    results = []
    cases = (("sigmoid", "pooled conv", (1e-2, 1e-3)),
             ("hard_sigmoid", "pooled conv, hard sigmoid", (1e-4, 1e-5)))  # fmt: skip
    for units, prefix, (large, small) in cases:
        for nudging, ratio_bound in (("symmetric", 0.02), ("one_sided", 0.2)):
            errors = {}
            for beta in (large, small):
                errors[beta], cosine = ep_error_to_fixed_point_gradient(
                    rule_name, pooled_network(units), "cross_entropy", beta, nudging, **options
                )
            if nudging == "symmetric":
                label = f"{prefix}: 1-cos(EP beta={small:g} symmetric, grad at free fixed pt)"
                results.append(CheckResult(rule_name, label, 1.0 - cosine, 1e-6, "<"))
            if units == "hard_sigmoid" and nudging == "symmetric":  # at the precision floor
                label = f"{prefix}, symmetric: relative error at beta={large:g}"
                results.append(CheckResult(rule_name, label, errors[large], 1e-7, "<"))
                continue
            label = f"{prefix}, {nudging}: error(beta={small:g}) / error(beta={large:g})"
            ratio = errors[small] / errors[large]
            results.append(CheckResult(rule_name, label, ratio, ratio_bound, "<"))
    return results


@check_of(EquilibriumPropagation)
def check_ep_bias_shrinks_with_beta(rule_name: str, **options) -> list[CheckResult]:
    """The estimator's error falls as beta does: O(beta^2) symmetric, O(beta) one-sided."""
    results = []
    for nudging, bound in (("symmetric", 0.02), ("one_sided", 0.2)):
        coarse, _ = ep_error_to_fixed_point_gradient(
            rule_name, dense_network(), "cross_entropy", 0.1, nudging, **options
        )
        fine, _ = ep_error_to_fixed_point_gradient(
            rule_name, dense_network(), "cross_entropy", 0.01, nudging, **options
        )
        label = f"{nudging}: error(beta=0.01) / error(beta=0.1) (exact: {bound / 2:g})"
        results.append(CheckResult(rule_name, label, fine / coarse, bound, "<"))
    return results


@check_of(EquilibriumPropagation, ContrastiveHebbian)
def check_free_phase_settles(rule_name: str, **options) -> list[CheckResult]:
    """The alternating free phase never raises the energy and reaches a fixed point, on dense
    layers and on max-pooled conv layers with non-negative units."""
    results = []
    cases = (("", dense_network(sizes=(12, 16, 16, 4))), ("pooled conv, ", pooled_network()))
    for kind, network in cases:
        inputs, _ = random_batch(network.input_shape, 4, n=32)
        rule = make_rule(rule_name, network, "mse", feedback_strength=1.0, **options)
        drive = rule.input_drive(inputs)
        states = rule.initial_states(drive)
        energies = [hopfield_energy(network, inputs, states)]
        for _ in range(150):
            step = relax(network, drive, states, 1, rule.free_update(), 1.0, "alternating")
            states = step.states
            energies.append(hopfield_energy(network, inputs, states, 1.0))
        rise = max(float((after - before).max()) for before, after in itertools.pairwise(energies))
        scale = float(energies[0].abs().max())
        residual = relax(network, drive, states, 1, rule.free_update(), 1.0).residual
        results += [
            CheckResult(
                rule_name, f"{kind}largest energy rise per step / |E| (alternating)",
                rise / scale, 1e-12, "<",
            ),
            CheckResult(
                rule_name, f"{kind}free-phase residual max|s_t - s_t-1| after 150 steps",
                residual, 1e-10, "<",
            ),
        ]  # fmt: skip
    return results


@check_of(ContrastiveHebbian)
def check_chl_is_ep_at_infinite_nudging(rule_name: str, **options) -> list[CheckResult]:
    """beta x (one-sided EP at beta) -> CHL as beta -> infinity (linear outputs, mse), on dense
    layers and on max-pooled conv layers."""
    results = []
    for kind, build in (("", dense_network), ("pooled conv: ", pooled_network)):
        inputs, targets = random_batch(build().input_shape, 4)
        settled = {"free_steps": 200, "clamped_steps": 200, "tolerance": 0.0}
        chl = make_rule(rule_name, build(), "mse", **settled, **options)
        chl.backward(inputs, targets)
        expected = parameter_updates(chl)
        errors = {}
        for beta in (1e2, 1e4):
            ep = make_rule(
                "ep", build(), "mse", nudging_strength=beta, nudging="one_sided",
                feedback_strength=chl.options.feedback_strength, **SETTLED,
            )  # fmt: skip
            ep.backward(inputs, targets)
            errors[beta] = relative_error([beta * u for u in parameter_updates(ep)], expected)
        label = f"{kind}|beta EP(beta) - CHL| / |CHL| at beta = 1e4"
        results.append(CheckResult(rule_name, label, errors[1e4], 1e-3, "<"))
        label = f"{kind}that error at 1e4 / at 1e2 (exact: 1e-2)"
        results.append(CheckResult(rule_name, label, errors[1e4] / errors[1e2], 0.02, "<"))
    return results


@check_of(ContrastiveHebbian)
def check_chl_single_layer_is_delta_rule(rule_name: str, **options) -> list[CheckResult]:
    """One linear layer: clamped minus free co-activity is -(dMSE/dW), backprop's gradient."""
    network = dense_network(activation="identity", sizes=(12, 4))
    inputs, targets = random_batch((12,), 4)
    rule = make_rule(rule_name, network, "mse", **options)
    rule.backward(inputs, targets)
    reference = bp_gradients(network, inputs, targets, "mse")
    error = max_relative_error(weight_updates(rule), reference.weight_gradients)
    return [
        CheckResult(
            rule_name, "single linear layer: CHL = delta rule (BP on mse)", error, 1e-10, "<"
        )
    ]


@check_of(PredictiveCoding)
def check_pc_weak_clamping_matches_bp(rule_name: str, **options) -> list[CheckResult]:
    """At equilibrium, the update tends to backprop's gradient as the output clamping -> 0."""
    inputs, targets = random_batch((12,), 4)
    errors, cosine = {}, 1.0
    for clamping in (1e-2, 1e-3):
        network = dense_network()
        rule = make_rule(
            rule_name,
            network,
            steps=300,
            inference_rate=0.3,
            output_clamping=clamping,
            tolerance=0.0,
            **options,
        )
        rule.backward(inputs, targets)
        reference = bp_gradients(network, inputs, targets).weight_gradients
        errors[clamping] = relative_error(weight_updates(rule), reference)
        cosine = min_cosine(weight_updates(rule), reference)
    return [
        CheckResult(
            rule_name,
            "1 - cos(PC update, BP gradient) at clamping 1e-3, at equilibrium",
            1.0 - cosine,
            1e-3,
            "<",
        ),
        CheckResult(
            rule_name,
            "error to BP at clamping 1e-3 / at 1e-2 (exact: 0.1)",
            errors[1e-3] / errors[1e-2],
            0.2,
            "<",
        ),
    ]


def linear_equilibrium_errors(network: Network, inputs: Tensor, targets: Tensor, clamping: float):
    """PC's errors at equilibrium on a linear network with the squared error, in closed form:
    (I + gamma W_L^T W_L S) eps_{L-1} = gamma W_L^T r,  eps_l = P_l^T eps_{L-1},
    eps_L = gamma (r - W_L S eps_{L-1}), with P_l = W_{L-1} ... W_{l+1}, S = sum_l P_l P_l^T and
    r = y - (feedforward output) (derivation: set dF/dx = 0 with x = mu + eps, layer by layer)."""
    weights = [layer.weight.detach() for layer in network.layers]
    hidden = len(weights) - 1
    width = weights[-1].shape[1]
    products = [torch.eye(width, dtype=inputs.dtype)]  # P_{L-1} = I, then down to P_1
    for weight in reversed(weights[1:-1]):
        products.append(products[-1] @ weight)
    products.reverse()
    coupling = sum(p @ p.t() for p in products)
    with torch.no_grad():
        feedforward = network(inputs)
    goal = torch.nn.functional.one_hot(targets, weights[-1].shape[0]).to(inputs.dtype)
    residual = goal - feedforward
    top_weight = weights[-1]
    system = (
        torch.eye(width, dtype=inputs.dtype) + clamping * top_weight.t() @ top_weight @ coupling
    )
    top_hidden = torch.linalg.solve(system, clamping * top_weight.t() @ residual.t()).t()
    errors = [top_hidden @ p for p in products[:hidden]]
    errors.append(clamping * (residual - top_hidden @ coupling.t() @ top_weight.t()))
    return errors


@check_of(PredictiveCoding)
def check_pc_linear_equilibrium(rule_name: str, **options) -> list[CheckResult]:
    """Linear network, squared error: the errors PC settles to equal their closed form."""
    network = dense_network(activation="identity", sizes=(12, 10, 9, 4))
    inputs, targets = random_batch((12,), 4)
    clamping = 0.5
    rule = make_rule(
        rule_name,
        network,
        "mse",
        steps=600,
        inference_rate=0.3,
        output_clamping=clamping,
        tolerance=0.0,
        **options,
    )
    with torch.no_grad():
        visited = rule.infer(inputs, targets).visited
    expected = linear_equilibrium_errors(network, inputs, targets, clamping)
    error = max_relative_error(visited[-1].errors, expected)
    energies = [free_energy(state, network, rule.loss, targets, clamping) for state in visited]
    rise = max(after - before for before, after in itertools.pairwise(energies))
    return [
        CheckResult(
            rule_name, "linear net: settled errors vs closed form (max rel.)", error, 1e-8, "<"
        ),
        CheckResult(
            rule_name,
            "largest free-energy rise per inference step / F(start)",
            rise / energies[0],
            1e-12,
            "<",
        ),
    ]


@check_of(PredictiveCoding)
def check_pc_on_a_pooled_conv_net(rule_name: str, **options) -> list[CheckResult]:
    """Value nodes between max-pooled conv blocks: weak clamping tends to backprop (through the
    forward pass's switches) and the default inference never raises the free energy."""
    inputs, targets = random_batch((1, 8, 8), 4)
    errors = {}
    for clamping in (1e-2, 1e-3):
        network = pooled_network("tanh")
        rule = make_rule(
            rule_name, network, steps=200, inference_rate=0.3, output_clamping=clamping,
            tolerance=0.0, **options,
        )  # fmt: skip
        rule.backward(inputs, targets)
        reference = bp_gradients(network, inputs, targets).weight_gradients
        errors[clamping] = relative_error(weight_updates(rule), reference)
    rule = make_rule(rule_name, pooled_network("relu"), tolerance=0.0, **options)
    with torch.no_grad():
        visited = rule.infer(inputs, targets).visited
    clamping = rule.options.output_clamping
    energies = [free_energy(s, rule.network, rule.loss, targets, clamping) for s in visited]
    rise = max(after - before for before, after in itertools.pairwise(energies))
    return [
        CheckResult(
            rule_name, "pooled conv: error to BP at clamping 1e-3", errors[1e-3], 1e-2, "<"
        ),
        CheckResult(
            rule_name, "pooled conv: that error / at clamping 1e-2 (exact: 0.1)",
            errors[1e-3] / errors[1e-2], 0.2, "<",
        ),
        CheckResult(
            rule_name, "pooled conv: largest free-energy rise per step / F(start)",
            rise / energies[0], 1e-12, "<",
        ),
    ]  # fmt: skip
