"""The comparison figures, drawn from a small fake comparison."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ngrad.analysis.statistics import compare_to_reference
from ngrad.plots import training
from ngrad.plots.comparison import (
    COMPARISON_FIGURES,
    final_test_accuracy,
    plot_comparison,
    rule_family,
    rule_styles,
)
from ngrad.rules import REGISTRY, available_rules, get_rule_class

EPOCHS = 4


def _history(rng: np.random.Generator, final: float, angles: bool) -> list[dict]:
    lines = []
    for epoch in range(1, EPOCHS + 1):
        accuracy = final - 0.2 / epoch + 0.01 * rng.standard_normal()
        line = {"epoch": epoch, "val_accuracy": accuracy + 0.01, "test_accuracy": accuracy}
        if angles:
            line["angle_to_bp_deg"] = [40.0 + epoch, None if epoch == 1 else 60.0 - epoch]
        lines.append(line)
    return lines


def _one_rule_per_family() -> list[str]:
    chosen: dict[str, str] = {}
    for name in available_rules():
        chosen.setdefault(rule_family(name), name)
    return list(chosen.values())


@pytest.fixture
def histories():
    rng = np.random.default_rng(0)
    rules = _one_rule_per_family()
    result = {
        rule: [_history(rng, 0.9 + 0.01 * k, rule != "bp") for _ in range(3)]
        for k, rule in enumerate(rules)
    }
    result[rules[1]] = result[rules[1]][:1]  # one seed: a dot without an interval
    result[rules[2]] = [_history(rng, 0.2, True) for _ in range(2)]  # far below the others
    result[rules[-1]].append([])  # a run without history
    return result


def test_every_figure_is_written_without_warnings(histories, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = plot_comparison(histories, tmp_path, "digits", model="mlp", budget="4 epochs")
    assert [path.name for path in written] == list(COMPARISON_FIGURES)
    assert all(path.is_file() and path.stat().st_size > 1000 for path in written)


def test_figures_mark_the_rules_that_differ(histories, tmp_path):
    rng = np.random.default_rng(1)
    correct = {rule: [rng.random(200) < 0.9 for _ in runs] for rule, runs in histories.items()}
    rows = compare_to_reference(correct, reference="bp", resamples=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = plot_comparison(histories, tmp_path, "digits", statistics=rows)
    assert len(written) == len(COMPARISON_FIGURES)


def test_training_module_keeps_its_comparison_entry_point(histories, tmp_path):
    written = training.plot_comparison(histories, tmp_path, "digits")
    assert {path.name for path in written} == {"accuracy.png", "angles.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "angles.png"]


def test_figures_without_angles_or_histories(tmp_path):
    rng = np.random.default_rng(2)
    only_bp = {"bp": [_history(rng, 0.9, False)]}
    assert [p.name for p in plot_comparison(only_bp, tmp_path, "digits")] == [
        "accuracy.png",
        "learning_curves.png",
    ]
    assert plot_comparison({"bp": [[]]}, tmp_path / "none", "digits") == []


def test_unknown_figure_is_refused(histories, tmp_path):
    with pytest.raises(ValueError, match="unknown figures"):
        plot_comparison(histories, tmp_path, "digits", figures=("heat.png",))


def test_final_accuracy_is_taken_at_the_first_best_validation_epoch():
    history = [
        {"epoch": 1, "val_accuracy": 0.5, "test_accuracy": 0.4},
        {"epoch": 2, "val_accuracy": 0.8, "test_accuracy": 0.7},
        {"epoch": 3, "val_accuracy": 0.8, "test_accuracy": 0.9},
        {"epoch": 4, "val_accuracy": 0.6, "test_accuracy": 0.95},
    ]
    assert final_test_accuracy(history) == 0.7
    assert final_test_accuracy([]) is None


def test_family_is_the_package_of_the_rule_class():
    for name in available_rules():
        module = get_rule_class(name).__module__
        assert module.startswith(f"ngrad.rules.{rule_family(name)}")
    assert len({rule_family(name) for name in available_rules()}) > 2
    assert rule_family("no-such-rule") == "other"


def test_a_new_family_is_grouped_and_coloured_without_any_list(monkeypatch):
    fake = type("Fake", (), {"__module__": "ngrad.rules.new_family.fake"})
    monkeypatch.setitem(REGISTRY, "fake", fake)
    assert rule_family("fake") == "new_family"
    rules = _one_rule_per_family()
    assert "fake" in rules
    styles = rule_styles(rules)
    colours = [styles[rule]["color"] for rule in rules]
    assert len(set(colours)) == len(rules)  # one colour per family
    same_family = [n for n in available_rules() if rule_family(n) == rule_family(rules[1])]
    within = rule_styles(same_family)
    assert len({within[n]["color"] for n in same_family}) == 1
    assert len({str(within[n]["linestyle"]) for n in same_family}) == min(len(same_family), 7)
