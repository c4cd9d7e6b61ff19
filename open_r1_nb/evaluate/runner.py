"""Evaluate one model on one benchmark: generate, score every sample, write the samples and the summary.

Outputs, for ``out_dir = runs/<run>/eval``:
    <benchmark>/<label>.jsonl   one line per sample: problem id, sample index, completion, extracted answer,
                                correct, new tokens, ended at EOS, format
    <benchmark>/<label>.json    pass@1 ± SE, pass@k, format adherence, EOS share, length, and the settings
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from open_r1_nb.evaluate import scoring
from open_r1_nb.evaluate.benchmarks import Problem, get_benchmark, load_problems


@dataclass
class EvalSettings:
    """How to sample. ``n``/``max_new_tokens`` of 0 mean the benchmark's protocol values."""

    n: int = 0
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 0
    limit: int = 0
    backend: str = "auto"
    seed: int = 0
    batch_size: int = 32


def score_sample(problem: Problem, completion: str) -> tuple[Any, bool]:
    """(extracted answer, correct) for one completion, by the benchmark's kind."""
    if problem.kind == "math":
        return scoring.math_answer(completion), scoring.verify_math(problem.gold, completion)
    if problem.kind == "gpqa":
        return scoring.gpqa_letter(completion), scoring.verify_gpqa(problem.gold, completion)
    if problem.kind == "code":
        from open_r1_nb.evaluate import sandbox

        code = sandbox.extract_code(completion)
        if code is None:
            return None, False
        result = sandbox.run_tests(
            code, problem.gold["tests"], mode=problem.gold["mode"], fn_name=problem.gold["fn_name"]
        )
        return result.status, result.passed
    raise ValueError(f"unknown problem kind {problem.kind!r}")


def model_label(model_dir: str | Path) -> str:
    path = Path(model_dir)
    return path.name if path.name not in ("model", "") else path.parent.name


def evaluate(
    model_dir: str | Path,
    benchmark: str,
    out_dir: str | Path,
    settings: EvalSettings | None = None,
    label: str | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """Generate and score; write ``<out_dir>/<benchmark>/<label>.{jsonl,json}``; return the summary."""
    from open_r1_nb.evaluate.generate import GenerationConfig, choose_backend, generate

    settings = settings or EvalSettings()
    spec = get_benchmark(benchmark)
    problems = load_problems(benchmark, path=path, limit=settings.limit or None, seed=settings.seed)
    n = settings.n or spec.n
    config = GenerationConfig(
        n=n,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens or spec.max_new_tokens,
        seed=settings.seed,
        batch_size=settings.batch_size,
    )
    backend = choose_backend(settings.backend)
    start = time.perf_counter()
    outputs = generate(model_dir, [p.messages for p in problems], config, backend=backend)
    seconds = time.perf_counter() - start

    records = []
    for problem, samples in zip(problems, outputs, strict=True):
        for index, sample in enumerate(samples):
            extracted, correct = score_sample(problem, sample.text)
            records.append(
                {
                    "problem_id": problem.id,
                    "sample_index": index,
                    "completion": sample.text,
                    "extracted": extracted,
                    "gold": problem.gold if problem.kind != "code" else None,
                    "correct": bool(correct),
                    "new_tokens": sample.new_tokens,
                    "ended_at_eos": sample.ended_at_eos,
                    # A closed think block, plus a boxed answer where the protocol asks for one (maths).
                    "format_ok": scoring.format_ok(sample.text, require_boxed=problem.kind == "math"),
                }
            )
    summary = scoring.summarize(records)
    new_tokens = sum(r["new_tokens"] for r in records)
    summary.update(
        benchmark=benchmark,
        model=str(model_dir),
        backend=backend,
        settings={**asdict(settings), "n": n, "max_new_tokens": config.max_new_tokens},
        generation_seconds=round(seconds, 1),
        new_tokens_per_second=round(new_tokens / seconds, 1) if seconds else None,
        reference=spec.reference,
    )
    label = label or model_label(model_dir)
    folder = Path(out_dir) / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{label}.jsonl").open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, default=str) + "\n")
    (folder / f"{label}.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def read_records(out_dir: str | Path, benchmark: str, label: str) -> list[dict]:
    path = Path(out_dir) / benchmark / f"{label}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(out_dir: str | Path, benchmark: str, label: str) -> dict[str, Any] | None:
    path = Path(out_dir) / benchmark / f"{label}.json"
    return json.loads(path.read_text()) if path.exists() else None
