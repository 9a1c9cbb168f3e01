"""ngrad.analysis.similarity against oracles: definitions computed the long way, SciPy, brute-force
U-statistics, and synthetic brains with a planted answer."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import ngrad
from ngrad.analysis.similarity import (
    DegenerateRepresentationError,
    cka,
    neural_predictivity,
    rdm,
    rdm_correlation,
    rsa,
    spearman_brown,
    split_half_ceiling,
    stimulus_splits,
)


def _related(rng, n=30, offset=2.0):
    x = rng.normal(size=(n, 7)) + offset
    y = np.tanh(x[:, :4] @ rng.normal(size=(4, 5))) + 0.5 * rng.normal(size=(n, 5)) - offset
    return x, y


# ------------------------------------------------------------------------------- CKA ---


def _hsic_by_definition(gram_x, gram_y):
    n = gram_x.shape[0]
    centring = np.eye(n) - np.ones((n, n)) / n
    return np.trace(gram_x @ centring @ gram_y @ centring)


def test_linear_cka_is_the_normalised_hsic_of_linear_kernels():
    x, y = _related(np.random.default_rng(0))
    gram_x, gram_y = x @ x.T, y @ y.T
    expected = _hsic_by_definition(gram_x, gram_y) / math.sqrt(
        _hsic_by_definition(gram_x, gram_x) * _hsic_by_definition(gram_y, gram_y)
    )
    assert cka(x, y) == pytest.approx(expected, abs=1e-12)
    assert cka(y, x) == pytest.approx(expected, abs=1e-12)


def test_cka_of_layers_wider_than_the_stimuli_uses_their_gram_matrices():
    """A conv map has far more units than there are stimuli: the stimuli x stimuli form gives
    the feature-space form's number without building a units x units matrix."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 400))
    y = x[:, :300] @ rng.standard_normal((300, 500)) + 0.5 * rng.standard_normal((12, 500))
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    feature_space = np.sum((yc.T @ xc) ** 2) / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert cka(x, y) == pytest.approx(feature_space, rel=1e-10)
    assert cka(x[:, :5], y) == pytest.approx(cka(y, x[:, :5]), rel=1e-12)


def _hsic_u_statistic(k, g):
    """Song et al. 2012's unbiased HSIC as a U-statistic: the mean over ordered 4-tuples of
    distinct stimuli of h = (1/4!) sum over their orderings (t,u,v,w) of
    k_tu g_tu + k_tu g_vw - 2 k_tu g_tv (k, g: the two Gram matrices)."""
    values = []
    for quadruple in itertools.permutations(range(k.shape[0]), 4):
        h = sum(
            k[t, u] * g[t, u] + k[t, u] * g[v, w] - 2 * k[t, u] * g[t, v]
            for t, u, v, w in itertools.permutations(quadruple)
        )
        values.append(h / 24)
    return np.mean(values)


def test_debiased_cka_matches_the_brute_force_u_statistic():
    x, y = _related(np.random.default_rng(1), n=7)
    gram_x, gram_y = x @ x.T, y @ y.T  # raw features: the U-statistic ignores translations
    expected = _hsic_u_statistic(gram_x, gram_y) / math.sqrt(
        _hsic_u_statistic(gram_x, gram_x) * _hsic_u_statistic(gram_y, gram_y)
    )
    assert cka(x, y, debiased=True) == pytest.approx(expected, abs=1e-10)
    assert abs(cka(x, y, debiased=True) - cka(x, y)) > 1e-3  # the correction does something


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_is_one_under_rotation_isotropic_scaling_and_translation(debiased):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 12))
    rotation, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert cka(x, 3.0 * x @ rotation + 5.0, debiased=debiased) == pytest.approx(1.0, abs=1e-10)
    stretched = x * np.linspace(0.1, 3.0, 12)  # not isotropic: CKA must notice
    assert cka(x, stretched, debiased=debiased) < 0.95


def test_cka_of_independent_representations_is_about_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 20)) + 3.0  # offsets catch a missing centring
    y = rng.normal(size=(1000, 30)) + 3.0
    biased, debiased = cka(x, y), cka(x, y, debiased=True)
    assert 0 < biased < 0.05  # plain CKA is biased upwards, ~ sqrt(p q) / n
    assert abs(debiased) < 0.01
    assert abs(debiased) < biased


def test_cka_rejects_mismatched_and_constant_representations():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="stimuli"):
        cka(rng.normal(size=(10, 3)), rng.normal(size=(11, 3)))
    with pytest.raises(DegenerateRepresentationError):
        cka(np.ones((10, 3)), rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), debiased=True)
    with pytest.raises(ValueError, match="NaN"):
        cka(np.full((5, 2), np.nan), rng.normal(size=(5, 2)))


# ------------------------------------------------------------------------------- RSA ---


def test_rdm_is_one_minus_the_pearson_correlation_of_patterns():
    x = np.random.default_rng(5).normal(size=(25, 9))
    assert np.allclose(rdm(x), 1 - np.corrcoef(x), atol=1e-12)
    scaled = 4.0 * x + np.arange(25)[:, None]  # per-stimulus affine change: same RDM
    assert np.allclose(rdm(scaled), rdm(x), atol=1e-12)
    with pytest.raises(DegenerateRepresentationError, match="stimulus 3"):
        rdm(np.where(np.arange(25)[:, None] == 3, 1.0, x))


def test_rsa_is_the_spearman_correlation_of_upper_triangles():
    x, y = _related(np.random.default_rng(6), n=40)
    rows, cols = np.triu_indices(40, k=1)
    tied_x = np.round(rdm(x), 1)  # many ties: average ranks must match SciPy's
    expected = stats.spearmanr(tied_x[rows, cols], rdm(y)[rows, cols]).statistic
    result = rsa(x, y, n_bootstrap=0)
    assert result.correlation == pytest.approx(
        stats.spearmanr(rdm(x)[rows, cols], rdm(y)[rows, cols]).statistic, abs=1e-12
    )
    assert rdm_correlation(tied_x, rdm(y), np.arange(40)) == pytest.approx(expected, abs=1e-12)
    assert result.ci_low is None and rsa(x, x, n_bootstrap=5).correlation == pytest.approx(1.0)


def test_a_bootstrap_draw_is_spearman_over_the_resample_without_self_pairs():
    rng = np.random.default_rng(7)
    x, y = _related(rng, n=15)
    rdm_x, rdm_y = np.round(rdm(x), 1), rdm(y)
    rows, cols = np.triu_indices(15, k=1)
    for _ in range(5):
        stimuli = rng.integers(0, 15, size=15)
        a, b = stimuli[rows], stimuli[cols]
        keep = a != b
        expected = stats.spearmanr(rdm_x[a, b][keep], rdm_y[a, b][keep]).statistic
        assert rdm_correlation(rdm_x, rdm_y, stimuli) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_interval_matches_the_spread_over_fresh_stimulus_sets():
    rng = np.random.default_rng(8)
    forward, readout = rng.normal(size=(10, 30)), rng.normal(size=(10, 20))

    def fresh_stimuli(n=60):
        s = rng.normal(size=(n, 10))
        return np.tanh(s @ forward), s @ readout + 2.0 * rng.normal(size=(n, 20))

    spread = np.std([rsa(*fresh_stimuli(), n_bootstrap=0).correlation for _ in range(60)])
    results = [rsa(*fresh_stimuli(), n_bootstrap=300, seed=k) for k in range(8)]
    half_widths = [(r.ci_high - r.ci_low) / (2 * 1.96) for r in results]
    assert 0.6 < np.median(half_widths) / spread < 1.7
    assert all(r.ci_low < r.correlation < r.ci_high for r in results)


def test_bootstrap_is_reproducible_for_a_seed():
    x, y = _related(np.random.default_rng(9), n=50)
    first, second = rsa(x, y, n_bootstrap=100, seed=4), rsa(x, y, n_bootstrap=100, seed=4)
    assert first == second
    assert rsa(x, y, n_bootstrap=100, seed=5).ci_low != first.ci_low


# --------------------------------------------------------------------- predictivity ---


def test_spearman_brown_closed_form():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.5, factor=3) == pytest.approx(0.75)
    assert spearman_brown(1.0) == pytest.approx(1.0)


def test_ceiling_with_two_repetitions_is_the_corrected_test_retest_correlation():
    rng = np.random.default_rng(10)
    signal = rng.normal(size=(80, 9, 1))
    responses = signal + rng.normal(size=(80, 9, 2)) * np.linspace(0.3, 2.0, 9)[None, :, None]
    retest = [stats.pearsonr(responses[:, s, 0], responses[:, s, 1]).statistic for s in range(9)]
    expected = np.median([2 * r / (1 + r) for r in retest])
    assert split_half_ceiling(responses) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 repetitions"):
        split_half_ceiling(responses[:, :, :1])


def test_splits_are_90_10_and_stratified_by_object():
    objects = np.repeat(np.arange(10), 20)
    splits = stimulus_splits(200, objects, seed=0)
    assert len(splits) == 10
    for train, test in splits:
        assert len(train) == 180 and len(test) == 20
        assert set(train).isdisjoint(test) and len(set(train) | set(test)) == 200
        assert np.bincount(objects[test], minlength=10).tolist() == [2] * 10
    assert len({tuple(sorted(test)) for _, test in splits}) == 10
    unstratified = stimulus_splits(200, None)
    assert {len(test) for _, test in unstratified} == {20}
    with pytest.raises(ValueError, match="single stimulus"):
        stimulus_splits(200, np.r_[objects[:-1], 99])
    with pytest.raises(ValueError, match="20 objects"):
        stimulus_splits(100, np.repeat(np.arange(20), 5))
    with pytest.raises(ValueError, match="too few"):
        stimulus_splits(20)


def _planted_brain(shuffled: bool):
    """Sites = a random linear map of layer 2 of a known network plus trial noise."""
    torch.manual_seed(0)
    network = ngrad.mlp([20, 24, 16, 5]).double()
    rng = np.random.default_rng(11)
    stimuli = torch.from_numpy(rng.normal(size=(600, 20)))
    with torch.no_grad():
        layer = network.trace(stimuli).activities[2].numpy()
    signal = layer @ rng.normal(size=(16, 40))
    noise_sd, repetitions = math.sqrt(signal.var(axis=0).mean()), 4
    reliability = signal.var(axis=0) / (signal.var(axis=0) + noise_sd**2 / repetitions)
    driven = signal[rng.permutation(600)] if shuffled else signal
    responses = driven[:, :, None] + noise_sd * rng.normal(size=(600, 40, repetitions))
    return layer, responses, np.arange(600) % 12, reliability


def test_planted_map_scores_its_noise_ceiling():
    layer, responses, objects, reliability = _planted_brain(shuffled=False)
    result = neural_predictivity(layer, responses, objects)
    # the split-half ceiling estimates the reliability of the trial means ...
    assert result.ceiling == pytest.approx(np.median(reliability), abs=0.04)
    # ... and the true map, refitted by PLS, reaches the best r any model can: sqrt(reliability)
    assert result.raw == pytest.approx(np.median(np.sqrt(reliability)), abs=0.03)
    assert result.attenuation_corrected == pytest.approx(1.0, abs=0.05)
    assert result.normalized == pytest.approx(result.raw / result.ceiling)
    assert result.explained_variance == pytest.approx(result.normalized**2)
    assert result.components == 16 and result.per_site.shape == (40,)


def test_shuffled_map_scores_about_zero():
    layer, responses, objects, reliability = _planted_brain(shuffled=True)
    result = neural_predictivity(layer, responses, objects)
    assert result.ceiling == pytest.approx(np.median(reliability), abs=0.04)
    assert abs(result.raw) < 0.08  # in-sample evaluation would give ~ +0.17 here
    assert abs(result.normalized) < 0.1


def test_predictivity_checks_its_inputs():
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="stimuli"):
        neural_predictivity(rng.normal(size=(50, 4)), rng.normal(size=(40, 3, 2)))
    with pytest.raises(ValueError, match="repetitions"):
        neural_predictivity(rng.normal(size=(50, 4)), rng.normal(size=(50, 3)))
    with pytest.raises(DegenerateRepresentationError):
        neural_predictivity(np.ones((50, 4)), rng.normal(size=(50, 3, 2)))


def test_ceiling_of_responses_that_do_not_vary_is_an_error_and_noise_gives_no_normalisation():
    rng = np.random.default_rng(13)
    with pytest.raises(ValueError, match="nothing to predict"):
        split_half_ceiling(np.ones((30, 4, 2)))
    first = rng.normal(size=(60, 5))
    anticorrelated = np.stack([first, -first + 0.05 * rng.normal(size=(60, 5))], axis=2)
    ceiling = split_half_ceiling(anticorrelated)
    assert ceiling < 0
    result = neural_predictivity(rng.normal(size=(60, 6)), anticorrelated, ceiling=ceiling)
    assert math.isfinite(result.raw) and math.isnan(result.normalized)
    assert math.isnan(result.attenuation_corrected) and math.isnan(result.explained_variance)


@pytest.mark.slow
def test_public_names_and_a_layout_without_cycles():
    """ngrad.similarity keeps every measure (predictivity re-exported from its own module), and
    each analysis, plot and command module imports on its own without importing ngrad.cli
    (except the command modules themselves)."""
    import json
    import subprocess
    import sys

    from ngrad.analysis import predictivity

    for name in ["cka", "rsa", "rdm", "compare_rdms", "neural_predictivity", "split_half_ceiling"]:
        assert callable(getattr(ngrad.similarity, name))
    assert ngrad.similarity.neural_predictivity is predictivity.neural_predictivity
    modules = [
        "ngrad.analysis.similarity",
        "ngrad.analysis.predictivity",
        "ngrad.analysis.report",
        "ngrad.analysis.run_loading",
        "ngrad.analysis.similarity_runs",
        "ngrad.analysis.neuron",
        "ngrad.plots.similarity",
        "ngrad.plots.neuron",
        "ngrad.cli.similarity",
        "ngrad.cli.inspect",
    ]
    script = (
        "import importlib, json, sys\n"
        "module = importlib.import_module(sys.argv[1])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ngrad.cli'))))"
    )
    for module in modules:
        done = subprocess.run(
            [sys.executable, "-c", script, module], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (module, done.stderr)
        loaded = json.loads(done.stdout)
        if not module.startswith("ngrad.cli"):
            assert loaded == [], (module, loaded)
