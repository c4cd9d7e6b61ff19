"""open-r1's dataset mixtures: ``DatasetConfig`` and ``DatasetMixtureConfig``, read from the recipe's mapping with
open-r1's semantics (a missing weight keeps everything) and checked entry by entry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from open_r1_nb.config.coerce import _coerce_number
from open_r1_nb.config.errors import did_you_mean, recipe_error


@dataclass
class DatasetConfig:
    """One dataset of a mixture (open-r1's ``DatasetConfig``). ``id`` is a Hub id or a local folder of
    ``<split>.jsonl`` files; ``weight`` keeps that fraction of it (after a seeded shuffle)."""

    id: str
    config: str | None = None
    split: str = "train"
    columns: list[str] | None = None
    weight: float | None = None


@dataclass
class DatasetMixtureConfig:
    """A weighted mixture of datasets (open-r1's ``DatasetMixtureConfig``), concatenated then shuffled."""

    datasets: list[DatasetConfig]
    seed: int = 0
    test_split_size: float | None = None


_MIXTURE_KEYS = ("datasets", "seed", "test_split_size")
_MIXTURE_ENTRY_KEYS = tuple(f.name for f in dataclasses.fields(DatasetConfig))


def _check_split(key: str, split: str, where: str = "") -> None:
    """A split is a name or an expression the datasets library reads (``train[:10]``, ``train[10%:]``,
    ``train+test``), on the Hub and on local sources alike."""
    from open_r1_nb.sources import DatasetLoadError, split_names

    try:
        split_names(split)
    except DatasetLoadError:
        raise recipe_error(
            key, split, "is not a split expression",
            "write a split name such as train, a slice such as train[:100] or train[10%:], or several joined with "
            "+, e.g. train+test", where,
        ) from None  # fmt: skip


def _check_keys(mapping: dict, allowed: tuple[str, ...], prefix: str, what: str, where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise recipe_error(
                f"{prefix}.{key}",
                mapping[key],
                f"is not {what}",
                f"use only {', '.join(allowed)}{did_you_mean(key, allowed)}",
                where,
            )


def _mixture_from_dict(raw: Any, where: str = "") -> DatasetMixtureConfig:
    """Build a :class:`DatasetMixtureConfig` from the YAML mapping, with open-r1's semantics and our checks."""
    example = "dataset_mixture: {datasets: [{id: <dataset>, columns: [messages], weight: 0.5}], seed: 0}"
    if isinstance(raw, DatasetMixtureConfig):
        raw = _mixture_to_dict(raw)
    if not isinstance(raw, dict) or "datasets" not in raw:
        raise recipe_error(
            "dataset_mixture", raw, "must be a mapping with a `datasets` list", f"write {example}", where
        )
    _check_keys(raw, _MIXTURE_KEYS, "dataset_mixture", "a mixture key", where)
    entries = raw["datasets"]
    if not isinstance(entries, list) or not entries:
        raise recipe_error(
            "dataset_mixture.datasets",
            entries,
            "must be a non-empty list of datasets",
            f"write {example}",
            where,
        )
    datasets = []
    for i, entry in enumerate(entries):
        name = f"dataset_mixture.datasets[{i}]"
        if isinstance(entry, DatasetConfig):
            entry = dataclasses.asdict(entry)
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise recipe_error(
                name, entry, "needs an `id` (a Hub dataset id or a local folder)", f"write {example}", where
            )
        _check_keys(entry, _MIXTURE_ENTRY_KEYS, name, "a key of a mixture entry", where)
        columns = entry.get("columns")
        if columns is not None and (
            not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not columns
        ):
            raise recipe_error(
                f"{name}.columns",
                columns,
                "must be a list of column names",
                "write columns: [messages]",
                where,
            )
        # open-r1 reads a missing weight as 1.0 and an explicit null as "no subsampling": both keep the whole dataset
        # (null also skips the per-dataset shuffle; the mixture is shuffled after concatenation either way).
        weight = _coerce_number(entry.get("weight", 1.0))
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1
        ):
            raise recipe_error(
                f"{name}.weight",
                entry.get("weight"),
                "must be a fraction in (0, 1]: the share of that dataset kept in the mixture",
                "write a number such as 0.5 (half of it), or 1.0 or null (all of it); drop the entry to leave it out",
                where,
            )
        for key in ("config", "split"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise recipe_error(
                    f"{name}.{key}", entry[key], "must be a string", f"quote it: {key}: '{entry[key]}'", where
                )
        if entry.get("split"):
            _check_split(f"{name}.split", entry["split"], where)
        datasets.append(
            DatasetConfig(
                id=entry["id"],
                config=entry.get("config"),
                split=entry.get("split") or "train",
                columns=list(columns) if columns is not None else None,
                weight=None if weight is None else float(weight),
            )
        )
    # open-r1 concatenates the datasets, which needs the same columns everywhere.
    given = [(i, d.columns) for i, d in enumerate(datasets) if d.columns is not None]
    for i, cols in given[1:]:
        if set(cols) != set(given[0][1]):
            raise recipe_error(
                f"dataset_mixture.datasets[{i}].columns",
                cols,
                f"differs from dataset_mixture.datasets[{given[0][0]}].columns {given[0][1]!r}; the mixture "
                "concatenates its datasets, so every entry must keep the same columns",
                f"give every entry the same columns, e.g. columns: {given[0][1]}",
                where,
            )
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise recipe_error("dataset_mixture.seed", seed, "must be an integer", "write seed: 0", where)
    test_split_size = _coerce_number(raw.get("test_split_size"))
    # datasets' train_test_split: a float is a fraction of the rows, an integer a number of rows.
    if test_split_size is not None and (
        isinstance(test_split_size, bool)
        or not isinstance(test_split_size, (int, float))
        or test_split_size <= 0
        or (isinstance(test_split_size, float) and test_split_size >= 1)
    ):
        raise recipe_error(
            "dataset_mixture.test_split_size",
            raw.get("test_split_size"),
            "must be a fraction in (0, 1) or a whole number of rows",
            "write test_split_size: 0.1 (a tenth) or 100 (rows), or remove it to keep everything for training",
            where,
        )
    return DatasetMixtureConfig(datasets=datasets, seed=seed, test_split_size=test_split_size)


def _mixture_to_dict(mixture: DatasetMixtureConfig) -> dict[str, Any]:
    entries = []
    for d in mixture.datasets:
        entry: dict[str, Any] = {"id": d.id}
        if d.config is not None:
            entry["config"] = d.config
        if d.split != "train":
            entry["split"] = d.split
        if d.columns is not None:
            entry["columns"] = list(d.columns)
        entry["weight"] = d.weight  # null is not 1.0 (it skips the per-dataset shuffle): write it as it is
        entries.append(entry)
    out: dict[str, Any] = {"datasets": entries}
    if mixture.seed != 0:
        out["seed"] = mixture.seed
    if mixture.test_split_size is not None:
        out["test_split_size"] = mixture.test_split_size
    return out
