"""Where things live: the repository root, the asset cache and the run folders."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMETERS_DIR = REPO_ROOT / "parameters"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def cache_dir() -> Path:
    """The asset cache (models and datasets built offline); ``OPEN_R1_NB_CACHE`` moves it."""
    return Path(os.environ.get("OPEN_R1_NB_CACHE", REPO_ROOT / "cache"))


def runs_root() -> Path:
    """The folder that holds one sub-folder per run; ``OPEN_R1_NB_RUNS`` moves it."""
    return Path(os.environ.get("OPEN_R1_NB_RUNS", REPO_ROOT / "runs"))


def run_dir(run_name: str) -> Path:
    return runs_root() / run_name


def resolve_local(path: str | os.PathLike) -> Path | None:
    """Return the local path that ``path`` names, or None when it is not on disk.

    A relative path is tried against the working directory first, then against the repository root, so
    the same recipe works from a terminal at the root and from a notebook kernel inside ``notebooks/``.
    A path that starts with ``cache/`` is also looked up in :func:`cache_dir` (``OPEN_R1_NB_CACHE``), so recipes
    can name the embedded assets the same way wherever the cache lives. Anything not found locally is left to the
    caller to treat as a Hub id.
    """
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        return p if p.exists() else None
    for base in (Path.cwd(), REPO_ROOT):
        if (base / p).exists():
            return (base / p).resolve()
    if len(p.parts) > 1 and p.parts[0] == "cache" and cache_dir().joinpath(*p.parts[1:]).exists():
        return cache_dir().joinpath(*p.parts[1:])
    return None
