"""Rule-specific diagnostics (StepRecord.series, LearningRule.diagnose) reach metrics and plots."""

import dataclasses
import json

from ngrad import rules
from ngrad.rules.feedback_alignment.feedback_alignment import FeedbackAlignment
from ngrad.train.config import make_config
from ngrad.train.loop import run_training


class ReportingFA(FeedbackAlignment):
    def backward(self, inputs, targets):
        record = super().backward(inputs, targets)
        sizes = [float(error.abs().mean()) for error in record.layer_errors]
        series = {"error_size_by_layer": sizes, "energy_by_step": [3.0, 2.0, 1.5, 1.4]}
        return dataclasses.replace(record, scalars={"steps_used": 4.0}, series=series)

    def diagnose(self, inputs, targets):
        return {"costly_angle_by_layer": [10.0, float("nan"), 0.0]}


def test_rule_series_and_diagnoses_are_logged_and_plotted(tmp_path, monkeypatch):
    monkeypatch.setitem(rules.REGISTRY, "fa", ReportingFA)
    config = make_config({"rule": "fa", "epochs": 2, "hidden": (8, 8), "diagnostics_samples": 32})
    run_training(config, tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = lines[-1]["rule_diagnostics"]
    assert logged["steps_used"] == 4.0
    assert len(logged["error_size_by_layer"]) == 3
    assert logged["energy_by_step"] == [3.0, 2.0, 1.5, 1.4]
    assert logged["costly_angle_by_layer"] == [10.0, None, 0.0]
    assert (tmp_path / "rule_diagnostics.png").stat().st_size > 1000
    assert (tmp_path / "relaxation.png").stat().st_size > 1000
