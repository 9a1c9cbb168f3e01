"""Train several rules on the same model, data and seeds, and tabulate them against backprop.

Writes into the output directory:
- ``runs/<rule>-seed<k>/``: each run's own outputs (as ``ngrad train`` writes them);
- ``results.json``: one record per rule and seed (rule, dataset, seed, status and its reason,
  test_accuracy, best_val_accuracy, epoch_time_s, time_ratio_to_bp, final per-layer angles to BP);
- ``summary.md``: a table of mean +- std over seeds; ``accuracy.png`` and ``angles.png``.

``test_accuracy`` is measured at the epoch of best validation accuracy (selection never sees the
test set). ``time_ratio_to_bp`` divides a run's mean epoch time by backprop's with the same seed;
backprop is therefore always trained, first. Rules that cannot train the model (a rule's
``unsupported_reason``, or a rule that does not take the model's type) are left out, each with its
reason printed; if backprop itself cannot, the comparison is refused.

A comparison can be continued: running the same command again keeps the runs that finished,
resumes the interrupted ones from their checkpoints and trains the missing ones. A directory that
holds another comparison (runs with other settings) is refused unless ``overwrite`` is set.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ngrad.data import load_dataset
from ngrad.errors import ConfigError, DivergenceError, NgradError
from ngrad.rules import available_rules, get_rule_class
from ngrad.train import integrity
from ngrad.train.build import build_network, unsupported_reason
from ngrad.train.checkpoint import StorageError, atomic_write_text, to_json
from ngrad.train.config import TrainConfig, make_config
from ngrad.train.loop import prepare_output_dir, run_training
from ngrad.train.runs import (
    LOCK_NAME,
    RUN_FILES,
    RunLock,
    is_temporary,
    load_run_config,
    note,
    read_metrics,
    remove_files,
)
from ngrad.train.runs import warn as _warn

__all__ = ["choose_rules", "compare_rules", "format_table"]

REFERENCE_RULE = "bp"
COMPARE_FILES = ("results.json", "summary.md", "accuracy.png", "angles.png")
CONTINUE = "re-run the same `ngrad compare` command to continue"


def _record(summary: dict[str, Any], reference_time: float | None) -> dict[str, Any]:
    epoch_time = summary.get("epoch_time_s")
    return {
        "rule": summary["rule"],
        "model": summary.get("model", "mlp"),
        "dataset": summary["dataset"],
        "seed": summary["seed"],
        "status": summary["status"],
        "status_reason": summary.get("status_reason"),
        "test_accuracy": summary.get("test_accuracy"),
        "best_val_accuracy": summary.get("best_val_accuracy"),
        "best_epoch": summary.get("best_epoch"),
        "epoch_time_s": epoch_time,
        "time_ratio_to_bp": (
            epoch_time / reference_time if epoch_time and reference_time else None
        ),
        "final_angle_to_bp_deg": summary.get("final_angle_to_bp_deg"),
        "final_weight_alignment": summary.get("final_weight_alignment"),
    }


def _mean_std(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return f"{present[0]:.3f}"
    return f"{statistics.mean(present):.3f} ± {statistics.stdev(present):.3f}"


def _statuses(records: Sequence[dict[str, Any]]) -> str:
    counts = Counter(record["status"] for record in records)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{count} {status}" for status, count in counts.items())


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per rule, mean ± std over seeds, and the runs' statuses."""
    rules = list(dict.fromkeys(record["rule"] for record in records))
    layers = max((len(r["final_angle_to_bp_deg"] or []) for r in records), default=0)
    header = ["rule", "seeds", "test acc", "best val acc", "time / BP"]
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
            _mean_std([r["time_ratio_to_bp"] for r in mine]),
        ]
        for layer in range(layers):
            angles = [(r["final_angle_to_bp_deg"] or [None] * layers)[layer] for r in mine]
            cells.append(_mean_std(angles).replace(".000", ".0"))
        cells.append(_statuses(mine))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def choose_rules(base: TrainConfig, rules: Sequence[str] | None) -> list[str]:
    """The rules to compare, backprop first: ``rules`` (each named once), or with None every
    registered rule; those that cannot train ``base``'s model are left out, with the reason
    printed (ConfigError if backprop cannot)."""
    if rules is None:
        chosen = available_rules()
    else:
        chosen = list(rules)
        if not chosen:
            raise ConfigError("--rules names no rule; give comma-separated names, e.g. fa,dfa")
        repeated = [name for name, count in Counter(chosen).items() if count > 1]
        if repeated:
            raise ConfigError(
                f"--rules names {repeated[0]!r} more than once; each rule runs once per seed "
                "(use --seeds for repetitions)"
            )
        for name in chosen:
            get_rule_class(name)  # unknown names fail before any training
    ordered = [REFERENCE_RULE] + [name for name in chosen if name != REFERENCE_RULE]
    with torch.random.fork_rng(devices=[]):  # the probe's weights draw no run's random numbers
        probe = build_network(base, load_dataset(base.data, base.data_dir, base.download))
    kept = []
    for name in ordered:
        reason = unsupported_reason(name, probe)
        if reason is None:
            kept.append(name)
        elif name == REFERENCE_RULE:
            raise ConfigError(
                f"ngrad compare measures every rule against backprop, and rule {name!r} cannot "
                f"train model {base.model!r}: {reason}"
            )
        else:
            note(f"leaving out rule {name!r}: it cannot train model {base.model!r}: {reason}")
    return kept


def _plan(config: TrainConfig, run_dir: Path, compare_dir: Path) -> str:
    """What to do with one run's directory: "new", "done", "resume" or "restart"; NgradError if it
    holds a run with other settings (another comparison)."""
    present = [p for p in run_dir.iterdir() if p.name != LOCK_NAME] if run_dir.is_dir() else []
    if not present:
        return "new"
    where = str(compare_dir)
    refuse = (
        f"{where!r} holds another comparison ({run_dir.name}: {{}}); re-run the command that made "
        "it, choose another --out, or pass --overwrite to replace it"
    )
    try:
        saved = load_run_config(run_dir)
    except NgradError as error:
        raise NgradError(refuse.format(error)) from None
    difference = integrity.identity_difference(integrity.identity(saved), config)
    if difference:
        key, there, here = difference
        raise NgradError(refuse.format(f"{key} {there!r} there, {here!r} now"))
    if saved.epochs > config.epochs:
        raise NgradError(refuse.format(f"{saved.epochs} epochs there, {config.epochs} now"))
    try:
        status = json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "diverged" or (
        status in ("completed", "failed") and saved.epochs == config.epochs
    ):
        return "done"
    return "resume" if (run_dir / "checkpoint.pt").is_file() else "restart"


def _finished(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and history of a run finished in an earlier invocation."""
    summary = json.loads((run_dir / "summary.json").read_text())
    try:
        history = read_metrics(run_dir / "metrics.jsonl", summary["epochs_completed"])
    except (NgradError, KeyError, TypeError) as error:
        _warn(f"{run_dir.name}: its history cannot be plotted ({error})")
        history = []
    return summary, history


def _clear(out: Path) -> None:
    """Remove an earlier comparison's outputs from ``out`` (for ``overwrite``)."""
    remove_files(out, COMPARE_FILES)
    runs = out / "runs"
    if runs.is_dir():
        for run_dir in runs.iterdir():
            if run_dir.is_dir():
                remove_files(run_dir, RUN_FILES)


def _check_directory(out: Path) -> None:
    known = {*COMPARE_FILES, "runs", LOCK_NAME}
    strangers = [p.name for p in out.iterdir() if p.name not in known and not is_temporary(p)]
    if strangers:
        raise NgradError(
            f"{str(out)!r} holds files that no comparison writes ({', '.join(strangers[:4])}): "
            "choose another --out, or pass --overwrite to replace the comparison files in it"
        )


def compare_rules(
    base: TrainConfig,
    rules: Sequence[str] | None,
    seeds: int,
    out_dir: str | Path,
    progress: bool = True,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Train each rule for each seed (0..seeds-1) with ``base``'s settings; returns the records.
    Runs already finished in ``out_dir`` by the same comparison are kept, interrupted ones
    resumed; ``overwrite`` replaces a comparison with other settings."""
    out = Path(out_dir)
    ordered = choose_rules(base, rules)
    jobs = []
    for seed in range(seeds):
        for name in ordered:
            values = base.to_dict() | {"rule": name, "seed": seed}
            if name != base.rule:
                values["rule_options"] = {}
            jobs.append((make_config(values), out / "runs" / f"{name}-seed{seed}"))
    prepare_output_dir(out)
    with RunLock(out):
        if overwrite:
            _clear(out)
        else:
            _check_directory(out)
        plans = [_plan(config, run_dir, out) for config, run_dir in jobs]  # before any write
        return _compare(base, seeds, out, jobs, plans, progress)


def _compare(base, seeds, out, jobs, plans, progress) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    histories: dict[str, list[list[dict[str, Any]]]] = {}
    reference_time: dict[int, float | None] = {}
    with tqdm(total=len(jobs), desc="compare", unit="run", disable=not progress) as bar:
        for (config, run_dir), plan in zip(jobs, plans, strict=True):
            bar.set_postfix(rule=config.rule, seed=config.seed)
            try:
                summary, history = _one_run(config, run_dir, plan, progress)
            except KeyboardInterrupt:
                atomic_write_text(out / "results.json", to_json(records))
                raise KeyboardInterrupt(
                    f"{CONTINUE}: finished runs are kept, the interrupted one resumes"
                ) from None
            except StorageError as error:
                hint = f"free some space, then {CONTINUE}"
                raise StorageError(error.path, error.reason, hint) from None
            if config.rule == REFERENCE_RULE:
                reference_time[config.seed] = summary.get("epoch_time_s")
            records.append(_record(summary, reference_time.get(config.seed)))
            histories.setdefault(config.rule, []).append(history)
            atomic_write_text(out / "results.json", to_json(records))
            bar.update(1)
    table = format_table(records)
    atomic_write_text(out / "summary.md", _summary_markdown(base, seeds, table))
    from ngrad.plots.training import plot_comparison

    plot_comparison({k: v for k, v in histories.items() if any(v)}, out, base.data)
    return records


def _one_run(config: TrainConfig, run_dir: Path, plan: str, progress: bool):
    if plan == "done":
        return _finished(run_dir)
    try:
        if plan == "resume":
            saved = load_run_config(run_dir)
            resumed = dataclasses.replace(saved, epochs=config.epochs)
            result = run_training(resumed, run_dir, resume=True, progress=progress)
        else:
            result = run_training(config, run_dir, overwrite=True, progress=progress)
        return result.summary, result.history
    except (KeyboardInterrupt, StorageError):
        raise
    except DivergenceError as error:
        try:
            return _finished(run_dir)  # its summary.json says where, with the numbers so far
        except (OSError, ValueError, KeyError):
            return _failed_summary(config, error) | {"status": "diverged"}, []
    except Exception as error:  # one failing rule must not lose the others' results
        return _failed_summary(config, error), []


def _failed_summary(config: TrainConfig, error: Exception) -> dict[str, Any]:
    return {
        "status": "error",
        "status_reason": str(error) or type(error).__name__,
        "rule": config.rule,
        "model": config.model,
        "dataset": config.data,
        "seed": config.seed,
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
        "by backprop's (same seed). angle: final update angle to BP per layer. status: "
        "completed, or diverged / failed / error (see each run's summary.json).\n\n"
        f"{table}\n"
    )
