"""Representational similarity (CKA, RSA) and neural predictivity: pure functions on arrays.

Every function takes stimuli x features arrays (rows are the same stimuli in the same order) and
computes in float64.

- :func:`cka`: linear centred kernel alignment (Kornblith, Norouzi, Lee & Hinton 2019, ICML,
  "Similarity of neural network representations revisited"). With X, Y column-centred,
  CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F): 1 for representations equal up to an orthogonal
  map and isotropic scaling, near 0 for unrelated ones. ``debiased=True`` replaces each HSIC by the
  unbiased estimator of Song, Smola, Gretton, Bedo & Borgwardt 2012 (JMLR 13), as Kornblith et
  al. suggest for few stimuli and many features (the plain estimate of two independent
  representations is positive, of order features / stimuli).
- :func:`rdm`, :func:`rsa`: representational similarity analysis (Kriegeskorte, Mur & Bandettini
  2008, Front. Syst. Neurosci. 2:4). RDM = 1 - Pearson correlation between the response patterns
  of two stimuli; two RDMs are compared by the Spearman correlation of their upper triangles. The
  confidence interval bootstraps stimuli (Nili et al. 2014, PLoS Comput. Biol. 10:e1003553):
  resample stimuli with replacement and drop the pairs of a stimulus with its own copy, whose
  dissimilarity is 0 by construction.
- :func:`neural_predictivity` and the split-half ceiling (Brain-Score's measure of how well a
  representation predicts recorded responses) live in :mod:`ngrad.analysis.predictivity` and are
  re-exported here, so ``ngrad.similarity.neural_predictivity`` keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ngrad.analysis.arrays import DegenerateRepresentationError, as_matrix, matched_pair
from ngrad.analysis.predictivity import (
    Predictivity,
    neural_predictivity,
    spearman_brown,
    split_half_ceiling,
    stimulus_splits,
)

__all__ = [
    "DegenerateRepresentationError",
    "Predictivity",
    "RSAResult",
    "cka",
    "compare_rdms",
    "neural_predictivity",
    "rdm",
    "rdm_correlation",
    "rsa",
    "spearman_brown",
    "split_half_ceiling",
    "stimulus_splits",
]


# ------------------------------------------------------------------------------------- CKA ---


def _cross_energy(x: np.ndarray, y: np.ndarray) -> float:
    """|X^T Y|_F^2 = <XX^T, YY^T>_F, through the stimuli x stimuli Gram matrices when a layer has
    more units than there are stimuli (a conv map: never a units x units matrix)."""
    if max(x.shape[1], y.shape[1]) > x.shape[0]:
        return float(np.sum((x @ x.T) * (y @ y.T)))
    return float(np.sum((x.T @ y) ** 2))


def _hsic_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. 2012's unbiased HSIC (times n(n-3)) of the linear kernels K = XX^T, L = YY^T,
    without forming them: K~ is K with a zero diagonal, and
    n(n-3) HSIC = tr(K~L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1."""
    n = x.shape[0]
    diag_x, diag_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    sum_x, sum_y = x.sum(axis=0), y.sum(axis=0)
    trace = _cross_energy(x, y) - diag_x @ diag_y
    total_x, total_y = sum_x @ sum_x - diag_x.sum(), sum_y @ sum_y - diag_y.sum()
    row_sums_x, row_sums_y = x @ sum_x - diag_x, y @ sum_y - diag_y
    return float(
        trace + total_x * total_y / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * row_sums_x @ row_sums_y
    )


def cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same stimuli (Kornblith et al. 2019).

    ``x`` is stimuli x p, ``y`` stimuli x q (p and q may differ). ``debiased`` uses Song et al.
    2012's unbiased HSIC estimator (needs at least 4 stimuli; it can fall slightly below 0).
    Raises :class:`DegenerateRepresentationError` when either representation is constant.
    """
    x, y = matched_pair(x, y)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    if debiased:
        if x.shape[0] < 4:
            raise ValueError(f"debiased CKA needs at least 4 stimuli, got {x.shape[0]}")
        cross, self_x, self_y = _hsic_unbiased(x, y), _hsic_unbiased(x, x), _hsic_unbiased(y, y)
        if self_x <= 0 or self_y <= 0:
            raise DegenerateRepresentationError("a representation has no variance across stimuli")
        return cross / math.sqrt(self_x * self_y)
    norm_x, norm_y = math.sqrt(_cross_energy(x, x)), math.sqrt(_cross_energy(y, y))
    if norm_x == 0 or norm_y == 0:
        raise DegenerateRepresentationError("a representation is constant across stimuli")
    return _cross_energy(x, y) / (norm_x * norm_y)


# ------------------------------------------------------------------------------------- RSA ---


def rdm(x: np.ndarray) -> np.ndarray:
    """Representational dissimilarity matrix: 1 - Pearson correlation between the response
    patterns (rows) of every two stimuli; stimuli x stimuli, zero diagonal."""
    x = as_matrix(x, "x")
    if x.shape[1] < 2:
        raise ValueError("an RDM needs at least 2 features per stimulus")
    centred = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    flat = np.flatnonzero(norms <= 1e-12 * (1.0 + np.abs(x).max(axis=1)))
    if flat.size:
        raise DegenerateRepresentationError(
            f"{flat.size} stimulus pattern(s) are constant across features (first: stimulus "
            f"{flat[0]}), so their correlation distance is undefined"
        )
    unit = centred / norms[:, None]
    dissimilarity = 1.0 - unit @ unit.T
    np.fill_diagonal(dissimilarity, 0.0)
    return dissimilarity


@dataclass(frozen=True)
class RSAResult:
    """Spearman correlation of two RDMs and its bootstrap (percentile) confidence interval."""

    correlation: float
    ci_low: float | None
    ci_high: float | None
    confidence: float
    n_bootstrap: int


class _Ranker:
    """Spearman mid-ranks of one vector's entries in any weighted multiset of them, in O(size):
    the vector is sorted once; entry k present w_k times takes w_k consecutive ranks, and equal
    values share the mean of their ranks. Integer arithmetic on twice the ranks keeps it exact."""

    def __init__(self, values: np.ndarray) -> None:
        self.order = np.argsort(values, kind="stable")
        ordered = values[self.order]
        new_value = np.r_[True, ordered[1:] != ordered[:-1]]
        self.value_starts = np.flatnonzero(new_value)
        tied = self.value_starts.size < values.size
        self.value_of = np.cumsum(new_value) - 1 if tied else None

    def centred_double_ranks(self, sorted_weights: np.ndarray) -> np.ndarray:
        """2 * (mid-rank - mean rank), in sorted order, of the multiset holding the k-th smallest
        entry sorted_weights[k] (int64) times; the mean rank is (total + 1) / 2."""
        total = int(sorted_weights.sum())
        if self.value_of is None:  # mid-rank = last rank - (w - 1) / 2
            ranks = 2 * np.cumsum(sorted_weights) - sorted_weights - total
        else:
            totals = np.add.reduceat(sorted_weights, self.value_starts)
            ranks = (2 * np.cumsum(totals) - totals - total)[self.value_of]
        return ranks.astype(np.float64)


class _TriangleSpearman:
    """Spearman correlation of the upper triangles of two RDMs over a resample of the stimuli.

    A resample holding stimulus a count(a) times holds the pair {a, b} (a != b) count(a) count(b)
    times among its pairs of distinct positions; pairs of a stimulus with its own copy are left
    out. So each draw is a weighted Spearman correlation over the fixed list of pairs, exactly
    what ``scipy.stats.spearmanr`` gives on the expanded list, at O(pairs) cost."""

    def __init__(self, rdm_x: np.ndarray, rdm_y: np.ndarray) -> None:
        rows, cols = np.triu_indices(rdm_x.shape[0], k=1)
        self.x, self.y = _Ranker(rdm_x[rows, cols]), _Ranker(rdm_y[rows, cols])
        self.pairs_x = (rows[self.x.order], cols[self.x.order])
        self.pairs_y = (rows[self.y.order], cols[self.y.order])
        self.y_to_x = np.argsort(self.y.order)[self.x.order]  # x-order -> position in y-order

    def __call__(self, counts: np.ndarray) -> float:
        """The correlation for the resample with ``counts[a]`` (int64) copies of stimulus a."""
        weights_x = counts[self.pairs_x[0]] * counts[self.pairs_x[1]]
        weights_y = counts[self.pairs_y[0]] * counts[self.pairs_y[1]]
        ranks_x = self.x.centred_double_ranks(weights_x)
        ranks_y = self.y.centred_double_ranks(weights_y)[self.y_to_x]
        weighted = weights_x.astype(np.float64) * ranks_x
        # einsum, not BLAS: a threaded BLAS dot costs milliseconds per call on a busy machine
        covariance = np.einsum("i,i->", weighted, ranks_y)
        variance_x = np.einsum("i,i->", weighted, ranks_x)
        variance_y = np.einsum("i,i,i->", weights_x, ranks_y, ranks_y)
        denominator = math.sqrt(variance_x * variance_y)
        return float(covariance / denominator) if denominator > 0 else math.nan


def _square_pair(rdm_x: np.ndarray, rdm_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rdm_x, rdm_y = np.asarray(rdm_x, dtype=np.float64), np.asarray(rdm_y, dtype=np.float64)
    n = rdm_x.shape[0]
    if rdm_x.shape != (n, n) or rdm_y.shape != (n, n):
        raise ValueError(f"RDMs must be square and of one size, got {rdm_x.shape}, {rdm_y.shape}")
    if n < 3:
        raise ValueError(f"RSA needs at least 3 stimuli, got {n}")
    return rdm_x, rdm_y


def compare_rdms(
    rdm_x: np.ndarray,
    rdm_y: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RSAResult:
    """Spearman correlation of the upper triangles of two RDMs of the same stimuli, with a
    percentile bootstrap interval over stimuli (the same resamples for the same ``seed``, so
    intervals of several models against one reference are paired)."""
    rdm_x, rdm_y = _square_pair(rdm_x, rdm_y)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = rdm_x.shape[0]
    spearman = _TriangleSpearman(rdm_x, rdm_y)
    point = spearman(np.ones(n, dtype=np.int64))
    if n_bootstrap <= 0:
        return RSAResult(point, None, None, confidence, 0)
    generator = np.random.default_rng(seed)
    draws = np.array(
        [
            spearman(np.bincount(generator.integers(0, n, size=n), minlength=n))
            for _ in range(n_bootstrap)
        ]
    )
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return RSAResult(point, None, None, confidence, n_bootstrap)
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return RSAResult(point, float(low), float(high), confidence, n_bootstrap)


def rdm_correlation(rdm_x: np.ndarray, rdm_y: np.ndarray, stimuli: Sequence[int]) -> float:
    """Spearman correlation of two RDMs restricted to the resample ``stimuli`` (indices, repeats
    allowed): over the pairs of distinct positions whose stimuli differ (one bootstrap draw of
    :func:`compare_rdms`)."""
    rdm_x, rdm_y = _square_pair(rdm_x, rdm_y)
    counts = np.bincount(np.asarray(stimuli, dtype=np.int64), minlength=rdm_x.shape[0])
    return _TriangleSpearman(rdm_x, rdm_y)(counts)


def rsa(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RSAResult:
    """RSA of two representations of the same stimuli (Kriegeskorte et al. 2008): Spearman
    correlation of their correlation-distance RDMs, with a bootstrap interval over stimuli."""
    x, y = matched_pair(x, y)
    return compare_rdms(rdm(x), rdm(y), n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
