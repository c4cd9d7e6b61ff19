#!/usr/bin/env python
"""Execute the numbered notebooks with papermill for one profile.

    python scripts/run_pipeline.py parameters/smoke.yaml
    python scripts/run_pipeline.py parameters/cpu_demo.yaml --only 02,03
    python scripts/run_pipeline.py parameters/smoke.yaml --fresh     # start over; the old run folder is kept aside

Executed copies land in runs/<run_name>/notebooks/; the resolved recipe in runs/<run_name>/recipe.yaml.
"""

from __future__ import annotations

import argparse
import sys

from open_r1_nb.pipeline import PipelineError, run_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", help="a profile in parameters/, e.g. parameters/smoke.yaml")
    parser.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 00,01,02")
    parser.add_argument(
        "--run-name", default="", help="override the profile's run_name (the runs/ sub-folder)"
    )
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebooks' own)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start the run over: move the existing runs/<run_name>/ aside to runs/<run_name>.previous-<time>/ "
        "(nothing is deleted). Without it, a second run keeps the finished model and moves the notebooks it "
        "re-executes into runs/<run_name>/notebooks/previous/<time>/",
    )
    args = parser.parse_args(argv)
    try:
        run_pipeline(
            args.profile,
            only=args.only.split(",") if args.only else None,
            run_name=args.run_name,
            kernel_name=args.kernel,
            fresh=args.fresh,
        )
    except PipelineError as err:
        print(f"\nERROR: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bad profile fails here, before any notebook runs
        print(f"\nERROR: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
