"""Burstprop with the authors' output units: sigmoid, squared error, the paper's output burst
rule b_L = p_bar (1 + (y - e)(1 - e)) e (Payeur et al. 2021; their train_mnist.py), float64."""

import json

import pytest
import torch
from torch.nn import functional as F

import ngrad
from ngrad.cli import main
from ngrad.errors import ConfigError
from ngrad.rules.checking import max_relative_error, random_batch, set_feedback_to_forward


def _network(activation="sigmoid", sizes=(12, 24, 16, 4)):
    torch.manual_seed(0)
    return ngrad.mlp(list(sizes), activation=activation, output_activation="sigmoid").double()


def _autograd_mse_gradients(network, x, y):
    network.zero_grad()
    output = network(x)
    loss = 0.5 * (output - F.one_hot(y, 4).double()).pow(2).sum(dim=1).mean()
    return list(torch.autograd.grad(loss, [layer.weight for layer in network.layers]))


def test_the_teacher_sets_the_papers_output_burst_rate():
    network = _network()
    x, y = random_batch((12,), 4)
    rule = ngrad.make_rule("burstprop", network, "mse", baseline_burst_probability=0.3)
    untaught, taught = rule.burst_states(x, y)
    with torch.no_grad():
        events = network(x)  # e_L = sigma(a_L)
    labels = F.one_hot(y, 4).double()
    torch.testing.assert_close(untaught.burst_rate[-1], 0.3 * events, rtol=0, atol=1e-15)
    papers = 0.3 * (1 + (labels - events) * (1 - events)) * events
    torch.testing.assert_close(taught.burst_rate[-1], papers, rtol=0, atol=1e-15)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_sigmoid_output_updates_are_backprop_in_the_symmetric_small_burst_limit(activation):
    """One hidden layer, Y := W^T and p_bar -> 0 (the apical input in the burst sigmoid's linear
    range): the updates tend to autograd's gradient of the squared error through the sigmoid
    output. (Deeper layers receive burst rates p rho with p ~ 1/2, where the burst sigmoid's
    curvature bends the update; the linear-output test says the same.)"""
    network = _network(activation, sizes=(12, 24, 4))
    x, y = random_batch((12,), 4)
    expected = _autograd_mse_gradients(network, x, y)
    options = {"recurrent": False, "scaling": "backprop"}
    rule = ngrad.make_rule("burstprop", network, "mse", baseline_burst_probability=1e-4, **options)
    set_feedback_to_forward(rule)
    rule.backward(x, y)
    updates = [layer.weight.grad.clone() for layer in network.layers]
    assert max_relative_error(updates, expected) < 1e-3


def test_sigmoid_output_layer_update_is_backprops_at_the_papers_settings():
    """p_bar 0.2, learned inhibition, paper scaling, random Y, two hidden layers: the output
    layer's update is exactly the gradient of the squared error through the sigmoid."""
    network = _network()
    x, y = random_batch((12,), 4)
    expected = _autograd_mse_gradients(network, x, y)
    ngrad.make_rule("burstprop", network, "mse").backward(x, y)
    torch.testing.assert_close(network.layers[-1].weight.grad, expected[-1], rtol=1e-12, atol=0)


def test_other_output_units_are_refused_by_name():
    network = ngrad.mlp([4, 5, 3], activation="sigmoid", output_activation="tanh")
    with pytest.raises(ConfigError, match=r"'tanh'.*linear \('identity'\) or 'sigmoid'"):
        ngrad.make_rule("burstprop", network)
    with pytest.raises(ConfigError, match=r"linear \('identity'\), because"):
        ngrad.make_rule("microcircuit", ngrad.mlp([4, 5, 3], output_activation="sigmoid"))


def test_the_cli_trains_burstprop_with_the_authors_output(tmp_path):
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--hidden", "64", "--batch-size", "16", "--no-progress"]
    options = ["--loss", "mse", "--model-option", "output_activation=sigmoid", "--lr", "0.3"]
    options += ["--momentum", "0", "--normalize", "train"]
    assert main(["train", "--rule", "burstprop", "--out", str(out), *flags, *options]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_options"] == {"output_activation": "sigmoid"}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["val_accuracy"] > lines[0]["val_accuracy"] + 0.05
