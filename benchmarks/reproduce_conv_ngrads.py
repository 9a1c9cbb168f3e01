"""Activity-difference rules on a VGG-style conv net: BP, DTP, DDTP, L-DRL, EP, CHL and PC on
Fashion-MNIST.

    python benchmarks/reproduce_conv_ngrads.py [--epochs 20] [--train-subset 0] [--seeds 0]
        [--channels 128,256,512,512] [--rules bp,ldrl,...] [--lr RULE=VALUE ...] [--out DIR]
        [--lr-schedule none|cosine]
    python benchmarks/reproduce_conv_ngrads.py --select-lr [--lr-grid 0.005,0.02,0.08]
        [--extend 2] [--refine] [--select-epochs 2] [--select-subset 5000] [--select-val 2000]
        [same settings]

Recommended on 2 CPU cores (two processes of one thread each; CPU time measured in the lr
selection's trials, docs/target_propagation.md, *Conv nets and depth*: about 58 minutes for the
first process, 43 for the second)::

    S="--channels 16,32,64,128 --train-subset 20000 --out results/conv_ngrads"
    OMP_NUM_THREADS=1 python benchmarks/reproduce_conv_ngrads.py $S --select-lr   # ~35 min
    OMP_NUM_THREADS=1 python benchmarks/reproduce_conv_ngrads.py $S --epochs 5 \
        --rules ep,chl &
    OMP_NUM_THREADS=1 python benchmarks/reproduce_conv_ngrads.py $S --epochs 5 \
        --rules ep-one-sided,pc,bp,dtp,ddtp,ldrl
    wait; OMP_NUM_THREADS=1 python benchmarks/reproduce_conv_ngrads.py $S --epochs 5  # table

(the last command only reads the finished runs and draws their test error by epoch,
``--figure``, by default ``<out>/conv_ngrads.png``; the selection does not depend on
``--train-subset`` or ``--epochs``, so one selection serves any main budget). EP, its one-sided
variant and CHL cost about 20x BP per epoch here, more than half of it the free-phase relaxation
that evaluates the 15,000 validation and test images every epoch; they set the wall time.

Every row trains the same network with the same budget: ``ngrad.models`` ``vgg`` with
``--activation`` units (conv 3x3 -> f -> 2x2 max-pool blocks, one per ``--channels`` entry, then a
linear classifier; the default widths make a VGG-5-sized net: four conv blocks and one dense layer;
16,32,64,128 is the same shape, narrower), inputs in [0, 1], SGD with momentum 0.9, batch 128,
cross-entropy. ReLU by default; ``--activation hard_sigmoid`` is Laborieux et al.'s bounded unit
clip(a/2, 0, 1), on which the energy-based rules' relaxations cannot run away. With it, torch's
default initialisation (``--init pytorch``) shrinks the signal by about 0.3 per block (slope 1/2,
weights of gain 1/sqrt(3)) and BP stays at chance after 80 steps at every lr from 0.005 to 0.32;
``--init kaiming`` (zero biases) trains (74 % validation accuracy after 2 epochs on 5,000 images).
Each rule keeps its own defaults (docs/target_propagation.md, docs/energy_based.md) except L-DRL,
which trains its feedback on Ernoult et al.'s kind of schedule (``LDRL_SCHEDULE``: their beta,
several noisy feedback iterations per batch, steps that let the feedback learn within a few dozen
batches; one value for every layer where they set one per layer): at ngrad's defaults (one
iteration, beta = 0.01, a small feedback rate) the random initial feedback sends targets to the
lower conv layers whose updates are 10-50x BP's and at right angles to it, and the net diverges
(docs/target_propagation.md). ``ep-one-sided`` is EP with ``nudging=one_sided`` (+beta against the
free state) beside the default symmetric nudging (+-beta). Test error is taken at the epoch of best
accuracy on 5,000 held-out training images; several seeds are averaged.

Learning rates, per variant, first found wins: ``--lr VARIANT=VALUE``; the choice of
``--select-lr`` (read from ``--lr-file``, by default ``<out>/lr_selection.json``); else 0.05.
``--select-lr`` trains every variant at each lr of ``--lr-grid`` for ``--select-epochs`` epochs on
the first ``--select-subset`` training images (seed: the first of ``--seeds``), and one grid
step further while the best lr is at an end of those tried (``--extend`` times), then (``--refine``)
half a grid step either side of the best (x0.5 and x2 on the default grid), and keeps the lr
of the best accuracy on the first ``--select-val`` held-out training images (the validation
split; the test split is never evaluated) after the last of those epochs (0 for a run that
diverged), the smaller lr on a tie. The table names each row's lr
and where it came from (``val``; ``val, edge``: the best lr was still at an end of those tried).
The trials are kept by lr: a wider ``--lr-grid`` runs only its new rates.

The papers' claims the table checks, with their budgets:

- L-DRL within about 1 point of BP (Ernoult et al. 2022, CIFAR-10 SimpleVGG, 90 epochs; DTP and
  DDTP from the same code base and budget);
- symmetric EP within about 1 point of BP and clearly better than one-sided EP (Laborieux et al.
  2021, conv EP on CIFAR-10, 11.7 % error, 120 epochs);
- PC within about 1 point of BP on a VGG-5-sized net (Pinchetti et al. 2024, PCX VGG-5 on
  CIFAR-10, 88.8 % against BP 90.0 %, 50 epochs).

Differences kept on purpose: Fashion-MNIST instead of CIFAR-10 (the data reachable offline), one
optimiser for every rule, with one learning rate per rule chosen from one grid, instead of each
paper's tuned schedule (Ernoult et al.'s per-layer feedback settings, Laborieux et al.'s
per-layer rates, PCX's AdamW; ``--lr-schedule cosine`` anneals every rule's rate to 0 over the
run, the decay the three papers use), and each rule's ngrad defaults (EP and CHL:
feedback strength gamma = 0.25, not the plain Hopfield energy). A run far short of the papers'
epochs shows the machinery and the early gap, not a verdict on the claims; the table says how far
short it stopped.

Every run is resumable: a directory holding a run continues it up to ``--epochs`` (runs live in
``<out>/<variant>/lr<lr>/seed<seed>``; a directory whose run has other settings is refused), and
``--select-lr`` skips the trials its file already holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _common import (
    Curve,
    LrSelection,
    check_saved_settings,
    chosen_rates,
    default_data_dir,
    fmt,
    mean_curve,
    parse_lr_overrides,
    plot_error_curves,
    selection_lines,
    test_error_curve,
    train_to,
    validation_score,
)

from ngrad.errors import NgradError
from ngrad.rules import REGISTRY

# Ernoult et al. 2022's SimpleVGG schedule (scalingDTP: beta 0.7; 20-55 feedback iterations, noise
# 0.08-0.4 and SGD-momentum feedback lrs 1e-4 to 0.18 per layer), as one value for every layer;
# feedback_step 0.1 is a plain-SGD step on ngrad's L-DRL (curvature <= 1, so stable), of the order
# of their output layer's 0.18 momentum lr times 2 s^2 / (1 - 0.9)
LDRL_SCHEDULE = {"target_step": 0.7, "feedback_iterations": 10, "noise": 0.2, "feedback_step": 0.1}
# label -> (rule, rule options, published budget in epochs, source of the budget)
VARIANTS: dict[str, tuple[str, dict, int | None, str]] = {
    "bp": ("bp", {}, None, "yardstick"),
    "dtp": ("dtp", {}, 90, "Ernoult et al. 2022"),
    "ddtp": ("ddtp", {}, 90, "Ernoult et al. 2022"),
    "ldrl": ("ldrl", LDRL_SCHEDULE, 90, "Ernoult et al. 2022"),
    "ep": ("ep", {"nudging": "symmetric"}, 120, "Laborieux et al. 2021"),
    "ep-one-sided": ("ep", {"nudging": "one_sided"}, 120, "Laborieux et al. 2021"),
    "chl": ("chl", {}, None, "no conv CHL number"),
    "pc": ("pc", {}, 50, "Pinchetti et al. 2024"),
}
# (label, compared with, allowed gap in points, claim)
TARGETS = [
    ("ldrl", "bp", 1.0, "L-DRL within 1 point of BP"),
    ("ep", "bp", 1.0, "symmetric EP within 1 point of BP"),
    ("ep", "ep-one-sided", 0.0, "symmetric EP better than one-sided EP"),
    ("pc", "bp", 1.0, "PC within 1 point of BP"),
]
SETTINGS = {"batch_size": 128, "optimizer": "sgd", "momentum": 0.9}
DEFAULT_LR = 0.05


def settings(label: str, seed: int, lr: float, args: argparse.Namespace, **budget) -> dict:
    rule, options, _, _ = VARIANTS[label]
    return (
        SETTINGS
        | {
            "rule": rule,
            "lr": lr,
            "lr_schedule": args.lr_schedule,
            "data": "fashion-mnist",
            "data_dir": args.data_dir,
            "model": "vgg",
            "model_options": {
                "channels": args.channels,
                "activation": args.activation,
                "init": args.init,
            },
            "epochs": args.epochs,
            "train_subset": args.train_subset,
            "seed": seed,
            "threads": 1,
            "diagnostics_samples": 0,
            "rule_options": dict(options),
        }
        | budget
    )


def selection(args: argparse.Namespace) -> LrSelection:
    """The lr-selection file of these settings (see the module's docstring)."""
    setting = {
        "channels": args.channels,
        "activation": args.activation,
        "init": args.init,
        "epochs": args.select_epochs,
        "train_subset": args.select_subset,
        "val_images": args.select_val,
        "seed": args.seeds[0],
    } | SETTINGS
    if args.lr_schedule != "none":  # (files made before the option hold no schedule)
        setting["lr_schedule"] = args.lr_schedule
    options = {label: variant[1] for label, variant in VARIANTS.items()}
    return LrSelection(Path(args.lr_file), setting, options)


def select_lr(labels: list[str], args: argparse.Namespace) -> None:
    """Score each variant on validation accuracy at every lr of the grid (and beyond it, where
    the best lr is at an end); print the choices."""
    chooser = selection(args)

    def trial(label: str, lr: float) -> dict:
        budget = {"epochs": args.select_epochs, "train_subset": args.select_subset}
        values = settings(label, args.seeds[0], lr, args, **budget)
        score = validation_score(values, args.select_epochs, args.select_val)
        print(json.dumps({"variant": label, "lr": lr} | score), flush=True)
        return score

    for label in labels:
        run = lambda lr, n=label: trial(n, lr)  # noqa: E731
        chooser.select(label, args.lr_grid, run, args.extend, args.refine)
    print(
        f"\nlr chosen on the first {args.select_val} validation images after "
        f"{args.select_epochs} epochs on {args.select_subset} training images (grid "
        f"{','.join(map(str, args.lr_grid))}, extended up to {args.extend} step(s) past an end "
        f"that won{', refined by half steps' if args.refine else ''}); written to {args.lr_file}"
    )
    print("\n".join(selection_lines(chooser, labels)))


def learning_rates(labels: list[str], args: argparse.Namespace) -> dict[str, tuple[float, str]]:
    """{variant: (lr, where it came from)}: --lr, else the selection file, else the default."""
    return chosen_rates(labels, args.lr, selection(args), lambda _: DEFAULT_LR, "default")


def train_or_resume(label: str, seed: int, lr: float, args: argparse.Namespace) -> dict:
    """Train ``label`` with ``seed`` to ``args.epochs`` epochs, continuing a saved run. A run that
    diverged is not retrained: its row keeps the test error of its best epoch before the NaN."""
    out = Path(args.out) / label / f"lr{lr:g}" / f"seed{seed}"
    check_saved_settings(out, settings(label, seed, lr, args))
    summary = train_to(out, args.epochs, lambda: settings(label, seed, lr, args), args.progress)
    rule, options, _, _ = VARIANTS[label]
    return {
        "label": label,
        "rule": rule,
        "rule_options": options,
        "seed": seed,
        "lr": lr,
        "epochs_run": summary["epochs_completed"],
        "status": summary.get("status"),
        "status_reason": summary.get("status_reason"),
        "test_error": 100 * (1 - summary["test_accuracy"]),
        "best_epoch": summary.get("best_epoch"),
        "epoch_time_s": summary.get("epoch_time_s"),
        "curve": test_error_curve(out, summary["epochs_completed"]),
    }


def aggregate(runs: list[dict], rates: dict[str, tuple[float, str]]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for label in dict.fromkeys(run["label"] for run in runs):
        mine = [run for run in runs if run["label"] == label]
        errors = [run["test_error"] for run in mine]
        _, _, budget, source = VARIANTS[label]
        rows[label] = {
            "label": label,
            "rule": mine[0]["rule"],
            "seeds": [run["seed"] for run in mine],
            "lr": rates[label][0],
            "lr_source": rates[label][1],
            "test_error": statistics.fmean(errors),
            "test_error_std": statistics.stdev(errors) if len(errors) > 1 else None,
            "epochs_run": min(run["epochs_run"] for run in mine),
            "published_epochs": budget,
            "budget_source": source,
            "epoch_time_s": statistics.fmean(run["epoch_time_s"] or 0.0 for run in mine),
            "failed_runs": sum(run["status"] == "failed" for run in mine),
            "diverged_runs": sum(run["status"] == "diverged" for run in mine),
            "curve": mean_curve([run["curve"] for run in mine]),
        }
    bp = rows.get("bp")
    for row in rows.values():
        row["bp_gap"] = None if bp is None else row["test_error"] - bp["test_error"]
    return rows


def plot_curves(rows: dict[str, dict], path: Path, setting: str) -> None:
    """Test error by epoch, one line per variant (mean over its seeds), log scale; a variant
    with a failed or diverged run is drawn dashed."""
    curves = []
    for row in rows.values():
        seeds, broken = len(row["seeds"]), row["failed_runs"] + row["diverged_runs"]
        label = (
            f"{row['label']} (lr {row['lr']:g}{f', {seeds} seeds' if seeds > 1 else ''}"
            f"{f', {broken} failed or diverged' if broken else ''})"
        )
        curves.append(Curve(label, row["curve"], dashed=bool(broken)))
    plot_error_curves(curves, path, setting, "Fashion-MNIST test error % (log)")


def verdicts(rows: dict[str, dict]) -> list[dict]:
    out = []
    for label, other, allowed, claim in TARGETS:
        if label not in rows or other not in rows:
            out.append({"claim": claim, "gap": None, "met": None, "note": ""})
            continue
        gap = rows[label]["test_error"] - rows[other]["test_error"]
        met = gap <= allowed if allowed > 0 else gap < 0
        diverged = [name for name in (label, other) if rows[name]["diverged_runs"]]
        note = f"({', '.join(diverged)} diverged)" if diverged else ""
        out.append({"claim": claim, "gap": gap, "met": met, "note": note})
    return out


def setting_line(args: argparse.Namespace) -> str:
    subset = args.train_subset or "all 55,000"
    return (
        f"Fashion-MNIST, vgg {args.activation} ({args.init} init) channels "
        f"{','.join(map(str, args.channels))} "
        f"+ linear classifier, SGD momentum 0.9 (lr per row, schedule {args.lr_schedule}), "
        f"batch 128, {args.epochs} epochs, "
        f"training images: {subset}, seeds {','.join(map(str, args.seeds))}"
    )


def print_table(rows: dict[str, dict], claims: list[dict], args: argparse.Namespace) -> None:
    print("\n" + setting_line(args))
    bp_time = rows["bp"]["epoch_time_s"] if "bp" in rows else None
    print(
        f"{'variant':<13} {'lr':>6} {'lr from':<9} {'test err %':>10} {'std':>5} {'BP gap':>7} "
        f"{'epochs/paper':>13} {'time/BP':>8} {'failed':>6} {'NaN':>4}  budget source"
    )
    for row in rows.values():
        paper = row["published_epochs"]
        ratio = row["epoch_time_s"] / bp_time if bp_time else None
        print(
            f"{row['label']:<13} {row['lr']:>6g} {row['lr_source']:<9} "
            f"{row['test_error']:>10.2f} {fmt(row['test_error_std']):>5} "
            f"{fmt(row['bp_gap'], '+.2f'):>7} {row['epochs_run']:>6}/{fmt(paper, 'd'):<6} "
            f"{fmt(ratio):>8} {row['failed_runs']:>6} {row['diverged_runs']:>4}  "
            f"{row['budget_source']}"
        )
    print(
        "test err: at the epoch of best validation accuracy (epoch 0 = the untrained net); "
        "failed: runs whose validation accuracy ended at chance (ngrad's verdict); NaN: runs "
        "that diverged (their best epoch before it counts; epochs: those completed); lr from: "
        f"val = chosen on validation accuracy ({args.lr_file}; edge: at an end of those tried), "
        f"--lr = given, default = {DEFAULT_LR} (no choice recorded)"
    )
    print("targets (the papers' claims):")
    for claim in claims:
        verdict = {True: "met", False: "missed", None: "not run"}[claim["met"]]
        print(
            f"  {claim['claim']:<40} gap {fmt(claim['gap'], '+.2f'):>6}  {verdict} {claim['note']}"
        )
    short = [
        f"{row['label']} {row['epochs_run']}/{row['published_epochs']}"
        for row in rows.values()
        if row["published_epochs"] and row["epochs_run"] < row["published_epochs"]
    ]
    if short or args.train_subset:
        print(
            "short of the published budgets: "
            + (", ".join(short) or "-")
            + (f"; on {args.train_subset} training images" if args.train_subset else "")
            + " (papers: CIFAR-10, full training set). At this budget neither 'met' nor "
            "'missed' is a verdict on the claims; "
            + (
                "rerun with a larger --epochs in another --out (a cosine run cannot be extended)."
                if args.lr_schedule == "cosine"
                else "resume with a larger --epochs."
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-subset", type=int, default=0, help="first N images (0: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--channels", default="128,256,512,512", help="conv block widths")
    parser.add_argument(
        "--activation",
        default="relu",
        choices=("relu", "hard_sigmoid", "sigmoid", "tanh", "leaky_relu"),
        help="every variant's units (hard_sigmoid: Laborieux et al.'s clip(a/2, 0, 1))",
    )
    parser.add_argument(
        "--init",
        default="pytorch",
        choices=("pytorch", "kaiming", "xavier"),
        help="weights' initialisation (kaiming, zero biases: what hard_sigmoid units need here)",
    )
    parser.add_argument(
        "--lr-schedule",
        default="none",
        choices=("none", "cosine"),
        help="cosine: the lr anneals to 0 over --epochs (the papers' schedule); a run cannot "
        "then be extended, and a selection trial anneals over its own --select-epochs",
    )
    parser.add_argument("--rules", default=",".join(VARIANTS), help="variants to run")
    parser.add_argument("--lr", action="append", default=[], help="VARIANT=VALUE (repeatable)")
    parser.add_argument("--lr-file", help="lr choices (default: <out>/lr_selection.json)")
    parser.add_argument("--select-lr", action="store_true", help="choose the lrs, then stop")
    parser.add_argument("--lr-grid", default="0.005,0.02,0.08", help="lrs --select-lr tries")
    parser.add_argument("--extend", type=int, default=2, help="grid steps past a winning end")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--select-epochs", type=int, default=2)
    parser.add_argument("--select-subset", type=int, default=5000, help="training images")
    parser.add_argument("--select-val", type=int, default=2000, help="validation images")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--out", default="results/conv_ngrads")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--figure", help="test error by epoch (default: <out>/conv_ngrads.png)")
    args = parser.parse_args()
    args.channels = tuple(int(c) for c in args.channels.split(","))
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.lr = parse_lr_overrides(args.lr)
    args.lr_grid = sorted(float(lr) for lr in args.lr_grid.split(","))
    args.lr_file = args.lr_file or str(Path(args.out) / "lr_selection.json")
    labels = [name.strip() for name in args.rules.split(",") if name.strip()]
    for label in [*labels, *args.lr]:
        if label not in VARIANTS:
            raise SystemExit(f"unknown variant {label!r}; choose from {', '.join(VARIANTS)}")
        if VARIANTS[label][0] not in REGISTRY:
            raise SystemExit(f"{label}: rule {VARIANTS[label][0]!r} is not in the registry")
    if args.select_lr:
        select_lr(labels, args)
        return
    rates = learning_rates(labels, args)
    runs = []
    for label in labels:
        for seed in args.seeds:
            try:
                runs.append(train_or_resume(label, seed, rates[label][0], args))
            except NgradError as error:
                raise SystemExit(f"{label}: {error}") from None
            print(json.dumps(runs[-1]), flush=True)
    rows = aggregate(runs, rates)
    claims = verdicts(rows)
    print_table(rows, claims, args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summary = {"runs": runs, "rows": list(rows.values()), "targets": claims}
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves(rows, Path(args.figure or Path(args.out) / "conv_ngrads.png"), setting_line(args))


if __name__ == "__main__":
    main()
