"""Epoch time of every rule on a GPU, as ratios to backprop and as a fraction of the card's rate.

    python benchmarks/gpu.py                        # cuda, every registered rule, mlp/lenet/vgg
    python benchmarks/gpu.py --rules bp,fa,dfa,kp,dtp,ddtp,ep,pc
    python benchmarks/gpu.py --device cpu --quick   # a smoke run of the whole script

First the card's fp32 matrix-multiply rate: a large square matmul (n = 8192), warmed up, timed
between synchronisations (TF32 off, so it is the fp32 rate). Then, per model and rule, one epoch of
``rule.backward`` + SGD step over MNIST-sized data (the first ``--samples`` MNIST training images
when ../shared/data holds MNIST, else random 1x28x28 images with 10 classes), the batches already
on the device, timed between synchronisations after a warm-up, the median of ``--repeats``
epochs. Models: ``mlp`` (784-1000-1000-1000-10, tanh), ``lenet`` (the catalogue's LeNet) and
``vgg`` (the catalogue's, channels 64-128-256); a rule that cannot train a model is listed as
skipped with its reason. Each line gives the epoch time, its ratio to BP's on the same model, the
FLOPs of one step of that rule (counted by torch.utils.flop_counter: matmuls and convolutions) and
the rate they were done at as a fraction of the card's fp32 matmul rate. A rule whose epoch
would take more than ``--budget-s`` is timed on fewer batches and its time scaled up (marked ~).
It runs in under 5 minutes on a recent data-centre GPU with the defaults.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from _common import default_data_dir, fmt
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ngrad
from ngrad import models
from ngrad.rules import REGISTRY

CLASSES = 10


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def matmul_rate(device: torch.device, n: int, repeats: int) -> float:
    """fp32 FLOP/s of an n x n matmul (2 n^3 FLOPs), warmed up and synchronised."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device)
    b = torch.randn(n, n, generator=generator).to(device)
    for _ in range(3):
        a @ b
    synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronise(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def load_images(samples: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images N x 1 x 28 x 28 in [0, 1], labels, where they came from)."""
    try:
        from ngrad.data import load_dataset

        data = load_dataset("mnist", data_dir=default_data_dir())
        return data.train_x[:samples].float(), data.train_y[:samples], "MNIST"
    except Exception:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(samples, 1, 28, 28, generator=generator)
        return images, torch.randint(0, CLASSES, (samples,), generator=generator), "random"


def build(model: str, quick: bool) -> nn.Module:
    """The benchmark's model (smaller with --quick), on the CPU, seeded."""
    torch.manual_seed(0)
    if model == "mlp":
        widths = [64, 64] if quick else [1000, 1000, 1000]
        return ngrad.mlp([784, *widths, CLASSES], activation="tanh")
    options = {"channels": (4, 8) if quick else (64, 128, 256)} if model == "vgg" else {}
    return models.build(model, (1, 28, 28), CLASSES, **options)


def shaped(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Flat vectors for a dense Network's first layer, images otherwise."""
    first = getattr(model, "layers", [None])[0]
    return images.flatten(1) if isinstance(first, ngrad.nn.layers.DenseLayer) else images


def step_flops(rule, inputs: torch.Tensor, targets: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        rule.backward(inputs, targets)
    return counter.get_total_flops()


def time_epoch(
    rule, optimiser, batches: list, device: torch.device, clock: Callable[[], float]
) -> float:
    synchronise(device)
    start = clock()
    for inputs, targets in batches:
        rule.backward(inputs, targets)
        optimiser.step()
    synchronise(device)
    return clock() - start


def measure(name: str, model: nn.Module, batches: list, args, device) -> dict:
    """Epoch time (median of repeats, scaled up from fewer batches for a slow rule) and FLOPs."""
    rule = ngrad.make_rule(name, model).to(device)
    optimiser = torch.optim.SGD(rule.parameters(), lr=0.01, momentum=0.9)
    flops = step_flops(rule, *batches[0])
    warm = time_epoch(rule, optimiser, batches[:2], device, time.perf_counter) / 2
    used = batches
    if warm * len(batches) > args.budget_s:  # a slow rule: time a share and scale up
        used = batches[: max(2, int(args.budget_s / max(warm, 1e-9)))]
    times = [
        time_epoch(rule, optimiser, used, device, time.perf_counter) * len(batches) / len(used)
        for _ in range(args.repeats)
    ]
    return {"time_s": statistics.median(times), "flops": flops, "scaled": len(used) < len(batches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rules", default="", help="comma-separated (default: every rule)")
    parser.add_argument("--models", default="mlp,lenet,vgg")
    parser.add_argument("--samples", type=int, default=12800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=8.0, help="most seconds per epoch")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.batch_size, args.repeats = 128, 32, 1
        args.matmul_size, args.budget_s = 512, 0.5
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False; use --device cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    names = [r for r in args.rules.split(",") if r] or list(REGISTRY)
    names = ["bp"] + [r for r in names if r != "bp"]

    print(f"device: {device_name(device)} ({device})")
    cuda = torch.version.cuda or "-"
    print(f"torch {torch.__version__}, CUDA {cuda}, python {platform.python_version()}")
    images, labels, source = load_images(args.samples)
    print(
        f"settings: {len(labels)} {source} samples, batch {args.batch_size}, "
        f"repeats {args.repeats}, budget {args.budget_s:g} s/epoch, SGD lr 0.01 momentum 0.9, "
        f"fp32 (TF32 off){', quick' if args.quick else ''}"
    )
    peak = matmul_rate(device, args.matmul_size, 5 if args.quick else 20)
    print(f"fp32 matmul rate (n={args.matmul_size}): {peak / 1e12:.3g} TFLOP/s")

    for model_name in args.models.split(","):
        model = build(model_name, args.quick)
        x = shaped(model, images).to(device)
        y = labels.to(device)
        batches = [
            (x[i : i + args.batch_size], y[i : i + args.batch_size])
            for i in range(0, len(y), args.batch_size)
        ]
        parameters = sum(p.numel() for p in model.parameters())
        print(f"\n{model_name} ({parameters:,} parameters, {len(batches)} batches/epoch)")
        print(f"{'rule':<13} {'epoch s':>9} {'x BP':>7} {'GFLOP/step':>11} {'% of peak':>10}")
        bp_time = None
        for name in names:
            cls = REGISTRY[name]
            reason = cls.unsupported_reason(build(model_name, args.quick))
            if reason is not None:
                print(f"{name:<13} skipped: {reason}")
                continue
            result = measure(name, build(model_name, args.quick), batches, args, device)
            bp_time = result["time_s"] if name == "bp" else bp_time
            ratio = result["time_s"] / bp_time if bp_time else None
            rate = result["flops"] * len(batches) / result["time_s"]
            mark = "~" if result["scaled"] else " "
            print(
                f"{name:<13} {result['time_s']:>8.3f}{mark} {fmt(ratio, '>6.2f')}x "
                f"{result['flops'] / 1e9:>11.3f} {100 * rate / peak:>9.2f}%"
            )


if __name__ == "__main__":
    main()
