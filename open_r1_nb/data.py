"""Step 2: load the reasoning traces, check every row, and measure them in tokens.

``get_dataset`` follows open-r1's semantics (one dataset, or a weighted ``dataset_mixture`` with column
selection, subsampling by weight, a shuffle by seed and an optional carved-out test split) and adds two things
the Hub path takes for granted: local folders/files as sources, and one clear error when the Hub is out of reach
(both in :mod:`open_r1_nb.sources`, which reads one source; its names are importable from here too).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from open_r1_nb import decontaminate as dc

# Reading one source lives in open_r1_nb.sources; its public names stay importable from here (F401: re-exported).
from open_r1_nb.sources import (
    DatasetLoadError,
    hub_unreachable_reason,  # noqa: F401
    load_source,
    split_names,  # noqa: F401
)

logger = logging.getLogger(__name__)

VALID_ROLES = ("system", "user", "assistant", "tool")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
#: What to do with rows longer than ``max_length`` tokens (the recipe's ``overlong_policy``).
OVERLONG_POLICIES = ("truncate", "drop")


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


def get_dataset(args) -> Any:
    """Return a ``DatasetDict`` for the recipe's ``ScriptArguments`` (open-r1's ``get_dataset``).

    With ``dataset_name`` the named dataset is loaded whole (its train split, and its test split when it has one).
    With ``dataset_mixture`` each entry's ``split`` (a name or an expression such as ``train[:10]``) is loaded,
    reduced to its ``columns``, subsampled to ``weight`` × its size after a seeded shuffle (no ``weight``, or
    ``weight: null``, keeps all of it unshuffled), then all are concatenated and shuffled; ``test_split_size``
    (a fraction, or a number of rows) carves out a test split with the mixture's seed.
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
    for entry, ds in zip(mixture.datasets[1:], parts[1:], strict=True):
        # Entries without `columns` keep every column; concatenating needs the same ones everywhere.
        if set(ds.column_names) != set(parts[0].column_names):
            raise DatasetLoadError(
                f"dataset_mixture entry {entry.id!r} has columns {ds.column_names}, entry "
                f"{mixture.datasets[0].id!r} has {parts[0].column_names}: the mixture concatenates them, so they "
                "need the same columns. Fix: give every entry the same `columns`, e.g. columns: [messages]."
            )
    try:
        combined = datasets.concatenate_datasets(parts)
    except ValueError as err:  # same column names, types that cannot be aligned
        raise DatasetLoadError(_schema_mismatch(mixture.datasets, parts, err)) from None
    combined = combined.shuffle(seed=seed)
    test_size = getattr(mixture, "test_split_size", None)
    if test_size is not None:
        try:
            return combined.train_test_split(test_size=test_size, seed=seed)
        except ValueError as err:
            raise DatasetLoadError(
                f"dataset_mixture.test_split_size {test_size!r} cannot split the mixture's {len(combined)} rows "
                f"({err}). Fix: a fraction in (0, 1) or a number of rows below {len(combined)}."
            ) from None
    return datasets.DatasetDict({"train": combined})


def _schema_mismatch(entries, parts, err: Exception) -> str:
    """Which columns of a mixture's sources hold different types, in words, with the fix."""
    first_entry, first = entries[0], parts[0]
    differing, columns = [], set()
    for entry, ds in zip(entries[1:], parts[1:], strict=True):
        for column in first.column_names:
            if ds.features[column] != first.features[column]:
                columns.add(column)
                differing.append(
                    f"column {column!r} is {first.features[column]} in {first_entry.id!r} but "
                    f"{ds.features[column]} in {entry.id!r}"
                )
    if not differing:
        return f"dataset_mixture: the datasets cannot be concatenated ({err})."
    fixes = []
    if columns - {"messages"}:
        fixes.append("keep only the columns training reads, the same in every entry: columns: [messages]")
    if "messages" in columns:
        fixes.append("give every source's messages the same fields (one source's turns add or lack a field)")
    return (
        f"dataset_mixture: the datasets have the same columns but not the same types: {'; '.join(differing)}. The "
        f"mixture concatenates them, so each column needs one type. Fix: {'; and '.join(fixes)}."
    )


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


def to_prompt_completion(dataset, column: str = "messages"):
    """Split each conversation into ``prompt`` (every turn before the last) and ``completion`` (the final
    assistant turn), the conversational prompt-completion form TRL masks with ``completion_only_loss``.

    The trainer then renders ``prompt`` with the generation prompt, as at inference, and computes the loss on the
    completion alone: the reasoning, the answer and the end-of-turn token, not the question. ``dataset`` is a
    ``Dataset`` or ``DatasetDict``; rows must have passed ``validate_dataset`` (they end with an assistant turn).
    """
    if hasattr(dataset, "keys"):
        import datasets

        return datasets.DatasetDict({name: to_prompt_completion(ds, column) for name, ds in dataset.items()})
    if column not in dataset.column_names:
        raise DatasetValidationError(
            f"completion_only_loss needs a {column!r} column to split into prompt and completion; the rows have "
            f"{dataset.column_names}. Fix: select {column!r} in dataset_mixture columns, or set "
            "completion_only_loss: false.",
            [],
        )
    return dataset.map(
        lambda row: {"prompt": row[column][:-1], "completion": row[column][-1:]},
        remove_columns=[column],
        desc="Splitting prompt and completion",
    )


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


# ------------------------------------------------------------------------------- preparing for training


def _count_lengths(dataset, tokenizer, column: str, num_proc: int | None) -> np.ndarray:
    """``token_lengths``, spread over ``num_proc`` processes for large datasets."""
    if not num_proc or num_proc < 2 or len(dataset) < 10_000 or not hasattr(dataset, "map"):
        return token_lengths(dataset, tokenizer, column)

    def count(batch):
        out = []
        for messages in batch[column]:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
            out.append(len(ids["input_ids"] if hasattr(ids, "keys") else ids))
        return {"n_tokens": out}

    counted = dataset.map(
        count, batched=True, num_proc=num_proc, remove_columns=dataset.column_names, desc="Counting tokens"
    )
    return np.asarray(counted["n_tokens"], dtype=np.int64)


def _lengths(dataset, tokenizer, column: str, num_proc: int | None) -> np.ndarray:
    """Token lengths of ``dataset``, counted once per launch.

    Under ``accelerate launch`` every rank prepares the same data. Counting on each would multiply the work by the
    number of ranks (8 tokenizations of Mixture-of-Thoughts on one node, each rank's ``num_proc`` workers competing
    for the same cores), so the first process counts and broadcasts the lengths; the others wait in the broadcast
    (within the process group's timeout, ``ddp_timeout``: 30 minutes by default) and receive them. An error on the
    first process reaches every rank instead of leaving them waiting.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return _count_lengths(dataset, tokenizer, column, num_proc)
    payload: list[Any] = [None]
    failure: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload[0] = ("lengths", _count_lengths(dataset, tokenizer, column, num_proc))
        except Exception as err:
            failure = err
            payload[0] = ("error", f"{type(err).__name__}: {err}")
    dist.broadcast_object_list(payload, src=0)
    kind, value = payload[0]
    if kind == "error":
        if failure is not None:
            raise failure
        raise RuntimeError(f"the first process failed while counting tokens: {value}")
    return np.asarray(value, dtype=np.int64)


def _where_it_ends(tokenizer, messages: list[dict]) -> tuple[int | None, int]:
    """For one conversation: (token position of the last EOS or None, token position where its final answer
    starts: after the last ``</think>``, else at the last assistant turn)."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    eos = tokenizer.eos_token_id
    eos_pos = max((i for i, t in enumerate(ids) if t == eos), default=None) if eos is not None else None
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    cut = text.rfind(THINK_CLOSE)
    if cut >= 0:
        cut += len(THINK_CLOSE)
    else:
        last = next((t["content"] for t in reversed(messages) if t.get("role") == "assistant"), "")
        cut = text.rfind(last) if last else len(text)
    answer = len(tokenizer(text[:cut], add_special_tokens=False)["input_ids"])
    return eos_pos, answer


def handle_overlong(
    dataset,
    tokenizer,
    max_length: int | None,
    policy: str = "truncate",
    *,
    column: str = "messages",
    num_proc: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Find the rows longer than ``max_length`` tokens (after the chat template) and keep or drop them.

    ``policy="truncate"`` keeps them: the trainer cuts every row at ``max_length``, so these rows lose their end,
    which for a reasoning trace is the final answer and the EOS (the model does not learn to stop on them).
    ``policy="drop"`` removes them. Either way nothing is silent: the report (a dict) counts the rows and their
    share, the tokens beyond ``max_length``, the rows whose EOS and whose answer fall beyond it, and the rows
    dropped; a warning is logged when any row is too long.
    """
    if policy not in OVERLONG_POLICIES:
        raise ValueError(
            f"overlong policy {policy!r} is not one of {list(OVERLONG_POLICIES)}. Fix: overlong_policy: truncate "
            "(keep the rows; the trainer cuts them at max_length) or drop (remove them)"
        )
    rows = len(dataset)
    report: dict[str, Any] = {
        "policy": policy,
        "max_length": max_length,
        "rows": rows,
        "rows_over": 0,
        "share_rows_over": 0.0,
        "tokens": None,
        "tokens_beyond": 0,
        "share_tokens_beyond": 0.0,
        "rows_eos_cut": 0,
        "rows_answer_cut": 0,
        "longest": None,
        "rows_dropped": 0,
        "over_rows": [],
    }
    if max_length is None or rows == 0:
        return dataset, report
    lengths = _lengths(dataset, tokenizer, column, num_proc)
    over = np.flatnonzero(lengths > max_length)
    tokens = int(lengths.sum())
    beyond = int((lengths[over] - max_length).sum())
    report.update(
        tokens=tokens,
        longest=int(lengths.max()),
        rows_over=int(len(over)),
        share_rows_over=round(len(over) / rows, 4),
        tokens_beyond=beyond,
        share_tokens_beyond=round(beyond / max(tokens, 1), 4),
        over_rows=[int(i) for i in over[:20]],
    )
    for i in over:
        eos_pos, answer = _where_it_ends(tokenizer, dataset[int(i)][column])
        report["rows_eos_cut"] += eos_pos is None or eos_pos >= max_length
        report["rows_answer_cut"] += answer >= max_length
    if len(over) and policy == "drop":
        dataset = dataset.select(np.flatnonzero(lengths <= max_length).tolist())
        report["rows_dropped"] = int(len(over))
    if len(over):
        logger.warning(
            "%d of %d rows (%.1f%%) are longer than max_length=%d tokens (%d tokens beyond it); policy %s%s",
            len(over),
            rows,
            100 * len(over) / rows,
            max_length,
            beyond,
            policy,
            ": dropped" if policy == "drop" else ": kept, the trainer truncates them",
        )
    return dataset, report


def overlong_note(split: str, report: dict[str, Any], training_args=None) -> str:
    """One sentence on what happens to the rows longer than ``max_length`` (what the trainer does with them
    depends on ``packing``, ``packing_strategy`` and ``truncation_mode``)."""
    if report["max_length"] is None:
        return f"{split}: max_length is unset, so no row is truncated."
    if not report["rows_over"]:
        return (
            f"{split}: all {report['rows']} rows fit in max_length {report['max_length']} tokens "
            f"(longest {report['longest']})."
        )
    text = (
        f"{split}: {report['rows_over']} of {report['rows']} rows ({report['share_rows_over']:.1%}) are longer "
        f"than max_length {report['max_length']} tokens; {report['tokens_beyond']} tokens "
        f"({report['share_tokens_beyond']:.1%}) lie beyond it."
    )
    if report["policy"] == "drop":
        return (
            text
            + f" overlong_policy drop: removed them, {report['rows'] - report['rows_dropped']} rows remain."
        )
    packing = bool(getattr(training_args, "packing", False))
    strategy = getattr(training_args, "packing_strategy", "bfd")
    mode = getattr(training_args, "truncation_mode", "keep_start")
    fix = " Set overlong_policy: drop to remove them, or raise max_length."
    if packing and strategy == "bfd_split":
        return text + (
            " overlong_policy truncate: kept; packing (bfd_split) splits them, so their ends train as separate "
            "pieces without the beginning of the conversation." + fix
        )
    if packing and strategy == "wrapped":
        return (
            text
            + " overlong_policy truncate: kept; packing (wrapped) cuts them across packed sequences."
            + fix
        )
    if not packing and mode == "keep_end":
        return text + (
            f" overlong_policy truncate: kept; the trainer keeps their last {report['max_length']} tokens, so they "
            "lose their beginning (the prompt)." + fix
        )
    return text + (
        f" overlong_policy truncate: kept; the trainer cuts them at {report['max_length']} tokens, so they lose "
        f"their end: {report['rows_eos_cut']} lose the EOS (the model does not learn to stop on them) and "
        f"{report['rows_answer_cut']} lose the final answer after {THINK_CLOSE}." + fix
    )


def prepare_for_training(
    dataset, tokenizer, recipe, *, reports: dict[str, Any] | None = None
) -> tuple[Any, list[str]]:
    """Apply the recipe's data checks that need a tokenizer or evaluation data; return (dataset, notes).

    1. Contamination (``decontamination_against``: evaluation files, folders or Hub ids): the training split's
       prompts are checked for word n-gram overlap (``decontamination_ngram``, 8 as open-r1) with the evaluation
       problems; the overlap is reported, and removed when ``decontaminate: true``.
    2. Over-length rows (``overlong_policy``): every split is measured against ``max_length``; rows over it are
       kept for the trainer to truncate (``truncate``) or removed (``drop``), and counted either way.

    ``dataset`` is a ``DatasetDict`` (the recipe's train split is decontaminated) or a single ``Dataset``; the
    same type comes back. ``reports``, when given, receives the reports as plain dicts (for ``metrics.json``).
    """
    pipeline, training = recipe.pipeline, recipe.training
    notes: list[str] = []
    is_dict = hasattr(dataset, "keys")
    splits = dict(dataset.items()) if is_dict else {"train": dataset}
    train_name = (getattr(recipe.script, "dataset_train_split", None) or "train") if is_dict else "train"
    if train_name not in splits and "train" in splits:
        train_name = "train"  # get_dataset names the split it loaded `train`, whatever the source called it
    if train_name not in splits:
        raise DatasetLoadError(f"the dataset has splits {list(splits)}; the recipe trains on {train_name!r}.")
    out_reports: dict[str, Any] = {"overlong": {}}

    against = list(getattr(pipeline, "decontamination_against", None) or [])
    remove = bool(getattr(pipeline, "decontaminate", False))
    n = int(getattr(pipeline, "decontamination_ngram", dc.DEFAULT_NGRAM))
    if remove and not against:
        raise ValueError(
            "decontaminate: true but decontamination_against is empty. Fix: list the evaluation files or folders, "
            "e.g. decontamination_against: [cache/data/gsm_symbolic/test_template.jsonl]"
        )
    if against:
        problems = dc.load_eval_problems(against)
        if remove:
            splits[train_name], report = dc.decontaminate(splits[train_name], problems, n)
        else:
            report = dc.find_contamination(splits[train_name], problems, n)
        notes.append(f"{train_name}: {report.summary()}")
        out_reports["contamination"] = report.as_dict()
    else:
        notes.append(
            f"{train_name}: contamination not checked (name evaluation files in decontamination_against to check "
            "for overlap, and set decontaminate: true to remove it)."
        )

    policy = getattr(pipeline, "overlong_policy", "truncate")
    for name, ds in splits.items():
        splits[name], report = handle_overlong(
            ds, tokenizer, training.max_length, policy, num_proc=getattr(training, "dataset_num_proc", None)
        )
        notes.append(overlong_note(name, report, training))
        out_reports["overlong"][name] = report
    for note in notes:
        logger.info("data: %s", note)
    if reports is not None:
        reports.update(out_reports)
    if not is_dict:
        return splits["train"], notes
    import datasets

    return datasets.DatasetDict(splits), notes
