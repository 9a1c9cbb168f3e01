"""`ngrad similarity` on tiny trained runs: outputs, pairing with the reference, a planted neural
recording, and one-line errors."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ngrad.analysis import similarity
from ngrad.cli import main
from ngrad.train.runs import load_run

FAST = ["--samples", "120", "--bootstrap", "40", "--no-progress"]


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("similarity") / "cmp"
    args = ["compare", "--rules", "fa", "--data", "digits", "--seeds", "2", "--epochs", "1"]
    args += ["--hidden", "16,12"]
    args += ["--batch-size", "16", "--diagnostics-samples", "0", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    return out


def _layer_activity(run_dir: Path, images: torch.Tensor, layer: int) -> np.ndarray:
    run = load_run(run_dir)
    with torch.no_grad():
        return run.rule.network.trace(images.flatten(1)).activities[layer].double().numpy()


@pytest.fixture(scope="module")
def planted_recording(compare_dir, tmp_path_factory) -> Path:
    """Sites driven by layer 1 of bp-seed0 (validation images as stimuli), 4 noisy trials."""
    data = load_run(compare_dir / "runs" / "bp-seed0").data
    images, labels = data.val_x[:200], data.val_y[:200].numpy()
    layer = _layer_activity(compare_dir / "runs" / "bp-seed0", images, 1)
    rng = np.random.default_rng(0)
    signal = layer @ rng.normal(size=(layer.shape[1], 12))
    noise = 0.5 * signal.std(axis=0)
    responses = signal[:, :, None] + noise[None, :, None] * rng.normal(size=(200, 12, 4))
    path = tmp_path_factory.mktemp("neural") / "planted.npz"
    np.savez(path, stimuli=images.numpy(), responses=responses, object=labels)
    return path


def _one_error_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ngrad: error: ") and "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_compare_directory_with_a_planted_recording(
    compare_dir, planted_recording, tmp_path, capsys
):
    out = tmp_path / "sim"
    args = ["similarity", str(compare_dir), "--neural", str(planted_recording), "--out", str(out)]
    assert main(args + FAST) == 0
    printed = capsys.readouterr().out
    assert "| fa | 2 |" in printed and "| bp | 2 |" in printed and "Pearson r" in printed
    for name in ["similarity_heatmap.png", "accuracy_vs_similarity.png"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    results = json.loads((out / "results.json").read_text())
    runs = {(r["rule"], r["seed"]): r for r in results["runs"]}
    assert set(runs) == {("bp", 0), ("bp", 1), ("fa", 0), ("fa", 1)}
    assert (runs["fa", 1]["reference_seed"], runs["fa", 1]["matched_by_seed"]) == (1, True)
    assert (runs["bp", 0]["reference_seed"], runs["bp", 1]["reference_seed"]) == (1, 0)
    assert results["layers"] == [1, 2, 3] and results["summary_layer"] == 2
    for record in results["runs"]:
        for row in record["layers"]:
            assert 0 <= row["cka"] <= 1 and row["rsa_ci"][0] <= row["rsa"] <= row["rsa_ci"][1]

    # the command's numbers are the measures on the first 120 test images, paired by seed
    test_images = load_run(compare_dir / "runs" / "fa-seed0").data.test_x[:120]
    fa = _layer_activity(compare_dir / "runs" / "fa-seed0", test_images, 2)
    bp = _layer_activity(compare_dir / "runs" / "bp-seed0", test_images, 2)
    reported = runs["fa", 0]["layers"][1]
    assert reported["cka"] == pytest.approx(similarity.cka(fa, bp), abs=1e-9)
    assert reported["rsa"] == pytest.approx(similarity.rsa(fa, bp, n_bootstrap=0).correlation)
    pixels = test_images.flatten(1).double().numpy()  # the input baseline, mean over bp seeds
    bp_seed1 = _layer_activity(compare_dir / "runs" / "bp-seed1", test_images, 2)
    expected = (similarity.cka(pixels, bp) + similarity.cka(pixels, bp_seed1)) / 2
    assert results["input_baseline"][1]["cka"]["mean"] == pytest.approx(expected, abs=1e-9)

    planted = runs["bp", 0]["layers"][0]["predictivity"]
    assert planted["attenuation_corrected"] > 0.9  # the layer that drives the sites
    assert results["neural"]["sites"] == 12 and 0.5 < results["neural"]["ceiling"] <= 1
    assert "raw" in results["neural"]["pixels"]
    assert results["accuracy_vs_similarity"]["predictivity"]["runs"]["n"] == 4
    with (out / "similarity.csv").open() as stream:
        assert len(list(csv.DictReader(stream))) == 4 * 3
    markdown = (out / "similarity.md").read_text()
    assert (
        "| rule | runs | test acc | cka L1" in markdown and "| input (pixels) | 2 | - |" in markdown
    )


def test_run_directories_a_layer_and_pairing_by_seed(compare_dir, tmp_path, capsys):
    runs = compare_dir / "runs"
    out = tmp_path / "sim"
    args = ["similarity", str(runs / "bp-seed1"), str(runs / "fa-seed1"), "--layer", "2"]
    assert main([*args, "--out", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    by_rule = {r["rule"]: r for r in results["runs"]}
    assert results["layers"] == [2] and [row["layer"] for row in by_rule["fa"]["layers"]] == [2]
    assert by_rule["fa"]["reference_seed"] == 1 and by_rule["fa"]["matched_by_seed"]
    assert by_rule["bp"]["reference_run"] is None and "cka" not in by_rule["bp"]["layers"][0]
    other = tmp_path / "against_fa"
    args = ["similarity", str(compare_dir), "--reference", "fa", "--out", str(other), *FAST]
    assert main(args) == 0
    capsys.readouterr()
    reference = json.loads((other / "results.json").read_text())
    assert {r["reference_run"].split("/")[-1] for r in reference["runs"] if r["rule"] == "bp"} == {
        "fa-seed0",
        "fa-seed1",
    }


def _copy_run(compare_dir: Path, name: str, where: Path) -> Path:
    copy = where / name
    shutil.copytree(compare_dir / "runs" / name, copy)
    return copy


def test_runs_that_cannot_be_paired_are_refused(compare_dir, tmp_path, capsys):
    runs, out = compare_dir / "runs", ["--out", str(tmp_path / "o"), *FAST]
    # another seed: no bp run of fa's seed
    assert main(["similarity", str(runs / "bp-seed0"), str(runs / "fa-seed1"), *out]) == 2
    _one_error_line(capsys.readouterr().err, "no bp run with seed 1", "fa-seed1")
    # another experiment: a reference run trained longer with another activation
    other = _copy_run(compare_dir, "bp-seed1", tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"epochs": 3, "activation": "relu"}))
    assert main(["similarity", str(runs / "fa-seed1"), str(other), *out]) == 2
    _one_error_line(capsys.readouterr().err, "different experiments", "activation", "epochs")
    # the same rule and seed twice
    twin = _copy_run(compare_dir, "bp-seed0", tmp_path / "twin")
    assert main(["similarity", str(compare_dir), str(twin), *out]) == 2
    _one_error_line(capsys.readouterr().err, "both bp with seed 0")


def test_damaged_runs_are_named(compare_dir, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o"), *FAST]
    fa = _copy_run(compare_dir, "fa-seed0", tmp_path)
    bp = _copy_run(compare_dir, "bp-seed0", tmp_path)
    (bp / "summary.json").write_text('{"test_accuracy": 0.5,')
    assert main(["similarity", str(bp), str(fa), *out]) == 1
    _one_error_line(capsys.readouterr().err, "summary.json")
    (bp / "summary.json").unlink()
    state = torch.load(fa / "best.pt", weights_only=True)
    name = next(key for key in state["rule_state"] if key.endswith("weight"))
    state["rule_state"][name][0, 0] = float("nan")
    torch.save(state, fa / "best.pt")
    assert main(["similarity", str(bp), str(fa), *out]) == 1
    _one_error_line(capsys.readouterr().err, "best.pt", "non-finite", name)
    (fa / "best.pt").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # a fake zip
    assert main(["similarity", str(bp), str(fa), *out]) == 1
    _one_error_line(capsys.readouterr().err, str(fa / "best.pt"))


@pytest.mark.parametrize(
    ("extra", "code", "fragments"),
    [
        (["--reference", "nope"], 2, ["unknown rule 'nope'"]),
        (["--layer", "4"], 2, ["--layer", "between 1 and 3"]),
        (["--layer", "one"], 2, ["--layer"]),
        (["--layer", ","], 2, ["--layer", "','"]),
        (["--layer", "1,,2"], 2, ["--layer"]),
        (["--layer", "2,2"], 2, ["--layer", "twice"]),
        (["--samples", "2"], 2, ["--samples"]),
    ],
)
def test_usage_errors(compare_dir, tmp_path, capsys, extra, code, fragments):
    args = ["similarity", str(compare_dir), "--out", str(tmp_path / "o"), "--no-progress", *extra]
    assert main(args) == code
    _one_error_line(capsys.readouterr().err, *fragments)


def test_missing_inputs_and_bad_recordings(compare_dir, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o"), "--no-progress"]
    assert main(["similarity", str(tmp_path / "nowhere"), *out]) == 2
    _one_error_line(capsys.readouterr().err, "neither a run directory")
    assert main(["similarity", str(compare_dir / "runs" / "fa-seed0"), *out]) == 2
    _one_error_line(capsys.readouterr().err, "no run of the reference rule 'bp'")
    assert main(["similarity", str(compare_dir)]) == 2
    _one_error_line(capsys.readouterr().err, "--out")
    wrong_size = tmp_path / "wrong.npz"
    rng = np.random.default_rng(1)
    np.savez(wrong_size, stimuli=rng.random((60, 10, 10)), responses=rng.random((60, 3, 2)))
    assert main(["similarity", str(compare_dir), "--neural", str(wrong_size), *out]) == 1
    _one_error_line(capsys.readouterr().err, "100 values", "take 64")
    assert main(["similarity", str(compare_dir), "--neural", str(tmp_path / "x.npz"), *out]) == 1
    _one_error_line(capsys.readouterr().err, "does not exist")


def _recording(path: Path, stimuli: np.ndarray, responses: np.ndarray) -> Path:
    np.savez(path, stimuli=stimuli, responses=responses)
    return path


def test_a_noise_dominated_recording_is_reported_not_a_crash(compare_dir, tmp_path, capsys):
    """Two seeds of each rule and a split-half ceiling <= 0: predictivity cannot be normalised;
    the raw r is kept, the table shows "-", and a line says why."""
    rng = np.random.default_rng(3)
    first = rng.normal(size=(60, 5))
    responses = np.stack([first, -first + 0.05 * rng.normal(size=(60, 5))], axis=2)
    stimuli = load_run(compare_dir / "runs" / "bp-seed0").data.val_x[:60].numpy()
    recording = _recording(tmp_path / "noise.npz", stimuli, responses)
    out = tmp_path / "sim"
    args = ["similarity", str(compare_dir), "--neural", str(recording), "--out", str(out)]
    assert main([*args, *FAST]) == 0
    printed = capsys.readouterr()
    assert "split-half ceiling is" in printed.out and "Traceback" not in printed.err
    results = json.loads((out / "results.json").read_text())
    assert results["neural"]["ceiling"] is None or results["neural"]["ceiling"] <= 0
    prediction = results["runs"][0]["layers"][0]["predictivity"]
    assert prediction["normalized"] is None and prediction["raw"] is not None
    assert all(row["predictivity"]["mean"] is None for row in results["table"])
    assert "split-half ceiling" in (out / "similarity.md").read_text()


def test_unusable_recordings_are_one_line_each(compare_dir, tmp_path, capsys):
    stimuli = load_run(compare_dir / "runs" / "bp-seed0").data.val_x[:60].numpy()
    constant = _recording(tmp_path / "constant.npz", stimuli, np.ones((60, 261, 2)))
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    out = ["--out", str(tmp_path / "o"), *FAST]
    for path, fragment in [(constant, "the same for every stimulus"), (fake, "not a readable")]:
        assert main(["similarity", str(compare_dir), "--neural", str(path), *out]) == 1
        _one_error_line(capsys.readouterr().err, str(path), fragment)


def test_ctrl_c_does_not_suggest_resuming_training(compare_dir, tmp_path, capsys, monkeypatch):
    import ngrad.analysis.similarity_runs as similarity_runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(similarity_runs, "compare_runs", interrupted)
    args = ["similarity", str(compare_dir), "--out", str(tmp_path / "o"), *FAST]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" not in err and "Traceback" not in err
