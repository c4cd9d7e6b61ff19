#!/usr/bin/env python
"""Execute the numbered notebooks with papermill for one profile.

    python scripts/run_pipeline.py parameters/smoke.yaml
    python scripts/run_pipeline.py parameters/cpu_demo.yaml --only 02,03
    python scripts/run_pipeline.py parameters/cpu_demo.yaml --only 03b                  # the look under the hood
    python scripts/run_pipeline.py parameters/cpu_demo.yaml --set learning_rate=1e-4 --run-name lr1e-4
    python scripts/run_pipeline.py parameters/openr1_distill_7b.yaml --num-processes 4  # 4 GPUs, same global batch
    python scripts/run_pipeline.py parameters/cpu_demo.yaml --retrain                   # train again, keep the old
    python scripts/run_pipeline.py parameters/cpu_demo.yaml --re-evaluate --only 06     # evaluate again
    python scripts/run_pipeline.py parameters/smoke.yaml --fresh     # start over; the old run folder is kept aside

Executed copies land in runs/<run_name>/notebooks/; the resolved recipe in runs/<run_name>/recipe.yaml. A run
folder whose model or results were made with a different recipe stops the runner before anything starts: pass
--retrain, --re-evaluate, --fresh or another --run-name, as the message says. Nothing is ever deleted.
"""

from __future__ import annotations

import argparse
import sys

from open_r1_nb.hardware import apply_cpu_isa_from_env, emulate_cpu_isa
from open_r1_nb.pipeline import PipelineError, parse_set, run_pipeline


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of processes (1 or more)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", help="a profile in parameters/, e.g. parameters/smoke.yaml")
    parser.add_argument(
        "--only", default="", help="comma-separated notebook numbers, e.g. 00,01,02 (03b: under the hood)"
    )
    parser.add_argument(
        "--run-name", default="", help="override the profile's run_name (the runs/ sub-folder)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a recipe key for this run, e.g. --set learning_rate=1e-4 --set 'report_to=[tensorboard]'; "
        "values are read as YAML and checked like the profile's own keys (repeat for several)",
    )
    parser.add_argument(
        "--num-processes",
        type=_positive,
        default=None,
        metavar="N",
        help="launch N training processes (e.g. GPUs) instead of the recipe's; gradient_accumulation_steps "
        "changes so that the global batch stays the recipe's (the runner prints how)",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train again although runs/<run_name>/model is finished: the model, checkpoints, train.log and the "
        "results made from them move to runs/<run_name>/previous/<time>/ (needs notebook 04 in --only)",
    )
    parser.add_argument(
        "--re-evaluate",
        action="store_true",
        help="evaluate again although results exist: runs/<run_name>/eval/ moves to "
        "runs/<run_name>/previous/<time>/ (needs notebook 06 in --only)",
    )
    parser.add_argument(
        "--cpu-isa",
        default=None,
        choices=["avx2"],
        help="behave like an AVX2-only CPU (no AVX-512, no bf16 units) on a newer x86 CPU, for every library the "
        "run uses; the same as OPEN_R1_NB_CPU_ISA=avx2 or `make demo CPU_ISA=avx2`",
    )
    parser.add_argument(
        "--kernel",
        default=None,
        help="Jupyter kernel name (default: python3, the interpreter running this script, so this environment)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start the run over: move the existing runs/<run_name>/ aside to runs/<run_name>.previous-<time>/ "
        "(nothing is deleted). Without it, a second run keeps the finished model and moves the notebooks it "
        "re-executes into runs/<run_name>/notebooks/previous/<time>/",
    )
    args = parser.parse_args(argv)
    try:
        # Before anything imports torch or CTranslate2: every process the run starts inherits the cap.
        if args.cpu_isa:
            emulate_cpu_isa(args.cpu_isa)
        else:
            apply_cpu_isa_from_env()
        run_pipeline(
            args.profile,
            only=args.only.split(",") if args.only else None,
            run_name=args.run_name,
            kernel_name=args.kernel,
            fresh=args.fresh,
            overrides=parse_set(args.set),
            num_processes=args.num_processes,
            retrain=args.retrain,
            re_evaluate=args.re_evaluate,
        )
    except PipelineError as err:
        print(f"\nERROR: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a bad profile or --set fails here, before any notebook runs
        print(f"\nERROR: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
