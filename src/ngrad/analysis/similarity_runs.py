"""Trained runs compared with a reference rule's runs (and with a recording): what ``ngrad
similarity`` computes.

The stimuli are the first ``samples`` images of the runs' test split, fed through each run's
network in its best-validation state (``best.pt``); a layer's representation is its activity h_l as
the rule represents it (``LearningRule.representations``). The runs must be one experiment: the
same data, model (widths, activation, initialisation, loss) and number of epochs; they may differ
in rule, seed and optimiser settings. Each run is compared with the reference rule's run of the
same seed; a reference run with the reference run of the next seed (the reference's own
seed-to-seed variability), when there is one. Runs that cannot be paired this way are refused
with a :class:`~ngrad.errors.ConfigError` that says what differs
(:mod:`ngrad.analysis.run_loading`). See docs/similarity.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ngrad.analysis import report, similarity
from ngrad.analysis.neural_data import NeuralDataError, NeuralRecording, load_neural_data
from ngrad.analysis.run_loading import (
    EXPERIMENT_FIELDS,
    RunRepresentations,
    find_runs,
    load_representations,
)
from ngrad.errors import ConfigError

__all__ = ["EXPERIMENT_FIELDS", "SimilaritySettings", "compare_runs", "find_runs"]


@dataclass(frozen=True)
class SimilaritySettings:
    reference: str = "bp"  # the rule every run is compared with
    layers: tuple[int, ...] | None = None  # 1-based layer indices; None: every layer
    neural: str | None = None  # recording file (.npz or NetCDF); None: no predictivity
    samples: int = 1000  # the first N test images are the stimuli
    bootstrap: int = 1000  # resamples of the stimuli for RSA's interval; 0: none
    confidence: float = 0.95  # coverage of RSA's bootstrap interval
    data_dir: str | None = None  # where the dataset lives; None: where the runs were trained
    seed: int = 0  # seeds the bootstrap and the predictivity splits

    def __post_init__(self) -> None:
        from ngrad.rules import get_rule_class

        get_rule_class(self.reference)  # ConfigError naming the rules for an unknown one
        if self.samples < 4:
            raise ConfigError(f"--samples must be at least 4, got {self.samples}")
        if self.bootstrap < 0:
            raise ConfigError(f"--bootstrap must be >= 0, got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"the confidence must be in (0, 1), got {self.confidence}")
        if self.layers is not None:
            if not self.layers or min(self.layers) < 1:
                raise ConfigError(f"--layer must name layers 1, 2, ..., got {list(self.layers)}")
            if len(set(self.layers)) < len(self.layers):
                raise ConfigError(f"--layer names a layer twice: {list(self.layers)}")


def _partner(
    run: RunRepresentations, references: dict[int, RunRepresentations], reference: str
) -> RunRepresentations | None:
    """The reference run a run is compared with: the same seed's, or for a reference run the
    next seed's (cyclically; None when it is the only one)."""
    if run.rule != reference:
        return references[run.seed]
    others = sorted(seed for seed in references if seed != run.seed)
    later = [seed for seed in others if seed > run.seed]
    chosen = (later or others or [None])[0]
    return references[chosen] if chosen is not None else None


def _predictivity(features: np.ndarray, recording: NeuralRecording, ceiling: float, seed: int):
    try:
        result = similarity.neural_predictivity(
            features, recording.responses, recording.objects, ceiling=ceiling, seed=seed
        )
    except similarity.DegenerateRepresentationError as error:
        return {"normalized": None, "note": str(error)}
    values = {
        "normalized": result.normalized,
        "raw": result.raw,
        "raw_sem": result.raw_sem,
        "explained_variance": result.explained_variance,
        "attenuation_corrected": result.attenuation_corrected,
        "components": result.components,
    }
    if not ceiling > 0:
        values["note"] = "split-half ceiling <= 0: raw r only"
    return values


class _Comparison:
    """Compares runs with their reference runs (and the recording), caching reference RDMs."""

    def __init__(self, settings, references, layers, recording, ceiling) -> None:
        self.settings, self.references, self.layers = settings, references, layers
        self.recording, self.ceiling = recording, ceiling
        self.reference_rdms: dict[tuple[int, int], np.ndarray] = {}

    def _rdm(self, run: RunRepresentations, layer: int) -> np.ndarray:
        if run.rule != self.settings.reference:
            return similarity.rdm(run.layers[layer - 1])
        key = (run.seed, layer)
        if key not in self.reference_rdms:
            self.reference_rdms[key] = similarity.rdm(run.layers[layer - 1])
        return self.reference_rdms[key]

    def _measures(
        self, run: RunRepresentations, partner: RunRepresentations, layer: int
    ) -> dict[str, Any]:
        """CKA (plain and debiased) and RSA with its bootstrap interval."""
        x, y = run.layers[layer - 1], partner.layers[layer - 1]
        settings = self.settings
        try:
            rsa = similarity.compare_rdms(
                self._rdm(run, layer),
                self._rdm(partner, layer),
                n_bootstrap=settings.bootstrap,
                confidence=settings.confidence,
                seed=settings.seed,
            )
            return {
                "cka": similarity.cka(x, y),
                "cka_debiased": similarity.cka(x, y, debiased=True),
                "rsa": rsa.correlation,
                "rsa_ci": [rsa.ci_low, rsa.ci_high],
            }
        except similarity.DegenerateRepresentationError as error:
            return {"cka": None, "cka_debiased": None, "rsa": None, "note": str(error)}

    def input_baseline(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        """CKA and RSA (point estimates) of the stimuli themselves to each reference layer: the
        similarity any representation of these images starts from."""
        try:
            pixel_rdm = similarity.rdm(pixels)
            rows = []
            for layer in self.layers:
                targets = [reference.layers[layer - 1] for reference in self.references.values()]
                rdms = [self._rdm(reference, layer) for reference in self.references.values()]
                rsas = [similarity.compare_rdms(pixel_rdm, r, n_bootstrap=0) for r in rdms]
                rows.append(
                    {
                        "layer": layer,
                        "cka": report.mean_std([similarity.cka(pixels, t) for t in targets]),
                        "rsa": report.mean_std([result.correlation for result in rsas]),
                    }
                )
            return rows
        except similarity.DegenerateRepresentationError:
            return []

    def record(self, run: RunRepresentations, advance: Callable[[], None]) -> dict[str, Any]:
        """The run's measures per layer; ``advance`` is called after each layer."""
        partner = _partner(run, self.references, self.settings.reference)
        rows = []
        for layer in self.layers:
            row: dict[str, Any] = {"layer": layer, "width": run.layers[layer - 1].shape[1]}
            if partner is not None:
                row |= self._measures(run, partner, layer)
            if self.recording is not None:
                features = run.neural_features[layer - 1]
                row["predictivity"] = _predictivity(
                    features, self.recording, self.ceiling, self.settings.seed
                )
            rows.append(row)
            advance()
        return {
            "run": str(run.directory),
            "rule": run.rule,
            "seed": run.seed,
            "test_accuracy": run.accuracy,
            "reference_run": str(partner.directory) if partner else None,
            "reference_seed": partner.seed if partner else None,
            "matched_by_seed": partner is not None and run.rule != self.settings.reference,
            "layers": rows,
        }


def _ceiling(recording: NeuralRecording, seed: int) -> float:
    try:
        return similarity.split_half_ceiling(recording.responses, seed=seed)
    except ValueError as error:
        raise NeuralDataError(f"{recording.source}: {error}") from None


def compare_runs(
    paths: Sequence[str | Path], settings: SimilaritySettings | None = None, progress: bool = False
) -> dict[str, Any]:
    """Every run's similarity to its reference run (and its predictivity of the recording), per
    layer, with the per-rule table and the accuracy-vs-similarity correlations: what
    ``results.json`` holds. ``progress`` shows bars on stderr while runs load and compare."""
    from tqdm.auto import tqdm

    from ngrad.rules import available_rules

    settings = settings or SimilaritySettings()
    run_dirs = find_runs(paths)
    recording = load_neural_data(settings.neural) if settings.neural else None
    runs, skipped, dataset, pixels = load_representations(
        run_dirs, settings.reference, settings.samples, settings.data_dir, recording, progress
    )
    registry_order = {name: index for index, name in enumerate(available_rules())}
    runs.sort(key=lambda run: (registry_order.get(run.rule, len(registry_order)), run.seed))
    widths = {run.directory: [values.shape[1] for values in run.layers] for run in runs}
    first = runs[0].directory
    for directory, mine in widths.items():
        if mine != widths[first]:
            raise ConfigError(
                f"the networks of {str(first)!r} and {str(directory)!r} differ (layer widths "
                f"{widths[first]} vs {mine}); similarity compares runs of one network"
            )
    depth = len(widths[first])
    layers = list(settings.layers or range(1, depth + 1))
    if max(layers) > depth:
        raise ConfigError(f"--layer must name layers between 1 and {depth}, got {layers}")
    references = {r.seed: r for r in runs if r.rule == settings.reference}
    ceiling = _ceiling(recording, settings.seed) if recording is not None else None
    comparison = _Comparison(settings, references, layers, recording, ceiling)
    with tqdm(
        total=len(runs) * len(layers) + 1, desc="comparing", unit="layer", disable=not progress
    ) as bar:
        records = [comparison.record(run, bar.update) for run in runs]
        baseline = comparison.input_baseline(pixels)
        neural = None
        if recording is not None:
            neural = {
                "file": recording.source,
                "stimuli": recording.n_stimuli,
                "sites": recording.n_sites,
                "repetitions": recording.n_repetitions,
                "objects": None if recording.objects is None else len(np.unique(recording.objects)),
                "ceiling": ceiling,
                "pixels": _predictivity(recording.stimuli, recording, ceiling, settings.seed),
            }
        bar.update()
    summary_layer = max([layer for layer in layers if layer < depth] or layers)
    results: dict[str, Any] = {
        "reference": settings.reference,
        "dataset": dataset,
        "stimuli": {"split": "test", "first": min(settings.samples, len(runs[0].layers[0]))},
        "layers": layers,
        "summary_layer": summary_layer,
        "bootstrap": {
            "resamples": settings.bootstrap,
            "confidence": settings.confidence,
            "seed": settings.seed,
        },
        "runs": records,
        "skipped": skipped,
    }
    if neural is not None:
        results["neural"] = neural
    results["input_baseline"] = baseline
    results["table"] = report.table_rows(records, layers, recording is not None)
    results["table"] += report.baseline_rows(baseline, len(references), neural)
    results["accuracy_vs_similarity"] = report.accuracy_correlations(records, summary_layer)
    return results
