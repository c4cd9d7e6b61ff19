#!/usr/bin/env python
"""Re-score the saved evaluation samples of every run under two maths rules; print the verdicts that change.

    python scripts/rescore.py                         # runs/*: LightEval's reading vs each split's own rule
    python scripts/rescore.py --runs cpu_demo cpu_long --old lighteval --new stated --examples 5

Reads runs/<run>/eval/<benchmark>/<model>.jsonl (nothing is generated or rewritten) and prints, per run, split and
model, the samples, the verdicts saved in the file, the correct count under each rule and how many flip each way,
then a few of the flipped samples with the answer each rule read.
"""

from __future__ import annotations

import argparse
import sys

from open_r1_nb import paths
from open_r1_nb.evaluate import scoring
from open_r1_nb.evaluate.rescore import report, rescore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    rules = ["auto", *scoring.MATH_RULES]
    parser.add_argument(
        "--runs-root", default=None, help="folder of runs (default: runs/, or OPEN_R1_NB_RUNS)"
    )
    parser.add_argument("--runs", nargs="*", default=None, help="only these run names")
    parser.add_argument(
        "--old", default="lighteval", choices=rules, help="the rule the samples were scored with"
    )
    parser.add_argument("--new", default="auto", choices=rules, help="auto: each split's own rule")
    parser.add_argument("--examples", type=int, default=3, help="changed samples shown per file")
    args = parser.parse_args(argv)
    results = rescore(args.runs_root or paths.runs_root(), args.old, args.new, args.runs)
    print(report(results, args.examples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
