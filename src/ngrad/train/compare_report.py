"""What ``ngrad compare`` writes about its runs: one record per run (``results.json``), the
table of rules, the statistics against backprop, and ``summary.md``."""

from __future__ import annotations

import datetime
import platform
import statistics
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ngrad.train.compare_config import effective_settings
from ngrad.train.config import TrainConfig

__all__ = ["REFERENCE_RULE", "environment", "format_table", "make_record", "summary_markdown"]

REFERENCE_RULE = "bp"
TIME_NOTE = (
    "CPU ms / step: CPU time of the run's process per training step (all its threads; "
    "evaluation excluded), mean over seeds; x BP divides it by backprop's on the same seed. CPU "
    "time, unlike wall time, does not count the time other processes hold the cores, so it "
    "ranks the rules' cost on a busy machine too (it still varies with the thread count)."
)


def make_record(summary: dict[str, Any], config: TrainConfig, origins: dict, source) -> dict:
    """One run's record for ``results.json``: its outcome, its cost and its effective settings."""
    cpu = summary.get("cpu_time_per_step_s")
    return {
        "rule": summary["rule"],
        "model": summary.get("model", config.model),
        "dataset": summary.get("dataset", config.data),
        "seed": summary.get("seed", config.seed),
        "status": summary["status"],
        "status_reason": summary.get("status_reason"),
        "test_accuracy": summary.get("test_accuracy"),
        "best_val_accuracy": summary.get("best_val_accuracy"),
        "best_epoch": summary.get("best_epoch"),
        "epoch_time_s": summary.get("epoch_time_s"),
        "cpu_time_per_step_s": cpu,
        "time_ratio_to_bp": None,  # filled in once backprop's run with this seed is known
        "threads": summary.get("threads", config.threads),
        "final_angle_to_bp_deg": summary.get("final_angle_to_bp_deg"),
        "final_weight_alignment": summary.get("final_weight_alignment"),
        "settings": effective_settings(config),
        "settings_from": dict(origins),
        "settings_source": source,
    }


def fill_time_ratios(records: list[dict[str, Any]]) -> None:
    """Each record's CPU time per step divided by backprop's on the same seed."""
    reference = {
        r["seed"]: r["cpu_time_per_step_s"] for r in records if r["rule"] == REFERENCE_RULE
    }
    for record in records:
        mine, theirs = record["cpu_time_per_step_s"], reference.get(record["seed"])
        record["time_ratio_to_bp"] = mine / theirs if mine and theirs else None


def _mean_std(values: Sequence[float | None], scale: float = 1.0, digits: int = 3) -> str:
    present = [v * scale for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{statistics.mean(present):.{digits}f} ± {statistics.stdev(present):.{digits}f}"


def _statuses(records: Sequence[dict[str, Any]]) -> str:
    counts = Counter(record["status"] for record in records)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{count} {status}" for status, count in counts.items())


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per rule, mean ± std over seeds, cost and the runs' statuses."""
    rules = list(dict.fromkeys(record["rule"] for record in records))
    layers = max((len(r["final_angle_to_bp_deg"] or []) for r in records), default=0)
    header = ["rule", "seeds", "test acc", "best val acc", "CPU ms / step", "x BP"]
    header += [f"angle L{layer + 1} (deg)" for layer in range(layers)]
    header.append("status")
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rule in rules:
        mine = [r for r in records if r["rule"] == rule]
        cells = [
            rule,
            str(len(mine)),
            _mean_std([r["test_accuracy"] for r in mine]),
            _mean_std([r["best_val_accuracy"] for r in mine]),
            _mean_std([r.get("cpu_time_per_step_s") for r in mine], 1000.0, 2),
            _mean_std([r["time_ratio_to_bp"] for r in mine], digits=2),
        ]
        for layer in range(layers):
            angles = [(r["final_angle_to_bp_deg"] or [None] * layers)[layer] for r in mine]
            cells.append(_mean_std(angles, digits=1))
        cells.append(_statuses(mine))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def load_correct(run_dir: Path) -> np.ndarray | None:
    """A run's per-test-sample correctness at its best validation epoch, or None."""
    from ngrad.train.session import TEST_CORRECT

    try:
        values = np.load(run_dir / TEST_CORRECT, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return values if values.dtype == bool and values.ndim == 1 else None


def run_statistics(records: Sequence[dict[str, Any]], run_dirs: Sequence[Path]):
    """compare_to_reference's rows over the runs that completed (None without backprop)."""
    from ngrad.analysis.statistics import compare_to_reference

    correct: dict[str, dict[int, np.ndarray | None]] = {}
    for record, run_dir in zip(records, run_dirs, strict=True):
        usable = record["status"] == "completed"
        correct.setdefault(record["rule"], {})[record["seed"]] = (
            load_correct(run_dir) if usable else None
        )
    if not any(value is not None for value in correct.get(REFERENCE_RULE, {}).values()):
        return None
    return compare_to_reference(correct, reference=REFERENCE_RULE)


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if done.returncode != 0 or not done.stdout.strip():
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def environment(base: TrainConfig, jobs: int, threads: int) -> dict[str, Any]:
    """ngrad and torch versions, commit, threads, jobs, device and date of this comparison."""
    import torch

    from ngrad import __version__

    return {
        "ngrad": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": _commit(),
        "device": base.device,
        "threads_per_run": threads,
        "parallel_runs": jobs,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _settings_table(plans) -> str:
    rows = [
        "| rule | lr | optimizer | momentum | weight decay | feedback lr | epochs | batch | "
        "options | from |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for plan in plans:
        c = plan.config
        options = ", ".join(f"{k}={v}" for k, v in c.rule_options.items()) or "defaults"
        origin = ", ".join(sorted(set(plan.origins.values()))) or "shared"
        rows.append(
            f"| {c.rule} | {c.lr:g} | {c.optimizer} | {c.momentum:g} | {c.weight_decay:g} | "
            f"{'-' if c.feedback_lr is None else f'{c.feedback_lr:g}'} | {c.epochs} | "
            f"{c.batch_size} | {options} | {origin} |"
        )
    sources = [f"- {p.config.rule}: {p.source}" for p in plans if p.source]
    return "\n".join(rows) + (
        "\n\nSources of the presets:\n" + "\n".join(sources) if sources else ""
    )


def summary_markdown(
    base: TrainConfig,
    seeds: int,
    records: Sequence[dict[str, Any]],
    plans,
    left_out: Sequence[tuple[str, str]],
    rows,
    context: dict[str, Any],
) -> str:
    """The whole of ``summary.md``."""
    from ngrad.analysis.statistics import format_statistics_table, statistics_footnote

    env = context["environment"]
    shared = {
        key: value
        for key, value in base.to_dict().items()
        if key
        in {"data", "model", "hidden", "activation", "init", "loss", "train_subset", "normalize"}
    }
    described = ", ".join(f"{key}={value}" for key, value in shared.items())
    parts = [
        f"# ngrad compare on {base.data}\n",
        f"{seeds} seed(s) (0..{seeds - 1}); {described}. Presets: {context['presets']}.\n",
        f"ngrad {env['ngrad']}, torch {env['torch']}, commit {env['commit']}; device "
        f"{env['device']}, {env['threads_per_run']} thread(s) per run, {env['parallel_runs']} "
        f"run(s) in parallel; {env['date']}.\n",
        "Seeds vary the initial weights, the order of the training data and every random draw of "
        "a rule (fixed random feedback, noise); the data split and the test images are the same "
        "for every seed, so rules are compared on the same images.\n",
        "## Statistics against backprop\n",
    ]
    if rows is None:
        parts.append("No statistics: backprop has no completed run with per-image results.\n")
    else:
        parts += [format_statistics_table(rows), "", statistics_footnote(), ""]
    parts += [
        "## Runs\n",
        format_table(records),
        "",
        "test acc: at the epoch of best validation accuracy (selection never sees the test set). "
        + TIME_NOTE
        + " angle: final update angle to BP per layer. status: completed, or diverged / failed / "
        "error (see each run's summary.json).\n",
        "## Settings per rule\n",
        _settings_table(plans),
        "",
    ]
    if left_out:
        parts.append("## Rules left out\n")
        parts += [f"- {name}: {reason}" for name, reason in left_out]
        parts.append("")
    return "\n".join(parts) + "\n"
