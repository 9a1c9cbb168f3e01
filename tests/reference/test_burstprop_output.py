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


def _authors_summed_updates(network, feedback, x, y, hidden_lr, output_lr, p_baseline):
    """One step of the authors' final MNIST code (github.com/jordan-g/Burstprop, layers.py after
    "Fixes to match original training", 2021), written from its equations without the learned
    inhibition: sigmoid event rates e, hidden burst probability p = sigma((b_above Y)(1 - e)),
    the output's p_t = p_b ((y - e)(1 - e) + 1), and Delta W = lr (b_t - b)^T e_below summed over
    the batch (no division by its size)."""
    with torch.no_grad():
        rates, below = [], x
        for layer in network.layers:
            below = torch.sigmoid(below @ layer.weight.t() + layer.bias)
            rates.append(below)
        e = rates[-1]
        labels = F.one_hot(y, 4).double()
        untaught, taught = p_baseline * e, p_baseline * ((labels - e) * (1 - e) + 1) * e
        deviations = [taught - untaught]
        for index in range(len(rates) - 2, -1, -1):
            e = rates[index]
            untaught = torch.sigmoid((untaught @ feedback[index]) * (1 - e)) * e
            taught = torch.sigmoid((taught @ feedback[index]) * (1 - e)) * e
            deviations.insert(0, taught - untaught)
        inputs = [x, *rates[:-1]]
        rates_by_layer = [hidden_lr] * (len(rates) - 1) + [output_lr]
        return [lr * d.t() @ a for lr, d, a in zip(rates_by_layer, deviations, inputs, strict=True)]


def test_paper_scaling_at_lr_output_lr_p_bar_batch_is_the_authors_summed_step():
    """The authors' final code sums each update over the batch: ngrad's scaling=paper matches
    it at lr = output_lr * p_bar * N (0.01 * 0.2 * 32 = 0.064 for their MNIST run), with the
    hidden layers at hidden_rate = hidden_lr / output_lr."""
    network = _network(sizes=(12, 24, 16, 4))
    x, y = random_batch((12,), 4, n=32)
    rule = ngrad.make_rule("burstprop", network, "mse", recurrent=False)
    rule.backward(x, y)
    lr = 0.01 * 0.2 * 32
    ours = [-lr * layer.weight.grad for layer in network.layers]
    feedback = rule.feedback_matrices()
    theirs = _authors_summed_updates(network, feedback, x, y, 0.1, 0.01, 0.2)
    for mine, authors in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, authors, rtol=1e-12, atol=1e-15)


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
