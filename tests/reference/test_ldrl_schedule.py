"""L-DRL's per-layer feedback schedule (Ernoult et al. 2022 set iterations, noise and feedback
rates per layer), float64: the per-layer schedule is the one-value schedule applied to each
layer on its own, and a list of equal values is the one value exactly."""

import pytest
import torch

import ngrad
from ngrad.cli import main
from ngrad.errors import ConfigError
from ngrad.rules.checking import random_batch
from ngrad.rules.target_propagation import local_difference_reconstruction as ldrl_module
from ngrad.rules.target_propagation.pathways import feedback_noise

SIZES = (6, 9, 8, 7, 4)  # distinct widths: each activity's shape names its layer
SCHEDULE = {  # layers 2, 3 and 4 (indices 1-3) have feedback
    "feedback_iterations": (3, 1, 4),
    "feedback_step": (0.05, 0.2, 0.03),
    "noise": (0.3, 0.1, 0.05),
    "feedback_rate": (0.5, 0.02, 1.0),
}


def _rule(seed=0, **options):
    torch.manual_seed(seed)
    network = ngrad.mlp(list(SIZES), activation="tanh").double()
    return ngrad.make_rule("ldrl", network, target_step=0.2, **options)


def _keyed_noise(monkeypatch):
    """Noise that depends on which activity it perturbs (its shape, input or output side) and
    on how many times that one was drawn, not on the order of the draws: a layer then sees the
    same noise whichever other layers are evaluated beside it."""
    counts = {}

    def draw(like, std, distribution):
        noises = []
        for position, tensor in enumerate(like):
            key = (tuple(tensor.shape), position % 2)
            counts[key] = counts.get(key, 0) + 1
            generator = torch.Generator().manual_seed(hash((key, counts[key])) % 2**31)
            values = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            noises.append(values.mul_(std))
        return noises

    monkeypatch.setattr(ldrl_module, "feedback_noise", draw)
    return counts


def test_a_per_layer_schedule_is_each_layers_own_schedule_applied_alone(monkeypatch):
    counts = _keyed_noise(monkeypatch)
    x, y = random_batch((SIZES[0],), SIZES[-1], n=10)
    scheduled = _rule(**SCHEDULE)
    scheduled.backward(x, y)
    for position in range(len(SIZES) - 2):  # feedback of layer index position + 1
        counts.clear()
        alone = _rule(**{name: values[position] for name, values in SCHEDULE.items()})
        alone.backward(x, y)
        mine, reference = scheduled.feedback_weights[position], alone.feedback_weights[position]
        torch.testing.assert_close(mine, reference, rtol=1e-13, atol=1e-15)  # internal steps
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-13, atol=1e-15)


def test_a_list_of_equal_values_is_the_one_value_exactly():
    x, y = random_batch((SIZES[0],), SIZES[-1], n=10)
    one = {"feedback_iterations": 3, "feedback_step": 0.1, "noise": 0.2, "feedback_rate": 0.5}
    results = []
    for options in (one, {name: (value,) * 3 for name, value in one.items()}):
        rule = _rule(**options)
        torch.manual_seed(7)
        rule.backward(x, y)
        results.append([p.grad.clone() for p in rule.parameters()] + list(rule.parameters()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unit_draws_scaled_per_layer_are_the_scalar_draws():
    """Per-layer noise draws unit noise once and scales each layer's part: with one value it is
    the draw at that size, bit for bit."""
    like = [torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 4, dtype=torch.float64)]
    torch.manual_seed(3)
    scalar = feedback_noise(like, 0.3, "rademacher")
    torch.manual_seed(3)
    scaled = [n.mul_(0.3) for n in feedback_noise(like, 1.0, "rademacher")]
    for a, b in zip(scalar, scaled, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_schedule_of_the_wrong_length_or_sign_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"'noise' gives 2 values.*3 layers with feedback"):
        _rule(noise=(0.1, 0.2))
    with pytest.raises(ConfigError, match=r"every value of option 'feedback_iterations'"):
        _rule(feedback_iterations=(1, 0, 2))
    with pytest.raises(ConfigError, match=r"'feedback_step' needs at least one value"):
        _rule(feedback_step=())


def test_the_cli_takes_a_per_layer_schedule(tmp_path):
    out = tmp_path / "run"
    flags = ["--epochs", "1", "--hidden", "16,12", "--batch-size", "32", "--no-progress"]
    schedule = ["feedback_iterations=2,3", "noise=0.2,0.1", "feedback_rate=0.1,0.05"]
    options = [item for option in schedule for item in ("--rule-option", option)]
    assert main(["train", "--rule", "ldrl", "--out", str(out), *flags, *options]) == 0
    assert (out / "metrics.jsonl").read_text().count("\n") == 2  # epochs 0 and 1
    wrong = ["--rule-option", "noise=0.2,0.1,0.3", "--out", str(tmp_path / "wrong")]
    assert main(["train", "--rule", "ldrl", *flags, *wrong]) != 0
