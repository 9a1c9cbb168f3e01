"""Shared helpers of the benchmark scripts (not part of the package)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> str:
    """NGRAD_DATA if set, else the offline copy beside the repository (../shared/data)."""
    return os.environ.get("NGRAD_DATA", str(REPO.parent / "shared" / "data"))


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def test_error_curve(out: Path, epochs: int) -> list[tuple[int, float]]:
    """(epoch, test error %) of a run's trained epochs 1..``epochs``, from its metrics.jsonl
    (read and checked by the training loop's own reader)."""
    from ngrad.train.runs import read_metrics

    return [
        (line["epoch"], 100 * (1 - line["test_accuracy"]))
        for line in read_metrics(out / "metrics.jsonl", epochs)
        if line["epoch"] >= 1 and math.isfinite(line.get("test_accuracy", math.nan))
    ]


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The mean test error by epoch over the seeds, at the epochs every seed has reached."""
    by_seed = [dict(curve) for curve in curves]
    shared = sorted(set.intersection(*(set(curve) for curve in by_seed)))
    return [(epoch, statistics.fmean(curve[epoch] for curve in by_seed)) for epoch in shared]


@dataclasses.dataclass(frozen=True)
class Curve:
    """One line of ``plot_error_curves``: (epoch, error %) points; ``dashed`` marks a run that
    failed or diverged; ``published`` draws the paper's error as a dashed level in its colour."""

    label: str
    points: Sequence[tuple[int, float]]
    dashed: bool = False
    published: float | None = None


def plot_error_curves(curves: Iterable[Curve], path: Path | str, title: str, ylabel: str) -> None:
    """Test error by epoch on a log scale with plain tick labels, one line per curve, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for curve in curves:
        if not curve.points:
            continue
        epochs, errors = zip(*curve.points, strict=True)
        style = "--" if curve.dashed else "-"
        (line,) = axes.plot(epochs, errors, style, marker="o", markersize=2, label=curve.label)
        if curve.published is not None:
            axes.axhline(curve.published, color=line.get_color(), linestyle=":", linewidth=1)
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.set_title(textwrap.fill(title, 110), fontsize=7)
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"curves written to {path}")


def epoch_time(
    rule, optimiser, batches: Iterable, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds for one pass of ``rule.backward`` + ``optimiser.step`` over ``batches``."""
    start = clock()
    for inputs, targets in batches:
        rule.backward(inputs, targets)
        optimiser.step()
    return clock() - start


def saved_summary(out: Path) -> dict[str, Any] | None:
    """The summary.json of the run in ``out``, or None where it has none."""
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_to(
    out: Path, epochs: int, settings: Callable[[], dict[str, Any]], progress: bool = False
) -> dict[str, Any]:
    """The summary of the run in ``out`` after ``epochs`` epochs: a saved run is continued
    (``ngrad train --resume``, extended to ``epochs``), else a new one starts from
    ``settings()``. A run that diverged is not retrained: its summary keeps its best epoch
    before the NaN."""
    from ngrad.errors import NgradError
    from ngrad.train.config import make_config
    from ngrad.train.loop import run_training
    from ngrad.train.runs import load_run_config

    summary = saved_summary(out)
    if summary is not None and summary.get("status") == "diverged":
        return summary
    try:
        if (out / "checkpoint.pt").is_file() and (out / "config.json").is_file():
            config = load_run_config(out)
            if config.epochs < epochs:
                values = json.loads((out / "config.json").read_text()) | {"epochs": epochs}
                config = make_config(values)
            return run_training(config, out, resume=True, progress=progress).summary
        config = make_config(settings())
        return run_training(config, out, overwrite=True, progress=progress).summary
    except NgradError:
        summary = saved_summary(out)
        if summary is None or summary.get("status") != "diverged":
            raise
        return summary


def check_saved_settings(out: Path, values: dict[str, Any]) -> None:
    """SystemExit where ``out`` holds a run whose settings (all but the epochs, where the data
    is and the threads) differ from ``values``: resuming it would train something else."""
    from ngrad.train.config import make_config

    path = out / "config.json"
    if not path.is_file():
        return
    ignored = ("epochs", "data_dir", "threads", "device", "download")
    saved = make_config(json.loads(path.read_text())).to_dict()
    wanted = make_config(values).to_dict()
    changed = [key for key in wanted if key not in ignored and saved.get(key) != wanted[key]]
    if changed:
        raise SystemExit(
            f"{out} holds a run with other settings ({', '.join(changed)}); "
            "remove it or choose another --out"
        )


def parse_lr_overrides(items: Iterable[str]) -> dict[str, float]:
    """{name: lr} from ``NAME=VALUE`` strings (``--lr ldrl=0.01``)."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not overrides[name.strip()] > 0:
            raise SystemExit(f"--lr takes NAME=VALUE with a positive value, got {item!r}")
    return overrides


def validation_score(values: dict[str, Any], epochs: int, val_count: int) -> dict[str, Any]:
    """Train the run ``values`` describes for ``epochs`` epochs, in memory, and measure its
    accuracy on the first ``val_count`` held-out training images (the validation split) after
    each epoch. The test split is never evaluated. ``val_accuracy`` is the accuracy after the
    last epoch, 0 for a run that diverged (a rate that ends worse than it was, or in a NaN, is
    no choice for a longer run)."""
    from ngrad.errors import DivergenceError
    from ngrad.train.config import make_config
    from ngrad.train.evaluation import evaluate
    from ngrad.train.session import TrainingSession

    session = TrainingSession(make_config(values), None)
    val = [(session.data.val_x[:val_count], session.data.val_y[:val_count])]
    scores, status, start, train_cpu = [], "completed", time.process_time(), 0.0
    for _ in range(epochs):
        try:
            train_cpu -= time.process_time()
            session.train_epoch(None)
        except DivergenceError:
            status = "diverged"
            break
        finally:
            train_cpu += time.process_time()
        scores.append(evaluate(session.rule, val, prepare=session.prepare)[1])
    return {
        "val_accuracy": final_accuracy({"val_by_epoch": scores, "status": status}),
        "val_by_epoch": scores,
        "status": status,
        "cpu_s": time.process_time() - start,
        "train_cpu_s_per_step": train_cpu / max(1, len(scores) * session.steps_per_epoch),
        "eval_cpu_s_per_image": (time.process_time() - start - train_cpu)
        / max(1, len(scores) * len(val[0][1])),
    }


def final_accuracy(trial: dict[str, Any]) -> float:
    """A selection trial's score: its validation accuracy after its last epoch (0 if it
    diverged)."""
    if trial["status"] == "diverged" or not trial["val_by_epoch"]:
        return 0.0
    return trial["val_by_epoch"][-1]


def best_lr(trials: dict[str, dict[str, Any]]) -> float:
    """The lr (a key of ``trials``, ``repr`` of a float) of the highest ``final_accuracy``; on a
    tie the smaller lr."""
    return float(max(sorted(trials, key=float), key=lambda lr: final_accuracy(trials[lr])))


def _rounded(lr: float) -> float:
    return float(f"{lr:.6g}")


def _grid_index(lr: float, grid: list[float]) -> int | None:
    """Where ``lr`` is in ``grid`` (up to the rounding of a rate given as text), or None."""
    return next((i for i, point in enumerate(grid) if math.isclose(lr, point, rel_tol=1e-4)), None)


class LrSelection:
    """Learning rates chosen on validation accuracy, kept in a JSON file trial by trial (so an
    interrupted selection resumes, and a wider grid adds only its new rates):
    ``{"setting": ..., "options": {key: rule options}, "chosen": {key: lr}, "trials": {key: {lr:
    score}}}``; a file made with another setting (budget, model, seed) is refused, and so is a
    key whose trials ran with other rule ``options`` than the key has now (a file without them
    ran every key with none)."""

    def __init__(
        self, path: Path, setting: dict[str, Any], options: dict[str, dict] | None = None
    ) -> None:
        self.path, self.setting = path, json.loads(json.dumps(setting))
        self.options = json.loads(json.dumps(options or {}))
        self.trials: dict[str, dict[str, dict[str, Any]]] = {}
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved["setting"] != self.setting:
                raise SystemExit(
                    f"{path} was made with another selection setting ({saved['setting']}); "
                    "remove it or choose another --lr-file"
                )
            self.trials = saved["trials"]
            for key, ran_with in saved.get("options", {}).items():
                self.options.setdefault(key, ran_with)
            for key in self.trials:
                ran_with = saved.get("options", {}).get(key, {})
                if ran_with != self.options.get(key, {}):
                    raise SystemExit(
                        f"{path}: the trials of {key!r} ran with rule options {ran_with}, and "
                        f"{key!r} now has {self.options.get(key, {})}; remove {key!r} from the "
                        "file or choose another --lr-file"
                    )

    def score(self, key: str, lr: float, run: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
        """The trial of ``key`` at ``lr``: ``run(lr)``, unless the file holds it already."""
        mine = self.trials.setdefault(key, {})
        if repr(lr) not in mine:
            mine[repr(lr)] = run(lr)
            self.save()
        return mine[repr(lr)]

    def select(
        self,
        key: str,
        grid: list[float],
        run: Callable[[float], dict[str, Any]],
        extend: int,
        refine: bool = False,
    ) -> float:
        """Score ``key`` at every lr of ``grid`` (geometric, ratio r); then, while the best lr is
        the smallest or the largest tried, one more lr a grid step beyond it (at most ``extend``
        steps past either end of the grid); with ``refine``, last the two lrs sqrt(r) either side
        of the best of those. Returns the best lr of all the trials ``key`` has. Running it again
        with the same arguments scores nothing new."""
        ratio = grid[-1] / grid[-2] if len(grid) > 1 else 4.0
        coarse = [_rounded(grid[0] * ratio**k) for k in range(-extend, len(grid) + extend)]
        for lr in grid:
            self.score(key, lr, run)
        while True:
            on_grid = {
                lr: t
                for lr, t in self.trials[key].items()
                if _grid_index(float(lr), coarse) is not None
            }
            tried = sorted(float(lr) for lr in on_grid)
            best = best_lr(on_grid)
            step = -1 if best == tried[0] else 1 if best == tried[-1] else 0
            beyond = _grid_index(best, coarse) + step
            if step == 0 or not 0 <= beyond < len(coarse):
                break
            self.score(key, coarse[beyond], run)
        if refine:
            for factor in (ratio**-0.5, ratio**0.5):
                self.score(key, _rounded(best * factor), run)
        return best_lr(self.trials[key])

    def at_edge(self, key: str) -> bool:
        """Whether ``key``'s best lr is the smallest or the largest it was tried at."""
        tried = sorted(float(lr) for lr in self.trials[key])
        return best_lr(self.trials[key]) in (tried[0], tried[-1])

    def chosen(self) -> dict[str, float]:
        """{key: the lr of the best final validation accuracy} (``best_lr``)."""
        return {key: best_lr(scores) for key, scores in self.trials.items() if scores}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = {key: self.options.get(key, {}) for key in self.trials}
        saved = {
            "setting": self.setting,
            "options": options,
            "chosen": self.chosen(),
            "trials": self.trials,
        }
        text = json.dumps(saved, indent=1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)


def selection_lines(chooser: LrSelection, keys: Iterable[str]) -> list[str]:
    """One line per key: its chosen lr (``(edge)`` where that is the smallest or largest tried)
    and the validation accuracy at every lr tried (``!``: the trial diverged)."""
    lines = []
    for key in keys:
        trials = chooser.trials[key]
        accuracies = "  ".join(
            f"{float(lr):g}: {100 * final_accuracy(trials[lr]):.2f}"
            + ("!" if trials[lr]["status"] != "completed" else "")
            for lr in sorted(trials, key=float)
        )
        edge = " (edge)" if chooser.at_edge(key) else ""
        lines.append(f"  {key:<13} lr {best_lr(trials):g}{edge}  (val acc % by lr: {accuracies})")
    return lines


def chosen_rates(
    keys: Iterable[str],
    overrides: dict[str, float],
    chooser: LrSelection,
    default: Callable[[str], float],
    default_name: str,
) -> dict[str, tuple[float, str]]:
    """{key: (lr, where it came from)}: ``overrides`` (``--lr``), else ``chooser``'s choice
    (``val``; ``val, edge`` where it is the smallest or largest tried), else ``default(key)``."""
    chosen = chooser.chosen()
    rates = {}
    for key in keys:
        if key in overrides:
            rates[key] = (overrides[key], "--lr")
        elif key in chosen:
            rates[key] = (chosen[key], "val, edge" if chooser.at_edge(key) else "val")
        else:
            rates[key] = (default(key), default_name)
    return rates
