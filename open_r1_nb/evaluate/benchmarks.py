"""The benchmarks of the open-r1 protocol, and the local held-out splits of the embedded default.

Each benchmark becomes a list of ``Problem`` (chat messages to send, a gold answer, how to score it). Hub
benchmarks load by their dataset id when the Hub is reachable, or from a local file/folder given as ``path``
(the same rows, e.g. downloaded elsewhere with ``huggingface-cli download --repo-type dataset``).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from open_r1_nb.paths import resolve_local

# The instructions follow the protocol's answer formats: a boxed final answer for maths, a final
# "Answer: LETTER" line for multiple choice, a fenced Python block for code.
MATH_INSTRUCTION = (
    "Solve the following math problem step by step, efficiently and clearly. End your response with the line "
    "'Therefore, the final answer is: $\\boxed{{ANSWER}}$.', where ANSWER is only the final number or "
    "expression.\n\n{problem}"
)
GPQA_INSTRUCTION = (
    "Answer the following multiple-choice question. Think step by step, then end your response with the line "
    "'Answer: $LETTER', where LETTER is one of ABCD.\n\n{question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}"
)
CODE_INSTRUCTION = (
    "You will be given a programming problem. Write a correct Python 3 program that solves it and passes all "
    "tests. {io_hint} Put the complete solution in one fenced ```python code block at the end of your "
    "response.\n\n{question}"
)


@dataclass
class Problem:
    id: str
    messages: list[dict]
    gold: Any
    kind: str  # "math", "gpqa" or "code"
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str
    n: int  # samples per problem in the protocol
    max_new_tokens: int
    loader: Callable[[str | None], list[Problem]]
    source: str
    reference: dict[str, float] = field(default_factory=dict)  # published pass@1 (%), open-r1 README
    # How a maths answer is read (scoring.MATH_RULES): the embedded splits' golds are numbers, so the number stated.
    math_rule: str = "stated"


class BenchmarkLoadError(RuntimeError):
    """A benchmark could not be loaded; the message says how to provide it."""


# ------------------------------------------------------------------------------------------ row sources


def _read_rows(path: Path) -> list[dict]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet"))
        if not files:
            raise BenchmarkLoadError(f"{path} holds no .jsonl/.json/.parquet file")
        return [row for f in files for row in _read_rows(f)]
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _hub_rows(dataset_id: str, config: str | None, split: str, path: str | None, name: str) -> list[dict]:
    if path is not None:
        local = resolve_local(path)
        if local is None:
            raise BenchmarkLoadError(f"{name}: local file {path!r} not found")
        return _read_rows(local)
    import os

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise BenchmarkLoadError(
            f"{name} comes from the Hub dataset {dataset_id!r} and the Hub is offline (HF_HUB_OFFLINE). Download "
            f"it where the Hub is reachable (`huggingface-cli download --repo-type dataset {dataset_id} "
            "--local-dir <folder>`) and pass that folder as the benchmark's path."
        )
    import datasets

    return list(datasets.load_dataset(dataset_id, config, split=split))


# ---------------------------------------------------------------------------------------------- loaders


def _math_rows(
    rows: list[dict], name: str, problem_key: str = "problem", answer_key: str = "answer"
) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        prompt = MATH_INSTRUCTION.format(problem=row[problem_key])
        pid = str(row.get("id", row.get("unique_id", f"{name}-{i:04d}")))
        out.append(Problem(pid, [{"role": "user", "content": prompt}], str(row[answer_key]), "math"))
    return out


def _aime24(path: str | None) -> list[Problem]:
    return _math_rows(_hub_rows("HuggingFaceH4/aime_2024", None, "train", path, "aime24"), "aime24")


def _math_500(path: str | None) -> list[Problem]:
    return _math_rows(_hub_rows("HuggingFaceH4/MATH-500", None, "test", path, "math_500"), "math_500")


def _gpqa_diamond(path: str | None) -> list[Problem]:
    rows = _hub_rows("Idavidrein/gpqa", "gpqa_diamond", "train", path, "gpqa_diamond")
    out = []
    for i, row in enumerate(rows):
        choices = [
            row["Correct Answer"],
            row["Incorrect Answer 1"],
            row["Incorrect Answer 2"],
            row["Incorrect Answer 3"],
        ]
        order = list(range(4))
        random.Random(i).shuffle(order)  # a fixed shuffle per question, so runs are comparable
        shuffled = [str(choices[j]).strip() for j in order]
        gold = string.ascii_uppercase[order.index(0)]
        prompt = GPQA_INSTRUCTION.format(
            question=str(row["Question"]).strip(), **dict(zip("ABCD", shuffled, strict=True))
        )
        pid = str(row.get("Record ID", f"gpqa-{i:03d}"))
        out.append(Problem(pid, [{"role": "user", "content": prompt}], gold, "gpqa"))
    return out


class _StringsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Plain strings need no class: refusing every class keeps a crafted pickle from running code.
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from benchmark data")


def _unpickle_string(raw: str) -> str:
    """LiveCodeBench stores private tests as base64(zlib(pickle(json string))); only a plain string may come out."""
    value = _StringsOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(raw.encode())))).load()
    if not isinstance(value, str):
        raise BenchmarkLoadError(f"unexpected {type(value).__name__} in LiveCodeBench private tests")
    return value


def _lcb_tests(row: dict) -> list[dict]:
    tests = []
    for key in ("public_test_cases", "private_test_cases"):
        raw = row.get(key)
        if not raw:
            continue
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raw = json.loads(_unpickle_string(raw))
        tests.extend(raw)
    return tests


def _lcb(path: str | None) -> list[Problem]:
    rows = _hub_rows("livecodebench/code_generation_lite", "release_v4_v5", "test", path, "lcb")
    out = []
    for i, row in enumerate(rows):
        tests = _lcb_tests(row)
        meta = (
            json.loads(row["metadata"])
            if isinstance(row.get("metadata"), str)
            else (row.get("metadata") or {})
        )
        fn_name = meta.get("func_name")
        hint = (
            f"Complete the function `{fn_name}` of the given starter code."
            if fn_name
            else "Read the input from stdin and write the answer to stdout."
        )
        question = str(row["question_content"])
        if row.get("starter_code"):
            question += f"\n\n```python\n{row['starter_code']}\n```"
        prompt = CODE_INSTRUCTION.format(io_hint=hint, question=question)
        pid = str(row.get("question_id", f"lcb-{i:04d}"))
        gold = {"tests": tests, "fn_name": fn_name, "mode": "call" if fn_name else "stdin"}
        out.append(
            Problem(
                pid, [{"role": "user", "content": prompt}], gold, "code", {"date": row.get("contest_date")}
            )
        )
    return out


def _local_split(relative: str, name: str) -> Callable[[str | None], list[Problem]]:
    """A held-out split of the embedded default: the user turn exactly as in training, the gold answer."""

    def load(path: str | None) -> list[Problem]:
        local = resolve_local(path or relative)
        if local is None:
            raise BenchmarkLoadError(
                f"{name}: {path or relative} not found; build the embedded assets with `python scripts/prepare_assets.py`"
            )
        out = []
        for row in _read_rows(local):
            prompt = [m for m in row["messages"] if m["role"] != "assistant"]
            out.append(
                Problem(
                    str(row["id"]), prompt, str(row["answer"]), "math", {"template": row.get("template_id")}
                )
            )
        return out

    return load


BENCHMARKS: dict[str, Benchmark] = {
    "aime24": Benchmark(
        "aime24",
        "math",
        64,
        32768,
        _aime24,
        "HuggingFaceH4/aime_2024",
        {"OpenR1-Distill-7B": 52.7, "DeepSeek-R1-Distill-Qwen-7B": 51.3},
    ),
    "math_500": Benchmark(
        "math_500",
        "math",
        4,
        32768,
        _math_500,
        "HuggingFaceH4/MATH-500",
        {"OpenR1-Distill-7B": 89.0, "DeepSeek-R1-Distill-Qwen-7B": 93.5},
    ),
    "gpqa_diamond": Benchmark(
        "gpqa_diamond",
        "gpqa",
        8,
        32768,
        _gpqa_diamond,
        "Idavidrein/gpqa (gpqa_diamond)",
        {"OpenR1-Distill-7B": 52.8, "DeepSeek-R1-Distill-Qwen-7B": 52.4},
    ),
    "lcb": Benchmark(
        "lcb",
        "code",
        16,
        32768,
        _lcb,
        "livecodebench/code_generation_lite (release_v4_v5)",
        {"OpenR1-Distill-7B": 39.4, "DeepSeek-R1-Distill-Qwen-7B": 37.4},
    ),
    "gsm_symbolic_variant": Benchmark(
        "gsm_symbolic_variant",
        "math",
        4,
        384,
        _local_split("cache/data/gsm_symbolic/test_variant.jsonl", "gsm_symbolic_variant"),
        "held-out variants of training templates (embedded default)",
        math_rule="number",
    ),
    "gsm_symbolic_template": Benchmark(
        "gsm_symbolic_template",
        "math",
        4,
        384,
        _local_split("cache/data/gsm_symbolic/test_template.jsonl", "gsm_symbolic_template"),
        "held-out templates never seen in training (embedded default)",
        math_rule="number",
    ),
    "arithmetic": Benchmark(
        "arithmetic",
        "math",
        4,
        384,
        _local_split("cache/data/arithmetic/test.jsonl", "arithmetic"),
        "held-out programmatic arithmetic (embedded default)",
        math_rule="number",
    ),
    "smoke": Benchmark(
        "smoke",
        "math",
        1,
        32,
        _local_split("cache/data/smoke/test.jsonl", "smoke"),
        "smoke traces (CI only)",
        math_rule="number",
    ),
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        import difflib

        close = difflib.get_close_matches(name, BENCHMARKS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BenchmarkLoadError(f"Unknown benchmark {name!r}.{hint} Known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def check_benchmark_names(names: list[str] | None, where: str = "") -> None:
    """A recipe's ``benchmarks`` must be names of this registry. The runner and the training entry point call this
    before anything runs (an unknown name would otherwise surface after training), with the recipe loader's message."""
    from open_r1_nb.config.errors import did_you_mean, recipe_error

    for name in names or []:
        if name not in BENCHMARKS:
            raise recipe_error(
                "benchmarks",
                name,
                f"is not a known benchmark{did_you_mean(name, BENCHMARKS)}",
                f"use names among {sorted(BENCHMARKS)}",
                where,
            )


def load_problems(
    name: str, path: str | None = None, limit: int | None = None, seed: int = 0
) -> list[Problem]:
    """The benchmark's problems; ``limit`` takes a seeded random subset (the same one every time)."""
    problems = get_benchmark(name).loader(path)
    if limit and limit < len(problems):
        rng = random.Random(seed)
        keep = sorted(rng.sample(range(len(problems)), limit))
        problems = [problems[i] for i in keep]
    return problems
