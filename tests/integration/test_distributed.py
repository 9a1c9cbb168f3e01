"""Data-parallel training on 2 CPU processes (gloo): the same weights as one process.

One spawn of 2 processes trains every registered rule a few steps on half-batches (float64) and,
in the same processes, once more as a single process on the whole batches; the parent compares.
For a rule whose update is a mean over the batch's samples the weights must agree to rounding;
the rules named in ``BATCH_COUPLED`` cannot (their step couples the samples of the batch), and
for them, as for batch norm in a converted module, the ranks must stay identical. One CLI test
runs ``torchrun --nproc-per-node 2 -m ngrad train`` on the digits.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ngrad.nn.network import mlp
from ngrad.rules import REGISTRY, make_rule
from ngrad.train import distributed

SIZES = (12, 6, 6, 6)  # equal widths above the first layer: every rule trains it (tp's inverses)
GLOBAL_BATCH, STEPS, WORLD = 8, 3, 2

BATCH_COUPLED = {
    "ddtp": (
        {"normalised_step": False},
        "normalised_step divides the feedback's gradient by a batch mean of |d|^2",
    ),
    "ep": ({"tolerance": 0.0}, "a phase stops once no state of any sample in the batch moves"),
    "chl": ({"tolerance": 0.0}, "a phase stops once no state of any sample in the batch moves"),
    "pc": ({"tolerance": 0.0}, "the inference stops once no sample's error gradient is large"),
    "microcircuit": (
        {"interneurons": "ideal", "settle_tolerance": 0.0},
        "the interneurons' normalised steps solve over the batch; the forward phase stops "
        "once no potential in the batch moves",
    ),
    "burstprop": (
        {"recurrent": False},
        "the apical inhibition Z takes normalised least-squares steps (a batch mean)",
    ),
}
"""Rules whose default step couples the samples of a batch (so a data-parallel step cannot equal
one process's): the options that switch that part off, and why it couples them."""

EQUAL_TOLERANCE = 1e-9  # float64: the two runs differ by the order of the sums only


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    inputs = torch.randn((GLOBAL_BATCH, SIZES[0]), generator=generator, dtype=torch.float64)
    return inputs, torch.randint(0, SIZES[-1], (GLOBAL_BATCH,), generator=generator)


def _state(module: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in module.state_dict().values()])


def _train(model, name: str, rank: int | None, **options) -> torch.Tensor:
    """The rule trained STEPS steps: on rank ``rank``'s half of each batch (data-parallel), or
    (None) on the whole batches in this process alone."""
    torch.manual_seed(0)
    rule = make_rule(name, model(), **options)
    optimizer = torch.optim.SGD(rule.param_groups(), lr=0.05)
    rule.check_optimizer(optimizer)
    if rank is not None:
        distributed.broadcast_state(rule)
    for step in range(STEPS):
        inputs, labels = _batch(step)
        if rank is None:
            rule.backward(inputs, labels)
        else:
            share = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
            distributed.train_step(rule, inputs[share], labels[share])
        optimizer.step()
    return _state(rule)


def _dense() -> nn.Module:
    return mlp(list(SIZES), activation="tanh").double()


def _with_batch_norm() -> nn.Module:
    return nn.Sequential(
        nn.Linear(SIZES[0], 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, SIZES[-1])
    ).double()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    distributed.setup("cpu")
    states = {}
    for name in REGISTRY:
        options = BATCH_COUPLED.get(name, ({}, ""))[0]
        states[name] = {
            "parallel": _train(_dense, name, rank, **options),
            "alone": _train(_dense, name, None, **options),
        }
        if name in BATCH_COUPLED:
            states[name]["default"] = _train(_dense, name, rank)
    states["fa+batchnorm"] = {"parallel": _train(_with_batch_norm, "fa", rank)}
    torch.save(states, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(
        _worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="spawn"
    )
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


def _largest_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((first - second).abs().max() / second.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_half_batches_on_two_ranks_equal_one_process(trained, name):
    """With the batch-coupled part switched off (BATCH_COUPLED), every rule."""
    for rank in range(WORLD):
        difference = _largest_difference(trained[rank][name]["parallel"], trained[0][name]["alone"])
        assert difference < EQUAL_TOLERANCE, (name, rank, difference)


@pytest.mark.parametrize("name", [*BATCH_COUPLED, "fa+batchnorm"])
def test_ranks_stay_identical_where_one_process_differs(trained, name):
    key = "parallel" if name == "fa+batchnorm" else "default"
    assert torch.equal(trained[0][name][key], trained[1][name][key])


@pytest.mark.parametrize(("batch", "world"), [(6, 2), (8, 4), (8, 8)])
def test_shares_of_each_batch_make_up_the_batch_of_one_process(batch, world):
    from ngrad.data.loading import training_batches

    labels = torch.arange(23)
    inputs = labels.double()[:, None]

    def steps(**shard):
        loader = training_batches(inputs, labels, batch, torch.Generator().manual_seed(3), **shard)
        return [y.tolist() for _, y in loader], len(loader)

    whole, _ = steps()
    shares = [steps(rank=rank, world=world) for rank in range(world)]
    # a last batch is cut to a multiple of the processes, and skipped if smaller than that
    expected = [b[: len(b) - len(b) % world] for b in whole if len(b) >= world]
    for _, count in shares:
        assert count == len(expected)
    for step, batch_of_one in enumerate(expected):
        assert [i for share, _ in shares for i in share[step]] == batch_of_one


def test_crops_of_each_share_are_those_of_the_whole_batch():
    from ngrad.data.transforms import random_crop_flip

    images = torch.rand(6, 1, 8, 8)
    whole = random_crop_flip(images, torch.Generator().manual_seed(1))
    shares = [
        random_crop_flip(
            images[r * 3 : r * 3 + 3], torch.Generator().manual_seed(1), rows=(r * 3, 6)
        )
        for r in range(2)
    ]
    assert torch.equal(torch.cat(shares), whole)


def test_uneven_batch_is_refused(monkeypatch):
    from ngrad.errors import ConfigError

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="multiple of 2"):
        distributed.check_batch_size(33)


def test_commands_other_than_train_refuse_several_processes(monkeypatch, capsys):
    from ngrad.cli.parser import EXIT_USAGE, main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", "--data", "digits"]) == EXIT_USAGE
    assert "only `ngrad train` trains data-parallel" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_trains_one_run_written_by_rank_zero(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "ngrad",
        "train",
        "--rule",
        "fa",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--train-subset",
        "320",
        "--diagnostics-samples",
        "32",
        "--no-progress",
        "--out",
        str(out),
    ]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "NGRAD_DEBUG": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=environment, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("results in") == 1, result.stdout  # rank 0 reports
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]  # one writer
    sessions = json.loads((out / "environment.json").read_text())
    assert len(sessions) == 1 and sessions[0]["processes"] == 2
    assert json.loads((out / "summary.json").read_text())["epochs_completed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
