"""The runs ``ngrad similarity`` compares: found in the directories given, checked to form one
experiment that pairs by seed, and loaded as their representations of the stimuli.

The runs must share the data, model (its name and options; the mlp's widths, activation and
initialisation), loss and number of epochs (:data:`EXPERIMENT_FIELDS`); they may differ in rule,
seed and optimiser settings. Every run but the reference rule's needs a reference run of its
seed, and no rule may have two runs of one seed. A run whose trained state holds non-finite
weights, whose network overflows on the stimuli or whose summary is damaged is named in an
:class:`~ngrad.errors.NgradError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ngrad.analysis.neural_data import NeuralDataError, NeuralRecording
from ngrad.errors import ConfigError, NgradError

__all__ = ["EXPERIMENT_FIELDS", "RunRepresentations", "find_runs", "load_representations"]

# The settings two runs must share to be compared (the rule, seed and optimiser may differ).
EXPERIMENT_FIELDS = (
    "data",
    "train_subset",
    "model",
    "model_options",
    "hidden",
    "activation",
    "init",
    "loss",
    "epochs",
)


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
class RunRepresentations:
    """One loaded run: who it is, its test accuracy, and its layers' activity."""

    directory: Path
    rule: str
    seed: int
    accuracy: float | None
    layers: list[np.ndarray]  # h_1..h_L on the stimuli, float64
    neural_features: list[np.ndarray] | None  # h_1..h_L on the recording's stimuli


def _experiment(config) -> dict[str, Any]:
    return {name: getattr(config, name, None) for name in EXPERIMENT_FIELDS}


def _check_one_experiment(configs: dict[Path, Any]) -> None:
    """Every run shares the first run's experiment settings; else say which differ."""
    paths = list(configs)
    first = _experiment(configs[paths[0]])
    for path in paths[1:]:
        mine = _experiment(configs[path])
        differences = [
            f"{name} {mine[name]!r} vs {first[name]!r}"
            for name in EXPERIMENT_FIELDS
            if mine[name] != first[name]
        ]
        if differences:
            raise ConfigError(
                f"{str(path)!r} and {str(paths[0])!r} are runs of different experiments "
                f"({', '.join(differences)}); similarity compares runs of the same data, model "
                "and epochs (the rule, seed and optimiser may differ)"
            )


def _check_pairs(configs: dict[Path, Any], reference: str) -> None:
    """One run per rule and seed, and a reference run of every other run's seed."""
    seen: dict[tuple[str, int], Path] = {}
    for path, config in configs.items():
        key = (config.rule, config.seed)
        if key in seen:
            raise ConfigError(
                f"{str(seen[key])!r} and {str(path)!r} are both {config.rule} with seed "
                f"{config.seed}; give one of them"
            )
        seen[key] = path
    seeds = sorted(seed for rule, seed in seen if rule == reference)
    for (rule, seed), path in seen.items():
        if rule != reference and seed not in seeds:
            raise ConfigError(
                f"no {reference} run with seed {seed} to compare {str(path)!r} with (the "
                f"{reference} runs given have seed(s) {', '.join(map(str, seeds))}); runs are "
                "paired by seed: add that run or leave this one out"
            )


def _check_finite_weights(rule, checkpoint: Path) -> None:
    import torch

    for name, tensor in rule.state_dict().items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.isfinite().all():
            raise NgradError(
                f"{str(checkpoint)!r} holds non-finite values (NaN or infinity) in {name}: the "
                "run diverged or the file is damaged; leave the run out"
            )


def _test_accuracy(summary: dict[str, Any], directory: Path) -> float | None:
    """The run's test accuracy from its summary (None when it has none)."""
    value = summary.get("test_accuracy")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is not None and not (number and 0 <= value <= 1):
        raise NgradError(
            f"{str(directory / 'summary.json')!r} is damaged (test_accuracy {value!r}); "
            "delete it to compare the run without its accuracy"
        )
    return value


def _activities(run, images, directory: Path) -> list[np.ndarray]:
    """h_1..h_L as the run's rule represents the images (``LearningRule.representations``),
    given to its model as in training (:meth:`~ngrad.train.runs.LoadedRun.prepare`)."""
    import torch

    with torch.no_grad():
        inputs = run.prepare(images.reshape(len(images), *run.data.input_shape))
        layers = [h.flatten(1).double().cpu().numpy() for h in run.rule.representations(inputs)]
    for layer, values in enumerate(layers, start=1):
        if not np.isfinite(values).all():
            raise NgradError(
                f"{str(directory)!r}: layer {layer} of its trained network gives non-finite "
                "activity on the stimuli (the weights overflow it); leave the run out"
            )
    return layers


def load_representations(
    run_dirs: list[Path],
    reference: str,
    samples: int,
    data_dir: str | None,
    recording: NeuralRecording | None,
    progress: bool,
) -> tuple[list[RunRepresentations], list[dict[str, str]], str, np.ndarray]:
    """The runs with a trained state, as their activity on the first ``samples`` test images
    (and on the recording's stimuli); the runs skipped, with why; the dataset; the stimuli's
    pixels (stimuli x pixels, float64)."""
    import torch
    from tqdm.auto import tqdm

    from ngrad.data import load_dataset
    from ngrad.train.runs import load_run, load_run_config

    configs = {path: load_run_config(path) for path in run_dirs}
    _check_one_experiment(configs)
    skipped = [
        {"run": str(path), "reason": "no best.pt (the run saved no trained state)"}
        for path in run_dirs
        if not (path / "best.pt").is_file()
    ]
    kept = [path for path in run_dirs if (path / "best.pt").is_file()]
    if not kept:
        raise NgradError("none of the runs has a trained state (best.pt) to compare")
    if not any(configs[path].rule == reference for path in kept):
        raise ConfigError(
            f"no run of the reference rule {reference!r} among the {len(kept)} runs; "
            "add one (e.g. the compare directory) or choose --reference"
        )
    _check_pairs({path: configs[path] for path in kept}, reference)
    dataset = configs[kept[0]].data
    data = load_dataset(dataset, data_dir=data_dir or configs[kept[0]].data_dir)
    stimuli = data.test_x[:samples]
    if recording is not None:
        given, expected = math.prod(recording.stimuli.shape[1:]), math.prod(data.input_shape)
        if given != expected:
            raise NeuralDataError(
                f"{recording.source}: stimuli have {given} values each, the networks of "
                f"{dataset} take {expected}"
            )
    runs = []
    for path in tqdm(kept, desc="loading runs", unit="run", disable=not progress):
        loaded = load_run(path, data=data)
        _check_finite_weights(loaded.rule, path / "best.pt")
        neural = None
        if recording is not None:
            neural = _activities(loaded, torch.from_numpy(recording.stimuli), path)
        runs.append(
            RunRepresentations(
                path,
                loaded.config.rule,
                loaded.config.seed,
                _test_accuracy(loaded.summary, path),
                _activities(loaded, stimuli, path),
                neural,
            )
        )
    return runs, skipped, dataset, stimuli.flatten(1).double().numpy()
