"""Statistics for comparing learning rules: intervals over seeds and paired tests on test images.

A comparison trains every rule with the same seeds and measures each run on the same test images,
so two rules can be compared image by image (a paired test), which is far more sensitive than
comparing two accuracies. The pieces:

- ``mean_interval``: mean over seeds with a Student-t confidence interval (seeds are independent
  draws of initialisation, data order and feedback weights);
- ``mcnemar``: the exact McNemar test for one seed: of the images on which the two rules disagree,
  does each rule win half? (two-sided binomial test on the discordant pairs);
- ``paired_bootstrap``: the difference of mean accuracy between two rules over all seeds, with a
  bootstrap interval and p-value that resample both the seeds and the test images;
- ``holm``: Holm's correction when several rules are each tested against the same reference;
- ``compare_to_reference``: all of the above for a whole comparison, one row per rule, and
  ``format_statistics_table`` / ``statistics_footnote`` to print it. Random draws use a numpy
  generator with a fixed seed, so the numbers are reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "Interval",
    "McNemarResult",
    "PairedDifference",
    "RuleStatistics",
    "compare_to_reference",
    "format_statistics_table",
    "holm",
    "mcnemar",
    "mean_interval",
    "paired_bootstrap",
    "statistics_footnote",
]

MCNEMAR_TEST = "exact McNemar (two-sided binomial)"
RESAMPLES = 10_000
_CHUNK = 1_000  # resamples drawn at a time (bounds the memory)


class Interval(NamedTuple):
    """A mean and its confidence interval; unpacks as ``(mean, low, high)``."""

    mean: float
    low: float
    high: float


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` (one per seed) and its Student-t ``confidence`` interval.

    The interval is ``mean +- t(n-1) * s / sqrt(n)`` with the sample standard deviation ``s``. With
    one value there is no spread to estimate and ``low`` and ``high`` are nan. Empty input or a
    missing (None/nan) value raises ValueError: leave failed runs out before calling.
    """
    _check_confidence(confidence)
    if any(value is None for value in values):
        raise ValueError("mean_interval takes numbers; leave out the missing (None) values first")
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("mean_interval needs at least one value")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"mean_interval takes finite numbers, got {array.tolist()}")
    mean = float(array.mean())
    if array.size == 1:
        return Interval(mean, math.nan, math.nan)
    half = (
        stats.t.ppf(0.5 + confidence / 2, array.size - 1)
        * array.std(ddof=1)
        / math.sqrt(array.size)
    )
    return Interval(mean, float(mean - half), float(mean + half))


@dataclasses.dataclass(frozen=True)
class McNemarResult:
    """The exact McNemar test of two rules on the same images.

    ``b``: images A gets right and B wrong; ``c``: images A gets wrong and B right. Under "no
    difference" each discordant image is equally likely to fall either way, so ``b`` is
    Binomial(b + c, 1/2); ``p_value`` is the exact two-sided binomial p-value (not mid-p, so it is
    conservative), 1.0 when the rules never disagree. ``statistic`` is ``min(b, c)``.
    """

    b: int
    c: int
    statistic: int
    p_value: float
    test: str = MCNEMAR_TEST


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Exact McNemar test of rule A against rule B from per-image correctness (bool arrays over the
    same test images, in the same order)."""
    a, b = _paired_arrays(correct_a, correct_b)
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    if only_a + only_b == 0:
        p_value = 1.0
    else:
        p_value = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return McNemarResult(only_a, only_b, min(only_a, only_b), min(p_value, 1.0))


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Difference of mean test accuracy (A - B) over paired seeds, with a bootstrap interval
    (``low``, ``high``) and the two-sided bootstrap p-value of "no difference"."""

    difference: float
    low: float
    high: float
    p_value: float
    seeds: int
    resamples: int


def paired_bootstrap(
    correct_a: Sequence[np.ndarray],
    correct_b: Sequence[np.ndarray],
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of the accuracy difference between two rules over seeds and test images.

    ``correct_a[k]`` and ``correct_b[k]`` are the per-image correctness of seed ``k`` of each rule
    on the same test images. Each resample draws the seeds with replacement and, independently,
    the test images with replacement; one image draw serves every seed, because all seeds are
    measured on one test set. The statistic is the mean over drawn seeds of the accuracy
    difference on the drawn images, so the interval holds both the seed-to-seed spread and the
    finite test set's.

    Why this and not a combination of the per-seed McNemar p-values (Fisher's or Stouffer's
    method): those assume the per-seed tests are independent, and they are not, since every seed
    uses the same test images (an image hard for both rules is hard in every seed); combining
    them would overstate the evidence. Resampling images jointly across seeds keeps that
    dependence, and the same resamples give an interval for the difference, not only a p-value.
    With few seeds the seed part of the resampling sees little of the seed-to-seed spread (three
    values resampled with replacement understate it); the Student-t interval of each rule's mean
    accuracy (``mean_interval``) shows that spread on its own.

    The interval is the percentile interval at ``confidence``. The p-value is the two-sided
    bootstrap test of "no difference" (the resampled differences, centred at the observed one,
    reach at least as far as the observed difference from 0): ``(1 + count) / (1 + resamples)``
    for a non-zero difference, 1.0 for rules that agree on every image of every seed. The
    generator is ``numpy.random.default_rng(seed)``, so the result is reproducible.
    """
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if len(correct_a) != len(correct_b) or not correct_a:
        raise ValueError(
            f"paired_bootstrap takes one array per seed for each rule, the same number "
            f"(got {len(correct_a)} and {len(correct_b)})"
        )
    pairs = [_paired_arrays(a, b) for a, b in zip(correct_a, correct_b, strict=True)]
    if len({a.size for a, _ in pairs}) != 1:
        raise ValueError("every seed must be measured on the same test images (same length)")
    # one row per seed: +1 where only A is right, -1 where only B is, 0 where they agree
    differences = np.stack([a.astype(np.int8) - b.astype(np.int8) for a, b in pairs])
    seeds, images = differences.shape
    observed = float(differences.mean())
    if not differences.any():
        return PairedDifference(0.0, 0.0, 0.0, 1.0, seeds, resamples)
    # The statistic depends on the images only through how often each column pattern (the
    # per-seed differences of one image) is drawn, so resample patterns, not images.
    patterns, counts = np.unique(differences, axis=1, return_counts=True)
    rng = np.random.default_rng(seed)
    replicates = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        seed_draws = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=size)
        image_draws = rng.multinomial(images, counts / images, size=size)
        by_pattern = seed_draws @ patterns / seeds  # (size, patterns): seed mean per pattern
        replicates[start : start + size] = np.einsum("rp,rp->r", by_pattern, image_draws) / images
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    extreme = np.count_nonzero(np.abs(replicates - observed) >= abs(observed) - 1e-12)
    p_value = float(1 + extreme) / (1 + resamples)
    return PairedDifference(observed, float(low), float(high), min(p_value, 1.0), seeds, resamples)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values for testing several hypotheses at once.

    With m p-values sorted ascending, the k-th (from 0) is multiplied by ``m - k``, a running
    maximum keeps the order, and values are capped at 1. Rejecting where the adjusted p-value is
    below ``alpha`` controls the chance of any false "differs" among all the comparisons at
    ``alpha``, with no assumption about how the tests depend on each other. nan entries (no test)
    stay nan and do not count in m.
    """
    values = [math.nan if p is None else float(p) for p in p_values]
    present = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, (p, index) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[index] = running
    return adjusted


@dataclasses.dataclass(frozen=True)
class RuleStatistics:
    """One rule's row: mean test accuracy over its seeds with the t-interval, the paired
    difference to the reference rule, the Holm-adjusted p-value, whether it differs at ``alpha``
    after the correction, and the per-seed McNemar tests (index = seed; None where unpaired)."""

    rule: str
    seeds: int
    accuracy: Interval
    difference: PairedDifference | None
    p_holm: float | None
    significant: bool | None
    mcnemar: tuple[McNemarResult | None, ...]

    def as_record(self) -> dict:
        """The row as plain JSON-ready values (named fields; nan for what was not measured)."""
        difference = self.difference
        return {
            "rule": self.rule,
            "seeds": self.seeds,
            "test_accuracy": self.accuracy._asdict(),
            "difference": None if difference is None else dataclasses.asdict(difference),
            "p_holm": self.p_holm,
            "significant": self.significant,
            "mcnemar": [
                None if test is None else dataclasses.asdict(test) for test in self.mcnemar
            ],
        }


def compare_to_reference(
    per_rule_correct: Mapping[str, Sequence[np.ndarray | None] | Mapping[int, np.ndarray | None]],
    reference: str = "bp",
    confidence: float = 0.95,
    alpha: float = 0.05,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[RuleStatistics]:
    """Every rule against ``reference`` on the same test images, one row per rule (in the
    mapping's order).

    ``per_rule_correct[rule]`` holds one bool array per seed over the test images (a list indexed
    by seed, or a mapping seed -> array); None marks a seed without one (a failed run), which is
    left out. A rule's accuracy interval uses all its seeds; its paired tests use the seeds that
    both it and the reference have. The bootstrap p-values of all non-reference rules are
    corrected together with ``holm``; a rule with no paired seed gets no test (None).
    """
    by_seed = {rule: _by_seed(arrays) for rule, arrays in per_rule_correct.items()}
    if reference not in by_seed or not by_seed[reference]:
        raise KeyError(f"the reference rule {reference!r} has no per-image results")
    sizes = {array.size for arrays in by_seed.values() for array in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(f"rules were measured on test sets of different sizes: {sorted(sizes)}")
    base = by_seed[reference]
    partial = []
    for rule, arrays in by_seed.items():
        if not arrays:
            partial.append((rule, 0, Interval(math.nan, math.nan, math.nan), None, ()))
            continue
        accuracy = mean_interval([float(arrays[k].mean()) for k in sorted(arrays)], confidence)
        paired = sorted(set(arrays) & set(base))
        difference, tests = None, ()
        if rule != reference and paired:
            difference = paired_bootstrap(
                [arrays[k] for k in paired], [base[k] for k in paired], confidence, resamples, seed
            )
            last = max(max(arrays), max(base))
            tests = tuple(
                mcnemar(arrays[k], base[k]) if k in arrays and k in base else None
                for k in range(last + 1)
            )
        partial.append((rule, len(arrays), accuracy, difference, tests))
    adjusted = holm([row[3].p_value if row[3] is not None else math.nan for row in partial])
    return [
        RuleStatistics(
            rule,
            seeds,
            accuracy,
            difference,
            None if difference is None else p_holm,
            None if difference is None else bool(p_holm < alpha),
            tests,
        )
        for (rule, seeds, accuracy, difference, tests), p_holm in zip(
            partial, adjusted, strict=True
        )
    ]


def format_statistics_table(
    rows: Sequence[RuleStatistics], confidence: float = 0.95, reference: str = "bp"
) -> str:
    """Markdown table of ``compare_to_reference``'s rows: test accuracy (mean and interval over
    seeds), difference to the reference (with its bootstrap interval), raw and Holm-adjusted
    p-values, and whether the rule differs from the reference. Put ``statistics_footnote`` under
    it."""
    level = f"{confidence:.0%}"
    header = [
        "rule",
        "seeds",
        f"test acc [{level} CI]",
        f"diff to {reference} [{level} CI]",
        "p",
        "p (Holm)",
        f"differs from {reference}",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        difference = row.difference
        if row.seeds == 0:
            cells = [row.rule, "0", "-", "-", "-", "-", "no results"]
        elif difference is None:
            cells = [row.rule, str(row.seeds), _interval_text(row.accuracy), "-", "-", "-", "-"]
        else:
            cells = [
                row.rule,
                str(row.seeds),
                _interval_text(row.accuracy),
                f"{difference.difference:+.4f} [{difference.low:+.4f}, {difference.high:+.4f}]",
                _p_text(difference.p_value),
                _p_text(row.p_holm),
                ("yes, better" if difference.difference > 0 else "yes, worse")
                if row.significant
                else "no",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def statistics_footnote(
    confidence: float = 0.95,
    alpha: float = 0.05,
    resamples: int = RESAMPLES,
    reference: str = "bp",
) -> str:
    """The text under the table that names the statistics and what they can conclude."""
    level = f"{confidence:.0%}"
    return (
        f"test acc: mean over seeds with a {level} Student-t interval (no interval with one "
        "seed). Seeds vary the initial weights, the order of the training data and any random "
        "feedback weights; the data split and the test images stay the same. "
        f"diff to {reference}: the rule's test accuracy minus {reference}'s, averaged over the "
        f"seeds both have, with a {level} paired bootstrap interval ({resamples} resamples of "
        "seeds and test images together, fixed generator); p: the bootstrap's two-sided p-value "
        f"of no difference. p (Holm): corrected with Holm's method over all rules compared to "
        f"{reference}; a rule differs when it is below {alpha}. The per-seed exact McNemar "
        "tests (two-sided binomial on the images where the two rules disagree) are in "
        "results.json. A difference that is not significant is not evidence that the rules are "
        "equal: a larger test set or more seeds may resolve it."
    )


def _by_seed(arrays) -> dict[int, np.ndarray]:
    items = arrays.items() if isinstance(arrays, Mapping) else enumerate(arrays)
    result = {}
    for seed, array in items:
        if array is None:
            continue
        values = np.asarray(array)
        if values.ndim != 1 or values.dtype != bool:
            raise ValueError(
                f"per-image results must be 1-d bool arrays, got {values.dtype} {values.shape}"
            )
        result[int(seed)] = values
    return result


def _paired_arrays(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.dtype != bool or b.dtype != bool:
        raise ValueError(f"per-image correctness must be bool arrays, got {a.dtype} and {b.dtype}")
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"paired tests need 1-d arrays over the same test images, got {a.shape} and {b.shape}"
        )
    return a, b


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _interval_text(interval: Interval) -> str:
    if math.isnan(interval.low):
        return f"{interval.mean:.4f}"
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def _p_text(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"
