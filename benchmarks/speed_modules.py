"""Time per batch of the feedback-alignment family on converted torch models, as a ratio to BP.

    python benchmarks/speed_modules.py [--models lenet,resnet20] [--rules fa,dfa,...]
                                       [--batches 1] [--repeats 30] [--clock wall|cpu]
                                       [--json out.json]

The models are ngrad's catalogue LeNet on 1x32x32 inputs (BioTorch's LeNetMNIST, batch 64 by
default) and ResNet-20 on 3x32x32 inputs (CIFAR-shaped, batch 128), random data (arithmetic, not
accuracy, is measured), float32, SGD with momentum 0.9. BP is autograd on the plain model; every
other rule is a registered rule of the family (those whose module lives in
``ngrad.rules.feedback_alignment``) on the same architecture and initial weights, its layers
converted by the rule (docs/feedback_alignment.md). Each repeat times ``--batches`` steps
(``rule.backward`` + ``optimiser.step``) of every rule in turn, interleaved batch by batch by
default, so load on the machine hits all rules alike; the ratio reported is the median over
repeats of the rule's time / BP's time in the same repeat (the column "best" divides the fastest
repeats instead). Targets: every rule <= 1.15x BP, WM <= 1.3x. On a shared machine run it with
OMP_NUM_THREADS=1, and with ``--clock cpu`` too (the process's CPU time: time spent waiting for a
core does not count).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import ngrad
from ngrad import models
from ngrad.rules import REGISTRY

PACKAGE = "ngrad.rules.feedback_alignment"
FAMILY = [name for name, cls in REGISTRY.items() if cls.__module__.startswith(f"{PACKAGE}.")]
TARGET = 1.15  # time / BP's for every rule of the family, except:
TARGET_EXCEPTIONS = {"wm": 1.3}
# model name -> (input shape, default batch size: BioTorch's benchmarks)
MODELS = {"lenet": ((1, 32, 32), 64), "resnet20": ((3, 32, 32), 128)}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def step_time(rule, optimiser, batches, clock=time.perf_counter) -> float:
    start = clock()
    for inputs, targets in batches:
        rule.backward(inputs, targets)
        optimiser.step()
    return clock() - start


def measure(model_name: str, rules: list[str], args) -> dict:
    shape, default_batch = MODELS[model_name]
    batch = args.batch_size or default_batch
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(batch, *shape, generator=generator), torch.randint(0, 10, (batch,)))
        for _ in range(args.batches)
    ]
    trainers = {}
    for name in rules:
        torch.manual_seed(0)
        rule = ngrad.make_rule(name, models.build(model_name, shape, 10))
        optimiser = torch.optim.SGD(rule.param_groups(), lr=0.01, momentum=0.9)
        rule.check_optimizer(optimiser)
        trainers[name] = (rule, optimiser)
        step_time(rule, optimiser, batches[:1] * 3)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in rules}
    for _ in range(args.repeats):
        for name in rules:
            seconds = step_time(*trainers[name], batches, CLOCKS[args.clock])
            times[name].append(seconds / len(batches))
    ratios = {
        name: statistics.median(t / b for t, b in zip(times[name], times["bp"], strict=True))
        for name in rules
    }
    print(
        f"{model_name} {'x'.join(map(str, shape))}, batch {batch}: BP "
        f"{statistics.median(times['bp']) * 1e3:.1f} ms per batch (median of {args.repeats})"
    )
    best = {name: min(times[name]) / min(times["bp"]) for name in rules}
    print(f"  {'rule':<6} {'ms/batch':>9} {'time/BP':>8} {'best':>7} {'target':>7}  verdict")
    for name in rules:
        target = TARGET_EXCEPTIONS.get(name, TARGET) if name in FAMILY else None
        verdict = "-" if target is None else ("meets" if ratios[name] <= target else "MISSES")
        print(
            f"  {name:<6} {statistics.median(times[name]) * 1e3:>9.1f} {ratios[name]:>7.3f}x "
            f"{best[name]:>6.3f}x {target or '':>7}  {verdict}"
        )
    return {"batch_size": batch, "ratios": ratios, "best_ratios": best, "times_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="default: lenet,resnet20")
    parser.add_argument("--rules", default=",".join(FAMILY), help="default: the whole family")
    parser.add_argument("--batch-size", type=int, default=0, help="0: each model's default")
    parser.add_argument("--batches", type=int, default=1, help="timed batches per repeat")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="default: wall")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rules = ["bp"] + [r for r in args.rules.split(",") if r and r != "bp"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")
    results = {name: measure(name, rules, args) for name in args.models.split(",") if name}
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
