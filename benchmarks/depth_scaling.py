"""Test error against depth for BP, FA, KP, DTP, L-DRL, EP and PC on Fashion-MNIST, with and
without residual connections where the rule can take them.

    python benchmarks/depth_scaling.py [--depths 2,4,8,16] [--model mlp|vgg] [--width 64]
        [--init xavier] [--epochs 10] [--train-subset 0] [--rules bp,fa,...]
        [--lr RULE=VALUE ...] [--lr-grid 0.0025,0.01,0.04,0.16] [--extend 1] [--no-select-lr]
        [--out DIR] [--figure docs/figures/depth_scaling.png]

Depth is the number of hidden layers, all of one width (``--width``): with ``--model mlp`` (the
default, the cheapest setting that isolates depth) a tanh MLP 784 -> width x depth -> 10; with
``--model vgg`` a conv net of ``depth`` 3x3 ReLU blocks of ``width`` channels, the first two
max-pooled 2x2, then a linear classifier. Every rule trains the same network with the same
budget: SGD momentum 0.9, batch 128, cross-entropy, Xavier-uniform weights and zero biases
(``--init``; with PyTorch's default U(+-1/sqrt(fan_in)) the tanh MLP's signal shrinks ~1.7x per
layer and BP itself stays at chance at depth 16), each rule's ngrad defaults; test error at the
epoch of best accuracy on 5,000 held-out training images.

Learning rates: one per rule, depth and kind (plain or residual), chosen on validation before the
run: each lr of ``--lr-grid`` trains ``--select-epochs`` epochs on the first ``--select-subset``
training images, and the lr of the best accuracy on the first ``--select-val`` held-out training
images after the last of those epochs wins (0 for a run that diverged; the test split is never
evaluated; a tie goes to the smaller lr). Where the winner is the smallest or largest lr tried,
one more lr a grid step beyond it is tried (``--extend`` times). The trials are
kept in ``<out>/lr_selection.json`` and not repeated. ``--lr RULE=VALUE`` fixes a rule's lr at
every depth instead; ``--no-select-lr`` runs the others at 0.05.

Residual connections: ngrad ``Network``s (chains of ngrad layers, what DTP, L-DRL, EP and PC
train) have none, and those rules' targets, energies and value nodes are defined on such chains,
so they cannot take a residual network. The rules that train any ``torch.nn.Module``
(``trains_modules``: BP and the feedback-alignment family, here bp, fa and kp) also train a
residual MLP, ``residual_mlp`` below: the first hidden layer, then blocks h <- h + tanh(W h + b),
then the classifier, initialised as the plain MLP. Those get a dashed line;
the others' residual points are left out and the output says why (the rule's own reason). With
``--model vgg`` only the plain nets run.

Cost: ``OMP_NUM_THREADS=1 python benchmarks/depth_scaling.py --epochs 10`` (the defaults:
depths 2-16, all 55,000 training images, 172 selection trials) takes about 35 minutes of one
core, a third of it EP and a fifth PC (docs/target_propagation.md, *Conv nets and depth*).

Output: one PNG (a line per rule, solid plain, dashed residual), a JSON of the numbers
(``--out``/depth_scaling.json) and a table. Runs are resumable per run directory
(``<out>/<kind>/<rule>_depth<d>_lr<lr>``): a larger ``--epochs`` continues them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _common import (
    REPO,
    LrSelection,
    check_saved_settings,
    default_data_dir,
    parse_lr_overrides,
    train_to,
    validation_score,
)
from torch import nn

from ngrad.errors import NgradError
from ngrad.models.common import initialise
from ngrad.rules import REGISTRY, get_rule_class

RULES = ["bp", "fa", "kp", "dtp", "ldrl", "ep", "pc"]
SETTINGS = {"batch_size": 128, "optimizer": "sgd", "momentum": 0.9}
DEFAULT_LR = 0.05


class ResidualMLP(nn.Module):
    """input -> width (tanh), then ``depth - 1`` blocks h + tanh(W h + b), then the classifier."""

    def __init__(self, inputs: int, classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.first = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.last = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x.flatten(1)))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.last(h)


def residual_mlp(
    input_shape, num_classes: int, width: int = 64, depth: int = 2, init: str = "pytorch"
) -> nn.Module:
    """The model factory ``depth_scaling:residual_mlp`` (see the module's docstring)."""
    model = ResidualMLP(int(torch.tensor(input_shape).prod()), num_classes, width, depth)
    return initialise(model, init)


def model_settings(depth: int, residual: bool, args: argparse.Namespace) -> dict:
    if residual:
        return {
            "model": "depth_scaling:residual_mlp",
            "model_options": {"width": args.width, "depth": depth, "init": args.init},
        }
    if args.model == "vgg":
        options = {"channels": (args.width,) * depth, "pool": (1, 2), "activation": "relu"}
        return {"model": "vgg", "model_options": options | {"init": args.init}}
    return {
        "model": "mlp",
        "hidden": (args.width,) * depth,
        "activation": "tanh",
        "init": args.init,
    }


def residual_refusal(rule: str) -> str | None:
    """Why ``rule`` cannot train the residual MLP (None where it can)."""
    cls = get_rule_class(rule)
    if not getattr(cls, "trains_modules", False):
        return "trains ngrad Networks (chains of layers) only; a residual net is not one"
    return cls.unsupported_reason(residual_mlp((1, 28, 28), 10, 8, 2))


def settings(rule: str, depth: int, residual: bool, lr: float, args, **budget) -> dict:
    values = SETTINGS | model_settings(depth, residual, args)
    return (
        values
        | {
            "rule": rule,
            "lr": lr,
            "data": "fashion-mnist",
            "data_dir": args.data_dir,
            "epochs": args.epochs,
            "train_subset": args.train_subset,
            "seed": args.seed,
            "threads": 1,
            "diagnostics_samples": 0,
        }
        | budget
    )


def choose_lr(rule: str, depth: int, residual: bool, args, chooser: LrSelection | None):
    """(lr, where it came from) for one point: --lr, the validation choice, or the default."""
    if rule in args.lr:
        return args.lr[rule], "--lr"
    if chooser is None:
        return DEFAULT_LR, "default"
    key = f"{'residual' if residual else args.model}/{rule}/depth{depth}"

    def trial(lr: float) -> dict:
        budget = {"epochs": args.select_epochs, "train_subset": args.select_subset}
        values = settings(rule, depth, residual, lr, args, **budget)
        score = validation_score(values, args.select_epochs, args.select_val)
        print(json.dumps({"select": key, "lr": lr} | score), flush=True)
        return score

    lr = chooser.select(key, args.lr_grid, trial, args.extend)
    return lr, "val, edge" if chooser.at_edge(key) else "val"


def train_or_resume(rule: str, depth: int, residual: bool, args, chooser) -> dict:
    """One point, trained or continued to ``args.epochs``; a diverged run keeps its best epoch."""
    kind = "residual" if residual else args.model
    lr, source = choose_lr(rule, depth, residual, args, chooser)
    out = Path(args.out) / kind / f"{rule}_depth{depth}_lr{lr:g}"
    check_saved_settings(out, settings(rule, depth, residual, lr, args))
    summary = train_to(out, args.epochs, lambda: settings(rule, depth, residual, lr, args))
    return {
        "rule": rule,
        "depth": depth,
        "residual": residual,
        "model": kind,
        "lr": lr,
        "lr_source": source,
        "epochs_run": summary["epochs_completed"],
        "status": summary.get("status"),
        "test_error": 100 * (1 - summary["test_accuracy"]),
        "best_epoch": summary.get("best_epoch"),
        "epoch_time_s": summary.get("epoch_time_s"),
        "cpu_time_per_step_s": summary.get("cpu_time_per_step_s"),
    }


def cell(row: dict | None) -> str:
    if row is None:
        return f"{'-':>7}"
    mark = {"completed": "", "diverged": "!"}.get(row["status"], "*")
    return f"{row['test_error']:.2f}{mark}".rjust(7)


def lr_cell(row: dict | None) -> str:
    if row is None:
        return f"{'-':>7}"
    mark = {"val": "", "val, edge": "e"}.get(row["lr_source"], "")
    return f"{row['lr']:g}{mark}".rjust(7)


def plot(rows: list[dict], depths: list[int], title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(8.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, rule in enumerate(dict.fromkeys(row["rule"] for row in rows)):
        for residual, style in ((False, "-"), (True, "--")):
            mine = [r for r in rows if r["rule"] == rule and r["residual"] == residual]
            if not mine:
                continue
            axis.plot(
                [r["depth"] for r in mine],
                [r["test_error"] for r in mine],
                style,
                marker="o",
                color=colours[index % len(colours)],
                label=f"{rule} (residual)" if residual else rule,
            )
    axis.set_xscale("log", base=2)
    axis.set_xticks(depths, [str(d) for d in depths])
    axis.set_yscale("log")  # the chance level would squeeze the learning rules' spread
    ticks = [
        t
        for t in (5, 8, 10, 12, 15, 20, 30, 50, 90)
        if t >= 0.9 * min(r["test_error"] for r in rows)
    ]
    axis.set_yticks(ticks, [str(t) for t in ticks])
    axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set(
        xlabel="hidden layers",
        ylabel="test error % (best validation epoch; log scale)",
        title=title,
    )
    axis.axhline(90, color="grey", lw=0.8, ls=":")
    axis.text(depths[-1], 90, "chance ", ha="right", va="bottom", fontsize=8, color="grey")
    axis.margins(y=0.08)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def print_table(rows: list[dict], rules: list[str], depths: list[int], what) -> None:
    for title, fill in (("test error %", cell), ("lr", lr_cell)):
        print(f"\n{what}; {title} by hidden layers")
        print(f"{'rule':<16} " + " ".join(f"{d:>7}" for d in depths))
        for rule in rules:
            for with_skips in (False, True):
                mine = {
                    r["depth"]: r for r in rows if r["rule"] == rule and r["residual"] == with_skips
                }
                if mine:
                    label = f"{rule} (residual)" if with_skips else rule
                    print(f"{label:<16} " + " ".join(fill(mine.get(d)) for d in depths))
    print(
        "test error at the epoch of best validation accuracy (epoch 0 = the untrained net); *: "
        "the validation accuracy ended at chance (ngrad's verdict: did not learn); !: diverged "
        "(NaN), its best epoch before that counts. lr: chosen on validation accuracy (e: at an "
        "end of those tried), or given with --lr"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="2,4,8,16", help="hidden-layer counts")
    parser.add_argument("--model", choices=("mlp", "vgg"), default="mlp")
    parser.add_argument("--width", type=int, default=64, help="units (mlp) or channels (vgg)")
    parser.add_argument("--init", default="xavier", help="pytorch, xavier, kaiming, gaussian")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-subset", type=int, default=0, help="first N images (0: all)")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--residual", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lr", action="append", default=[], help="RULE=VALUE (repeatable)")
    parser.add_argument("--select-lr", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lr-grid", default="0.0025,0.01,0.04,0.16")
    parser.add_argument("--extend", type=int, default=1, help="grid steps past a winning end")
    parser.add_argument("--select-epochs", type=int, default=2)
    parser.add_argument("--select-subset", type=int, default=10000, help="training images")
    parser.add_argument("--select-val", type=int, default=5000, help="validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--out", default="results/depth_scaling")
    parser.add_argument("--figure", default=str(REPO / "docs" / "figures" / "depth_scaling.png"))
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    rules = [name.strip() for name in args.rules.split(",") if name.strip()]
    args.lr = parse_lr_overrides(args.lr)
    args.lr_grid = sorted(float(lr) for lr in args.lr_grid.split(","))
    for rule in [*rules, *args.lr]:
        if rule not in REGISTRY:
            raise SystemExit(f"unknown rule {rule!r}; available: {', '.join(REGISTRY)}")
    chooser = None
    if args.select_lr:
        setting = {
            "width": args.width,
            "init": args.init,
            "epochs": args.select_epochs,
            "train_subset": args.select_subset,
            "val_images": args.select_val,
            "seed": args.seed,
        } | SETTINGS
        chooser = LrSelection(Path(args.out) / "lr_selection.json", setting)
    refusals = {rule: residual_refusal(rule) for rule in rules}
    residual = args.residual and args.model == "mlp"
    rows = []
    for rule in rules:
        for with_skips in (False, True) if residual and refusals[rule] is None else (False,):
            for depth in depths:
                try:
                    rows.append(train_or_resume(rule, depth, with_skips, args, chooser))
                except NgradError as error:
                    print(f"{rule} depth {depth}: {error}", flush=True)
                    continue
                print(json.dumps(rows[-1]), flush=True)
    subset = f"{args.train_subset} training images" if args.train_subset else "55,000 images"
    what = f"tanh MLP width {args.width}" if args.model == "mlp" else f"vgg ReLU {args.width} ch."
    title = (
        f"Fashion-MNIST ({subset}), {what}, {args.init} init, {args.epochs} epochs, "
        f"seed {args.seed}"
    )
    lrs = (
        f"lr per point chosen on validation (grid {','.join(map(str, args.lr_grid))}, "
        f"{args.extend} step past a winning end)"
        if args.select_lr
        else f"lr {DEFAULT_LR}"
    )
    print_table(rows, rules, depths, f"{title} (SGD, {lrs}, momentum 0.9, batch 128)")
    if residual:
        for rule, reason in refusals.items():
            if reason:
                print(f"no residual line for {rule}: {reason}")
    else:
        print("no residual lines: residual nets are built for --model mlp only")
    plot(rows, depths, f"{title}\nSGD, {lrs}", Path(args.figure))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    numbers = {"title": title, "depths": depths, "rows": rows, "residual_refusals": refusals}
    (out / "depth_scaling.json").write_text(json.dumps(numbers, indent=2))
    print(f"figure: {args.figure}; numbers: {out / 'depth_scaling.json'}")


if __name__ == "__main__":
    main()
