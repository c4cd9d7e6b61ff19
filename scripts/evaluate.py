#!/usr/bin/env python
"""Evaluate any saved model or checkpoint with the open-r1 protocol, outside the notebooks.

    python scripts/evaluate.py runs/cpu_demo/model --benchmarks gsm_symbolic_variant,arithmetic --limit 50 --n 4
    python scripts/evaluate.py runs/openr1_distill_7b/checkpoints/checkpoint-500 --benchmarks math_500 \\
        --path math_500=/data/MATH-500   # a local copy when the Hub is out of reach

Writes <out>/<benchmark>/<label>.jsonl (every sample) and .json (pass@1 ± SE, format, EOS share), the same files
notebook 06 writes and reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from open_r1_nb.evaluate.runner import EvalSettings, evaluate, model_label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a model folder (runs/<run>/model, a checkpoint) or a Hub id")
    parser.add_argument(
        "--benchmarks", required=True, help="comma-separated, e.g. aime24,math_500,gpqa_diamond,lcb"
    )
    parser.add_argument("--out", default=None, help="output folder (default: <run>/eval next to the model)")
    parser.add_argument(
        "--label", default=None, help="name of the result files (default: from the model path)"
    )
    parser.add_argument(
        "--n", type=int, default=0, help="samples per problem (0: the benchmark's protocol value)"
    )
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: the benchmark's protocol value")
    parser.add_argument("--top-k", type=int, default=0, help="0: no top-k cut (the protocol)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate a seeded subset of this many problems")
    parser.add_argument("--backend", default="auto", choices=["auto", "vllm", "ctranslate2", "transformers"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--path", action="append", default=[], help="BENCHMARK=local file or folder (repeatable)"
    )
    args = parser.parse_args(argv)

    paths = dict(item.split("=", 1) for item in args.path)
    model = Path(args.model)
    out = (
        Path(args.out)
        if args.out
        else (model.parent if model.name == "model" else model.parent.parent) / "eval"
    )
    settings = EvalSettings(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        backend=args.backend,
        seed=args.seed,
    )
    label = args.label or model_label(args.model)
    for bench in [b.strip() for b in args.benchmarks.split(",") if b.strip()]:
        summary = evaluate(args.model, bench, out, settings, label=label, path=paths.get(bench))
        brief = {k: summary[k] for k in ("pass@1", "pass@1_se", "format", "eos", "n", "problems")}
        print(f"{bench}: {json.dumps(brief)} -> {out / bench / (label + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
