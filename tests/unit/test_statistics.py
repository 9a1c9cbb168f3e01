"""The comparison statistics against cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ngrad.analysis.statistics import (
    compare_to_reference,
    format_statistics_table,
    holm,
    mcnemar,
    mean_interval,
    paired_bootstrap,
    statistics_footnote,
)
from ngrad.numeric import to_json

IMAGES = 2000


def _correct(rng: np.random.Generator, accuracy: float, images: int = IMAGES) -> np.ndarray:
    return rng.random(images) < accuracy


def _worse(correct: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """``correct`` made wrong on ``fraction`` of all images (chosen among those it gets right)."""
    worse = correct.copy()
    right = np.flatnonzero(worse)
    worse[rng.choice(right, int(fraction * correct.size), replace=False)] = False
    return worse


def test_mean_interval_matches_student_t():
    values = [0.91, 0.93, 0.95, 0.94]
    mean, low, high = mean_interval(values, confidence=0.9)
    expected = stats.t.interval(0.9, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)


def test_mean_interval_of_one_seed_has_no_interval():
    mean, low, high = mean_interval([0.9])
    assert mean == 0.9 and math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    ("values", "message"),
    [([], "at least one"), ([0.9, None], "missing"), ([0.9, math.nan], "finite")],
)
def test_mean_interval_refuses_missing_values(values, message):
    with pytest.raises(ValueError, match=message):
        mean_interval(values)


def test_mcnemar_hand_computed_binomial_case():
    # A right / B wrong on 2 images, A wrong / B right on 8, both right on 5, both wrong on 1
    a = np.array([True] * 2 + [False] * 8 + [True] * 5 + [False])
    b = np.array([False] * 2 + [True] * 8 + [True] * 5 + [False])
    result = mcnemar(a, b)
    assert (result.b, result.c, result.statistic) == (2, 8, 2)
    # two-sided exact: 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert result.p_value == pytest.approx(2 * 56 / 1024)
    assert "McNemar" in result.test


@pytest.mark.parametrize("seed", range(4))
def test_mcnemar_matches_scipy_binomtest(seed):
    rng = np.random.default_rng(seed)
    a, b = _correct(rng, 0.8, 300), _correct(rng, 0.75, 300)
    result = mcnemar(a, b)
    expected = stats.binomtest(result.b, result.b + result.c, 0.5).pvalue
    assert result.p_value == pytest.approx(expected)


def test_mcnemar_of_identical_rules_is_one():
    a = _correct(np.random.default_rng(0), 0.9)
    assert mcnemar(a, a.copy()).p_value == 1.0


def test_mcnemar_refuses_unpaired_arrays():
    with pytest.raises(ValueError, match="same test images"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="bool"):
        mcnemar(np.ones(3), np.ones(3))


def test_holm_hand_case():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_missing():
    # three tests: 0.01 x 3 = 0.03, 0.5 x 2 = 1.0, 0.6 x 1 -> 1.0 (monotone)
    adjusted = holm([0.6, math.nan, 0.01, 0.5])
    assert math.isnan(adjusted[1])
    assert [adjusted[0], adjusted[2], adjusted[3]] == pytest.approx([1.0, 0.03, 1.0])


def test_identical_rules_show_no_difference():
    rng = np.random.default_rng(0)
    seeds = [_correct(rng, 0.9) for _ in range(3)]
    result = paired_bootstrap(seeds, [s.copy() for s in seeds])
    assert result.difference == 0.0 and result.p_value == 1.0
    assert result.low <= 0.0 <= result.high


def test_planted_difference_is_detected():
    rng = np.random.default_rng(1)
    reference = [_correct(rng, 0.95) for _ in range(3)]
    worse = [_worse(seed, rng, 0.10) for seed in reference]
    result = paired_bootstrap(worse, reference)
    assert result.difference == pytest.approx(-0.10)
    assert result.p_value < 0.01
    assert result.high < 0.0


def test_noise_between_rules_is_not_called_a_difference():
    rng = np.random.default_rng(2)
    a = [_correct(rng, 0.9) for _ in range(3)]
    b = [_correct(rng, 0.9) for _ in range(3)]  # independent draws at the same accuracy
    result = paired_bootstrap(a, b)
    assert result.p_value > 0.01 and result.low < result.difference < result.high


def test_bootstrap_is_reproducible_and_seeded():
    rng = np.random.default_rng(3)
    a = [_correct(rng, 0.9) for _ in range(2)]
    b = [_correct(rng, 0.88) for _ in range(2)]
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5).p_value != paired_bootstrap(a, b, seed=6).p_value


def test_compare_to_reference_rows():
    rng = np.random.default_rng(4)
    bp = [_correct(rng, 0.95) for _ in range(3)]
    per_rule = {
        "bp": bp,
        "twin": [seed.copy() for seed in bp],
        "worse": [_worse(seed, rng, 0.10) for seed in bp],
        "partial": {0: bp[0].copy(), 2: None},
        "failed": [None, None, None],
    }
    rows = {row.rule: row for row in compare_to_reference(per_rule, reference="bp")}
    assert list(rows) == list(per_rule)
    assert rows["bp"].difference is None and rows["bp"].significant is None
    assert rows["bp"].accuracy.mean == pytest.approx(np.mean([s.mean() for s in bp]))
    assert rows["twin"].significant is False and rows["twin"].p_holm == 1.0
    assert rows["worse"].significant is True and rows["worse"].p_holm < 0.01
    assert [test.c for test in rows["worse"].mcnemar] == [int(0.1 * IMAGES)] * 3
    assert rows["partial"].seeds == 1 and rows["partial"].difference.seeds == 1
    assert rows["failed"].seeds == 0 and rows["failed"].difference is None
    table = format_statistics_table(list(rows.values()))
    assert table.count("\n") == 1 + len(rows)
    assert "yes, worse" in table and "no results" in table
    to_json([row.as_record() for row in rows.values()])  # JSON-ready
    footnote = statistics_footnote()
    assert all(word in footnote for word in ("Student-t", "bootstrap", "Holm", "McNemar"))


def test_compare_to_reference_refuses_bad_input():
    arrays = [np.ones(10, bool)]
    with pytest.raises(KeyError):
        compare_to_reference({"fa": arrays}, reference="bp")
    with pytest.raises(ValueError, match="different sizes"):
        compare_to_reference({"bp": arrays, "fa": [np.ones(11, bool)]})
