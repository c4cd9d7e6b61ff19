"""Contamination: evaluation problems that leaked into the training data, found by word n-gram overlap.

The test is open-r1's (``scripts/decontaminate.py``, after s1): lowercase the text, collapse its whitespace,
split it on whitespace, and call a training row contaminated when one of its word n-grams (``n = 8`` by default)
is also an n-gram of an evaluation problem. The training side is the user turns of the ``messages`` column
(the prompts), the evaluation side the problem statements.

Four things are added, each to avoid a silent answer:

- the report names every flagged row, the evaluation problems it overlaps and one shared n-gram, so that a
  reader can judge the match instead of trusting a count;
- an evaluation problem shorter than ``n`` words has no n-gram at all and would never be found; such a problem is
  matched as a whole (its full word sequence inside a training prompt), and the report counts them. Problems
  under :data:`MIN_WORDS` words are too short to mean anything and are listed as unchecked;
- ``n = 0`` matches whole problems only (the full problem inside a training prompt). Where training and evaluation
  share templates by design (GSM-Symbolic's held-out *variants* reuse the wording of training templates with other
  names and numbers), 8-grams flag most of the training set, and whole-problem matching is the test that says
  whether an evaluation problem itself was trained on;
- an n-gram shared by most evaluation problems (a fixed instruction such as "Please reason step by step, and put
  your final answer within \\boxed{}") says nothing about leakage: it is ignored and counted.

:func:`find_contamination` reports, :func:`decontaminate` reports and removes, :func:`load_eval_problems` reads
the evaluation problems from local files or folders (or Hub ids) named in the recipe's ``decontamination_against``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from open_r1_nb.paths import resolve_local
from open_r1_nb.sources import load_source

logger = logging.getLogger(__name__)

DEFAULT_NGRAM = 8
#: Evaluation problems with fewer words than this are not checked (too short to tell leakage from chance).
MIN_WORDS = 4
#: An n-gram found in more than this share of the evaluation problems (and in at least BOILERPLATE_MIN_PROBLEMS
#: of them) is an instruction they all share, not evidence of leakage.
BOILERPLATE_SHARE = 0.5
BOILERPLATE_MIN_PROBLEMS = 5
#: Columns that hold an evaluation problem's statement, tried in order (open-r1's problem columns among them).
PROBLEM_COLUMNS = ("problem", "question", "Question", "prompt", "question_content")
_FOLDER_SUFFIXES = (".jsonl", ".parquet", ".csv")  # in a folder, .json files are metadata (asset manifests)


# ------------------------------------------------------------------------------------------------- text


def normalize(text: str) -> str:
    """Lowercase and collapse whitespace (open-r1's normalisation)."""
    return " ".join(text.lower().split())


def word_ngrams(text: str, n: int) -> list[str]:
    """The word n-grams of normalised ``text``, each joined by single spaces."""
    words = normalize(text).split()
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def prompt_text(row: Mapping[str, Any], column: str = "messages") -> list[str]:
    """The prompts of one training row: its user turns, or a problem/prompt column when it has no messages."""
    messages = row.get(column)
    if isinstance(messages, (list, tuple)):
        return [
            t["content"]
            for t in messages
            if isinstance(t, Mapping) and t.get("role") == "user" and isinstance(t.get("content"), str)
        ]
    for key in PROBLEM_COLUMNS:
        if isinstance(row.get(key), str):
            return [row[key]]
    return []


# --------------------------------------------------------------------------------------- evaluation side


@dataclass(frozen=True)
class EvalProblem:
    id: str
    text: str


def as_problems(problems: Any) -> list[EvalProblem]:
    """Accept problems as strings, ``{id, problem | question | messages}`` dicts, ``EvalProblem`` or an
    ``{id: text}`` mapping; return ``EvalProblem`` with string ids (the position when a row has none)."""
    if isinstance(problems, Mapping):
        return [EvalProblem(str(k), str(v)) for k, v in problems.items()]
    out = []
    for i, item in enumerate(problems):
        if isinstance(item, EvalProblem):
            out.append(item)
        elif isinstance(item, str):
            out.append(EvalProblem(str(i), item))
        elif isinstance(item, Mapping):
            texts = prompt_text(item)
            # A problem column is the statement alone; a user turn may carry an instruction around it.
            statement = next((item[k] for k in PROBLEM_COLUMNS if isinstance(item.get(k), str)), None)
            text = statement if statement is not None else " ".join(texts)
            if not text:
                raise ValueError(
                    f"evaluation problem {i} has no text: give it one of the columns {list(PROBLEM_COLUMNS)} or a "
                    "`messages` column with a user turn"
                )
            out.append(EvalProblem(str(item.get("id", i)), text))
        else:
            raise TypeError(f"evaluation problem {i} is a {type(item).__name__}; expected a string or a dict")
    return out


def _source_files(path: Path) -> list[Path]:
    """The data files of an evaluation source: the file itself, or a folder's files except its training split."""
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.iterdir() if p.suffix in _FOLDER_SUFFIXES and not p.stem.startswith("train")
    )
    if not files:
        raise FileNotFoundError(
            f"{path} holds no evaluation file (looked for {', '.join('*' + s for s in _FOLDER_SUFFIXES)} other than "
            "train*); name the files themselves in decontamination_against"
        )
    return files


def load_eval_problems(sources: Sequence[str | os.PathLike]) -> list[EvalProblem]:
    """Read evaluation problems from local files or folders (every data file but ``train*``), or from Hub
    dataset ids written ``org/name`` or ``org/name:split`` (default split ``test``; offline, one clear error)."""
    problems: list[EvalProblem] = []
    for source in sources:
        local = resolve_local(source)
        if local is not None:
            for file in _source_files(local):
                rows = load_source(str(file))
                for p in as_problems(rows):
                    # Ids only need to be unique within a file; prefix those the file did not give.
                    pid = p.id if "id" in rows.column_names else f"{file.name}#{p.id}"
                    problems.append(EvalProblem(pid, p.text))
            continue
        name, _, split = str(source).partition(":")
        rows = load_source(name, None, split or "test")
        problems += [EvalProblem(f"{name}#{p.id}", p.text) for p in as_problems(rows)]
    return problems


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Flag:
    """One contaminated training row: where it is, which evaluation problems it overlaps, and one shared n-gram."""

    row: int
    row_id: str | None
    eval_ids: list[str]
    ngram: str


@dataclass
class ContaminationReport:
    n: int
    rows_checked: int
    eval_problems: int
    flagged: list[Flag] = field(default_factory=list)
    #: problems shorter than n words, matched as a whole
    short_problems: int = 0
    #: problems too short to check (fewer than MIN_WORDS words)
    unchecked: list[str] = field(default_factory=list)
    #: n-grams ignored because most evaluation problems share them (instructions, not content)
    boilerplate_ngrams: int = 0
    removed: int = 0

    @property
    def rows_flagged(self) -> int:
        return len(self.flagged)

    @property
    def share(self) -> float:
        return self.rows_flagged / self.rows_checked if self.rows_checked else 0.0

    @property
    def eval_ids_hit(self) -> list[str]:
        return sorted({e for f in self.flagged for e in f.eval_ids})

    def summary(self) -> str:
        """One paragraph in words."""
        test = (
            f"{self.n}-gram overlap of training prompts with" if self.n else "training prompts that contain"
        )
        text = (
            f"contamination ({test} {self.eval_problems} whole evaluation problems): "
            if not self.n
            else f"contamination ({test} {self.eval_problems} evaluation problems): "
        )
        text += (
            f"{self.rows_flagged} of {self.rows_checked} training rows ({self.share:.1%}) overlap "
            f"{len(self.eval_ids_hit)} evaluation problems"
        )
        if self.flagged:
            first = self.flagged[0]
            text += f", e.g. row {first.row} shares {first.ngram!r} with {first.eval_ids[0]}"
        text += "."
        if self.removed:
            text += f" Removed {self.removed} rows."
        elif self.flagged:
            text += " Kept (decontaminate: true removes them)."
        if self.short_problems and self.n:
            text += f" {self.short_problems} problems shorter than {self.n} words were matched whole."
        if self.unchecked:
            text += f" {len(self.unchecked)} problems under {MIN_WORDS} words were not checked."
        if self.boilerplate_ngrams:
            text += (
                f" {self.boilerplate_ngrams} n-grams shared by most evaluation problems (an instruction) were "
                "ignored."
            )
        return text

    def as_dict(self, max_flags: int = 50) -> dict[str, Any]:
        return {
            "ngram": self.n,
            "rows_checked": self.rows_checked,
            "eval_problems": self.eval_problems,
            "rows_flagged": self.rows_flagged,
            "share_flagged": round(self.share, 4),
            "eval_problems_hit": len(self.eval_ids_hit),
            "rows_removed": self.removed,
            "short_problems_matched_whole": self.short_problems,
            "problems_unchecked": len(self.unchecked),
            "boilerplate_ngrams_ignored": self.boilerplate_ngrams,
            "flagged": [
                {"row": f.row, "id": f.row_id, "eval_ids": f.eval_ids[:5], "ngram": f.ngram}
                for f in self.flagged[:max_flags]
            ],
        }

    def table(self) -> Any:
        """The flagged rows as a table (row, id, evaluation problems, shared n-gram)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "row": f.row,
                    "id": f.row_id,
                    "eval problems": ", ".join(f.eval_ids),
                    "shared n-gram": f.ngram,
                }
                for f in self.flagged
            ],
            columns=["row", "id", "eval problems", "shared n-gram"],
        )


# ---------------------------------------------------------------------------------------------- search


class _Lookup:
    """Evaluation n-grams -> the ids of the problems that contain them; one table per gram length."""

    def __init__(self, problems: list[EvalProblem], n: int):
        self.n = n
        self.by_length: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.short = 0
        self.unchecked: list[str] = []
        for p in problems:
            words = normalize(p.text).split()
            if n and len(words) >= n:
                grams = {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}
                for gram in grams:
                    self.by_length[n][gram].append(p.id)
            elif len(words) >= MIN_WORDS:
                self.by_length[len(words)][" ".join(words)].append(p.id)
                self.short += 1
            else:
                self.unchecked.append(p.id)
        self.boilerplate = 0
        full = self.by_length.get(n)
        if full:
            limit = max(BOILERPLATE_SHARE * len(problems), BOILERPLATE_MIN_PROBLEMS - 1)
            common = [g for g, ids in full.items() if len(ids) > limit]
            for gram in common:
                del full[gram]
            self.boilerplate = len(common)
        self.lengths = sorted(k for k, table in self.by_length.items() if table)

    def match(self, texts: Iterable[str]) -> tuple[list[str], str] | None:
        """(ids of the evaluation problems hit, the first shared n-gram) for one row's prompts, or None."""
        hit: dict[str, None] = {}
        first = None
        for text in texts:
            words = normalize(text).split()
            for k in self.lengths:
                table = self.by_length[k]
                for i in range(len(words) - k + 1):
                    ids = table.get(" ".join(words[i : i + k]))
                    if ids:
                        first = first or " ".join(words[i : i + k])
                        hit.update(dict.fromkeys(ids))
        return (list(hit), first) if hit else None


def _rows(train_rows: Any, column: str, id_column: str) -> Iterator[Mapping[str, Any]]:
    if hasattr(train_rows, "column_names") and hasattr(train_rows, "iter"):
        keep = [c for c in (column, id_column, *PROBLEM_COLUMNS) if c in train_rows.column_names]
        for batch in train_rows.select_columns(keep).iter(batch_size=1000):
            for i in range(len(batch[keep[0]])):
                yield {c: batch[c][i] for c in keep}
    else:
        yield from train_rows


def find_contamination(
    train_rows: Any,
    eval_problems: Any,
    n: int = DEFAULT_NGRAM,
    *,
    column: str = "messages",
    id_column: str = "id",
) -> ContaminationReport:
    """Find the training rows whose prompts share a word ``n``-gram with an evaluation problem (``n = 0``: whose
    prompts contain a whole evaluation problem).

    ``train_rows`` is a ``datasets.Dataset`` or an iterable of row dicts; ``eval_problems`` anything
    :func:`as_problems` accepts. Nothing is removed: see :func:`decontaminate`.
    """
    if n < 0:
        raise ValueError(f"n must be a number of words (0: whole problems only), got {n}")
    problems = as_problems(eval_problems)
    lookup = _Lookup(problems, n)
    report = ContaminationReport(
        n=n,
        rows_checked=0,
        eval_problems=len(problems),
        short_problems=lookup.short,
        unchecked=lookup.unchecked,
        boilerplate_ngrams=lookup.boilerplate,
    )
    for i, row in enumerate(_rows(train_rows, column, id_column)):
        report.rows_checked += 1
        found = lookup.match(prompt_text(row, column))
        if found:
            rid = row.get(id_column)
            report.flagged.append(Flag(i, None if rid is None else str(rid), found[0], found[1]))
    level = logging.WARNING if report.flagged else logging.INFO
    logger.log(level, "%s", report.summary())
    return report


def decontaminate(
    dataset: Any, eval_problems: Any, n: int = DEFAULT_NGRAM, **options: str
) -> tuple[Any, ContaminationReport]:
    """Remove the contaminated rows; return the clean dataset (same type, same order) and the report.

    The search is :func:`find_contamination`'s, with its keyword ``options`` (``column``, ``id_column``).
    """
    if not hasattr(dataset, "select"):
        dataset = list(dataset)  # read an iterator once, for both the search and the selection
    report = find_contamination(dataset, eval_problems, n, **options)
    flagged = {f.row for f in report.flagged}
    report.removed = len(flagged)
    if not flagged:
        return dataset, report
    keep = [i for i in range(report.rows_checked) if i not in flagged]
    clean = dataset.select(keep) if hasattr(dataset, "select") else [dataset[i] for i in keep]
    logger.warning("decontamination removed %d of %d training rows", report.removed, report.rows_checked)
    return clean, report
