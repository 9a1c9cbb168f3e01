"""Train several rules on the same network, data and seeds, and tabulate them against backprop.

Writes into the output directory:
- ``runs/<rule>-seed<k>/``: each run's own outputs (as ``ngrad train`` writes them);
- ``results.json``: one record per rule and seed (rule, dataset, seed, test_accuracy,
  best_val_accuracy, epoch_time_s, time_ratio_to_bp, final per-layer angles to BP);
- ``summary.md``: a table of mean +- std over seeds; ``accuracy.png`` and ``angles.png``.

``test_accuracy`` is measured at the epoch of best validation accuracy (selection never sees the
test set). ``time_ratio_to_bp`` divides a run's mean epoch time by backprop's with the same seed,
in the same invocation; backprop is therefore always trained, first.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ngrad.data import load_dataset
from ngrad.rules import available_rules, get_rule_class
from ngrad.train.checkpoint import atomic_write_text, to_json
from ngrad.train.config import TrainConfig, make_config
from ngrad.train.loop import build_network, prepare_output_dir, run_training

__all__ = ["compare_rules", "format_table"]

REFERENCE_RULE = "bp"


def _record(summary: dict[str, Any], reference_time: float | None) -> dict[str, Any]:
    epoch_time = summary["epoch_time_s"]
    return {
        "rule": summary["rule"],
        "dataset": summary["dataset"],
        "seed": summary["seed"],
        "status": summary["status"],
        "test_accuracy": summary["test_accuracy"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "best_epoch": summary["best_epoch"],
        "epoch_time_s": epoch_time,
        "time_ratio_to_bp": (
            epoch_time / reference_time if epoch_time and reference_time else None
        ),
        "final_angle_to_bp_deg": summary["final_angle_to_bp_deg"],
        "final_weight_alignment": summary["final_weight_alignment"],
    }


def _mean_std(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:.3f}"
    return f"{statistics.mean(present):.3f} ± {statistics.stdev(present):.3f}"


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per rule, mean ± std over seeds."""
    rules = list(dict.fromkeys(record["rule"] for record in records))
    layers = max((len(r["final_angle_to_bp_deg"] or []) for r in records), default=0)
    header = ["rule", "seeds", "test acc", "best val acc", "time / BP"]
    header += [f"angle L{layer + 1} (deg)" for layer in range(layers)]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rule in rules:
        mine = [r for r in records if r["rule"] == rule]
        cells = [
            rule,
            str(len(mine)),
            _mean_std([r["test_accuracy"] for r in mine]),
            _mean_std([r["best_val_accuracy"] for r in mine]),
            _mean_std([r["time_ratio_to_bp"] for r in mine]),
        ]
        for layer in range(layers):
            angles = [(r["final_angle_to_bp_deg"] or [None] * layers)[layer] for r in mine]
            cells.append(_mean_std(angles).replace(".000", ".0"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def compare_rules(
    base: TrainConfig,
    rules: Sequence[str] | None,
    seeds: int,
    out_dir: str | Path,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train each rule for each seed (0..seeds-1) with ``base``'s settings; returns the records."""
    out = Path(out_dir)
    prepare_output_dir(out)
    if rules:
        chosen = list(rules)
        for name in chosen:
            get_rule_class(name)  # unknown names fail before any training
    else:  # every registered rule that can train this network
        probe = build_network(base, load_dataset(base.data, base.data_dir, base.download))
        chosen = [name for name in available_rules() if get_rule_class(name).supports(probe)]
    ordered = [REFERENCE_RULE] + [name for name in chosen if name != REFERENCE_RULE]
    records: list[dict[str, Any]] = []
    histories: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in ordered}
    jobs = [(seed, name) for seed in range(seeds) for name in ordered]
    reference_time: dict[int, float | None] = {}
    with tqdm(jobs, desc="compare", unit="run", disable=not progress) as bar:
        for seed, name in bar:
            bar.set_postfix(rule=name, seed=seed)
            values = base.to_dict() | {"rule": name, "seed": seed}
            if name != base.rule:
                values["rule_options"] = {}
            config = make_config(values)
            run_dir = out / "runs" / f"{name}-seed{seed}"
            try:
                result = run_training(config, run_dir, progress=False)
                summary, history = result.summary, result.history
            except Exception as error:  # one failing rule must not lose the others' results
                summary = _failed_summary(config, error)
                history = []
            if name == REFERENCE_RULE:
                reference_time[seed] = summary["epoch_time_s"]
            records.append(_record(summary, reference_time.get(seed)))
            histories[name].append(history)
            atomic_write_text(out / "results.json", to_json(records))
    table = format_table(records)
    atomic_write_text(out / "summary.md", _summary_markdown(base, seeds, table))
    from ngrad.plots.training import plot_comparison

    plot_comparison({k: v for k, v in histories.items() if v}, out, base.data)
    return records


def _failed_summary(config: TrainConfig, error: Exception) -> dict[str, Any]:
    return {
        "status": f"failed: {error}",
        "rule": config.rule,
        "dataset": config.data,
        "seed": config.seed,
        "test_accuracy": None,
        "best_val_accuracy": None,
        "best_epoch": None,
        "epoch_time_s": None,
        "final_angle_to_bp_deg": None,
        "final_weight_alignment": None,
    }


def _summary_markdown(base: TrainConfig, seeds: int, table: str) -> str:
    settings = {
        key: value
        for key, value in dataclasses.asdict(base).items()
        if key not in {"rule", "seed", "rule_options", "data_dir", "download", "tensorboard"}
    }
    described = ", ".join(f"{key}={value}" for key, value in settings.items())
    return (
        f"# ngrad compare on {base.data}\n\n{seeds} seed(s); {described}.\n\n"
        "test acc: at the epoch of best validation accuracy. time / BP: mean epoch time divided "
        "by backprop's (same seed, same invocation). angle: final update angle to BP per layer.\n\n"
        f"{table}\n"
    )
