"""`ngrad similarity` on tiny trained runs: outputs, pairing with the reference, a planted neural
recording, and one-line errors."""

import csv
import json
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
    args = ["compare", "--rules", "fa", "--seeds", "2", "--epochs", "1", "--hidden", "16,12"]
    args += ["--diagnostics-samples", "0", "--no-progress", "--out", str(out)]
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


def test_run_directories_a_layer_and_an_unmatched_seed(compare_dir, tmp_path, capsys):
    runs = compare_dir / "runs"
    out = tmp_path / "sim"
    args = ["similarity", str(runs / "bp-seed0"), str(runs / "fa-seed1"), "--layer", "2"]
    assert main([*args, "--out", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    by_rule = {r["rule"]: r for r in results["runs"]}
    assert results["layers"] == [2] and [row["layer"] for row in by_rule["fa"]["layers"]] == [2]
    assert by_rule["fa"]["reference_seed"] == 0 and not by_rule["fa"]["matched_by_seed"]
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


@pytest.mark.parametrize(
    ("extra", "code", "fragments"),
    [
        (["--reference", "nope"], 2, ["unknown rule 'nope'"]),
        (["--layer", "4"], 2, ["--layer", "between 1 and 3"]),
        (["--layer", "one"], 2, ["--layer"]),
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
