"""The files of a run folder that more than one step writes: their names, the one way each is written (whole, or
not at all), ``metrics.json`` that every step merges its own keys into, and moving outputs aside when they are made
anew (``archive_*``: a run folder's outputs are never deleted, they go to ``previous/<time>/``).

``open_r1_nb.pipeline`` decides when outputs are stale and re-exports these names; training (``sft``) and notebook
06 merge their metrics here.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

RECIPE_FILE = "recipe.yaml"
#: Executed notebooks that a new run of the pipeline would overwrite are moved here first (under notebooks/), and
#: so are a run's training or evaluation outputs that ``retrain`` / ``re_evaluate`` replace (under the run folder).
PREVIOUS_DIR = "previous"
#: ``runs/<run>/training_fingerprint.json``: the training keys of the recipe that made the run's checkpoints and
#: model, written when training starts. recipe.yaml is rewritten by every notebook 01 and every runner call, so it
#: cannot say what an existing model was trained with; this file can. (Each evaluation result records its own
#: settings, in ``eval/<benchmark>/<model>.json``.)
FINGERPRINT_FILE = "training_fingerprint.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a process killed halfway
    leaves the old file or the new one, never half of one (which every later run would then fail to read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def merge_metrics(folder: Path, update: dict) -> dict:
    """Merge ``update`` into ``<run>/metrics.json`` one level deep: each step owns its own keys in the file."""
    path = Path(folder) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(metrics.get(key), dict):
            metrics[key].update(value)
        else:
            metrics[key] = value
    write_atomic(path, json.dumps(metrics, indent=2))
    return metrics


def _move_aside(
    run_folder: Path, paths: list[Path], stamp: str | None, recipe_text: str | None
) -> Path | None:
    """Move ``paths`` (inside ``run_folder``) into ``run_folder/previous/<stamp>/``, keeping their relative place."""
    paths = [p for p in paths if p.exists()]
    if not paths:
        return None
    target = _unused(run_folder / PREVIOUS_DIR / (stamp or timestamp()))
    for path in paths:
        dest = target / path.relative_to(run_folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        path.rename(dest)
    if recipe_text is not None:
        (target / RECIPE_FILE).write_text(recipe_text)
    return target


def _forget_metrics(run_folder: Path, keys: tuple[str, ...], target: Path | None) -> None:
    """Copy metrics.json next to the outputs moved aside, then drop the keys that described them."""
    path = run_folder / "metrics.json"
    if target is None or not path.exists():
        return
    shutil.copy2(path, target / path.name)
    metrics = json.loads(path.read_text())
    write_atomic(path, json.dumps({k: v for k, v in metrics.items() if k not in keys}, indent=2))


_EVAL_FIGURES = ("eval_comparison.png", "eval_lengths_*.png", "learning_curve.png", "report.md")


def archive_training_outputs(
    run_folder: Path, run_name: str, stamp: str | None = None, recipe_text: str | None = None
) -> Path | None:
    """Before training again: move the model, the checkpoints (else training would resume from the last one),
    the log, and every result computed from them (the trained model's and the learning curve's evaluations, the
    plots, the report) into ``runs/<run>/previous/<stamp>/``; the base model's results stay. Returns that folder.
    ``recipe_text`` (the recipe they were made with) is written beside them."""
    run_folder = Path(run_folder)
    eval_dir = run_folder / "eval"
    names = ("model", "checkpoints", "train.log", "training_curves.png", FINGERPRINT_FILE)
    paths = [run_folder / name for name in names]
    paths += sorted(eval_dir.glob(f"*/{run_name}.*")) + sorted(eval_dir.glob("*/curve-*"))
    paths += [p for pattern in _EVAL_FIGURES for p in sorted(run_folder.glob(pattern))]
    target = _move_aside(run_folder, paths, stamp, recipe_text)
    _forget_metrics(run_folder, ("train", "eval", "learning_curve"), target)
    return target


def archive_evaluation(
    run_folder: Path, stamp: str | None = None, recipe_text: str | None = None
) -> Path | None:
    """Before evaluating again: move ``eval/`` (every model's results), the plots made from it and the report
    into ``runs/<run>/previous/<stamp>/``. Returns that folder, or None when there was nothing to move."""
    run_folder = Path(run_folder)
    paths = [run_folder / "eval"] + [p for pattern in _EVAL_FIGURES for p in sorted(run_folder.glob(pattern))]
    target = _move_aside(run_folder, paths, stamp, recipe_text)
    _forget_metrics(run_folder, ("eval", "learning_curve"), target)
    return target


def timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _unused(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... when it exists (two runs within one second)."""
    candidate, i = path, 1
    while candidate.exists():
        i += 1
        candidate = path.with_name(f"{path.name}-{i}")
    return candidate


def archive_run_dir(run_folder: Path, stamp: str | None = None) -> Path | None:
    """Move a whole run folder aside to ``runs/<run>.previous-<timestamp>/`` (nothing is deleted); return where
    it went, or None when there was none. This is what starting a run over (``fresh``) means."""
    run_folder = Path(run_folder)
    if not run_folder.exists():
        return None
    target = _unused(run_folder.with_name(f"{run_folder.name}.previous-{stamp or timestamp()}"))
    run_folder.rename(target)
    return target


def archive_outputs(run_folder: Path, names: list[str], stamp: str | None = None) -> Path | None:
    """Before notebooks run again, move their executed copies into ``runs/<run>/notebooks/previous/<timestamp>/``
    (``run_pipeline`` adds the recipe they ran with); return that folder, or None when nothing was there."""
    notebooks_dir = Path(run_folder) / "notebooks"
    existing = [notebooks_dir / name for name in names if (notebooks_dir / name).exists()]
    if not existing:
        return None
    target = _unused(notebooks_dir / PREVIOUS_DIR / (stamp or timestamp()))
    target.mkdir(parents=True)
    for path in existing:
        path.rename(target / path.name)
    return target
