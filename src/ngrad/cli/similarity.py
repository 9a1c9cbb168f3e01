"""``ngrad similarity``: how close each rule's representations are to a reference rule's, layer by
layer, and how well they predict recorded neural responses (:mod:`ngrad.analysis.similarity`).

    ngrad similarity RUN_DIR... [--reference bp] [--layer 1,2] [--neural FILE] [--samples 1000]
                     [--bootstrap 1000] [--data-dir DIR] --out DIR

A RUN_DIR is a directory written by ``ngrad train`` or by ``ngrad compare`` (its ``runs/*``). The
stimuli are the first ``--samples`` images of the runs' test split, fed through each run's network
in its best-validation state (``best.pt``); a layer's representation is its activity h_l as the
rule represents it (``LearningRule.representations``). Each run
is compared with the reference rule's run of the same seed (else the lowest seed); a reference
run is compared with the reference run of the next seed (seed-to-seed variability of the
reference itself), when there is one. Writes into ``--out``: ``results.json``, ``similarity.md``
(mean ± std over seeds), ``similarity.csv`` (one row per run and layer),
``similarity_heatmap.png`` (layer x rule) and ``accuracy_vs_similarity.png`` (test accuracy
against similarity at the summary layer, the deepest hidden layer compared, across runs, with
Pearson and Spearman correlations).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from ngrad.analysis import similarity
from ngrad.analysis.neural_data import NeuralDataError, NeuralRecording, load_neural_data
from ngrad.errors import ConfigError, NgradError
from ngrad.rules import LearningRule
from ngrad.train.checkpoint import atomic_write_text, to_json

__all__ = [
    "SimilaritySettings",
    "command_similarity",
    "find_runs",
    "print_report",
    "run_similarity",
]

MEASURES = ("cka", "rsa", "predictivity")
INPUT_ROW = "input (pixels)"
LABELS = {"cka": "linear CKA", "rsa": "RSA (Spearman)", "predictivity": "neural predictivity"}


@dataclass(frozen=True)
class SimilaritySettings:
    reference: str = "bp"
    layers: tuple[int, ...] | None = None  # 1-based layer indices; None: every layer
    neural: str | None = None
    samples: int = 1000
    bootstrap: int = 1000
    confidence: float = 0.95
    data_dir: str | None = None
    seed: int = 0


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (with config.json) named directly or as a compare directory's runs/*."""
    found: list[Path] = []
    for given in map(Path, paths):
        if (given / "config.json").is_file():
            found.append(given)
        elif (given / "runs").is_dir():
            runs = sorted(p for p in (given / "runs").iterdir() if (p / "config.json").is_file())
            if not runs:
                raise ConfigError(f"{str(given)!r} has a runs/ directory without any run in it")
            found += runs
        else:
            raise ConfigError(
                f"{str(given)!r} is neither a run directory (config.json) nor an `ngrad compare` "
                "directory (runs/*/config.json)"
            )
    unique = {path.resolve(): path for path in found}
    return list(unique.values())


@dataclass
class _Run:
    directory: Path
    rule: str
    seed: int
    accuracy: float | None
    layers: list[np.ndarray]  # h_1..h_L on the stimuli, float64
    neural_features: list[np.ndarray] | None  # h_1..h_L on the recording's stimuli


@torch.no_grad()
def _activities(rule: LearningRule, images: torch.Tensor) -> list[np.ndarray]:
    """h_1..h_L as the rule represents the images (``LearningRule.representations``)."""
    shape = rule.network.input_shape or (math.prod(images.shape[1:]),)
    inputs = images.reshape(len(images), *shape).float()
    return [h.flatten(1).double().numpy() for h in rule.representations(inputs)]


def _load_runs(
    run_dirs: list[Path], settings: SimilaritySettings, recording, progress: bool
) -> tuple[list[_Run], list[dict[str, str]], str, np.ndarray]:
    from ngrad.data import load_dataset
    from ngrad.train.loop import load_run_config
    from ngrad.train.runs import load_run

    configs = {path: load_run_config(path) for path in run_dirs}
    datasets = sorted({config.data for config in configs.values()})
    if len(datasets) > 1:
        raise ConfigError(f"the runs were trained on different datasets: {', '.join(datasets)}")
    skipped = [
        {"run": str(path), "reason": "no best.pt (the run saved no trained state)"}
        for path in run_dirs
        if not (path / "best.pt").is_file()
    ]
    kept = [path for path in run_dirs if (path / "best.pt").is_file()]
    if not kept:
        raise NgradError("none of the runs has a trained state (best.pt) to compare")
    if not any(configs[path].rule == settings.reference for path in kept):
        raise ConfigError(
            f"no run of the reference rule {settings.reference!r} among the {len(kept)} runs; "
            "add one (e.g. the compare directory) or choose --reference"
        )
    data_dir = settings.data_dir or configs[kept[0]].data_dir
    data = load_dataset(datasets[0], data_dir=data_dir)
    stimuli = data.test_x[: settings.samples]
    if recording is not None:
        given, expected = math.prod(recording.stimuli.shape[1:]), math.prod(data.input_shape)
        if given != expected:
            raise NeuralDataError(
                f"{recording.source}: stimuli have {given} values each, the networks of "
                f"{datasets[0]} take {expected}"
            )
    runs = []
    for path in tqdm(kept, desc="similarity", unit="run", disable=not progress):
        loaded = load_run(path, data=data)
        neural = None
        if recording is not None:
            neural = _activities(loaded.rule, torch.from_numpy(recording.stimuli))
        runs.append(
            _Run(
                path,
                loaded.config.rule,
                loaded.config.seed,
                loaded.summary.get("test_accuracy"),
                _activities(loaded.rule, stimuli),
                neural,
            )
        )
    return runs, skipped, datasets[0], stimuli.flatten(1).double().numpy()


def _partner(run: _Run, references: dict[int, _Run], reference: str) -> tuple[_Run | None, bool]:
    """The reference run a run is compared with, and whether the seeds match."""
    if run.rule == reference:
        others = sorted(seed for seed in references if seed != run.seed)
        later = [seed for seed in others if seed > run.seed]
        chosen = (later or others or [None])[0]
        return (references[chosen], False) if chosen is not None else (None, False)
    if run.seed in references:
        return references[run.seed], True
    return references[min(references)], False


def _predictivity(features: np.ndarray, recording: NeuralRecording, ceiling: float, seed: int):
    try:
        result = similarity.neural_predictivity(
            features, recording.responses, recording.objects, ceiling=ceiling, seed=seed
        )
    except similarity.DegenerateRepresentationError as error:
        return {"normalized": None, "note": str(error)}
    return {
        "normalized": result.normalized,
        "raw": result.raw,
        "raw_sem": result.raw_sem,
        "explained_variance": result.explained_variance,
        "attenuation_corrected": result.attenuation_corrected,
        "components": result.components,
    }


class _Comparison:
    """Compares runs with their reference runs (and the recording), caching reference RDMs."""

    def __init__(self, settings, references, layers, recording, ceiling) -> None:
        self.settings, self.references, self.layers = settings, references, layers
        self.recording, self.ceiling = recording, ceiling
        self.reference_rdms: dict[tuple[int, int], np.ndarray] = {}

    def _rdm(self, run: _Run, layer: int) -> np.ndarray:
        if run.rule != self.settings.reference:
            return similarity.rdm(run.layers[layer - 1])
        key = (run.seed, layer)
        if key not in self.reference_rdms:
            self.reference_rdms[key] = similarity.rdm(run.layers[layer - 1])
        return self.reference_rdms[key]

    def _measures(self, run: _Run, partner: _Run, layer: int) -> dict[str, Any]:
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
                        "cka": _mean_std([similarity.cka(pixels, t) for t in targets]),
                        "rsa": _mean_std([result.correlation for result in rsas]),
                    }
                )
            return rows
        except similarity.DegenerateRepresentationError:
            return []

    def record(self, run: _Run) -> dict[str, Any]:
        partner, matched = _partner(run, self.references, self.settings.reference)
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
        return {
            "run": str(run.directory),
            "rule": run.rule,
            "seed": run.seed,
            "test_accuracy": run.accuracy,
            "reference_run": str(partner.directory) if partner else None,
            "reference_seed": partner.seed if partner else None,
            "matched_by_seed": matched,
            "layers": rows,
        }


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    result: dict[str, Any] = {"n": len(pairs), "pearson_r": None, "spearman_rho": None}
    if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
        x, y = np.array(pairs).T
        result["pearson_r"] = float(stats.pearsonr(x, y).statistic)
        result["spearman_rho"] = float(stats.spearmanr(x, y).statistic)
    return result


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    mean = statistics.mean(present) if present else None
    return {"mean": mean, "std": statistics.stdev(present) if len(present) > 1 else None}


def run_similarity(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    settings: SimilaritySettings | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Compute every run's similarity to the reference runs (and to the recording) and write the
    outputs listed in the module docstring; returns what results.json holds."""
    from ngrad.rules import available_rules, get_rule_class
    from ngrad.train.loop import prepare_output_dir

    settings = settings or SimilaritySettings()
    get_rule_class(settings.reference)
    if settings.samples < 4:
        raise ConfigError(f"--samples must be at least 4, got {settings.samples}")
    run_dirs = find_runs(paths)
    out = Path(out_dir)
    prepare_output_dir(out)
    recording = load_neural_data(settings.neural) if settings.neural else None
    runs, skipped, dataset, pixels = _load_runs(run_dirs, settings, recording, progress)
    registry_order = {name: index for index, name in enumerate(available_rules())}
    runs.sort(key=lambda run: (registry_order.get(run.rule, len(registry_order)), run.seed))
    depths = sorted({len(run.layers) for run in runs})
    if len(depths) > 1:
        raise ConfigError(f"the runs have different numbers of layers ({depths}); compare one net")
    depth = depths[0]
    layers = list(settings.layers or range(1, depth + 1))
    if not layers or min(layers) < 1 or max(layers) > depth:
        raise ConfigError(f"--layer must name layers between 1 and {depth}, got {layers}")
    references = {r.seed: r for r in runs if r.rule == settings.reference}
    ceiling = None
    if recording is not None:
        ceiling = similarity.split_half_ceiling(recording.responses, seed=settings.seed)
    comparison = _Comparison(settings, references, layers, recording, ceiling)
    records = [comparison.record(run) for run in runs]
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
    if recording is not None:
        pixel_predictivity = _predictivity(recording.stimuli, recording, ceiling, settings.seed)
        results["neural"] = {
            "file": recording.source,
            "stimuli": recording.n_stimuli,
            "sites": recording.n_sites,
            "repetitions": recording.n_repetitions,
            "objects": None if recording.objects is None else len(np.unique(recording.objects)),
            "ceiling": ceiling,
            "pixels": pixel_predictivity,
        }
    baseline = comparison.input_baseline(pixels)
    results["input_baseline"] = baseline
    results["table"] = _table_rows(records, layers, recording is not None)
    results["table"] += _baseline_rows(baseline, len(references), results.get("neural"))
    results["accuracy_vs_similarity"] = _accuracy_correlations(records, summary_layer)
    _write_outputs(results, out)
    return results


def measure_value(row: dict[str, Any], measure: str) -> float | None:
    if measure == "predictivity":
        return (row.get("predictivity") or {}).get("normalized")
    return row.get(measure)


def _present_measures(neural: bool) -> tuple[str, ...]:
    return MEASURES if neural else MEASURES[:2]


def _table_rows(records, layers, neural: bool) -> list[dict[str, Any]]:
    """Per rule and layer: mean and std over seeds of each measure."""
    rows = []
    for rule in dict.fromkeys(r["rule"] for r in records):
        mine = [r for r in records if r["rule"] == rule]
        accuracy = _mean_std([r["test_accuracy"] for r in mine])
        for position, layer in enumerate(layers):
            row = {"rule": rule, "layer": layer, "runs": len(mine), "test_accuracy": accuracy}
            for measure in _present_measures(neural):
                row[measure] = _mean_std(
                    [measure_value(r["layers"][position], measure) for r in mine]
                )
            rows.append(row)
    return rows


def _baseline_rows(baseline, references: int, neural) -> list[dict[str, Any]]:
    """Table rows of the input pixels (no accuracy); their predictivity is the recording's
    pixels' own, the same in every layer column."""
    rows = []
    for row in baseline:
        row = {"rule": INPUT_ROW, "runs": references, "test_accuracy": _mean_std([])} | row
        if neural is not None:
            row["predictivity"] = _mean_std([neural["pixels"].get("normalized")])
        rows.append(row)
    return rows


def _accuracy_correlations(records, summary_layer: int) -> dict[str, Any]:
    correlations: dict[str, Any] = {"layer": summary_layer}
    for measure in MEASURES:
        points = [
            (row_value, r["test_accuracy"], r["rule"])
            for r in records
            for row in r["layers"]
            if row["layer"] == summary_layer
            and (row_value := measure_value(row, measure)) is not None
        ]
        if not points:
            continue
        by_rule = {rule: [p for p in points if p[2] == rule] for rule in {p[2] for p in points}}
        means = [
            (statistics.mean(p[0] for p in ps), _mean_std([p[1] for p in ps])["mean"])
            for ps in by_rule.values()
        ]
        correlations[measure] = {
            "runs": _correlation([p[0] for p in points], [p[1] for p in points]),
            "rule_means": _correlation([m[0] for m in means], [m[1] for m in means]),
        }
    return correlations


# --------------------------------------------------------------------------- outputs ---


def _cell(summary: dict[str, float | None]) -> str:
    mean, std = summary["mean"], summary["std"]
    if mean is None:
        return "-"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def format_similarity_table(results: dict[str, Any]) -> str:
    """Markdown: one row per rule, a column per measure and layer (mean ± std over seeds)."""
    layers, rows = results["layers"], results["table"]
    measures = [m for m in MEASURES if rows and m in rows[0]]
    header = ["rule", "runs", "test acc"]
    header += [f"{m} L{layer}" for m in measures for layer in layers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rule in dict.fromkeys(row["rule"] for row in rows):
        mine = {row["layer"]: row for row in rows if row["rule"] == rule}
        first = mine[layers[0]]
        cells = [rule, str(first["runs"]), _cell(first["test_accuracy"])]
        cells += [_cell(mine[layer][m]) for m in measures for layer in layers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_correlations(results: dict[str, Any]) -> list[str]:
    """One line per measure: accuracy against similarity at the summary layer."""
    correlations = results["accuracy_vs_similarity"]
    lines = []
    for measure in MEASURES:
        if measure not in correlations:
            continue
        runs, means = correlations[measure]["runs"], correlations[measure]["rule_means"]
        target = "the recording" if measure == "predictivity" else results["reference"]
        lines.append(
            f"test accuracy vs {LABELS[measure]} to {target} at layer {correlations['layer']}: "
            f"across {runs['n']} runs Pearson r = {format_number(runs['pearson_r'])}, "
            f"Spearman rho = {format_number(runs['spearman_rho'])}; "
            f"across {means['n']} rule means r = "
            f"{format_number(means['pearson_r'])}, rho = {format_number(means['spearman_rho'])}"
        )
    return lines


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _csv(results: dict[str, Any]) -> str:
    columns = ["run", "rule", "seed", "test_accuracy", "reference_run", "layer", "width", "cka"]
    columns += ["cka_debiased", "rsa", "rsa_ci_low", "rsa_ci_high", "predictivity"]
    columns += ["predictivity_raw", "note"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for record in results["runs"]:
        for row in record["layers"]:
            neural = row.get("predictivity") or {}
            interval = row.get("rsa_ci") or [None, None]
            writer.writerow(
                {key: record[key] for key in columns[:5]}
                | {key: row.get(key) for key in ("layer", "width", "cka", "cka_debiased", "rsa")}
                | {"rsa_ci_low": interval[0], "rsa_ci_high": interval[1]}
                | {"predictivity": neural.get("normalized"), "predictivity_raw": neural.get("raw")}
                | {"note": row.get("note") or neural.get("note")}
            )
    return buffer.getvalue()


def _write_outputs(results: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "results.json", to_json(results))
    text = [f"# ngrad similarity to {results['reference']} on {results['dataset']}", ""]
    text += [
        f"Stimuli: the first {results['stimuli']['first']} test images. Mean ± std over runs "
        "(seeds). predictivity: Brain-Score's median held-out r / split-half ceiling.",
        "",
        format_similarity_table(results),
        "",
        *format_correlations(results),
    ]
    atomic_write_text(out / "similarity.md", "\n".join(text) + "\n")
    atomic_write_text(out / "similarity.csv", _csv(results))
    from ngrad.plots.similarity import plot_accuracy_vs_similarity, plot_heatmap

    plot_heatmap(results, out / "similarity_heatmap.png")
    plot_accuracy_vs_similarity(results, out / "accuracy_vs_similarity.png")


def print_report(results: dict[str, Any]) -> None:
    """The table, the accuracy-vs-similarity correlations and any skipped runs, to stdout."""
    print(format_similarity_table(results))
    print()
    for line in format_correlations(results):
        print(line)
    for skipped in results["skipped"]:
        print(f"skipped {skipped['run']}: {skipped['reason']}")


def command_similarity(args: argparse.Namespace) -> int:
    """The CLI entry: parse the options, run, print the table and the correlations."""
    layers = None
    if args.layer:
        try:
            layers = tuple(int(part) for part in args.layer.split(",") if part.strip())
        except ValueError:
            raise ConfigError(
                f"--layer takes comma-separated layer numbers, got {args.layer!r}"
            ) from None
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    settings = SimilaritySettings(
        reference=args.reference,
        layers=layers,
        neural=args.neural,
        samples=args.samples,
        bootstrap=args.bootstrap,
        data_dir=args.data_dir,
    )
    results = run_similarity(args.runs, args.out, settings, progress=not args.no_progress)
    print_report(results)
    print(
        f"\nresults in {args.out}/ (results.json, similarity.md, similarity.csv, "
        "similarity_heatmap.png, accuracy_vs_similarity.png)"
    )
    return 0
