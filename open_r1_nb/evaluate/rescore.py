"""Re-score saved evaluation samples under two maths rules and list the verdicts that change.

Every evaluation writes its samples to ``runs/<run>/eval/<benchmark>/<model>.jsonl`` (completion, gold, question,
verdict). When the scoring rule changes, those samples can be judged again without generating anything:
:func:`rescore` reads them, scores each completion under an ``old`` and a ``new`` rule (``scoring.MATH_RULES``;
``auto`` is each benchmark's own), and reports, per run, split and model, how many verdicts flip each way.
``scripts/rescore.py`` prints it. Nothing is rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from open_r1_nb.evaluate import scoring
from open_r1_nb.evaluate.benchmarks import BENCHMARKS


@dataclass
class Changed:
    """One sample whose verdict differs between the two rules."""

    problem_id: str
    sample_index: int
    gold: Any
    old: bool
    new: bool
    answer_old: str | None
    answer_new: str | None
    tail: str  # the end of the completion, where the answer is


@dataclass
class Rescored:
    """The verdicts of one saved sample file (one run, split and model) under both rules."""

    run: str
    benchmark: str
    model: str
    old_rule: str
    new_rule: str
    samples: int = 0
    problems: int = 0
    correct_saved: int = 0
    correct_old: int = 0
    correct_new: int = 0
    changed: list[Changed] = field(default_factory=list)

    @property
    def gained(self) -> int:
        return sum(c.new and not c.old for c in self.changed)

    @property
    def lost(self) -> int:
        return sum(c.old and not c.new for c in self.changed)

    def as_row(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "split": self.benchmark,
            "model": self.model,
            "samples": self.samples,
            "saved correct": self.correct_saved,
            f"correct ({self.old_rule})": self.correct_old,
            f"correct ({self.new_rule})": self.correct_new,
            "wrong -> right": self.gained,
            "right -> wrong": self.lost,
        }


def _rule_for(benchmark: str, rule: str) -> str:
    if rule != "auto":
        return rule
    spec = BENCHMARKS.get(benchmark)
    return spec.math_rule if spec is not None else "stated"


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rescore_file(
    path: str | Path, old_rule: str = "lighteval", new_rule: str = "auto", run: str | None = None
) -> Rescored:
    """Judge every sample of one ``<benchmark>/<model>.jsonl`` file under ``old_rule`` and ``new_rule``.

    The question each completion answered is the record's ``question`` (the runner keeps it on a problem's first
    sample); the copied-expression check needs it. ``correct_saved`` counts the verdicts stored in the file.
    """
    path = Path(path)
    benchmark, model = path.parent.name, path.stem
    old, new = _rule_for(benchmark, old_rule), _rule_for(benchmark, new_rule)
    for rule in (old, new):
        if rule not in scoring.MATH_RULES:
            raise ValueError(f"unknown maths rule {rule!r}; use auto or one of {list(scoring.MATH_RULES)}")
    records = _read(path)
    questions = {r["problem_id"]: r["question"] for r in records if r.get("question")}
    out = Rescored(run or path.parent.parent.parent.name, benchmark, model, old, new)
    out.problems = len({r["problem_id"] for r in records})
    for r in records:
        completion, gold, question = r.get("completion") or "", r.get("gold"), questions.get(r["problem_id"])
        if gold is None:
            continue
        answer_old, verdict_old = scoring.score_math(str(gold), completion, question=question, rule=old)
        answer_new, verdict_new = scoring.score_math(str(gold), completion, question=question, rule=new)
        out.samples += 1
        out.correct_saved += bool(r.get("correct"))
        out.correct_old += verdict_old
        out.correct_new += verdict_new
        if verdict_old != verdict_new:
            out.changed.append(
                Changed(
                    str(r["problem_id"]),
                    int(r.get("sample_index", 0)),
                    gold,
                    verdict_old,
                    verdict_new,
                    answer_old,
                    answer_new,
                    " ".join(completion.split())[-160:],
                )
            )
    return out


def saved_sample_files(runs_root: str | Path, runs: list[str] | None = None) -> list[Path]:
    """Every ``<run>/eval/<benchmark>/<model>.jsonl`` under ``runs_root`` whose benchmark is scored as maths
    (GPQA letters and code tests have no maths rule), sorted; only the named ``runs`` when given."""
    root = Path(runs_root)
    found = []
    for path in sorted(root.glob("*/eval/*/*.jsonl")):
        run, benchmark = path.parent.parent.parent.name, path.parent.name
        if runs and run not in runs:
            continue
        spec = BENCHMARKS.get(benchmark)
        if spec is not None and spec.kind != "math":
            continue
        found.append(path)
    return found


def rescore(
    runs_root: str | Path, old_rule: str = "lighteval", new_rule: str = "auto", runs: list[str] | None = None
) -> list[Rescored]:
    """:func:`rescore_file` for every saved maths sample file under ``runs_root`` (see :func:`saved_sample_files`)."""
    return [rescore_file(p, old_rule, new_rule) for p in saved_sample_files(runs_root, runs)]


def report(results: list[Rescored], examples: int = 3) -> str:
    """The per-file counts as a text table, then up to ``examples`` changed verdicts of each file."""
    if not results:
        return "no saved maths samples found (runs/<run>/eval/<benchmark>/<model>.jsonl)"
    rows = [r.as_row() for r in results]
    headers = list(dict.fromkeys(k for row in rows for k in row))
    widths = {h: max(len(h), *(len(str(row.get(h, ""))) for row in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers)]
    lines += ["  ".join(str(row.get(h, "")).ljust(widths[h]) for h in headers) for row in rows]
    total = sum(len(r.changed) for r in results)
    samples = sum(r.samples for r in results)
    lines.append(f"\n{total} of {samples} verdicts change.")
    for r in results:
        for c in r.changed[:examples]:
            lines.append(
                f"\n{r.run} / {r.benchmark} / {r.model}: problem {c.problem_id} sample {c.sample_index}, gold "
                f"{c.gold!r}: {r.old_rule} {'right' if c.old else 'wrong'} (answer {c.answer_old!r}) -> "
                f"{r.new_rule} {'right' if c.new else 'wrong'} (answer {c.answer_new!r})\n  …{c.tail}"
            )
    return "\n".join(lines)
