"""The front door: every asset by name (``ASSETS``), :func:`prepare` to build them, their build records."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from open_r1_nb.assets.arithmetic import build_arithmetic
from open_r1_nb.assets.cache import _LAST_STATUS, read_marker
from open_r1_nb.assets.gsm_symbolic import build_gsm_symbolic
from open_r1_nb.assets.smoke import TINY_MODEL_NAME, build_smoke_data, build_tiny_model
from open_r1_nb.assets.smollm2 import SMOLLM2_NAME, build_smollm2
from open_r1_nb.paths import cache_dir

ASSETS: dict[str, Callable[..., Path]] = {
    "smollm2": build_smollm2,
    "tiny_model": build_tiny_model,
    "gsm_symbolic": build_gsm_symbolic,
    "arithmetic": build_arithmetic,
    "smoke_data": build_smoke_data,
}


def prepare(names: Sequence[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Build each named asset (default: all) unless already built; print one line per asset."""
    names = list(ASSETS) if not names else list(names)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise ValueError(f"unknown asset(s) {unknown}; choose from {list(ASSETS)}")
    paths: dict[str, Path] = {}
    for name in names:
        start = time.perf_counter()
        paths[name] = ASSETS[name](force=force)
        elapsed = time.perf_counter() - start
        print(f"{name:<13} {_LAST_STATUS.get(name, 'built'):<6} {elapsed:7.1f} s  {paths[name]}", flush=True)
    return paths


def iter_asset_records() -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(folder, build record or None) for every asset location, for a notebook's environment check."""
    root = cache_dir()
    for folder in (
        root / "models" / SMOLLM2_NAME,
        root / "models" / TINY_MODEL_NAME,
        root / "data" / "gsm_symbolic",
        root / "data" / "arithmetic",
        root / "data" / "smoke",
    ):
        yield str(folder), read_marker(folder)
