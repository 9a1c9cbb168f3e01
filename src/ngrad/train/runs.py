"""Load what `ngrad train` and `ngrad compare` wrote: configuration, trained rule and data.

run = load_run("runs/fa-digits-seed0")          # the best-validation state (best.pt)
run.rule.network.trace(run.data.test_x.flatten(1)).activities   # per-layer representations
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ngrad.data import DataSplits, load_dataset
from ngrad.errors import NgradError
from ngrad.rules import LearningRule, make_rule
from ngrad.train.checkpoint import load_checkpoint
from ngrad.train.config import TrainConfig

__all__ = ["LoadedRun", "load_run"]


@dataclass(frozen=True)
class LoadedRun:
    directory: Path
    config: TrainConfig
    rule: LearningRule
    data: DataSplits
    summary: dict[str, Any]


def load_run(
    directory: str | Path,
    checkpoint: str = "best.pt",
    data: DataSplits | None = None,
    device: str = "cpu",
) -> LoadedRun:
    """Rebuild the rule of a finished run with its trained weights (``best.pt`` by default,
    ``checkpoint.pt`` for the last epoch) on ``device`` (the CPU by default, wherever it was
    trained); ``data`` skips reloading an already loaded dataset."""
    from ngrad.train.loop import build_network, load_run_config

    directory = Path(directory)
    config = load_run_config(directory, device=device)
    if data is None:
        data = load_dataset(config.data, data_dir=config.data_dir)
    network = build_network(config, data)
    rule = make_rule(config.rule, network, config.loss, **config.rule_options)
    state = load_checkpoint(directory / checkpoint, map_location=device)
    try:
        rule.load_state_dict(state["rule_state"])
    except (KeyError, RuntimeError) as error:
        raise NgradError(
            f"{str(directory / checkpoint)!r} does not match its run: {error}"
        ) from None
    rule.to(device).eval()
    summary_path = directory / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return LoadedRun(directory, config, rule, data, summary)
