"""Evaluate one model on one benchmark: generate, score every sample, write the samples and the summary.

Outputs, for ``out_dir = runs/<run>/eval``:
    <benchmark>/<label>.jsonl   one line per sample: problem id, sample index, completion, extracted answer,
                                correct, new tokens, ended at EOS, format
    <benchmark>/<label>.json    pass@1 ± SE, pass@k, format adherence, EOS share, length, and the settings
"""

from __future__ import annotations

import json
import os
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
    top_k: int = 0
    max_new_tokens: int = 0
    limit: int = 0
    backend: str = "auto"
    seed: int = 0
    batch_size: int = 32
    math_rule: str = "auto"  # scoring.MATH_RULES, or auto: each benchmark's own (Benchmark.math_rule)
    # vLLM's engine (trl's names; None: vLLM's default). Only the vllm backend reads them.
    vllm_gpu_memory_utilization: float | None = None
    vllm_max_model_length: int | None = None
    vllm_tensor_parallel_size: int = 1
    vllm_data_parallel_size: int | None = None  # None: as many copies as the visible GPUs hold (CPU: one)

    def backend_options(self, backend: str) -> dict[str, Any]:
        """What :func:`open_r1_nb.evaluate.generate.generate` passes to ``backend``: the vLLM engine settings."""
        if backend != "vllm":
            return {}
        return {
            "gpu_memory_utilization": self.vllm_gpu_memory_utilization,
            "max_model_len": self.vllm_max_model_length,
            "tensor_parallel_size": self.vllm_tensor_parallel_size,
            "data_parallel_size": self.vllm_data_parallel_size,
        }


def score_sample(problem: Problem, completion: str, math_rule: str = "stated") -> tuple[Any, bool]:
    """(extracted answer, correct) for one completion, by the benchmark's kind."""
    if problem.kind == "math":
        question = problem.messages[-1]["content"]
        return scoring.score_math(problem.gold, completion, question=question, rule=math_rule)
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
    paths = {benchmark: path} if path else None
    return evaluate_many(model_dir, [benchmark], out_dir, settings, label=label, paths=paths)[benchmark]


def evaluate_many(
    model_dir: str | Path,
    benchmarks: list[str],
    out_dir: str | Path,
    settings: EvalSettings | None = None,
    label: str | None = None,
    paths: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate` for several benchmarks, with one generation call for all that sample alike.

    On a CPU a split of a few dozen problems leaves the batches half empty and pays the model load each time;
    putting every benchmark with the same n and token limit into one call fills them. Each benchmark still gets
    its own files; its ``generation_seconds`` is its share (by new tokens) of the shared call's time.
    """
    from open_r1_nb.evaluate.generate import GenerationConfig, choose_backend, generate

    settings = settings or EvalSettings()
    if settings.math_rule not in ("auto", *scoring.MATH_RULES):
        raise ValueError(
            f"math_rule {settings.math_rule!r} is not one of auto, {', '.join(scoring.MATH_RULES)}"
        )
    label = label or model_label(model_dir)
    backend = choose_backend(settings.backend)
    groups: dict[tuple[int, int], list[tuple[str, list[Problem]]]] = {}
    for benchmark in benchmarks:  # every benchmark loads (and fails on a bad name) before any generation
        spec = get_benchmark(benchmark)
        problems = load_problems(
            benchmark, path=(paths or {}).get(benchmark), limit=settings.limit or None, seed=settings.seed
        )
        key = (settings.n or spec.n, settings.max_new_tokens or spec.max_new_tokens)
        groups.setdefault(key, []).append((benchmark, problems))

    summaries: dict[str, dict[str, Any]] = {}
    for (n, max_new_tokens), members in groups.items():
        config = GenerationConfig(
            n=n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            max_new_tokens=max_new_tokens,
            seed=settings.seed,
            batch_size=settings.batch_size,
        )
        prompts = [p.messages for _, problems in members for p in problems]
        start = time.perf_counter()
        # One engine per group, shut down before the next (vLLM: its processes and memory are gone).
        outputs = generate(model_dir, prompts, config, backend=backend, **settings.backend_options(backend))
        seconds = time.perf_counter() - start
        group_tokens = sum(s.new_tokens for samples in outputs for s in samples)
        offset = 0
        for benchmark, problems in members:
            part = outputs[offset : offset + len(problems)]
            offset += len(problems)
            rule = get_benchmark(benchmark).math_rule if settings.math_rule == "auto" else settings.math_rule
            records = _score(problems, part, rule)
            new_tokens = sum(r["new_tokens"] for r in records)
            summary = scoring.summarize(records)
            summary.update(
                benchmark=benchmark,
                model=str(model_dir),
                backend=backend,
                settings={**asdict(settings), "n": n, "max_new_tokens": max_new_tokens, "math_rule": rule},
                generation_seconds=round(seconds * new_tokens / group_tokens, 1) if group_tokens else 0.0,
                new_tokens_per_second=round(group_tokens / seconds, 1) if seconds else None,
                generated_with=[b for b, _ in members],
                reference=get_benchmark(benchmark).reference,
            )
            _write(out_dir, benchmark, label, records, summary)
            summaries[benchmark] = summary
    return summaries


def _score(problems: list[Problem], outputs: list, math_rule: str = "stated") -> list[dict[str, Any]]:
    records = []
    for problem, samples in zip(problems, outputs, strict=True):
        for index, sample in enumerate(samples):
            extracted, correct = score_sample(problem, sample.text, math_rule)
            records.append(
                {
                    "problem_id": problem.id,
                    "sample_index": index,
                    # The question as the model saw it (the last user turn), for reports and side-by-side views.
                    "question": problem.messages[-1]["content"] if index == 0 else None,
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
    return records


def _write(out_dir: str | Path, benchmark: str, label: str, records: list[dict], summary: dict) -> None:
    """The samples, then the summary; each written beside its place and renamed into it, so an evaluation killed
    halfway leaves no summary (the sign of a finished result) and no half-written file."""
    folder = Path(out_dir) / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (
        (f"{label}.jsonl", "".join(json.dumps(record, default=str) + "\n" for record in records)),
        (f"{label}.json", json.dumps(summary, indent=2, default=str)),
    ):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)


def read_records(out_dir: str | Path, benchmark: str, label: str) -> list[dict]:
    path = Path(out_dir) / benchmark / f"{label}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: The settings that change what an evaluation produces, each with the recipe key that sets it (``seed`` is the
#: sampling seed of EvalSettings, not a recipe key). The batch size and the vLLM engine's layout change only how
#: fast the same answers come, so a result made with another batch size is still this result.
RESULT_SETTINGS = {
    "n": "eval_n",
    "max_new_tokens": "eval_max_new_tokens",
    "limit": "eval_limit",
    "temperature": "eval_temperature",
    "top_p": "eval_top_p",
    "top_k": "eval_top_k",
    "backend": "eval_backend",
    "math_rule": "eval_math_rule",
    "seed": "seed",
}


def expected_settings(settings: EvalSettings, benchmark: str) -> dict[str, Any]:
    """What a summary of ``benchmark`` made with ``settings`` records: n, max_new_tokens and math_rule resolved to
    the benchmark's own where the settings leave them to it (0, auto), as :func:`evaluate_many` writes them."""
    spec = get_benchmark(benchmark)
    values = {key: getattr(settings, key) for key in RESULT_SETTINGS}
    values["n"] = settings.n or spec.n
    values["max_new_tokens"] = settings.max_new_tokens or spec.max_new_tokens
    values["math_rule"] = spec.math_rule if settings.math_rule == "auto" else settings.math_rule
    return values


def settings_changes(summary: dict[str, Any], settings: EvalSettings, benchmark: str) -> dict[str, tuple]:
    """``{recipe key: (recorded, wanted)}`` where ``summary`` was made with other settings than ``settings``.

    A key the summary does not record (a result from an older version of the project) cannot be compared and is
    left out; a summary that records no settings at all gives {}.
    """
    recorded = summary.get("settings") or {}
    wanted = expected_settings(settings, benchmark)
    return {
        RESULT_SETTINGS[key]: (recorded[key], wanted[key])
        for key in RESULT_SETTINGS
        if key in recorded and recorded[key] != wanted[key]
    }


def read_summary(
    out_dir: str | Path, benchmark: str, label: str, settings: EvalSettings | None = None
) -> dict[str, Any] | None:
    """The summary of ``label`` on ``benchmark``, or None when there is none.

    With ``settings``, a summary made with other settings (:data:`RESULT_SETTINGS`: limit, n, max_new_tokens,
    temperature, top_p, top_k, ...) is None too: it is not the result of this evaluation.
    """
    path = Path(out_dir) / benchmark / f"{label}.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if settings is not None and settings_changes(summary, settings, benchmark):
        return None
    return summary


def curve_settings(settings: EvalSettings, problems: int) -> EvalSettings:
    """The learning curve's settings: one sample on each of ``problems`` problems, the rest as ``settings``."""
    from dataclasses import replace

    return replace(settings, n=1, limit=problems)


def stale_results(
    out_dir: str | Path, benchmarks: list[str], settings: EvalSettings, learning_curve_problems: int = 0
) -> dict[Path, dict[str, tuple]]:
    """Every summary under ``out_dir`` for ``benchmarks`` that was made with other settings: ``{path: changes}``.

    The learning curve's points (``curve-<step>``) are compared with their own settings (one sample on
    ``learning_curve_problems`` problems).
    """
    found: dict[Path, dict[str, tuple]] = {}
    for benchmark in benchmarks:
        for path in sorted((Path(out_dir) / benchmark).glob("*.json")):
            wanted = settings
            if path.stem.startswith("curve-"):
                if not learning_curve_problems:
                    continue  # no curve asked for: these points are never read
                wanted = curve_settings(settings, learning_curve_problems)
            try:
                summary = json.loads(path.read_text())
            except ValueError:
                continue  # not a summary this project wrote
            changes = settings_changes(summary, wanted, benchmark)
            if changes:
                found[path] = changes
    return found


class StaleResultsError(RuntimeError):
    """Results on disk were made with other evaluation settings than the ones asked for."""


def check_results(
    out_dir: str | Path, benchmarks: list[str], settings: EvalSettings, learning_curve_problems: int = 0
) -> None:
    """Stop when ``out_dir`` holds results made with other settings: reusing them would report them under these
    settings, and evaluating over them would lose them. The message names each file, the keys and the fix."""
    found = stale_results(out_dir, benchmarks, settings, learning_curve_problems)
    if found:
        listed = "; ".join(
            f"{path}: " + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in diff.items())
            for path, diff in found.items()
        )
        raise StaleResultsError(
            f"Evaluation results made with other settings than the recipe's: {listed}. Fix: re_evaluate = True in "
            "notebook 06 (the runner: --re-evaluate), which moves the old results to runs/<run>/previous/<time>/; "
            "or set the recipe back."
        )


def _checkpoint_tokens(checkpoint: Path) -> float | None:
    """Training tokens seen up to a checkpoint: the last ``num_tokens`` in its trainer_state.json log."""
    state = checkpoint / "trainer_state.json"
    if not state.exists():
        return None
    history = json.loads(state.read_text()).get("log_history", [])
    seen = [entry["num_tokens"] for entry in history if "num_tokens" in entry]
    return float(seen[-1]) if seen else None


def learning_curve(
    run_dir: str | Path,
    benchmark: str,
    settings: EvalSettings,
    problems: int,
    base_model: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Held-out accuracy of the base model (0 tokens), every saved checkpoint and the final model, one sample each.

    Each point is also written as ``eval/<benchmark>/curve-<step>.{jsonl,json}``, so a re-run reuses it. Returns
    ``[{step, tokens, pass@1, pass@1_se, format, eos}]`` in training order.
    """
    run_dir = Path(run_dir)
    out_dir = run_dir / "eval"
    point_settings = curve_settings(settings, problems)
    points: list[tuple[int, Path, float | None]] = []
    if base_model is not None:
        points.append((0, Path(base_model), 0.0))
    checkpoints = sorted(
        (p for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    points += [(int(p.name.split("-")[-1]), p, _checkpoint_tokens(p)) for p in checkpoints]
    # The final model closes the curve, at the run's step count and real-token total (metrics.json's train).
    train = (
        json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    ).get("train", {})
    final = run_dir / "model"
    if final.is_dir() and train.get("steps") and train["steps"] not in {step for step, _, _ in points}:
        points.append((int(train["steps"]), final, train.get("real_tokens")))
    rows = []
    for step, model_dir, tokens in points:
        label = f"curve-{step}"
        summary = read_summary(out_dir, benchmark, label, point_settings)
        if summary is None:
            summary = evaluate(model_dir, benchmark, out_dir, point_settings, label=label)
        rows.append(
            {
                "step": step,
                "tokens": tokens,
                **{k: summary[k] for k in ("pass@1", "pass@1_se", "format", "eos")},
            }
        )
    return rows
