"""``ngrad similarity``: how close each rule's representations are to a reference rule's, layer by
layer, and how well they predict recorded neural responses.

    ngrad similarity RUN_DIR... [--reference bp] [--layer 1,2] [--neural FILE] [--samples 1000]
                     [--bootstrap 1000] [--data-dir DIR] --out DIR

A RUN_DIR is a directory written by ``ngrad train`` or by ``ngrad compare`` (its ``runs/*``); the
runs must be one experiment (same data, model and epochs) and are paired by seed
(:mod:`ngrad.analysis.similarity_runs`). Writes into ``--out``: ``results.json``,
``similarity.md`` (mean ± std over seeds), ``similarity.csv`` (one row per run and layer),
``similarity_heatmap.png`` (layer x rule) and ``accuracy_vs_similarity.png`` (test accuracy
against similarity at the summary layer, the deepest hidden layer compared, across runs, with
Pearson and Spearman correlations). See docs/similarity.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ngrad.errors import ConfigError

if TYPE_CHECKING:
    from ngrad.analysis.similarity_runs import SimilaritySettings

__all__ = ["add_arguments", "command_similarity", "parse_layers", "run", "run_similarity"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``ngrad similarity``."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or compare directories")
    parser.add_argument(
        "--reference",
        default="bp",
        help="rule whose runs the others are compared with (default: bp)",
    )
    parser.add_argument(
        "--layer", help="comma-separated layer numbers to compare, e.g. 1,2 (default: every layer)"
    )
    parser.add_argument(
        "--neural",
        metavar="FILE",
        help="neural recordings to predict, .npz or NetCDF (default: none, no predictivity)",
    )
    parser.add_argument(
        "--samples", type=int, default=1000, help="test images used as stimuli (default: 1000)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for RSA's confidence interval; 0: none (default: 1000)",
    )
    parser.add_argument(
        "--data-dir", help="data directory (default: the one the runs were trained with)"
    )
    parser.add_argument("--out", required=True, help="output directory (required, no default)")
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bars (default: shown)"
    )


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """``--layer``: comma-separated layer numbers (None when the flag is absent); every part
    must be a number, so "," or "1,,2" is refused rather than read as every layer."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise ConfigError(f"--layer takes comma-separated layer numbers like 1,2; got {text!r}")
    return tuple(int(part) for part in parts)


def run_similarity(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    settings: SimilaritySettings | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare the runs (:func:`ngrad.analysis.similarity_runs.compare_runs`) and write the
    outputs listed in the module docstring into ``out_dir``; returns what results.json holds."""
    from ngrad.analysis.report import markdown_report, similarity_csv
    from ngrad.analysis.similarity_runs import compare_runs
    from ngrad.numeric import to_json
    from ngrad.plots.similarity import plot_accuracy_vs_similarity, plot_heatmap
    from ngrad.train.checkpoint import atomic_write_text
    from ngrad.train.loop import prepare_output_dir

    out = Path(out_dir)
    prepare_output_dir(out)  # an unwritable directory fails before any work
    results = compare_runs(paths, settings, progress)
    atomic_write_text(out / "results.json", to_json(results))
    atomic_write_text(out / "similarity.md", markdown_report(results))
    atomic_write_text(out / "similarity.csv", similarity_csv(results))
    plot_heatmap(results, out / "similarity_heatmap.png")
    plot_accuracy_vs_similarity(results, out / "accuracy_vs_similarity.png")
    return results


def run(args: argparse.Namespace) -> int:
    """The command: compare, print the table and the correlations, name the outputs."""
    from ngrad.analysis.report import OUTPUT_FILES, print_report
    from ngrad.analysis.similarity_runs import SimilaritySettings

    settings = SimilaritySettings(
        reference=args.reference,
        layers=parse_layers(args.layer),
        neural=args.neural,
        samples=args.samples,
        bootstrap=args.bootstrap,
        data_dir=args.data_dir,
    )
    results = run_similarity(args.runs, args.out, settings, progress=not args.no_progress)
    print_report(results)
    print(f"\nresults in {args.out}/ ({', '.join(OUTPUT_FILES)})")
    return 0


command_similarity = run
