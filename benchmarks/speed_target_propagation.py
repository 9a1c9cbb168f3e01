"""Epoch time of each target-propagation rule divided by backprop's, same network, same process.

    python benchmarks/speed_target_propagation.py [--repeats 7] [--batches 40] [--json out.json]

Main case: 784-256x5-10 tanh, batch 128, SGD momentum 0.9, MNIST-shaped random pixels (arithmetic,
not accuracy, is measured), one feedback iteration per batch: every rule of the family that can
train that network. The ones that cannot (exact-inverse TP needs square layers above the first)
are timed on 784-256x6 (256 outputs), with backprop timed on that same network. The digits default
of ``ngrad compare`` (64-128-128-10, batch 32) is timed too. Each repeat times one epoch of every
rule in turn (interleaved, so machine load hits all alike); the ratio is the median over repeats of
rule time / BP time of the same repeat. ``--clock cpu`` times this thread's CPU time instead of wall
time (steadier on a shared machine; run with OMP_NUM_THREADS=1 so that all the work is on this
thread).

The rules' own extra passes compute tanh as 2 sigmoid(2x) - 1 (torch 2.x's CPU tanh kernel is
several times slower than its sigmoid); the networks' forward passes, and so BP, use torch.tanh.
``--fast-tanh-everywhere`` gives BP the same kernel, for the ratio a faster shared tanh would give.

Targets: DTP and DDTP <= 2.0x BP on 784-256x5-10. For scale: Meulemans et al.'s reference code
runs DTP at 2.66x BP in float32 and 5.07x as configured (float64) on this kind of machine; Ernoult
et al. report convolutional DTP up to 30x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import epoch_time as timed_epoch

import ngrad
from ngrad.rules import REGISTRY
from ngrad.rules.target_propagation.targets import TargetPropagationRule

FAMILY = [name for name, cls in REGISTRY.items() if issubclass(cls, TargetPropagationRule)]
TARGETS = {"dtp": 2.0, "ddtp": 2.0}
PUBLISHED = {"dtp": "2.66x fp32 / 5.07x fp64 (Meulemans et al. code)"}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter


def epoch_time(rule, optimiser, batches) -> float:
    return timed_epoch(rule, optimiser, batches, clock)


def use_fast_tanh_everywhere() -> None:
    """Replace the registered tanh by 2 sigmoid(2x) - 1 (same function; torch's CPU tanh kernel
    is several times slower than its sigmoid), so that BP's forward and backward use it too."""
    import dataclasses

    from ngrad.nn.activations import ACTIVATIONS

    ACTIVATIONS["tanh"] = dataclasses.replace(
        ACTIVATIONS["tanh"], function=lambda a: torch.sigmoid(2.0 * a) * 2.0 - 1.0
    )


def time_rules(sizes, rules, batch_size, batch_count, repeats, options=None):
    """Median over repeats of (rule epoch time / BP epoch time of the same repeat)."""
    generator = torch.Generator().manual_seed(0)
    count = batch_size * batch_count
    inputs = torch.rand(count, sizes[0], generator=generator)
    labels = torch.randint(0, sizes[-1], (count,), generator=generator)
    batches = list(zip(inputs.split(batch_size), labels.split(batch_size), strict=True))
    trainers = {}
    for name in ["bp", *rules]:
        torch.manual_seed(0)
        rule_options = {} if name == "bp" else (options or {})
        rule = ngrad.make_rule(name, ngrad.mlp(sizes, activation="tanh"), **rule_options)
        optimiser = torch.optim.SGD(rule.parameters(), lr=1e-3, momentum=0.9)
        epoch_time(rule, optimiser, batches[:5])  # warm-up
        trainers[name] = (rule, optimiser)
    times = {name: [] for name in trainers}
    for _ in range(repeats):
        for name, (rule, optimiser) in trainers.items():
            times[name].append(epoch_time(rule, optimiser, batches))
    ratios = {
        name: statistics.median(t / b for t, b in zip(times[name], times["bp"], strict=True))
        for name in trainers
    }
    step_ms = {name: statistics.median(t) / batch_count * 1e3 for name, t in times.items()}
    return ratios, step_ms


def supported(sizes) -> tuple[list[str], list[str]]:
    """The family's rules that can train an mlp of ``sizes``, and those that cannot."""
    network = ngrad.mlp(sizes, activation="tanh")
    able = [name for name in FAMILY if REGISTRY[name].supports(network)]
    return able, [name for name in FAMILY if name not in able]


def report(title, ratios, step_ms) -> None:
    print(f"\n{title}")
    print(f"{'rule':<6} {'time/BP':>8} {'ms/step':>8} {'target':>7}  verdict   published")
    for name, ratio in ratios.items():
        target = TARGETS.get(name) if "784-256x5-10" in title else None
        verdict = "-" if target is None else ("meets" if ratio <= target else "MISSES")
        print(
            f"{name:<6} {ratio:>7.3f}x {step_ms[name]:>8.2f} {target or '':>7}  {verdict:<8}  "
            f"{PUBLISHED.get(name, '') if target else ''}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, default=40, help="batches per timed epoch")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this thread's CPU time (steadier on a shared machine)",
    )
    parser.add_argument(
        "--fast-tanh-everywhere",
        action="store_true",
        help="also compute the networks' own tanh (forward passes, BP) as 2 sigmoid(2x) - 1, the "
        "form the rules' feedback passes use; by default only those use it",
    )
    parser.add_argument("--json", help="also write the ratios here")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.fast_tanh_everywhere:
        use_fast_tanh_everywhere()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, "
        f"{args.clock} clock, {args.repeats} repeats of {args.batches} batches, tanh of the "
        f"networks: {'2 sigmoid(2x) - 1' if args.fast_tanh_everywhere else 'torch.tanh'}"
    )
    results = {}
    main_sizes, digits_sizes = [784, *[256] * 5, 10], [64, 128, 128, 10]
    main, rest = supported(main_sizes)
    cases = [
        ("784-256x5-10 tanh, batch 128", main_sizes, main, 128),
        ("784-256x6 tanh (square: exact TP), batch 128", [784, *[256] * 6], rest, 128),
        (
            "digits default 64-128-128-10 tanh, batch 32",
            digits_sizes,
            supported(digits_sizes)[0],
            32,
        ),
    ]
    for title, sizes, rules, batch_size in cases:
        if not rules:
            continue
        ratios, step_ms = time_rules(sizes, rules, batch_size, args.batches, args.repeats)
        report(title, ratios, step_ms)
        results[title] = {"ratios": ratios, "ms_per_step": step_ms}
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
