"""MNIST 784-256-256-10: equilibrium propagation and predictive coding against BP, same budget.

    python benchmarks/reproduce_energy_based.py [--epochs 15] [--rules bp,ep,pc,pc-weak] [--out DIR]

Published: EP 98.00 % test accuracy at 50 epochs (Laborieux & Zenke 2022's logs, beta 0.1, on
784-256-256-10); PC ~98 % (Whittington & Bogacz 2017: ~1.7 % error on 784-600-600-10;
Pinchetti et al. 2024: ~98 % with T = 5 on 784-128x3-10). Here every rule trains the same
784-256-256-10 tanh network (ngrad's MLP, cross-entropy, PyTorch init) with the same optimiser
(SGD, momentum 0.9, lr 0.05, batch 128) for the same number of epochs, with the rules' default
options (EP: gamma 0.25, beta 0.2 symmetric, 15 free / 6 nudged steps, softmax readout; PC: T 8,
alpha 0.2, output clamping 1), plus ``pc-weak``: PC with output clamping 0.1 and T = 20, closer to
BP (clamping 1 turns the top layer's update ~40 degrees from BP's; at T = 8 the first layer's
update is ~0.4x BP's, the error not yet propagated down). The budget is a flag: the published
runs had 50 epochs and their own tuned settings (EP there: gamma 1, sigmoid-type units), so the
gap at a few epochs is the budget's as much as the rule's; BP at the same budget is the
yardstick. Test accuracy is taken at the epoch of best validation accuracy (5000 held-out
training images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import default_data_dir, fmt

from ngrad.train.config import make_config
from ngrad.train.loop import run_training

PUBLISHED = {"ep": (98.00, 50, "Laborieux & Zenke 2022"), "pc": (98.0, None, "W&B 2017; PCX 2024")}
VARIANTS = {
    "bp": ("bp", {}),
    "ep": ("ep", {}),
    "chl": ("chl", {}),
    "pc": ("pc", {}),
    "pc-weak": ("pc", {"output_clamping": 0.1, "steps": 20}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rules", default="bp,ep,pc,pc-weak", help=", ".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--out", default="results/energy_based")
    args = parser.parse_args()

    rows = []
    for label in args.rules.split(","):
        rule, options = VARIANTS[label]
        config = make_config(
            {
                "rule": rule,
                "rule_options": options,
                "data": "mnist",
                "data_dir": args.data_dir,
                "epochs": args.epochs,
                "batch_size": 128,
                "lr": args.lr,
                "optimizer": "sgd",
                "momentum": 0.9,
                "hidden": (256, 256),
                "activation": "tanh",
                "loss": "cross_entropy",
                "seed": args.seed,
                "diagnostics_samples": 500,
            }
        )
        result = run_training(config, Path(args.out) / label, progress=False)
        last = result.history[-1]
        extra = last.get("rule_diagnostics") or {}
        rows.append(
            {
                "rule": label,
                "epochs": args.epochs,
                "test_accuracy": 100 * result.summary["test_accuracy"],
                "final_test_accuracy": 100 * last["test_accuracy"],
                "epoch_time_s": result.summary["epoch_time_s"],
                "angle_to_bp_deg": last.get("angle_to_bp_deg"),
                "angle_to_fixed_point_gradient_deg": extra.get(
                    "angle_to_fixed_point_gradient_deg_by_layer"
                ),
                "free_residual": extra.get("free_residual"),
            }
        )
        print(f"{label}: done ({args.epochs} epochs)", flush=True)

    bp = next((row for row in rows if row["rule"] == "bp"), None)
    print(
        f"\nMNIST 784-256-256-10 tanh, SGD lr {args.lr} momentum 0.9, batch 128, seed {args.seed}"
    )
    print(
        f"{'rule':<8} {'epochs':>6} {'test %':>7} {'final %':>8} {'BP %':>6} {'gap BP':>7} "
        f"{'published %':>12} {'gap pub':>8} {'s/epoch':>8} {'time/BP':>8}  angles to BP (deg)"
    )
    for row in rows:
        published = PUBLISHED.get(VARIANTS[row["rule"]][0])
        bp_accuracy = bp["test_accuracy"] if bp else None
        ratio = row["epoch_time_s"] / bp["epoch_time_s"] if bp else None
        angles = ", ".join(fmt(a, ".1f") for a in row["angle_to_bp_deg"] or [])
        print(
            f"{row['rule']:<8} {row['epochs']:>6} {row['test_accuracy']:>7.2f} "
            f"{row['final_test_accuracy']:>8.2f} {fmt(bp_accuracy):>6} "
            f"{fmt(row['test_accuracy'] - bp_accuracy if bp else None, '+.2f'):>7} "
            f"{fmt(published[0] if published else None):>12} "
            f"{fmt(row['test_accuracy'] - published[0] if published else None, '+.2f'):>8} "
            f"{row['epoch_time_s']:>8.1f} {fmt(ratio):>7}x  [{angles}]"
        )
        if row["angle_to_fixed_point_gradient_deg"]:
            exact = ", ".join(fmt(a, ".1f") for a in row["angle_to_fixed_point_gradient_deg"])
            print(
                f"         EP update vs the gradient at its free fixed point (recurrent BP): "
                f"[{exact}] deg; free-phase residual {fmt(row['free_residual'], '.1e')}"
            )
    for name, (accuracy, epochs, source) in PUBLISHED.items():
        budget = f"{epochs} epochs" if epochs else "full training"
        print(f"published {name}: {accuracy:.2f} % ({source}, {budget})")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
