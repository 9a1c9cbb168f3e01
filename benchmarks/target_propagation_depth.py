"""Target differences |h^_l - h_l| across depth next to backprop's |dL/dh_l| (the review's third
obstacle: activity differences stay bounded where derivatives vanish or explode).

    python benchmarks/target_propagation_depth.py [--depth 10] [--gains 0.7,1,2.5] [--steps 400]
        [--out results/target_propagation_depth.png]

Network: the 8x8 digits, 64 -> 10 x depth -> 10, tanh, every hidden layer 10 wide so that exact
TP (square layers above the first) runs on the same network as DTP, DDTP and L-DRL. The forward
weights are drawn with PyTorch's default scheme times ``gain`` and then frozen; each rule's
feedback is trained alone for ``steps`` batches of 32 (SGD, momentum 0.9, lr 0.05). On 256
validation digits the script then measures, per layer, the mean over samples of |Delta_l| =
|h^_l - h_l| for every rule and eta |dl_n/dh_l|, the size a gradient step on the activity would
have (every rule uses the same small top step eta, so all agree at the output). Plot: one panel per
gain, log scale.

What it shows (seed 0, 400 feedback steps): backprop's step shrinks geometrically with depth (by
~1e4 over 11 layers at gain 0.7); L-DRL, which learns backprop's targets, follows it; DTP's learned
inverses keep |Delta_l| within a factor 3-5 across depth (bounded activity differences, the
review's point), but point ~90 degrees away from the Gauss-Newton targets; DDTP's damped
Gauss-Newton targets follow the gradient's decay where J is small (there (J J^T + lambda)^-1 J^T ~
J^T / lambda) and stay bounded where it is not; exact TP's undamped inverses amplify differences
through nearly singular layers until the targets leave the tanh range (clipped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _common import REPO

import ngrad
from ngrad.data import load_dataset
from ngrad.rules import REGISTRY
from ngrad.rules.target_propagation.targets import TargetPropagationRule, mean_sample_norm

RULES = [name for name, cls in REGISTRY.items() if issubclass(cls, TargetPropagationRule)]
STEP = 1e-4  # the top target step eta of every rule (small: targets in their first-order regime)


def frozen_network(depth: int, gain: float, seed: int):
    torch.manual_seed(seed)
    network = ngrad.mlp([64, *[10] * depth, 10], activation="tanh")
    with torch.no_grad():
        for layer in network.layers:
            layer.weight.mul_(gain)
    return network


def measure(name, depth, gain, steps, seed, data):
    (train_x, train_y), (x, y) = data
    network = frozen_network(depth, gain, seed)
    rule = ngrad.make_rule(name, network, target_step=STEP)
    feedback = rule.feedback_parameters()
    if feedback:
        optimiser = torch.optim.SGD(feedback, lr=0.05, momentum=0.9)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = torch.randint(0, train_y.shape[0], (32,), generator=generator)
            rule.backward(train_x[batch], train_y[batch])
            optimiser.step()
    with torch.no_grad():
        trace = network.trace(x)
        differences = rule.propagate_targets(trace, rule.top_difference(trace, y))
    diagnosis = rule.diagnose(x, y)
    return {
        "target": [mean_sample_norm(d) for d in differences],
        "gradient_step": diagnosis["gradient_step_by_layer"],
        "gauss_newton_angle": diagnosis["gauss_newton_angle_by_layer"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=10, help="hidden layers (8 or more)")
    parser.add_argument(
        "--gains", default="0.7,1,2.5", help="forward weight scales, one panel each"
    )
    parser.add_argument("--steps", type=int, default=400, help="feedback-only training batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "results" / "target_propagation_depth.png"))
    args = parser.parse_args()
    gains = [float(g) for g in args.gains.split(",")]
    digits = load_dataset("digits")
    data = (
        (digits.train_x.flatten(1).float(), digits.train_y.long()),
        (digits.val_x.flatten(1).float()[:256], digits.val_y.long()[:256]),
    )
    layers = list(range(1, args.depth + 2))
    figure, axes = plt.subplots(1, len(gains), figsize=(5.2 * len(gains), 4.2), squeeze=False)
    print(
        f"64-10x{args.depth}-10 tanh on digits, eta = {STEP}, feedback trained {args.steps} steps"
    )
    print("mean |Delta_l| per layer (layer 1 ... output); 'bp' is eta |dl/dh_l|")
    for axis, gain in zip(axes[0], gains, strict=True):
        results = {
            name: measure(name, args.depth, gain, args.steps, args.seed, data) for name in RULES
        }
        gradient = results[RULES[0]]["gradient_step"]  # the same for every rule (same eta)
        axis.plot(layers, gradient, "k--", lw=2, label="BP: eta |dL/dh_l|")
        for name in RULES:
            axis.plot(layers, results[name]["target"], marker="o", ms=3, label=f"{name}: |h^ - h|")
        axis.set(yscale="log", xlabel="layer l", title=f"forward gain {gain}")
        axis.set_xticks(layers)
        print(f"\ngain {gain}:")
        rows = [("bp", gradient)] + [(name, results[name]["target"]) for name in RULES]
        for name, values in rows:
            spread = max(values) / min(values)
            print(
                f"  {name:<5} " + " ".join(f"{v:8.1e}" for v in values) + f"  max/min {spread:.1e}"
            )
        for name in RULES:
            angles = results[name]["gauss_newton_angle"]
            print(
                f"  {name:<5} angle to Gauss-Newton target, layers 1..L-1: "
                + " ".join(f"{a:5.1f}" for a in angles[:-1])
            )
    axes[0][0].set_ylabel("mean size per sample")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(
        "size of the target differences |h^_l - h_l| and of backprop's step across depth"
    )
    figure.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
