"""Reproduce Akrout et al. (2019)'s MNIST comparison of BP, FA, KP and WM.

    python benchmarks/reproduce_akrout.py [--epochs 40] [--rules bp,fa,kp,wm] [--out DIR]

Setting of the authors' companion code (see docs/feedback_alignment.md): 784-500-10, sigmoid
hidden units, sigmoid cross-entropy on the 10 outputs, weights ~ N(0, 1/(fan_in + fan_out)), plain
SGD on batches of 128 with lr 0.2 (BP, FA), 0.3 (KP), 0.05 (WM). They trained 400 epochs; the
budget here is a flag. Differences we keep on purpose: WM's mirror is the paper's linear equation
with a decay and Rademacher noise, where the code passes uniform noise through the sigmoid and lets
B grow without bound (its renormalisation is a no-op); B's size sets the hidden layer's effective
learning rate, and lambda = 0.25 (B -> 4 W^T) matches the code's learning speed; KP uses ngrad's
default weight decay 1e-4 (the code's run had none, so its B - W^T never decayed) and the same
plain SGD step on W and B, as KP requires (no feedback learning rate of its own). Reported: test
accuracy at the epoch of best validation accuracy (5000 held-out training images; the authors
reported test accuracy directly), the final mean per-sample angle between the hidden error and
BP's ("delta angle"), and the angle between W_2 and B_2^T ("weight angle"), next to the published
numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import default_data_dir, fmt

from ngrad.train.config import make_config
from ngrad.train.loop import run_training

LEARNING_RATES = {"bp": 0.2, "fa": 0.2, "kp": 0.3, "wm": 0.05}
RULE_OPTIONS = {"fa": {"init": "gaussian"}, "wm": {"decay": 1.0, "rate": 1.0}}
FEEDBACK_LR = {"wm": 0.005}
# Same code's logs after 100 epochs (epoch index 99): test accuracy, delta angle, weight angle
AT_100_EPOCHS = {"fa": (96.34, 40.4, 41.4), "kp": (98.28, 4.4, 4.9), "wm": (97.97, 9.1, 9.3)}
PUBLISHED = {  # Akrout et al. companion code, 400 epochs
    "bp": {"accuracy": 98.50, "delta_angle": None, "weight_angle": None},
    "fa": {"accuracy": 97.80, "delta_angle": 34.9, "weight_angle": 40.0},
    "kp": {"accuracy": 98.45, "delta_angle": 3.1, "weight_angle": 3.6},
    "wm": {"accuracy": 98.49, "delta_angle": 3.2, "weight_angle": 3.8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--rules", default="bp,fa,kp,wm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--out", default="results/akrout")
    parser.add_argument(
        "--wm-decay", type=float, default=0.25, help="WM lambda: B converges to W^T / lambda"
    )
    args = parser.parse_args()

    rows = []
    for rule in args.rules.split(","):
        config = make_config(
            {
                "rule": rule,
                "data": "mnist",
                "data_dir": args.data_dir,
                "epochs": args.epochs,
                "batch_size": 128,
                "lr": LEARNING_RATES[rule],
                "feedback_lr": FEEDBACK_LR.get(rule),
                "optimizer": "sgd",
                "momentum": 0.0,
                "hidden": (500,),
                "activation": "sigmoid",
                "init": "gaussian",
                "loss": "bce",
                "seed": args.seed,
                "diagnostics_samples": 1000,
                "rule_options": RULE_OPTIONS.get(rule, {})
                | ({"decay": args.wm_decay} if rule == "wm" else {}),
            }
        )
        result = run_training(config, Path(args.out) / rule, progress=True)
        last = result.history[-1]
        alignment = last.get("weight_alignment") or [{}]
        rows.append(
            {
                "rule": rule,
                "epochs": args.epochs,
                "test_accuracy": 100 * result.summary["test_accuracy"],
                "final_test_accuracy": 100 * last["test_accuracy"],
                "delta_angle": (last.get("error_angle_to_bp_deg") or [None])[0],
                "weight_angle": alignment[-1].get("angle_deg"),
                "epoch_time_s": result.summary["epoch_time_s"],
                "published": PUBLISHED[rule],
            }
        )
        print(json.dumps(rows[-1]))
    bp_time = next((r["epoch_time_s"] for r in rows if r["rule"] == "bp"), None)
    print(f"\nMNIST 784-500-10 sigmoid, {args.epochs} epochs (published: 400), seed {args.seed}")
    print(
        f"{'rule':<5} {'test acc %':>10} {'published':>10} {'gap':>6} {'delta angle':>12} "
        f"{'published':>10} {'weight angle':>13} {'published':>10} {'time/BP':>8}"
    )
    for row in rows:
        pub = row["published"]
        same_budget = AT_100_EPOCHS.get(row["rule"])
        gap = row["test_accuracy"] - pub["accuracy"]
        ratio = row["epoch_time_s"] / bp_time if bp_time else None
        print(
            f"{row['rule']:<5} {row['test_accuracy']:>10.2f} {pub['accuracy']:>10.2f} {gap:>+6.2f} "
            f"{fmt(row['delta_angle'], '.1f'):>12} {fmt(pub['delta_angle'], '.1f'):>10} "
            f"{fmt(row['weight_angle'], '.1f'):>13} {fmt(pub['weight_angle'], '.1f'):>10} "
            f"{fmt(ratio, '.2f'):>8}"
        )
        if same_budget:
            print(
                f"{'':<5} {'':>10} {same_budget[0]:>10.2f} {'':>6} {'':>12} "
                f"{same_budget[1]:>10.1f} {'':>13} {same_budget[2]:>10.1f}   (their epoch 100)"
            )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
