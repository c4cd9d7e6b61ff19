"""Step 2: load the reasoning traces, check every row, and measure them in tokens.

``get_dataset`` follows open-r1's semantics (one dataset, or a weighted ``dataset_mixture`` with column
selection, subsampling by weight, a shuffle by seed and an optional carved-out test split) and adds two things
the Hub path takes for granted: local folders/files as sources, and one clear error when the Hub is out of reach.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from open_r1_nb.paths import resolve_local

logger = logging.getLogger(__name__)

VALID_ROLES = ("system", "user", "assistant", "tool")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


class DatasetLoadError(RuntimeError):
    """A dataset could not be loaded; the message says what to do instead."""


class DatasetValidationError(ValueError):
    """Some rows are malformed; ``problems`` lists them (row index, id, what is wrong)."""

    def __init__(self, message: str, problems: list[RowProblem]):
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class RowProblem:
    row: int
    row_id: str | None
    problem: str

    def __str__(self) -> str:
        ident = f" (id {self.row_id})" if self.row_id is not None else ""
        return f"row {self.row}{ident}: {self.problem}"


# --------------------------------------------------------------------------------------------- loading


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def load_source(dataset_id: str, config: str | None = None, split: str = "train"):
    """Load one split of one source: a local folder or file, or a Hub dataset id.

    A local folder may be a ``save_to_disk`` folder, or hold ``<split>.jsonl`` / ``.parquet`` / ``.json``
    files (what ``scripts/prepare_assets.py`` writes). Anything not on disk is treated as a Hub id.
    """
    import datasets

    local = resolve_local(dataset_id)
    if local is not None:
        if local.is_file():
            builder = _DATA_SUFFIXES.get(local.suffix)
            if builder is None:
                raise DatasetLoadError(
                    f"Don't know how to read {local}: use one of {sorted(_DATA_SUFFIXES)} or a dataset folder."
                )
            return datasets.load_dataset(builder, data_files=str(local), split="train")
        if (local / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(local))
            if split not in loaded:
                raise DatasetLoadError(
                    f"{local} has splits {list(loaded)}; the recipe asked for split {split!r}."
                )
            return loaded[split]
        if (local / "state.json").exists():
            return datasets.load_from_disk(str(local))
        for suffix, builder in _DATA_SUFFIXES.items():
            candidate = local / f"{split}{suffix}"
            if candidate.exists():
                return datasets.load_dataset(builder, data_files=str(candidate), split="train")
        available = sorted(p.name for p in local.iterdir())
        raise DatasetLoadError(
            f"The local dataset folder {local} has no file for split {split!r} (looked for {split}.jsonl, "
            f"{split}.parquet, …); it holds {available}. Build the embedded assets with "
            "`python scripts/prepare_assets.py`, or point the recipe at the right split."
        )
    if _hub_offline():
        raise DatasetLoadError(
            f"{dataset_id!r} is not a local path, and the Hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is "
            "set). Download it where the Hub is reachable (`huggingface-cli download --repo-type dataset "
            f"{dataset_id} --local-dir <folder>`) and set the recipe's dataset id to that folder."
        )
    try:
        return datasets.load_dataset(dataset_id, config, split=split)
    except (ConnectionError, OSError) as err:  # requests' and hub's network errors derive from these
        raise DatasetLoadError(
            f"Could not reach the Hub for dataset {dataset_id!r} ({type(err).__name__}: {err}). If this machine is "
            "offline, download the dataset elsewhere and set the recipe's dataset id to the local folder."
        ) from err


def get_dataset(args) -> Any:
    """Return a ``DatasetDict`` for the recipe's ``ScriptArguments`` (open-r1's ``get_dataset``).

    With ``dataset_name`` the named dataset is loaded whole (its train split, and its test split when it has one).
    With ``dataset_mixture`` each entry is loaded, reduced to its ``columns``, subsampled to ``weight`` × its
    size after a seeded shuffle, then all are concatenated and shuffled; ``test_split_size`` carves out a test split.
    """
    import datasets

    mixture = getattr(args, "dataset_mixture", None)
    if mixture is None:
        train_split = getattr(args, "dataset_train_split", "train") or "train"
        test_split = getattr(args, "dataset_test_split", "test") or "test"
        out = {"train": load_source(args.dataset_name, getattr(args, "dataset_config", None), train_split)}
        # A dataset without a test split is normal.
        with contextlib.suppress(DatasetLoadError, ValueError, FileNotFoundError):
            out["test"] = load_source(args.dataset_name, getattr(args, "dataset_config", None), test_split)
        return datasets.DatasetDict(out)

    seed = getattr(mixture, "seed", 0) or 0
    parts = []
    for entry in mixture.datasets:
        ds = load_source(entry.id, entry.config, entry.split or "train")
        if entry.columns:
            missing = [c for c in entry.columns if c not in ds.column_names]
            if missing:
                raise DatasetLoadError(
                    f"dataset_mixture entry {entry.id!r} has no column(s) {missing}; it has {ds.column_names}."
                )
            ds = ds.select_columns(list(entry.columns))
        if entry.weight is not None:
            keep = int(len(ds) * float(entry.weight))
            ds = ds.shuffle(seed=seed).select(range(keep))
            logger.info("dataset_mixture: kept %d rows of %s (weight %s)", keep, entry.id, entry.weight)
        parts.append(ds)
    if not parts:
        raise DatasetLoadError("dataset_mixture.datasets is empty: list at least one dataset.")
    combined = datasets.concatenate_datasets(parts).shuffle(seed=seed)
    test_size = getattr(mixture, "test_split_size", None)
    if test_size:
        return combined.train_test_split(test_size=test_size, seed=seed)
    return datasets.DatasetDict({"train": combined})


def mixture_table(args, dataset) -> Any:
    """A table of where the training rows came from: per source, rows available, weight and rows kept."""
    import pandas as pd

    mixture = getattr(args, "dataset_mixture", None)
    if mixture is None:
        return pd.DataFrame([{"source": args.dataset_name, **{s: len(d) for s, d in dataset.items()}}])
    rows = []
    for entry in mixture.datasets:
        n = len(load_source(entry.id, entry.config, entry.split or "train"))
        kept = int(n * float(entry.weight)) if entry.weight is not None else n
        rows.append(
            {"source": entry.id, "split": entry.split, "rows": n, "weight": entry.weight, "kept": kept}
        )
    table = pd.DataFrame(rows)
    table["share of mixture"] = (table["kept"] / table["kept"].sum()).round(3)
    return table


# ------------------------------------------------------------------------------------------ validation


def check_conversation(messages: Any) -> str | None:
    """Return what is wrong with one ``messages`` value, or None when it is a valid reasoning conversation."""
    if messages is None:
        return "messages is None"
    if not isinstance(messages, list | tuple):
        return f"messages is a {type(messages).__name__}, expected a list of {{role, content}} turns"
    if len(messages) == 0:
        return "the conversation is empty"
    roles = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict):
            return f"turn {i} is a {type(turn).__name__}, expected a dict with 'role' and 'content'"
        role, content = turn.get("role"), turn.get("content")
        if role not in VALID_ROLES:
            return f"turn {i} has role {role!r}; valid roles are {list(VALID_ROLES)}"
        if not isinstance(content, str):
            return f"turn {i} ({role}) has {type(content).__name__} content, expected a string"
        roles.append(role)
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        return f"a system turn may only come first; roles are {roles}"
    if not body or body[0] != "user":
        return f"the first non-system turn must be 'user'; roles are {roles}"
    if roles[-1] != "assistant":
        return f"the conversation must end with an assistant turn; roles are {roles}"
    for a, b in zip(body, body[1:], strict=False):
        if a == b and a in ("user", "assistant"):
            return f"two {a} turns in a row; roles are {roles}"
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        text = turn["content"]
        opens, closes = text.count(THINK_OPEN), text.count(THINK_CLOSE)
        if opens != closes:
            return f"turn {i} (assistant) has {opens} {THINK_OPEN} and {closes} {THINK_CLOSE}: unbalanced think tags"
        if opens and text.find(THINK_CLOSE) < text.find(THINK_OPEN):
            return f"turn {i} (assistant) closes {THINK_CLOSE} before opening {THINK_OPEN}"
    return None


def find_problems(rows: Iterable[dict], column: str = "messages", id_column: str = "id") -> list[RowProblem]:
    """Check every row; return one ``RowProblem`` per malformed row."""
    problems = []
    for i, row in enumerate(rows):
        if column not in row:
            problems.append(RowProblem(i, None, f"no {column!r} column"))
            continue
        reason = check_conversation(row[column])
        if reason:
            rid = row.get(id_column)
            problems.append(RowProblem(i, None if rid is None else str(rid), reason))
    return problems


def validate_dataset(dataset, column: str = "messages", max_listed: int = 10) -> int:
    """Raise ``DatasetValidationError`` naming the malformed rows; return the number of rows checked.

    ``dataset`` is a ``Dataset`` or ``DatasetDict`` (each split is checked and named in the message).
    """
    splits = dataset.items() if hasattr(dataset, "keys") else [("train", dataset)]
    problems: list[tuple[str, RowProblem]] = []
    checked = 0
    for name, ds in splits:
        if column not in ds.column_names:
            raise DatasetValidationError(
                f"Split {name!r} has no {column!r} column (it has {ds.column_names}). SFT on reasoning traces "
                f"needs a {column!r} column of user/assistant turns; select or rename it in the recipe "
                "(dataset_mixture columns).",
                [],
            )
        problems += [(name, p) for p in find_problems(ds, column)]
        checked += len(ds)
    if problems:
        listed = "\n".join(f"  {name} {p}" for name, p in problems[:max_listed])
        more = f"\n  … and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
        raise DatasetValidationError(
            f"{len(problems)} of {checked} rows are malformed:\n{listed}{more}\n"
            "Fix or drop these rows in the source data; every row needs a list of {role, content} turns with "
            "string content, starting with a user turn and ending with an assistant turn, think tags balanced.",
            [p for _, p in problems],
        )
    return checked


# ------------------------------------------------------------------------------------ token statistics


@dataclass
class LengthStats:
    """Token lengths of the rows after the chat template, against ``max_length``."""

    lengths: np.ndarray
    max_length: int
    percentiles: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(len(self.lengths))

    @property
    def rows_over(self) -> int:
        return int((self.lengths > self.max_length).sum())

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def tokens_over(self) -> int:
        return int(np.clip(self.lengths - self.max_length, 0, None).sum())

    def as_dict(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "tokens": self.tokens,
            "mean_tokens": round(float(self.lengths.mean()), 1) if self.rows else 0.0,
            **self.percentiles,
            "max_length": self.max_length,
            "rows_over_max_length": self.rows_over,
            "share_rows_over": round(self.rows_over / max(self.rows, 1), 4),
            "tokens_beyond_max_length": self.tokens_over,
            "share_tokens_beyond": round(self.tokens_over / max(self.tokens, 1), 4),
        }


def token_lengths(dataset, tokenizer, column: str = "messages") -> np.ndarray:
    """Length in tokens of each row rendered through the tokenizer's chat template (what SFT trains on)."""
    out = np.empty(len(dataset), dtype=np.int64)
    for i, messages in enumerate(dataset[column]):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out[i] = len(ids)
    return out


def length_stats(dataset, tokenizer, max_length: int, column: str = "messages") -> LengthStats:
    lengths = token_lengths(dataset, tokenizer, column)
    pct = {f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 99)} if len(lengths) else {}
    return LengthStats(lengths=lengths, max_length=max_length, percentiles=pct)


def plot_lengths(stats: LengthStats, path: str | Path | None = None, title: str = "Tokens per row"):
    """Histogram of token lengths with ``max_length`` marked; saved to ``path`` when given."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(stats.lengths, bins=min(50, max(5, stats.rows // 4)), color="#4C72B0")
    ax.axvline(stats.max_length, color="#C44E52", linestyle="--", label=f"max_length = {stats.max_length}")
    ax.set_xlabel("tokens after the chat template")
    ax.set_ylabel("rows")
    ax.set_title(f"{title}: {stats.rows_over}/{stats.rows} rows over max_length")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def heldout_examples(args, n: int = 3, split: str = "test") -> list[list[dict]]:
    """Up to ``n`` conversations the model did not train on: the ``test`` split of the recipe's first source
    that has one (the embedded datasets all do), else the last training rows."""
    sources = (
        [(e.id, e.config) for e in args.dataset_mixture.datasets]
        if getattr(args, "dataset_mixture", None) is not None
        else [(args.dataset_name, getattr(args, "dataset_config", None))]
    )
    for dataset_id, config in sources:
        try:
            ds = load_source(dataset_id, config, split)
        except (DatasetLoadError, ValueError, FileNotFoundError):
            continue
        return [row["messages"] for row in ds.select(range(min(n, len(ds))))]
    train = get_dataset(args)["train"]
    return [row["messages"] for row in train.select(range(max(0, len(train) - n), len(train)))]
