"""Step time of each target-propagation rule divided by backprop's, same network, same process,
next to the rule's arithmetic bound.

    python benchmarks/speed_target_propagation.py [--repeats 7] [--batches 40] [--json out.json]
        [--clock cpu] [--cases mlp,square,digits,conv] [--conv-iterations 1,20]

Cases: 784-256x5-10 tanh, batch 128 (``mlp``), every rule of the family that can train it; the
ones that cannot (exact-inverse TP needs square layers above the first) on 784-256x6 (``square``);
the digits default of ``ngrad compare``, 64-128-128-10, batch 32 (``digits``); and a VGG-style conv
net with max-pooling from the catalogue (``conv``: ``vgg`` with channels 16, 32, 64, relu, every
block pooled 2x2, on 1x28x28 Fashion-MNIST-shaped inputs, batch 64), where L-DRL is also timed
with several feedback iterations per batch (``--conv-iterations``; Ernoult et al. train each
feedback layer 20 to 55 times per batch). Random pixels: arithmetic, not accuracy, is measured;
SGD momentum 0.9, one feedback iteration per batch unless said. Each repeat times one epoch of
every rule in turn (interleaved, so machine load hits all alike); the ratio is the median over
repeats of rule time / BP time of the same repeat. ``--clock cpu`` times this thread's CPU time
instead of wall time (steadier on a shared machine; run with OMP_NUM_THREADS=1 so that all the
work is on this thread).

The bound is the rule's multiply-accumulates per batch relative to BP's, counted from the
algorithm with C_l the MACs of layer l's forward product (a convolution counted before pooling),
F = sum C_l, k feedback iterations: BP = 3F - C_1 (forward, weight gradients, input gradients
above layer 1); DTP and L-DRL = 2F + (4k + 1)(F - C_1) (forward and weight gradients, and per
layer above the first, k times a noisy forward pass, the feedback on the noisy and the clean
activity or on both noises, and the feedback's weight gradient, then the targets); DDTP =
2F + k (sum_l (l - 1) C_l + 2 N n_L H) + N n_L H (the noise streams from every hidden layer up to
the output, and the n_L x H feedback products, H the hidden units). Elementwise work and the
optimiser step are left out of the bound.

Targets: DTP and DDTP <= 2.0x BP on 784-256x5-10; every rule within 1.5x of its bound. For scale:
Meulemans et al.'s reference code runs DTP at 2.66x BP in float32 and 5.07x as configured (float64)
on this kind of machine; Ernoult et al. report convolutional DTP (their L-DRL schedule) up to 30x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import epoch_time as timed_epoch

import ngrad
from ngrad.nn.layers import Conv2dLayer
from ngrad.rules import REGISTRY
from ngrad.rules.target_propagation.targets import TargetPropagationRule

FAMILY = [name for name, cls in REGISTRY.items() if issubclass(cls, TargetPropagationRule)]
TARGETS = {"dtp": 2.0, "ddtp": 2.0}
PUBLISHED = {"dtp": "2.66x fp32 / 5.07x fp64 (Meulemans et al. code)"}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter


def epoch_time(rule, optimiser, batches) -> float:
    return timed_epoch(rule, optimiser, batches, clock)


def layer_macs(network) -> list[int]:
    """C_l per sample: multiply-accumulates of each layer's forward product (before pooling)."""
    shapes = [torch.Size(network.input_shape), *network.layer_output_shapes()]
    macs = []
    for layer, below in zip(network.layers, shapes, strict=False):
        if isinstance(layer, Conv2dLayer):
            out_c, in_c, k, _ = layer.weight.shape
            height, width = layer.convolved_size(below[-2], below[-1])
            macs.append(out_c * height * width * in_c * k * k)
        else:
            macs.append(layer.weight.numel())
    return macs


def arithmetic_bound(name: str, network, iterations: int = 1) -> float | None:
    """MACs per batch of rule ``name`` relative to BP's (see the module's docstring)."""
    macs = layer_macs(network)
    total, above = sum(macs), sum(macs[1:])
    backprop = 3 * total - macs[0]
    if name == "bp":
        return 1.0
    if name in ("dtp", "ldrl"):
        return (2 * total + (4 * iterations + 1) * above) / backprop
    if name == "ddtp":
        outputs = network.layers[-1].weight.shape[0]
        hidden = sum(shape.numel() for shape in network.layer_output_shapes()[:-1])
        streams = sum(index * cost for index, cost in enumerate(macs))
        feedback = iterations * (streams + 2 * outputs * hidden) + outputs * hidden
        return (2 * total + feedback) / backprop
    return None


def time_rules(make_network, input_shape, classes, runs, batch_size, batch_count, repeats):
    """Median over repeats of (rule epoch time / BP epoch time of the same repeat); ``runs``:
    {label: (rule name, options)}."""
    generator = torch.Generator().manual_seed(0)
    count = batch_size * batch_count
    inputs = torch.rand(count, *input_shape, generator=generator)
    labels = torch.randint(0, classes, (count,), generator=generator)
    batches = list(zip(inputs.split(batch_size), labels.split(batch_size), strict=True))
    trainers = {}
    for label, (name, options) in {"bp": ("bp", {}), **runs}.items():
        torch.manual_seed(0)
        rule = ngrad.make_rule(name, make_network(), **options)
        optimiser = torch.optim.SGD(rule.parameters(), lr=1e-3, momentum=0.9)
        epoch_time(rule, optimiser, batches[:3])  # warm-up
        trainers[label] = (rule, optimiser)
    times = {label: [] for label in trainers}
    for _ in range(repeats):
        for label, (rule, optimiser) in trainers.items():
            times[label].append(epoch_time(rule, optimiser, batches))
    ratios = {
        label: statistics.median(t / b for t, b in zip(times[label], times["bp"], strict=True))
        for label in trainers
    }
    step_ms = {label: statistics.median(t) / batch_count * 1e3 for label, t in times.items()}
    return ratios, step_ms


def supported(network, names) -> tuple[list[str], list[str]]:
    """Those of ``names`` that can train ``network``, and those that cannot."""
    able = [name for name in names if REGISTRY[name].supports(network)]
    return able, [name for name in names if name not in able]


def report(title, runs, network, ratios, step_ms, targets) -> dict:
    print(f"\n{title}")
    print(f"{'rule':<12} {'time/BP':>8} {'ms/step':>8} {'bound':>6} {'/bound':>7} {'target':>7}")
    rows = {}
    for label, ratio in ratios.items():
        name, options = ("bp", {}) if label == "bp" else runs[label]
        bound = arithmetic_bound(name, network, options.get("feedback_iterations", 1))
        over = None if bound is None else ratio / bound
        target = targets.get(label)
        verdict = "" if target is None else ("meets" if ratio <= target else "MISSES")
        print(
            f"{label:<12} {ratio:>7.3f}x {step_ms[label]:>8.2f} "
            f"{'-' if bound is None else f'{bound:.2f}x':>6} "
            f"{'-' if over is None else f'{over:.2f}':>7} {target or '':>7} {verdict} "
            f"{PUBLISHED.get(label, '') if target else ''}"
        )
        rows[label] = {"ratio": ratio, "ms_per_step": step_ms[label], "bound": bound}
    return rows


def conv_network():
    return ngrad.models.build(
        "vgg", (1, 28, 28), 10, channels=(16, 32, 64), activation="relu", init="pytorch"
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
    parser.add_argument("--cases", default="mlp,square,digits,conv", help="which cases to time")
    parser.add_argument(
        "--conv-iterations",
        default="1,20",
        help="feedback iterations per batch for L-DRL on the conv net (one run each)",
    )
    parser.add_argument("--json", help="also write the ratios here")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, "
        f"{args.clock} clock, {args.repeats} repeats of {args.batches} batches"
    )
    cases = args.cases.split(",")
    results = {}
    main_sizes, square, digits = [784, *[256] * 5, 10], [784, *[256] * 6], [64, 128, 128, 10]
    main_rules, rest = supported(ngrad.mlp(main_sizes), FAMILY)
    plans = [
        ("mlp", "784-256x5-10 tanh, batch 128", main_sizes, main_rules, 128, TARGETS),
        ("square", "784-256x6 tanh (square: exact TP), batch 128", square, rest, 128, {}),
        ("digits", "digits 64-128-128-10 tanh, batch 32", digits, FAMILY, 32, {}),
    ]
    for key, title, sizes, names, batch_size, targets in plans:
        names = supported(ngrad.mlp(sizes), names)[0]
        if key not in cases or not names:
            continue
        runs = {name: (name, {}) for name in names}

        def make(sizes=sizes):
            return ngrad.mlp(sizes, activation="tanh")

        ratios, step_ms = time_rules(
            make, (sizes[0],), sizes[-1], runs, batch_size, args.batches, args.repeats
        )
        results[title] = report(title, runs, make(), ratios, step_ms, targets)
    if "conv" in cases:
        network = conv_network()
        names = supported(network, FAMILY)[0]
        runs = {name: (name, {}) for name in names}
        for k in (int(v) for v in args.conv_iterations.split(",")):
            if k > 1:
                runs[f"ldrl k={k}"] = ("ldrl", {"feedback_iterations": k})
        title = "vgg 16-32-64 relu, pool 2x2 each block, 1x28x28, batch 64"
        ratios, step_ms = time_rules(
            conv_network, (1, 28, 28), 10, runs, 64, args.batches, args.repeats
        )
        results[title] = report(title, runs, network, ratios, step_ms, {})
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
