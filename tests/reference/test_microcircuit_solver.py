"""The microcircuit's teaching phase: top-down sweeps reach the fixed point of its dynamics."""

import pytest
import torch

import ngrad
from ngrad.rules.checking import dense_network, max_relative_error, random_batch
from ngrad.rules.compartmental.circuit_state import read_state
from ngrad.rules.compartmental.compartments import teacher_potential

DEEP = (12, 10, 9, 4)


def _rule(activation, randomise=True, **options):
    network = dense_network(seed=3, sizes=DEEP, activation=activation)
    rule = ngrad.make_rule("microcircuit", network, **options)
    if randomise:  # a forward phase that does not start settled either
        rule.randomise_interneurons()
    return rule


def _updates(rule, x, y):
    rule.backward(x, y)
    return [parameter.grad.clone() for parameter in rule.network.parameters()]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_sweeps_reach_the_fixed_point_of_the_euler_dynamics(activation):
    """Long exponential-Euler teaching (400 steps) settles to the fixed point; the sweeps reach
    the same updates within 1e-5, closer than the default 8 Euler steps get."""
    x, y = random_batch((DEEP[0],), DEEP[-1])
    settled = _updates(_rule(activation, teaching_solver="euler", teaching_steps=400), x, y)
    swept = _updates(_rule(activation), x, y)
    eight_steps = _updates(_rule(activation, teaching_solver="euler"), x, y)
    assert max_relative_error(swept, settled) < 1e-5
    assert max_relative_error(eight_steps, settled) > 10 * max_relative_error(swept, settled)


def test_sweeps_return_the_readout_of_the_state_they_return():
    """The plasticity reads the readout: it must belong to the final state (no stale basal or
    interneuron-dendrite potentials from before the last sweep)."""
    rule = _rule("tanh", teaching_steps=2)  # stopped by the step limit, not by settling
    x, y = random_batch((DEEP[0],), DEEP[-1])
    with torch.no_grad():
        _, _, state, readout = rule._phases(x, y)
        w = rule._synapses()
        recomputed = read_state(x, state, readout.basal[0], w)
    for name in ("rates", "basal", "apical", "interneuron_dendrite", "interneuron_rates"):
        for ours, theirs in zip(getattr(readout, name), getattr(recomputed, name), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-13)


def test_sweeps_settle_relative_to_the_teachers_pull():
    """A teacher 1000x weaker settles as precisely: the tolerance scales with its pull (the
    interneurons self-predicting, so the forward phase starts settled and only the teacher
    moves the circuit)."""
    x, y = random_batch((DEEP[0],), DEEP[-1])
    errors = []
    for g_soma in (0.8, 8e-4):
        settled = _updates(
            _rule("tanh", False, g_soma=g_soma, teaching_solver="euler", teaching_steps=400), x, y
        )
        swept = _updates(_rule("tanh", False, g_soma=g_soma), x, y)
        errors.append(max_relative_error(swept, settled))
    assert max(errors) < 3e-5


def test_teacher_potential_is_where_the_sweeps_pull_the_output():
    """The first sweep moves the output soma to lerp(v^_B,L, u_trg, lambda_out) (sanity of the
    teacher's pull on which the tolerance is scaled)."""
    rule = _rule("tanh", teaching_steps=1)
    x, y = random_batch((DEEP[0],), DEEP[-1])
    with torch.no_grad():
        forward_state, forward, state, _ = rule._phases(x, y)
        teacher = teacher_potential(rule.loss, forward_state.soma[-1], y)
        nudge = rule._constants()["output_nudge"]
        expected = torch.lerp(forward.basal[-1], teacher, nudge)
    torch.testing.assert_close(state.soma[-1], expected, rtol=0, atol=1e-13)
