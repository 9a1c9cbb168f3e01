"""The figures of ``ngrad compare``, drawn to be printed.

- ``accuracy.png``: each rule's final test accuracy (at its best-validation epoch, as in the
  table): the mean over seeds as a dot with its Student-t interval, each seed as a faint point,
  rules grouped and coloured by family, backprop's mean as a reference line;
- ``learning_curves.png``: test accuracy over epochs, one panel per family with backprop in grey
  in each, the mean over seeds as a line and the range over seeds as a band;
- ``angles.png``: the angle between each rule's weight update and backprop's gradient over
  epochs, one panel per layer, the legend beside the panels.

A rule's family is the package its class lives in (``ngrad.rules.<family>``), so a new rule is
grouped without any list to update. Axes are fitted to the data; a rule far below the rest (one
that failed to learn) is marked at the edge with its value instead of squashing the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ngrad.analysis.statistics import mean_interval
from ngrad.errors import ConfigError
from ngrad.rules import available_rules, get_rule_class

if TYPE_CHECKING:
    from ngrad.analysis.statistics import RuleStatistics

__all__ = [
    "COMPARISON_FIGURES",
    "final_test_accuracy",
    "plot_angles",
    "plot_comparison",
    "plot_final_accuracy",
    "plot_learning_curves",
    "rule_family",
    "rule_styles",
]

COMPARISON_FIGURES = ("accuracy.png", "learning_curves.png", "angles.png")
REFERENCE_RULE = "bp"
OTHER_FAMILY = "other"
# Okabe-Ito colours (distinct for colour-blind readers and in greyscale print); black for backprop
FAMILY_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (6, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DPI = 150
READABLE_SPAN = 0.35  # accuracy range an axis shows whole; beyond it, far-off rules go to the edge

History = Sequence[Mapping[str, Any]]


def rule_family(name: str) -> str:
    """The family of registered rule ``name``: the package under ``ngrad.rules`` its class is
    defined in ("feedback_alignment", "energy_based", ...; "backprop" for backprop), or "other"
    for a rule defined elsewhere or not registered."""
    try:
        module = get_rule_class(name).__module__
    except ConfigError:
        return OTHER_FAMILY
    parts = module.split(".")
    if parts[:2] != ["ngrad", "rules"] or len(parts) < 3:
        return OTHER_FAMILY
    return parts[2]


def _families() -> list[str]:
    """Every family in registry order: the colour of a family is the same in every figure."""
    return list(dict.fromkeys(rule_family(name) for name in available_rules()))


def _family_label(family: str) -> str:
    return family.replace("_", " ")


def rule_styles(rules: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A matplotlib style per rule: the family's colour (black for backprop), and within a family
    a distinct line style and marker, in registry order."""
    families = [f for f in _families() if f != rule_family(REFERENCE_RULE)]
    order = {name: index for index, name in enumerate(available_rules())}
    styles: dict[str, dict[str, Any]] = {}
    within: dict[str, int] = {}
    for rule in sorted(rules, key=lambda name: (order.get(name, len(order)), name)):
        family = rule_family(rule)
        if family == rule_family(REFERENCE_RULE):
            colour = "black"
        elif family in families:
            colour = FAMILY_COLOURS[families.index(family) % len(FAMILY_COLOURS)]
        else:
            colour = "#777777"
        k = within[family] = within.get(family, -1) + 1
        styles[rule] = {
            "color": colour,
            "linestyle": LINE_STYLES[k % len(LINE_STYLES)],
            "marker": MARKERS[k % len(MARKERS)],
        }
    return {rule: styles[rule] for rule in rules}


def _grouped(rules: Sequence[str]) -> dict[str, list[str]]:
    """``rules`` grouped by family, families in registry order, rules in registry order."""
    order = {name: index for index, name in enumerate(available_rules())}
    families = [*_families(), OTHER_FAMILY]
    groups: dict[str, list[str]] = {}
    for rule in sorted(rules, key=lambda n: (families.index(rule_family(n)), order.get(n, 99), n)):
        groups.setdefault(rule_family(rule), []).append(rule)
    return groups


def final_test_accuracy(history: History) -> float | None:
    """Test accuracy at the epoch of best validation accuracy (the first such epoch), the number
    the comparison table reports; None for a history without one."""
    best, value = -np.inf, None
    for line in history:
        val, test = line.get("val_accuracy"), line.get("test_accuracy")
        if val is not None and test is not None and val > best:
            best, value = val, float(test)
    return value


def _robust_floor(means: Sequence[float], values: Sequence[float]) -> float:
    """Lowest value an accuracy axis shows. Everything while ``values`` span at most
    ``READABLE_SPAN``; beyond that, a rule far below the others (its mean more than four times the
    median-to-best spread of the ``means`` below the median) is drawn at the edge instead."""
    finite = [v for v in values if np.isfinite(v)]
    if max(finite) - min(finite) <= READABLE_SPAN:
        return -np.inf
    median, best = float(np.median(means)), float(np.max(means))
    return median - 4 * max(best - median, 0.01)


def _limits(values: Sequence[float], floor: float, pad: float) -> tuple[float, float]:
    shown = [v for v in values if np.isfinite(v) and v >= floor]
    low, high = min(shown), max(shown)
    margin = max((high - low) * 0.08, pad)
    return max(low - margin, floor, 0.0 if low >= 0 else -np.inf), min(high + margin, 1.0 + pad)


def plot_final_accuracy(
    accuracies: Mapping[str, Sequence[float]],
    path: Path,
    title: str,
    statistics: Sequence[RuleStatistics] | None = None,
    confidence: float = 0.95,
) -> Path:
    """``accuracies[rule]``: final test accuracy per seed. Dot = mean, bar = Student-t interval
    over seeds (none with one seed), faint points = seeds; with ``statistics``, rules that differ
    from backprop after Holm's correction are marked with *."""
    accuracies = {rule: [float(v) for v in values] for rule, values in accuracies.items() if values}
    groups = _grouped(list(accuracies))
    styles = rule_styles(list(accuracies))
    differs = {row.rule: row.significant for row in statistics or ()}
    intervals = {rule: mean_interval(values, confidence) for rule, values in accuracies.items()}
    means = [interval.mean for interval in intervals.values()]
    every = [v for values in accuracies.values() for v in values]
    every += [x for i in intervals.values() for x in (i.low, i.high) if np.isfinite(x)]
    floor = _robust_floor(means, every)
    left, right = _limits(every, floor, 0.002)

    count = len(accuracies) + len(groups) - 1
    figure, axis = plt.subplots(figsize=(7.2, 1.2 + 0.28 * count), layout="constrained")
    position, ticks, labels = 0, [], []
    for family, rules in groups.items():
        for rule in rules:
            interval, style = intervals[rule], styles[rule]
            mean = max(interval.mean, left)
            if np.isfinite(interval.low):
                axis.plot(
                    [max(interval.low, left), min(interval.high, right)],
                    [position] * 2,
                    color=style["color"],
                    lw=2,
                    solid_capstyle="butt",
                )
            seeds = np.clip(accuracies[rule], left, right)
            axis.plot(seeds, [position] * len(seeds), "|", color=style["color"], alpha=0.5, ms=7)
            axis.plot(mean, position, "o", color=style["color"], ms=6, zorder=3)
            if interval.mean < left:
                axis.annotate(
                    f"◀ {interval.mean:.3f}",
                    (left, position),
                    xytext=(8, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                )
            ticks.append(position)
            labels.append(rule + (" *" if differs.get(rule) else ""))
            position += 1
        axis.plot([], [], "o", color=styles[rules[0]]["color"], label=_family_label(family))
        position += 1  # a blank line between families
    if REFERENCE_RULE in intervals:
        axis.axvline(intervals[REFERENCE_RULE].mean, color="grey", lw=0.8, ls="--", zorder=0)
    axis.set_yticks(ticks, labels, fontsize=8)
    axis.set_ylim(position - 1, -1)
    axis.set_xlim(left, right)
    axis.grid(axis="x", color="0.9")
    axis.set_xlabel("test accuracy at the best-validation epoch")
    note = f"dot: mean over seeds; bar: {confidence:.0%} t-interval; ticks: seeds"
    if statistics is not None:
        note += f"\n*: differs from {REFERENCE_RULE} (paired test on the same test images, Holm)"
    figure.suptitle(title, fontsize=10)
    axis.set_title(note, fontsize=8)
    figure.legend(loc="outside right upper", fontsize=8, title="family", title_fontsize=8)
    return _save(figure, path)


def _curve(runs: Sequence[History], key: str, layer: int | None = None):
    """(epochs, mean, low, high) over the seeds: mean and range of ``key`` at each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for history in runs:
        for line in history:
            value = line.get(key)
            if layer is not None:
                value = value[layer] if value and layer < len(value) else None
            if value is not None:
                by_epoch.setdefault(line["epoch"], []).append(float(value))
    epochs = sorted(by_epoch)
    values = [by_epoch[e] for e in epochs]
    return (
        np.array(epochs),
        np.array([np.mean(v) for v in values]),
        np.array([min(v) for v in values]),
        np.array([max(v) for v in values]),
    )


def plot_learning_curves(
    histories: Mapping[str, Sequence[History]], path: Path, title: str
) -> Path | None:
    """Test accuracy per epoch, one panel per family (backprop in grey in each): line = mean
    over seeds, band = range over seeds. None (nothing written) without test accuracies."""
    curves = {rule: _curve(runs, "test_accuracy") for rule, runs in histories.items()}
    curves = {rule: curve for rule, curve in curves.items() if curve[0].size}
    if not curves:
        return None
    styles = rule_styles(list(curves))
    groups = _grouped(list(curves))
    reference = curves.get(REFERENCE_RULE)
    panels = [family for family, rules in groups.items() if rules != [REFERENCE_RULE]]
    panels = panels or list(groups)
    # The axis fits the trained epochs (epoch 0 is the untrained network, at chance) and leaves
    # out rules far below the others at the end, as plot_final_accuracy does.
    finals = [curve[1][-1] for curve in curves.values()]
    ends = [v for curve in curves.values() for part in curve[1:] for v in part[-1:]]
    trained = [v for c in curves.values() for part in c[1:] for v in part[c[0] > 0]] or ends
    low, high = _limits(trained, _robust_floor(finals, ends), 0.005)
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.6 * columns + 0.6, 2.9 * rows + 0.6),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for axis, family in zip(axes.flat, panels, strict=False):
        drawn = [(REFERENCE_RULE, "0.55")] if reference is not None else []
        drawn += [(rule, None) for rule in groups[family] if rule != REFERENCE_RULE]
        for rule, grey in drawn:
            epochs, mean, bottom, top = curves[rule]
            style = dict(styles[rule], color=grey or styles[rule]["color"])
            axis.fill_between(epochs, bottom, top, color=style["color"], alpha=0.15, lw=0)
            label = rule if mean[-1] >= low else f"{rule} (ends at {mean[-1]:.3f}, below)"
            axis.plot(epochs, mean, label=label, markevery=max(1, len(epochs) // 6), ms=4, **style)
        axis.set_title(_family_label(family), fontsize=9)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(color="0.92")
        axis.legend(fontsize=7, loc="lower right", framealpha=0.9)
    for index, axis in enumerate(axes.flat):
        if index >= len(panels):
            axis.set_visible(False)
        elif index + columns >= len(panels):  # nothing drawn below it: it shows the epochs
            axis.xaxis.set_tick_params(labelbottom=True)
    axes[0, 0].set_ylim(low, high)
    figure.supxlabel("epoch", fontsize=9)
    figure.supylabel("test accuracy", fontsize=9)
    note = "line: mean over seeds; band: range over seeds"
    if min(curve[2].min() for curve in curves.values()) < low:
        note += f"; axis starts at {low:.3f}, values below it are cut off"
    figure.suptitle(f"{title}\n{note}", fontsize=9)
    return _save(figure, path)


def plot_angles(histories: Mapping[str, Sequence[History]], path: Path, title: str) -> Path | None:
    """Angle between each rule's weight update and backprop's gradient over epochs (mean over
    seeds), one panel per layer, the legend beside the panels. None without angles."""
    layers = max(
        (
            len(line.get("angle_to_bp_deg") or [])
            for runs in histories.values()
            for h in runs
            for line in h
        ),
        default=0,
    )
    if not layers:
        return None
    rules = [rule for rule in histories if rule != REFERENCE_RULE]
    styles = rule_styles(rules)
    figure, axes = plt.subplots(
        1, layers, figsize=(3.3 * layers + 1.8, 3.4), squeeze=False, layout="constrained"
    )
    highest = 0.0
    for layer in range(layers):
        axis = axes[0, layer]
        for family_rules in _grouped(rules).values():
            for rule in family_rules:
                epochs, mean, _, _ = _curve(histories[rule], "angle_to_bp_deg", layer)
                if not epochs.size:
                    continue
                highest = max(highest, float(mean.max()))
                every = max(1, len(epochs) // 6)
                axis.plot(epochs, mean, label=rule, markevery=every, ms=4, lw=1.2, **styles[rule])
        axis.set_title(f"layer {layer + 1}", fontsize=9)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(color="0.92")
    top = min(180.0, highest * 1.08 + 1.0)
    for axis in axes[0]:
        axis.set_ylim(0, top)
        if top > 90:
            axis.axhline(90, color="grey", lw=0.8, ls="--")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for axis in axes[0, 1:]:  # a rule may have angles in later layers only
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        figure.legend(handles, labels, loc="outside right upper", fontsize=7, title="rule")
    figure.supxlabel("epoch", fontsize=9)
    axes[0, 0].set_ylabel("angle to BP gradient (degrees)", fontsize=9)
    figure.suptitle(f"{title}\nweight update vs backprop's gradient, mean over seeds", fontsize=9)
    return _save(figure, path)


def _budget(histories: Mapping[str, Sequence[History]]) -> str:
    epochs = max((len(h) for runs in histories.values() for h in runs), default=0)
    seeds = max((len(runs) for runs in histories.values()), default=0)
    return f"{epochs} epoch{'s' * (epochs != 1)}, {seeds} seed{'s' * (seeds != 1)}"


def plot_comparison(
    histories: Mapping[str, Sequence[History]],
    out_dir: Path,
    dataset: str,
    *,
    model: str | None = None,
    budget: str | None = None,
    statistics: Sequence[RuleStatistics] | None = None,
    figures: Sequence[str] = COMPARISON_FIGURES,
) -> list[Path]:
    """Write ``figures`` (by default all of ``COMPARISON_FIGURES``) into ``out_dir``;
    ``histories[rule]`` holds one metrics history per seed. ``model`` and ``budget`` (e.g.
    "20 epochs, 3 seeds"; derived from the histories when None) go into the titles; with
    ``statistics`` (from ``compare_to_reference``) the accuracy figure marks the rules that
    differ from backprop."""
    unknown = set(figures) - set(COMPARISON_FIGURES)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}; choose from {COMPARISON_FIGURES}")
    histories = {rule: [h for h in runs if h] for rule, runs in histories.items()}
    histories = {rule: runs for rule, runs in histories.items() if runs}
    out_dir = Path(out_dir)
    title = ", ".join(part for part in (dataset, model, budget or _budget(histories)) if part)
    written: list[Path | None] = []
    if "accuracy.png" in figures:
        finals = {
            rule: [a for a in map(final_test_accuracy, runs) if a is not None]
            for rule, runs in histories.items()
        }
        if any(finals.values()):
            written.append(plot_final_accuracy(finals, out_dir / "accuracy.png", title, statistics))
    if "learning_curves.png" in figures:
        written.append(plot_learning_curves(histories, out_dir / "learning_curves.png", title))
    if "angles.png" in figures:
        written.append(plot_angles(histories, out_dir / "angles.png", title))
    return [path for path in written if path is not None]


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
