"""Reading one dataset source: a local folder or file, or a Hub dataset id, one split expression of it.

:func:`load_source` is the one reader; the recipe's data (``open_r1_nb.data.get_dataset``) and the evaluation
problems that training rows are checked against (``open_r1_nb.decontaminate.load_eval_problems``) both go through
it. Local sources need no network and select the same rows as the Hub would (``datasets``' split slices and percent
rounding); a Hub id is tried only when the Hub is reachable (:func:`hub_unreachable_reason`), so an offline machine
gets one :class:`DatasetLoadError` saying what to do instead of a minute of retries. :func:`split_names` checks a
split expression and names the splits it reads.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from open_r1_nb.paths import resolve_local

_DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


class DatasetLoadError(RuntimeError):
    """A dataset could not be loaded; the message says what to do instead."""


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be used from here, in words, or None when nothing says so.

    Offline when ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set; unreachable when a TCP connection to the Hub
    endpoint (``HF_ENDPOINT``) fails within ``timeout`` seconds. Without this check an unreachable Hub costs a
    stack of "Retrying in 8s" lines and about a minute before the same failure. Behind a proxy
    (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``) a direct connection proves nothing, so none is tried.
    """
    if _hub_offline():
        return "the Hub is offline here (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
    if any(
        os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    ):
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    if not url.hostname:
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        return (
            f"this machine looks offline: the Hub ({endpoint}) did not accept a connection within {timeout:g} s "
            f"({type(err).__name__}: {err})"
        )
    return None


_SPLIT_NAME = re.compile(r"^\s*(\w+(?:\.\w+)*)")


def split_names(split: str) -> list[str]:
    """The split names a split expression reads, in order: ``"train[:10]+test"`` -> ``["train", "test"]``.

    The expression is the ``datasets`` library's (``ReadInstruction``): names joined by ``+``, each with an optional
    ``[from:to]`` slice in rows or percent. Raises ``DatasetLoadError`` naming the fix when it does not parse.
    """
    import datasets

    try:
        datasets.ReadInstruction.from_spec(split)
    except (ValueError, TypeError, AttributeError) as err:
        raise DatasetLoadError(
            f"split {split!r} is not a split expression ({err}). Fix: write a split name such as train, a slice "
            "such as train[:100] or train[10%:], or several joined with +, e.g. train+test."
        ) from None
    return list(dict.fromkeys(_SPLIT_NAME.match(part).group(1) for part in split.split("+")))


def _read_split_expression(splits: dict[str, Any], split: str):
    """Rows of ``splits`` (name -> Dataset) that the expression ``split`` selects, as ``datasets`` would read them
    from the Hub: the same slices and percent rounding (its ``ReadInstruction``), parts concatenated in order."""
    import datasets

    instructions = datasets.ReadInstruction.from_spec(split).to_absolute(
        {n: len(d) for n, d in splits.items()}
    )
    parts = [splits[i.splitname].select(range(i.from_, i.to)) for i in instructions]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _load_local_split(local: Path, split: str):
    """One whole split (a plain name) of a local file or folder."""
    import datasets

    if local.is_file():
        builder = _DATA_SUFFIXES.get(local.suffix)
        if builder is None:
            raise DatasetLoadError(
                f"Don't know how to read {local}: use one of {sorted(_DATA_SUFFIXES)} or a dataset folder."
            )
        if split != "train":
            # As datasets.load_dataset(<builder>, data_files=<file>) reads it: one file is one `train` split.
            raise DatasetLoadError(
                f"{local} is a single file, which holds one split, `train`; the recipe asked for split {split!r}. "
                f"Fix: read it as train (or a slice of it, e.g. train[:100]), or use a folder of <split>.jsonl files."
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


def load_source(dataset_id: str, config: str | None = None, split: str = "train"):
    """Load one split of one source: a local folder or file, or a Hub dataset id.

    A local folder may be a ``save_to_disk`` folder, or hold ``<split>.jsonl`` / ``.parquet`` / ``.json``
    files (what ``scripts/prepare_assets.py`` writes); a single file is its ``train`` split. ``split`` may be any
    expression ``datasets`` accepts (``train[:10]``, ``train[10%:]``, ``train+test``): it selects the same rows
    from a local source as from the Hub. Anything not on disk is treated as a Hub id.
    """
    import datasets

    local = resolve_local(dataset_id)
    if local is not None:
        names = split_names(split)
        if names == [split]:
            return _load_local_split(local, split)
        return _read_split_expression({name: _load_local_split(local, name) for name in names}, split)
    unreachable = hub_unreachable_reason()
    if unreachable:
        raise DatasetLoadError(
            f"{dataset_id!r} is not a local path, and {unreachable}. Download it where the Hub is reachable "
            f"(`huggingface-cli download --repo-type dataset {dataset_id} --local-dir <folder>`) and set the "
            "recipe's dataset id to that folder."
        )
    try:
        return datasets.load_dataset(dataset_id, config, split=split)
    except (ConnectionError, OSError) as err:  # requests' and hub's network errors derive from these
        raise DatasetLoadError(
            f"Could not reach the Hub for dataset {dataset_id!r} ({type(err).__name__}: {err}). If this machine is "
            "offline, download the dataset elsewhere and set the recipe's dataset id to the local folder."
        ) from err
