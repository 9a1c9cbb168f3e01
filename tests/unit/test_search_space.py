"""The tuning ranges: every rule declares one next to its options, every range names an option
of the rule, and the rule builds at both ends of each range."""

import pytest

import ngrad
from ngrad.errors import ConfigError
from ngrad.rules import REGISTRY, make_rule
from ngrad.search_space import Choice, IntRange, LogUniform, Uniform, tunable
from ngrad.train.config import TrainConfig
from ngrad.train.tune_space import (
    OPTION_PREFIX,
    learns_feedback_at_own_rate,
    rule_search_space,
    search_space,
    shared_space,
    split_parameters,
)


def _ends(distribution):
    if isinstance(distribution, Choice):
        return list(distribution.values)
    return [distribution.low, distribution.high]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_rule_declares_a_search_space_that_builds_at_its_ends(name):
    space = rule_search_space(name)
    network = ngrad.mlp([6, 4, 4, 4])  # square above the first layer: every rule trains it
    for option, distribution in space.items():
        for value in _ends(distribution):
            make_rule(name, network, **{option: value})


def test_distributions_refuse_empty_or_unloggable_ranges():
    with pytest.raises(ValueError, match="low < high"):
        Uniform(1.0, 1.0)
    with pytest.raises(ValueError, match="log scale"):
        LogUniform(0.0, 1.0)
    with pytest.raises(ValueError, match="integers"):
        IntRange(1, 2.5)
    with pytest.raises(ValueError, match="two distinct"):
        Choice("a", "a")
    with pytest.raises(TypeError, match="must be a LogUniform"):
        tunable(rate=(0.1, 1.0))


def test_a_range_for_an_option_the_rule_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(REGISTRY["fa"], "search_space", tunable(nope=Uniform(0.0, 1.0)))
    with pytest.raises(ConfigError, match="'nope', which is not one of its options"):
        rule_search_space("fa")


def test_shared_space_follows_the_optimiser_and_learned_feedback():
    sgd = shared_space("sgd", learned_feedback=False)
    assert list(sgd) == ["lr", "momentum", "weight_decay"]
    adam = shared_space("adam", learned_feedback=True)
    assert "momentum" not in adam
    assert adam["lr"].high <= 1e-2
    assert "feedback_lr" in adam


@pytest.mark.parametrize(("name", "expected"), [("bp", False), ("fa", False), ("kp", False)])
def test_feedback_lr_is_searched_only_where_the_rule_takes_one(name, expected):
    rule = make_rule(name, ngrad.mlp([6, 5, 5, 3]))
    assert learns_feedback_at_own_rate(rule, TrainConfig(rule=name)) is expected


def test_a_learned_feedback_rule_gets_a_feedback_rate_and_fixed_settings_are_left_out():
    config = TrainConfig(rule="dtp", rule_options={"noise": 0.2})
    rule = make_rule("dtp", ngrad.mlp([6, 5, 5, 3]), noise=0.2)
    space = search_space(config, rule, fixed=frozenset({"lr"}))
    assert "feedback_lr" in space.shared
    assert "lr" not in space.shared
    assert "noise" not in space.options  # given as a rule option: held fixed
    names = space.parameters()
    assert all(OPTION_PREFIX + key in names for key in space.options)
    settings, options = split_parameters({"momentum": 0.5, "options.target_step": 0.1})
    assert settings == {"momentum": 0.5}
    assert options == {"target_step": 0.1}
