"""Float64 reference tests of the learned feedback of DTP, DDTP and L-DRL: the feedback losses'
gradients against autograd, the minimisers those losses train toward, and the targets they give;
and the Gauss-Newton diagnostic's closed forms."""

import math

import torch

import ngrad
from ngrad import rules
from ngrad.nn.losses import get_loss
from ngrad.numeric import mean_angle_degrees
from ngrad.rules.checking import max_relative_error
from ngrad.rules.reference import angles_to_backprop, backprop_reference
from ngrad.rules.target_propagation.checks import (
    autograd_output_jacobians,
    check_trained_feedback_approaches_backprop,
    damped_gauss_newton,
    train_feedback,
)
from ngrad.rules.target_propagation.difference_target_propagation import reconstruction_gradients
from ngrad.rules.target_propagation.direct_difference_target_propagation import (
    difference_reconstruction_gradient,
    noise_responses,
)
from ngrad.rules.target_propagation.local_difference_reconstruction import (
    LocalDifferenceReconstruction,
    local_difference_gradients,
)
from ngrad.rules.target_propagation.targets import (
    gauss_newton_differences,
    output_gradient,
    output_jacobians,
)


def _net(sizes=(6, 8, 7, 3), activation="tanh", seed=0):
    torch.manual_seed(seed)
    return ngrad.mlp(list(sizes), activation=activation).double()


def _batch(width, classes, n=12, seed=5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


# -- DTP -------------------------------------------------------------------------------------


def test_dtp_reconstruction_gradient_matches_autograd():
    network = _net()
    rule = ngrad.make_rule("dtp", network)
    x, _ = _batch(6, 3)
    layer = network.layers[1]
    with torch.no_grad():
        below, above = network.trace(x).activities[1:3]
    noise = 0.3 * torch.randn_like(below)
    weight = rule.feedback_weights[0].detach().clone().requires_grad_()
    bias = torch.randn_like(rule.feedback_biases[0]).requires_grad_()
    with torch.no_grad():
        loss, grad_weight, grad_bias, pre = reconstruction_gradients(
            layer, weight, bias, below, above, noise, network.layers[0].activation
        )
        torch.testing.assert_close(pre, above @ weight + bias, rtol=1e-12, atol=1e-15)
    reconstruction = torch.tanh(layer(below + noise) @ weight + bias)
    expected = 0.5 * (reconstruction - below - noise).pow(2).sum() / below.shape[0]
    grads = torch.autograd.grad(expected, [weight, bias])
    assert math.isclose(loss, float(expected.detach()), rel_tol=1e-12)
    torch.testing.assert_close(grad_weight, grads[0], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad_bias, grads[1], rtol=1e-10, atol=1e-14)


# -- DDTP ------------------------------------------------------------------------------------


def test_ddtp_difference_reconstruction_gradient_matches_autograd():
    network = _net(sizes=(6, 8, 7, 5, 3))
    rule = ngrad.make_rule("ddtp", network, damping=0.3)
    x, _ = _batch(6, 3)
    with torch.no_grad():
        trace = network.trace(x)
    noises = [0.2 * torch.randn_like(h) for h in trace.activities[1:-1]]
    blocks = [b.detach().clone().requires_grad_() for b in rule.feedback_matrices()]
    with torch.no_grad():
        responses = noise_responses(network, trace, noises)
        losses, gradients = difference_reconstruction_gradient(
            responses, noises, blocks, 0.2, 0.3, normalised=False
        )
    for index, (noise, block) in enumerate(zip(noises, blocks, strict=True)):
        output = trace.activities[index + 1] + noise  # each layer's noise on its own, by hand
        for layer in network.layers[index + 1 :]:
            output = layer(output)
        residual = (output - trace.output) @ block - noise
        loss = 0.5 * residual.pow(2).sum() / (0.04 * 12) + 0.15 * block.pow(2).sum()
        (expected,) = torch.autograd.grad(loss, block)
        assert math.isclose(losses[index], float(loss.detach()), rel_tol=1e-12)
        torch.testing.assert_close(gradients[index], expected, rtol=1e-10, atol=1e-14)


def test_ddtp_feedback_converges_to_the_damped_pseudo_inverse():
    """Linear network (J the same for every sample): DRL training drives Q_l to the closed-form
    minimiser J^T (J J^T + lambda I)^{-1}."""
    network = _net(activation="identity")
    damping = 0.05
    rule = ngrad.make_rule("ddtp", network, damping=damping)
    x, y = _batch(6, 3, n=128)
    for lr in (0.5, 0.1, 0.02):
        train_feedback(rule, x, y, steps=100, lr=lr)
    jacobians = autograd_output_jacobians(network, x[:1])
    for block, jacobian in zip(rule.feedback_matrices(), jacobians, strict=False):
        j = jacobian[0]
        closed_form = torch.linalg.solve(j @ j.t() + damping * torch.eye(3, dtype=j.dtype), j)
        assert float((block.detach() - closed_form).norm() / closed_form.norm()) < 0.02


def test_ddtp_damping_interpolates_to_gradient_targets():
    """Q = J^T (J J^T + lambda)^{-1}: lambda large gives the gradient direction J^T Delta_L."""
    network = _net()
    x, y = _batch(6, 3, n=1)
    jacobians = autograd_output_jacobians(network, x)
    top = -0.1 * output_gradient(get_loss("cross_entropy"), network.trace(x), y)
    angles = []
    for damping in (1e-6, 1e6):
        differences = gauss_newton_differences(jacobians, top.detach(), damping)
        gradient_steps = [
            (j.transpose(1, 2) @ top.detach().unsqueeze(-1)).squeeze(-1) for j in jacobians
        ]
        angles.append(mean_angle_degrees(differences[0], gradient_steps[0]))
    assert angles[1] < 1e-3 < angles[0]


# -- L-DRL -----------------------------------------------------------------------------------


def test_ldrl_gradient_matches_autograd():
    network = _net()
    rule = ngrad.make_rule("ldrl", network)
    x, _ = _batch(6, 3)
    with torch.no_grad():
        trace = network.trace(x)
    layer = network.layers[1]
    below, above = trace.activities[1], trace.activities[2]
    eps, eta = 0.1 * torch.randn_like(below), 0.1 * torch.randn_like(above)
    weight = rule.feedback_weights[0].detach().clone().requires_grad_()
    with torch.no_grad():
        loss, gradient = local_difference_gradients(
            layer, weight, below, above, torch.tanh(above), eps, eta, 0.1
        )

    def g(h):
        return torch.tanh(h) @ weight

    r = g(above)
    expected = (
        -(eps * (g(layer(below + eps)) - r)).sum() + 0.5 * (g(above + eta) - r).pow(2).sum()
    ) / (0.01 * 12)
    (reference,) = torch.autograd.grad(expected, weight)
    assert math.isclose(loss, float(expected.detach()), rel_tol=1e-12)
    torch.testing.assert_close(gradient, reference, rtol=1e-10, atol=1e-14)


class _NoDifferenceCorrection(LocalDifferenceReconstruction):
    """A wrong L-DRL: h^_{l-1} = g(h^_l) instead of h_{l-1} + g(h^_l) - g(h_l)."""

    def propagate_targets(self, trace, top_difference, reuse=None):
        differences = [top_difference]
        for index in range(len(self.network.layers) - 1, 0, -1):
            target = trace.activities[index + 1] + differences[-1]
            layer = self.network.layers[index]
            reconstruction = layer.activation(target) @ self.feedback_weights[index - 1]
            differences.append(reconstruction - trace.activities[index])
        differences.reverse()
        return differences


def test_ldrl_angle_bound_fails_without_the_difference_correction(monkeypatch):
    monkeypatch.setitem(rules.REGISTRY, "ldrl", _NoDifferenceCorrection)
    angle, _ = check_trained_feedback_approaches_backprop("ldrl")
    assert not angle.passed and angle.measured > 45


def test_ldrl_with_transposed_feedback_tends_to_backprop_as_beta_shrinks():
    """Leaky-ReLU net (f'(h_l) = f'(a_l)), V := W^T: the update -> BP with error O(beta)."""
    network = _net(activation="leaky_relu")
    x, y = _batch(6, 3)
    reference = backprop_reference(network, get_loss("cross_entropy"), x, y)
    errors = []
    for beta in (1e-1, 1e-2, 1e-3):
        rule = ngrad.make_rule("ldrl", network, target_step=beta)
        with torch.no_grad():
            for weight, layer in zip(rule.feedback_weights, network.layers[1:], strict=True):
                weight.copy_(layer.weight)
        rule.backward(x, y)
        errors.append(
            max_relative_error(
                [layer.weight.grad for layer in network.layers], reference.weight_gradients
            )
        )
    assert errors[2] < 1e-8 or (errors[0] > errors[1] > errors[2]), errors
    assert errors[2] < 1e-3


def test_ldrl_trained_feedback_jacobian_approaches_forward_transpose():
    network = _net(sizes=(6, 12, 10, 3))
    rule = ngrad.make_rule("ldrl", network, feedback_rate=1.0)
    x, y = _batch(6, 3, n=64)
    before = rule.diagnose(x, y)["jacobian_mismatch_by_layer"]
    train_feedback(rule, x, y, steps=300, lr=0.05)
    after = rule.diagnose(x, y)["jacobian_mismatch_by_layer"]
    assert math.isnan(before[0]) and math.isnan(after[0])
    assert all(a < 0.5 * b for a, b in zip(after[1:], before[1:], strict=True)), (before, after)
    assert max(angles_to_backprop(rule, x, y)) < 30


# -- the Gauss-Newton diagnostic ---------------------------------------------------------------


def test_output_jacobians_and_gauss_newton_forms_match_autograd():
    network = _net(sizes=(6, 8, 7, 3))
    x, _ = _batch(6, 3, n=5)
    with torch.no_grad():
        mine = output_jacobians(network, network.trace(x))
    reference = autograd_output_jacobians(network, x)
    assert max_relative_error(mine, reference) < 1e-12
    top = torch.randn(5, 3, dtype=torch.float64)
    # damped: J^T (J J^T + lambda)^-1 (ngrad) against (J^T J + lambda)^-1 J^T (the normal equations)
    fast = gauss_newton_differences(mine, top, 0.3)
    slow = [damped_gauss_newton(j, top, 0.3) for j in reference]
    assert max_relative_error(fast, slow) < 1e-10
    # undamped: the pseudo-inverse, J^+ Delta; J J^+ = I on these wide Jacobians
    undamped = gauss_newton_differences(mine, top, 0.0)
    for jacobian, difference in zip(reference, undamped, strict=True):
        back = (jacobian @ difference.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(back, top, rtol=1e-10, atol=1e-12)
