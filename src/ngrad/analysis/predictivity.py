"""Neural predictivity: how well a representation predicts recorded neural responses.

As Brain-Score computes it (Schrimpf et al. 2018, bioRxiv 407007; after Yamins et al. 2014, PNAS
111:8619): PLS regression (25 components, no feature scaling) from model features to all recorded
sites' repetition-averaged responses, 10 random 90/10 splits of the stimuli, stratified by object
label when labels are given; on each split the Pearson r of every site on the held-out stimuli,
the median over sites; the mean over splits (``raw``). It is divided by the split-half ceiling
(:func:`split_half_ceiling`): repetitions split in two random halves, the per-site Pearson r of
the half-means, Spearman-Brown corrected to the full number of repetitions (r' = 2r / (1 + r)),
median over sites, mean over 10 splits. A ceiling <= 0 means the recording is dominated by
trial-to-trial noise: ``raw`` is still measured, the normalised numbers are NaN. See
docs/similarity.md for the measures and their limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cross_decomposition import PLSRegression
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

from ngrad.analysis.arrays import DegenerateRepresentationError, as_matrix

__all__ = [
    "PLS_COMPONENTS",
    "PREDICTIVITY_SPLITS",
    "TRAIN_FRACTION",
    "Predictivity",
    "neural_predictivity",
    "spearman_brown",
    "split_half_ceiling",
    "stimulus_splits",
]

PLS_COMPONENTS = 25
PREDICTIVITY_SPLITS = 10
TRAIN_FRACTION = 0.9


def spearman_brown(correlation: np.ndarray | float, factor: float = 2.0) -> np.ndarray | float:
    """Reliability of a measurement ``factor`` times as long: factor r / (1 + (factor - 1) r)."""
    return factor * correlation / (1.0 + (factor - 1.0) * correlation)


def _columnwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns (NaN where a column is constant)."""
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denominator = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    result = np.full(a.shape[1], np.nan)
    valid = denominator > 0
    result[valid] = (a * b).sum(axis=0)[valid] / denominator[valid]
    return result


def _responses(responses: np.ndarray) -> np.ndarray:
    """Stimuli x sites x repetitions, finite, varying across stimuli at one site at least."""
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 3:
        raise ValueError(
            f"responses must be stimuli x sites x repetitions, got shape {responses.shape}"
        )
    if not np.isfinite(responses).all():
        raise ValueError("responses contain NaN or infinite values")
    if responses.shape[0] > 0 and not np.ptp(responses, axis=0).any():
        raise ValueError(
            "responses are the same for every stimulus at every site: there is nothing to predict"
        )
    return responses


def split_half_ceiling(responses: np.ndarray, *, n_splits: int = 10, seed: int = 0) -> float:
    """Brain-Score's internal-consistency ceiling of stimuli x sites x repetitions responses.

    For each of ``n_splits`` random halvings of the repetitions: the Pearson r across stimuli
    between the two half-means of every site, Spearman-Brown corrected (factor 2), the median
    over sites; then the mean over halvings. It estimates the reliability of the
    repetition-averaged responses (the r^2 a noise-free model of them could reach); it is near or
    below 0 for responses dominated by trial-to-trial noise."""
    responses = _responses(responses)
    repetitions = responses.shape[2]
    if repetitions < 2:
        raise ValueError("the split-half ceiling needs at least 2 repetitions per stimulus")
    generator = np.random.default_rng(seed)
    medians = []
    for _ in range(n_splits):
        order = generator.permutation(repetitions)
        first, second = order[: repetitions // 2], order[repetitions // 2 :]
        half_r = _columnwise_pearson(
            responses[:, :, first].mean(axis=2), responses[:, :, second].mean(axis=2)
        )
        finite = half_r[np.isfinite(half_r)]
        if finite.size:
            medians.append(float(np.median(spearman_brown(finite))))
    if not medians:
        raise ValueError(
            "no site's half-means vary across stimuli, so the split-half ceiling is undefined"
        )
    return float(np.mean(medians))


def stimulus_splits(
    n_stimuli: int,
    objects: Sequence | np.ndarray | None = None,
    *,
    n_splits: int = PREDICTIVITY_SPLITS,
    train_fraction: float = TRAIN_FRACTION,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) stimulus indices of Brain-Score's cross-validation: ``n_splits`` random
    splits, ``train_fraction`` for training, stratified by object label when given."""
    n_train = math.floor(train_fraction * n_stimuli)
    n_test = n_stimuli - n_train
    if n_test < 3 or n_train < 3:
        raise ValueError(
            f"{n_stimuli} stimuli are too few: a {train_fraction:.0%}/{1 - train_fraction:.0%} "
            "split must leave at least 3 stimuli on each side"
        )
    indices = np.zeros(n_stimuli)
    if objects is None:
        splitter = ShuffleSplit(n_splits, train_size=n_train, test_size=n_test, random_state=seed)
        return list(splitter.split(indices))
    labels = np.asarray(objects)
    if labels.shape != (n_stimuli,):
        raise ValueError(
            f"objects must hold one label per stimulus ({n_stimuli}), got {labels.shape}"
        )
    names, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            f"object {names[counts.argmin()]!r} labels a single stimulus; stratified splits need "
            "at least 2 stimuli per object"
        )
    if names.size > n_test:
        raise ValueError(
            f"{names.size} objects cannot all appear among the {n_test} held-out stimuli of a "
            f"{1 - train_fraction:.0%} split; give more stimuli or coarser object labels"
        )
    splitter = StratifiedShuffleSplit(
        n_splits, train_size=n_train, test_size=n_test, random_state=seed
    )
    return list(splitter.split(indices, labels))


@dataclass(frozen=True)
class Predictivity:
    """Neural predictivity of one feature set.

    ``raw``: mean over splits of the median over sites of held-out Pearson r; ``ceiling``: the
    split-half ceiling; ``normalized = raw / ceiling`` (Schrimpf et al. 2018);
    ``explained_variance = normalized ** 2`` (what the Brain-Score code reports since 2020);
    ``attenuation_corrected = raw / sqrt(ceiling)`` (Spearman's 1904 correction: 1 for a model
    that predicts the noise-free responses perfectly, where ``normalized`` is 1 / sqrt(ceiling));
    the three are NaN when the ceiling is <= 0. ``per_site``: each site's r, mean over splits;
    ``components``: PLS components used."""

    raw: float
    raw_sem: float
    ceiling: float
    normalized: float
    explained_variance: float
    attenuation_corrected: float
    per_site: np.ndarray
    components: int


def neural_predictivity(
    features: np.ndarray,
    responses: np.ndarray,
    objects: Sequence | np.ndarray | None = None,
    *,
    n_components: int = PLS_COMPONENTS,
    n_splits: int = PREDICTIVITY_SPLITS,
    train_fraction: float = TRAIN_FRACTION,
    ceiling: float | None = None,
    seed: int = 0,
) -> Predictivity:
    """How well ``features`` (stimuli x units) predict ``responses`` (stimuli x sites x
    repetitions), Brain-Score's way (module docstring). The regression targets are the
    repetition means. The number of PLS components is capped at the rank of the training
    features (extra components would fit nothing). Pass ``ceiling`` to reuse one already
    computed with :func:`split_half_ceiling`."""
    features = as_matrix(features, "features")
    responses = _responses(responses)
    if features.shape[0] != responses.shape[0]:
        raise ValueError(
            f"features describe {features.shape[0]} stimuli and responses {responses.shape[0]}"
        )
    if ceiling is None:
        ceiling = split_half_ceiling(responses, n_splits=n_splits, seed=seed)
    targets = responses.mean(axis=2)
    split_medians, site_sums = [], np.zeros(targets.shape[1])
    site_counts = np.zeros(targets.shape[1])
    used = 0
    splits = stimulus_splits(
        features.shape[0], objects, n_splits=n_splits, train_fraction=train_fraction, seed=seed
    )
    for train, test in splits:
        train_features = features[train]
        rank = np.linalg.matrix_rank(train_features - train_features.mean(axis=0))
        if rank == 0:
            raise DegenerateRepresentationError("the features are constant across stimuli")
        components = int(min(n_components, rank))
        used = max(used, components)
        model = PLSRegression(n_components=components, scale=False)
        model.fit(train_features, targets[train])
        site_r = _columnwise_pearson(model.predict(features[test]), targets[test])
        valid = np.isfinite(site_r)
        site_sums[valid] += site_r[valid]
        site_counts[valid] += 1
        split_medians.append(float(np.median(site_r[valid])) if valid.any() else math.nan)
    medians = np.asarray(split_medians)
    medians = medians[np.isfinite(medians)]
    raw = float(medians.mean()) if medians.size else math.nan
    sem = float(medians.std(ddof=1) / math.sqrt(medians.size)) if medians.size > 1 else math.nan
    per_site = np.divide(
        site_sums, site_counts, out=np.full_like(site_sums, np.nan), where=site_counts > 0
    )
    positive = ceiling > 0
    return Predictivity(
        raw=raw,
        raw_sem=sem,
        ceiling=ceiling,
        normalized=raw / ceiling if positive else math.nan,
        explained_variance=(raw / ceiling) ** 2 if positive else math.nan,
        attenuation_corrected=raw / math.sqrt(ceiling) if positive else math.nan,
        per_site=per_site,
        components=used,
    )
