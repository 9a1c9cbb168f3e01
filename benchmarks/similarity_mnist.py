"""Brain-likeness on MNIST: how close is each rule's representation to backprop's, and
do better classifiers learn more backprop-like representations?

    python benchmarks/similarity_mnist.py [--out results/similarity_mnist] [--rules bp,fa,...]
        [--seeds 3] [--epochs 3] [--train-subset 20000] [--hidden 256,256] [--samples 1000]
        [--bootstrap 200] [--reuse]

Trains every registered rule that supports the network (``ngrad.train.compare.compare_rules``: same
network, data and seeds for all), then runs ``ngrad similarity`` on the compare directory: linear
CKA and RSA of each layer to backprop's run with the same seed (backprop's own runs against its
next seed), on the first ``--samples`` MNIST test images, and the correlation across runs of test
accuracy with similarity at the last hidden layer. The review's panel this mirrors (Lillicrap et
al. 2020, after Yamins et al. 2014): across models, better classifiers are more IT-like; here the
"brain" is backprop's representation. ``--reuse`` skips training when the compare directory
already holds results.json. Data: $NGRAD_DATA, else ../shared/data.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from _common import default_data_dir

from ngrad.analysis.report import print_report
from ngrad.analysis.similarity_runs import SimilaritySettings
from ngrad.cli.similarity import run_similarity
from ngrad.train.compare import compare_rules, format_table
from ngrad.train.config import make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/similarity_mnist")
    parser.add_argument("--rules", help="comma-separated (default: every rule that fits the net)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="reuse an existing compare run")
    args = parser.parse_args()
    print("$ python " + " ".join(shlex.quote(part) for part in sys.argv), flush=True)

    out = Path(args.out)
    base = make_config(
        {
            "data": "mnist",
            "data_dir": default_data_dir(),
            "epochs": args.epochs,
            "train_subset": args.train_subset,
            "hidden": [int(width) for width in args.hidden.split(",")],
            "activation": "tanh",
            "lr": args.lr,
            "batch_size": args.batch_size,
            "diagnostics_samples": 0,
        }
    )
    print(
        f"MNIST, 784-{args.hidden.replace(',', '-')}-10 tanh, SGD lr {args.lr} momentum 0.9, "
        f"batch {args.batch_size}, {args.epochs} epochs on the first {args.train_subset} training "
        f"images, seeds 0..{args.seeds - 1}; similarity on the first {args.samples} test images, "
        f"{args.bootstrap} bootstrap resamples",
        flush=True,
    )
    start = time.perf_counter()
    if not (args.reuse and (out / "compare" / "results.json").is_file()):
        rules = args.rules.split(",") if args.rules else None
        records = compare_rules(base, rules, args.seeds, out / "compare", progress=False)
        print(f"\ntraining: {time.perf_counter() - start:.0f} s\n{format_table(records)}")
        for record in records:
            if record["status"] != "completed":
                print(f"  {record['rule']} seed {record['seed']}: {record['status']}")
    middle = time.perf_counter()
    settings = SimilaritySettings(samples=args.samples, bootstrap=args.bootstrap)
    results = run_similarity([out / "compare"], out / "similarity", settings, progress=True)
    print(f"\nsimilarity: {time.perf_counter() - middle:.0f} s\n")
    print_report(results)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; outputs in {out}/similarity/")


if __name__ == "__main__":
    main()
