"""The report of ``ngrad similarity``: per-rule aggregates, accuracy-vs-similarity correlations, and
their text forms (markdown table, CSV, correlation lines) that ``ngrad similarity`` prints and
writes beside ``results.json``.

Everything here works on the results dictionary :func:`ngrad.analysis.similarity_runs.compare_runs`
returns (what ``results.json`` holds); the figures are drawn by :mod:`ngrad.plots.similarity`.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = [
    "INPUT_ROW",
    "LABELS",
    "MEASURES",
    "OUTPUT_FILES",
    "accuracy_correlations",
    "baseline_rows",
    "ceiling_note",
    "format_correlations",
    "format_number",
    "format_similarity_table",
    "markdown_report",
    "mean_std",
    "measure_value",
    "print_report",
    "similarity_csv",
    "table_rows",
]

MEASURES = ("cka", "rsa", "predictivity")
INPUT_ROW = "input (pixels)"
LABELS = {"cka": "linear CKA", "rsa": "RSA (Spearman)", "predictivity": "neural predictivity"}
OUTPUT_FILES = (
    "results.json",
    "similarity.md",
    "similarity.csv",
    "similarity_heatmap.png",
    "accuracy_vs_similarity.png",
)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation of the finite values (None where undefined)."""
    present = [float(v) for v in values if _finite(v)]
    mean = statistics.fmean(present) if present else None
    return {"mean": mean, "std": statistics.stdev(present) if len(present) > 1 else None}


def measure_value(row: dict[str, Any], measure: str) -> float | None:
    """A layer row's value of ``measure`` (normalised predictivity for "predictivity")."""
    if measure == "predictivity":
        value = (row.get("predictivity") or {}).get("normalized")
    else:
        value = row.get(measure)
    return value if _finite(value) else None


def _present_measures(neural: bool) -> tuple[str, ...]:
    return MEASURES if neural else MEASURES[:2]


def table_rows(records, layers, neural: bool) -> list[dict[str, Any]]:
    """Per rule and layer: mean and std over seeds of each measure."""
    rows = []
    for rule in dict.fromkeys(r["rule"] for r in records):
        mine = [r for r in records if r["rule"] == rule]
        accuracy = mean_std([r["test_accuracy"] for r in mine])
        for position, layer in enumerate(layers):
            row = {"rule": rule, "layer": layer, "runs": len(mine), "test_accuracy": accuracy}
            for measure in _present_measures(neural):
                row[measure] = mean_std(
                    [measure_value(r["layers"][position], measure) for r in mine]
                )
            rows.append(row)
    return rows


def baseline_rows(baseline, references: int, neural) -> list[dict[str, Any]]:
    """Table rows of the input pixels (no accuracy); their predictivity is the recording's
    pixels' own, the same in every layer column."""
    rows = []
    for row in baseline:
        row = {"rule": INPUT_ROW, "runs": references, "test_accuracy": mean_std([])} | row
        if neural is not None:
            row["predictivity"] = mean_std([neural["pixels"].get("normalized")])
        rows.append(row)
    return rows


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any]:
    from scipy import stats

    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if _finite(x) and _finite(y)]
    result: dict[str, Any] = {"n": len(pairs), "pearson_r": None, "spearman_rho": None}
    if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
        x, y = zip(*pairs, strict=True)
        result["pearson_r"] = float(stats.pearsonr(x, y).statistic)
        result["spearman_rho"] = float(stats.spearmanr(x, y).statistic)
    return result


def accuracy_correlations(records, summary_layer: int) -> dict[str, Any]:
    """Test accuracy against each measure at ``summary_layer``: across runs and across the
    rules' means."""
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
            (statistics.fmean(p[0] for p in ps), mean_std([p[1] for p in ps])["mean"])
            for ps in by_rule.values()
        ]
        correlations[measure] = {
            "runs": _correlation([p[0] for p in points], [p[1] for p in points]),
            "rule_means": _correlation([m[0] for m in means], [m[1] for m in means]),
        }
    return correlations


# ------------------------------------------------------------------------------ text ---


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


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


def ceiling_note(results: dict[str, Any]) -> str | None:
    """A line saying why predictivity is blank when the recording's ceiling is not positive."""
    neural = results.get("neural")
    if neural is None or (_finite(neural["ceiling"]) and neural["ceiling"] > 0):
        return None
    return (
        f"the recording's split-half ceiling is {format_number(neural['ceiling'])} (<= 0: its "
        "responses are dominated by trial-to-trial noise), so predictivity cannot be normalised; "
        "results.json holds the raw held-out r of every layer"
    )


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
    note = ceiling_note(results)
    return [*lines, note] if note else lines


def similarity_csv(results: dict[str, Any]) -> str:
    """One row per run and layer."""
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


def markdown_report(results: dict[str, Any]) -> str:
    """similarity.md: the settings, the table and the correlation lines."""
    text = [f"# ngrad similarity to {results['reference']} on {results['dataset']}", ""]
    text += [
        f"Stimuli: the first {results['stimuli']['first']} test images. Mean ± std over runs "
        "(seeds). predictivity: Brain-Score's median held-out r / split-half ceiling.",
        "",
        format_similarity_table(results),
        "",
        *format_correlations(results),
    ]
    return "\n".join(text) + "\n"


def print_report(results: dict[str, Any]) -> None:
    """The table, the accuracy-vs-similarity correlations and any skipped runs, to stdout."""
    print(format_similarity_table(results))
    print()
    for line in format_correlations(results):
        print(line)
    for skipped in results["skipped"]:
        print(f"skipped {skipped['run']}: {skipped['reason']}")
