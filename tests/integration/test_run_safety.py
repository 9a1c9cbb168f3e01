"""Run directories never lose or mix data: one writer at a time, no silent overwrite, atomic
rewrites, a full disk named, resume proves it continues the same run, damaged files named."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ngrad.cli import main
from ngrad.train import checkpoint
from ngrad.train.config import make_config
from ngrad.train.loop import run_training
from ngrad.train.runs import LOCK_NAME, RunLock
from ngrad.train.session import TrainingSession

SMALL = {"epochs": 2, "hidden": (16,), "diagnostics_samples": 32, "train_subset": 400}
FLAGS = [
    "--epochs",
    "2",
    "--hidden",
    "16",
    "--diagnostics-samples",
    "32",
    "--train-subset",
    "400",
    "--no-progress",
]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_times(lines):
    timings = ("epoch_time_s", "epoch_cpu_s")
    return [{k: v for k, v in line.items() if k not in timings} for line in lines]


def _one_error_line(stderr: str, *fragments: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("ngrad: error")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _interrupt_at(epoch):
    def stop(line):
        if line["epoch"] == epoch:
            raise KeyboardInterrupt

    return stop


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A whole two-epoch fa run, and the same run interrupted after epoch 1."""
    root = tmp_path_factory.mktemp("runs")
    values = SMALL | {"rule": "fa"}
    run_training(make_config(values), root / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_training(make_config(values), root / "cut", progress=False, on_epoch=_interrupt_at(1))
    return root


@pytest.fixture
def cut(runs, tmp_path):
    """A private copy of the interrupted run."""
    return Path(shutil.copytree(runs / "cut", tmp_path / "cut"))


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != LOCK_NAME
    }


# ---------------------------------------------------------------- one writer ----------------
def test_a_second_writer_fails_at_once_while_the_run_holds_its_directory(tmp_path, capsys):
    out = tmp_path / "run"
    codes = []

    def second_writer(line):
        if line["epoch"] == 1:
            codes.append(main(["train", "--rule", "bp", "--out", str(out), *FLAGS]))
            codes.append(main(["train", "--resume", str(out), "--no-progress"]))

    run_training(make_config(SMALL | {"rule": "fa"}), out, progress=False, on_epoch=second_writer)
    assert codes == [1, 1]
    err = capsys.readouterr().err
    assert err.count("is in use by another ngrad process") == 2, err
    assert f"pid {os.getpid()}" in err
    assert [line["epoch"] for line in _metrics(out)] == [0, 1, 2]  # nothing interleaved


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom ngrad.train.runs import RunLock\n"
            f"with RunLock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--rule", "bp", "--out", str(out), *FLAGS]) == 1
        _one_error_line(capsys.readouterr().err, "in use by another ngrad process")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert main(["train", "--rule", "bp", "--out", str(out), *FLAGS]) == 0
    with RunLock(out):  # released when the run ended
        pass


@pytest.mark.slow
@pytest.mark.slow
def test_kill_9_during_training_then_resume_gives_the_uninterrupted_result(runs, tmp_path):
    out = tmp_path / "killed"
    args = ["--rule", "fa", "--batch-size", "4", *FLAGS[:-1]]
    train = subprocess.Popen(
        [sys.executable, "-m", "ngrad", "train", "--out", str(out), *args, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"OMP_NUM_THREADS": "1"},  # the thread count of this process
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").is_file() and train.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    train.send_signal(signal.SIGKILL)
    train.wait()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    whole = tmp_path / "whole"
    assert main(["train", "--out", str(whole), *args, "--no-progress"]) == 0
    assert _without_times(_metrics(out)) == _without_times(_metrics(whole))


# ---------------------------------------------------------------- no silent overwrite --------
def test_a_directory_holding_a_run_or_other_files_is_refused(runs, tmp_path, capsys):
    out = Path(shutil.copytree(runs / "whole", tmp_path / "old"))
    before = _snapshot(out)
    assert main(["train", "--rule", "bp", "--out", str(out), *FLAGS]) == 1
    line = _one_error_line(capsys.readouterr().err, "already holds a run of fa", "--overwrite")
    assert f"--resume {out}" in line
    assert _snapshot(out) == before

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own settings"}')
    (mine / "notes.txt").write_text("keep me")
    assert main(["train", "--rule", "bp", "--out", str(mine), *FLAGS]) == 1
    _one_error_line(capsys.readouterr().err, "is not empty", "--overwrite")
    assert (mine / "config.json").read_text() == '{"my": "own settings"}'


def test_overwrite_removes_every_file_of_the_old_run_first(runs, tmp_path, monkeypatch):
    out = Path(shutil.copytree(runs / "whole", tmp_path / "old"))
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out").write_text("old")
    (out / "relaxation.png").write_text("old plot")
    (out / ".checkpoint.pt.abc.tmp").write_text("left by a crash")
    (out / "notes.txt").write_text("not a run file")

    def crash(*args):  # before the new run's first checkpoint: nothing old may remain
        raise RuntimeError("crash")

    monkeypatch.setattr(TrainingSession, "measure", crash)
    config = make_config(SMALL | {"rule": "bp"})
    with pytest.raises(RuntimeError):
        run_training(config, out, overwrite=True, progress=False)
    left = sorted(p.name for p in out.iterdir())
    assert left == [
        ".ngrad.lock",
        "config.json",
        "environment.json",
        "notes.txt",
        "summary.json",
    ]
    assert json.loads((out / "config.json").read_text())["rule"] == "bp"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "error" and "crash" in summary["status_reason"]
    monkeypatch.undo()
    assert main(["train", "--rule", "bp", "--out", str(out), "--overwrite", *FLAGS]) == 0


# ---------------------------------------------------------------- atomic files ---------------
def test_resume_rewrites_the_history_atomically_and_repairs_a_cut_last_line(runs, cut, capsys):
    with (cut / "metrics.jsonl").open("a") as stream:  # the disk filled while appending
        stream.write('{"epoch": 2, "train_loss": 0.4, "val_acc')
    inode = (cut / "metrics.jsonl").stat().st_ino
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 0
    assert "last line was cut off" in capsys.readouterr().err
    assert (cut / "metrics.jsonl").stat().st_ino != inode  # replaced by rename, not rewritten
    assert _without_times(_metrics(cut)) == _without_times(_metrics(runs / "whole"))


def test_a_failed_rewrite_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def fail(stream):
        stream.write(b"half")
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with pytest.raises(checkpoint.StorageError, match="Input/output error"):
        checkpoint._atomic_replace(target, fail)
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        out = tmp_path / "run"
        run_training(make_config(SMALL | {"rule": "bp", "epochs": 1}), out, progress=False)
    finally:
        os.umask(previous)
    for name in ["config.json", "checkpoint.pt", "best.pt", "summary.json", "metrics.jsonl"]:
        assert (out / name).stat().st_mode & 0o777 == 0o640, name


# ---------------------------------------------------------------- a full disk ----------------
class _FullDisk:
    """A file object whose writes fail with ENOSPC after ``room`` bytes."""

    def __init__(self, stream, room):
        self.stream, self.room = stream, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


def test_a_full_disk_during_a_checkpoint_is_named(tmp_path, monkeypatch, capsys):
    real = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k), 2000))
    out = tmp_path / "run"
    assert main(["train", "--rule", "bp", "--out", str(out), *FLAGS]) == 1
    line = _one_error_line(capsys.readouterr().err, "No space left on device", "free some space")
    assert "unexpected pos" not in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_while_appending_leaves_no_half_line(cut, monkeypatch, capsys):
    before = (cut / "metrics.jsonl").read_bytes()
    real_write = os.write

    def full(handle, data):
        real_write(handle, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "write", full)
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "No space left on device", f"--resume {cut}")
    assert (cut / "metrics.jsonl").read_bytes() == before
    monkeypatch.undo()
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 0


# ---------------------------------------------------------------- resume checks --------------
def test_a_completed_run_without_its_history_is_refused_before_anything_is_written(runs, tmp_path):
    out = Path(shutil.copytree(runs / "whole", tmp_path / "whole"))
    (out / "metrics.jsonl").unlink()
    before = _snapshot(out)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 1
    assert _snapshot(out) == before


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def test_resume_proves_the_checkpoint_belongs_to_the_run(runs, cut, tmp_path, capsys):
    other = tmp_path / "other"
    run_training(make_config(SMALL | {"rule": "fa", "seed": 5, "epochs": 1}), other, progress=False)
    shutil.copy(other / "checkpoint.pt", cut / "checkpoint.pt")
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "belongs to another run", "its seed is 5")

    state = _state(runs / "cut")
    state["data"] = "0" * 64
    torch.save(state, cut / "checkpoint.pt")
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "other data")

    wider = tmp_path / "wider"  # an older checkpoint without its settings: the shapes decide
    config = make_config(SMALL | {"rule": "fa", "hidden": (12,), "epochs": 1})
    run_training(config, wider, progress=False)
    state = _state(wider)
    del state["config"], state["data"]
    torch.save(state, cut / "checkpoint.pt")
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "does not fit the network", "size mismatch")


def _save(state_change):
    def damage(run_dir: Path) -> None:
        state = _state(run_dir)
        state_change(state)
        torch.save(state, run_dir / "checkpoint.pt")

    return damage


def _write(name: str, content: bytes, append: bool = False):
    def damage(run_dir: Path) -> None:
        with (run_dir / name).open("ab" if append else "wb") as stream:
            stream.write(content)

    return damage


def _unsafe(run_dir: Path) -> None:
    torch.save({"payload": Path("x")}, run_dir / "checkpoint.pt")


def _truncate(run_dir: Path) -> None:
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])


def _garbage_line(run_dir: Path) -> None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join([lines[0], "#!garbage", *lines[1:]]) + "\n")


def _binary_line(run_dir: Path) -> None:
    data = (run_dir / "metrics.jsonl").read_bytes()
    (run_dir / "metrics.jsonl").write_bytes(b"\x00\xff\xfe\x80binary\n" + data)


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (_write("checkpoint.pt", b""), ["is empty", "--overwrite"]),
        (_truncate, ["is truncated"]),
        (_write("checkpoint.pt", b"\x00garbage"), ["is not a checkpoint"]),
        (_unsafe, ["holds objects other than tensors", "refused unread"]),
        (_save(lambda s: s.pop("optimizer_state")), ["lacks 'optimizer_state'", "--overwrite"]),
        (_save(lambda s: s.update(epoch="1")), ["'epoch' is of type str, expected int"]),
        (_save(lambda s: s.update(rule_state={"x": torch.zeros(1)})), ["does not fit"]),
        (_write("config.json", b"\x00\x81\xff binary"), ["config.json", "damaged (not text)"]),
        (_write("config.json", b"{not json"), ["config.json", "damaged"]),
        (_garbage_line, ["metrics.jsonl' line 2 is not an epoch record", "--overwrite"]),
        (_binary_line, ["metrics.jsonl' line 1 is not an epoch record"]),
        (_write("metrics.jsonl", b"[1, 2]\n", append=True), ["line 3 is not an epoch record"]),
    ],
)
def test_damaged_run_files_are_named_with_what_to_do(cut, capsys, damage, fragments):
    damage(cut)
    before = _snapshot(cut)
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 1
    line = _one_error_line(capsys.readouterr().err, *fragments)
    assert "weights_only" not in line and "Errno" not in line
    assert _snapshot(cut) == before  # nothing written


def test_resume_without_a_checkpoint_says_to_start_again(cut, capsys):
    (cut / "checkpoint.pt").unlink()
    assert main(["train", "--resume", str(cut), "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "no checkpoint.pt", "--overwrite")
    assert main(["train", "--rule", "fa", "--out", str(cut), "--overwrite", *FLAGS]) == 0
