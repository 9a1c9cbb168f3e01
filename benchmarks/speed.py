"""Per-epoch time of the feedback-alignment family divided by backprop's, same network and batches.

    python benchmarks/speed.py [--rules fa,dfa,...] [--samples 12800] [--repeats 7]

The rules measured are every registered rule of the family (those whose module lives in
``ngrad.rules.feedback_alignment``), unless ``--rules`` names others. Network 784-256-256-10 tanh,
batch 128, SGD (momentum 0.9), MNIST-shaped inputs (random pixels: arithmetic, not accuracy, is
measured). Each repeat times one epoch of every rule in turn (interleaved, so load on the machine
hits all rules alike); the ratio reported is the median over repeats of rule time / BP time from the
same repeat. Targets: every rule of the family <= 1.15x, except DFA <= 1.0x (one product for all
hidden errors) and WM <= 1.3x (its mirror phase). Published implementations on this kind of
machine, for scale: uSF 1.20x, frSF 1.23x, brSF 2.06x, DFA 1.20x (BioTorch), WM 2.10x (Akrout et
al.'s code).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from _common import epoch_time

import ngrad
from ngrad.rules import REGISTRY

PACKAGE = "ngrad.rules.feedback_alignment"
FAMILY = [name for name, cls in REGISTRY.items() if cls.__module__.startswith(f"{PACKAGE}.")]
TARGET = 1.15  # time / BP's for every rule of the family, except:
TARGET_EXCEPTIONS = {"dfa": 1.0, "wm": 1.3}
PUBLISHED = {"usf": 1.20, "frsf": 1.23, "brsf": 2.06, "dfa": 1.20, "wm": 2.10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=",".join(FAMILY), help="default: the whole family")
    parser.add_argument("--samples", type=int, default=12800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rules = ["bp"] + [r for r in args.rules.split(",") if r and r != "bp"]

    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(args.samples, 784, generator=generator)
    targets = torch.randint(0, 10, (args.samples,), generator=generator)
    batches = [
        (inputs[i : i + args.batch_size], targets[i : i + args.batch_size])
        for i in range(0, args.samples, args.batch_size)
    ]
    trainers = {}
    for name in rules:
        torch.manual_seed(0)
        rule = ngrad.make_rule(name, ngrad.mlp([784, 256, 256, 10], activation="tanh"))
        trainers[name] = (rule, torch.optim.SGD(rule.parameters(), lr=0.01, momentum=0.9))
        epoch_time(*trainers[name], batches[:5])  # warm-up

    times: dict[str, list[float]] = {name: [] for name in rules}
    for _ in range(args.repeats):
        for name in rules:
            times[name].append(epoch_time(*trainers[name], batches))
    ratios = {
        name: statistics.median(t / b for t, b in zip(times[name], times["bp"], strict=True))
        for name in rules
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(batches)} batches")
    print(f"BP epoch: median {statistics.median(times['bp']) * 1e3:.1f} ms")
    print(f"{'rule':<6} {'time/BP':>8} {'target':>8} {'published':>10}  verdict")
    for name in rules:
        target = TARGET_EXCEPTIONS.get(name, TARGET) if name in FAMILY else None
        verdict = "-" if target is None else ("meets" if ratios[name] <= target else "MISSES")
        published = PUBLISHED.get(name)
        print(
            f"{name:<6} {ratios[name]:>7.3f}x {target or '':>8} "
            f"{(str(published) + 'x') if published else '':>10}  {verdict}"
        )
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"ratios": ratios, "times_s": times}, stream, indent=2)


if __name__ == "__main__":
    main()
