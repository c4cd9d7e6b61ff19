"""Run the numbered notebooks headless with papermill, one run folder per profile.

``scripts/run_pipeline.py`` is the command-line face of ``run_pipeline``; the notebooks use ``load_run_recipe``
to read what notebook 01 (or the runner) wrote, so any notebook can be re-run alone.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from open_r1_nb.paths import NOTEBOOKS_DIR, REPO_ROOT, resolve_local, run_dir

RECIPE_FILE = "recipe.yaml"
#: Executed notebooks that a new run of the pipeline would overwrite are moved here first.
PREVIOUS_DIR = "previous"


class PipelineError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


@dataclass
class NotebookResult:
    name: str
    seconds: float
    output: Path
    ok: bool
    error: str | None = None


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose two-digit prefix is in ``only``."""
    found = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.strip().zfill(2) for o in only if o.strip()}
        unknown = wanted - {p.name[:2] for p in found}
        if unknown:
            raise PipelineError(
                f"No notebook numbered {sorted(unknown)}; there are {[p.name for p in found]}."
            )
        found = [p for p in found if p.name[:2] in wanted]
    return found


def profile_path(profile: str | Path) -> Path:
    path = resolve_local(profile)
    if path is None:
        raise PipelineError(
            f"Profile {str(profile)!r} not found; profiles live in {REPO_ROOT / 'parameters'}."
        )
    return path


def load_run_recipe(profile: str | Path, run_name: str = ""):
    """The run's resolved recipe: ``runs/<run>/recipe.yaml`` when it exists, else the profile resolved anew."""
    from open_r1_nb.config import load_recipe

    overrides = {"run_name": run_name} if run_name else None
    recipe = load_recipe(profile_path(profile), overrides=overrides, check_files=False)
    saved = run_dir(recipe.run_name) / RECIPE_FILE
    if saved.exists():
        return load_recipe(saved, check_files=False)
    return recipe.resolved_for_run()


def _run_name(profile: str | Path, run_name: str = "") -> str:
    """The run's name: ``run_name`` when given, else the profile's own (read without checking files)."""
    if run_name:
        return run_name
    from open_r1_nb.config import load_recipe

    return load_recipe(profile_path(profile), check_files=False).run_name


def write_run_recipe(profile: str | Path, run_name: str = "", overrides: dict | None = None):
    """Validate the profile and write ``runs/<run>/recipe.yaml``; return the resolved recipe."""
    from open_r1_nb.config import load_recipe, save_recipe

    overrides = {**(overrides or {}), **({"run_name": run_name} if run_name else {})}
    recipe = load_recipe(
        profile_path(profile), overrides=overrides or None, check_files=True
    ).resolved_for_run()
    save_recipe(recipe, recipe.run_dir / RECIPE_FILE)
    return recipe


def _timestamp() -> str:
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
    target = _unused(run_folder.with_name(f"{run_folder.name}.previous-{stamp or _timestamp()}"))
    run_folder.rename(target)
    return target


def archive_outputs(run_folder: Path, names: list[str], stamp: str | None = None) -> Path | None:
    """Before notebooks run again, move their executed copies into ``runs/<run>/notebooks/previous/<timestamp>/``
    (``run_pipeline`` adds the recipe they ran with); return that folder, or None when nothing was there."""
    notebooks_dir = Path(run_folder) / "notebooks"
    existing = [notebooks_dir / name for name in names if (notebooks_dir / name).exists()]
    if not existing:
        return None
    target = _unused(notebooks_dir / PREVIOUS_DIR / (stamp or _timestamp()))
    target.mkdir(parents=True)
    for path in existing:
        path.rename(target / path.name)
    return target


def _describe_failure(err: Exception) -> str:
    # papermill's execution error carries the cell index and the exception's name and value.
    cell = getattr(err, "exec_count", None) or getattr(err, "cell_index", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    where = f"cell {cell}" if cell is not None else "a cell"
    return f"{where}: {ename}: {evalue}"


def run_notebook(notebook: Path, output: Path, parameters: dict, kernel_name: str | None = None) -> None:
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters,
        kernel_name=kernel_name,
        cwd=str(NOTEBOOKS_DIR),  # same working directory as in JupyterLab
        progress_bar=False,
        log_output=False,
        request_save_on_cell_execute=True,
    )


# Bars of loading and saving files: seconds long, and never what a user waits on.
_FILE_BARS = ("Loading weights", "Writing model shards", "Loading checkpoint")


def _last_progress(log: Path) -> str:
    """The newest tqdm-style progress line of a log (``12/30 [01:02<01:30, 10.4s/it]``), or ''."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return ""
    bars = [
        ln.strip()
        for ln in tail.replace("\r", "\n").splitlines()
        if "|" in ln and "/" in ln and "[" in ln and not ln.lstrip().startswith(_FILE_BARS)
    ]
    return bars[-1][-90:] if bars else ""


class Heartbeat:
    """While a notebook runs, print its elapsed time every ``every_s`` seconds, with the newest progress bar of
    the run's train.log (training steps, then the evaluation right after training).

    papermill shows nothing until a notebook ends; training alone takes minutes, so the runner says it is alive.
    """

    def __init__(self, name: str, run_folder: Path, echo=print, every_s: float = 30.0) -> None:
        self.name, self.log, self.echo, self.every_s = name, run_folder / "train.log", echo, every_s
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            elapsed = time.perf_counter() - self._t0
            progress = (
                _last_progress(self.log)
                if self.log.exists() and self.log.stat().st_mtime > self._since
                else ""
            )
            self.echo(f"  {self.name:<28} ...   {elapsed:6.0f} s" + (f"   {progress}" if progress else ""))

    def __enter__(self) -> Heartbeat:
        self._since = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_pipeline(
    profile: str | Path,
    only: list[str] | None = None,
    run_name: str = "",
    kernel_name: str | None = None,
    echo=print,
    fresh: bool = False,
) -> list[NotebookResult]:
    """Execute the notebooks in order into ``runs/<run>/notebooks/``; stop at the first failure.

    The recipe is validated and written before any notebook starts, so a bad profile fails in seconds.

    Running again on an existing run folder loses nothing: the executed notebooks about to be replaced move to
    ``runs/<run>/notebooks/previous/<timestamp>/`` with the recipe they ran with, a finished model is not trained
    again (notebook 04), and metrics are merged. ``fresh=True`` starts the run over: the whole old run folder
    moves aside to ``runs/<run>.previous-<timestamp>/`` (never deleted).
    """
    from open_r1_nb import assets
    from open_r1_nb.config import load_recipe

    # The profile's offline assets are built first (cached, so instant the second time): validating the recipe
    # checks that its local model and data exist.
    needed = load_recipe(profile_path(profile), check_files=False).pipeline.assets
    extra_times: dict[str, float] = {}
    if needed:
        t0 = time.perf_counter()
        assets.prepare(list(needed))
        extra_times["assets"] = time.perf_counter() - t0
        echo(f"  {'assets':<28} ok    {extra_times['assets']:6.1f} s")
    selected = notebooks(only)
    stamp = _timestamp()
    target = run_dir(_run_name(profile, run_name))
    old_recipe = target / RECIPE_FILE
    old_recipe_text = old_recipe.read_text() if old_recipe.exists() and not fresh else None
    if fresh:
        # Validate before anything moves: a bad profile must not leave the user without the old run in place.
        load_recipe(profile_path(profile), overrides={"run_name": run_name} if run_name else None)
        moved = archive_run_dir(target, stamp)
        if moved is not None:
            echo(f"  starting over: the previous run folder is now {moved}")
    recipe = write_run_recipe(profile, run_name)
    out_dir = recipe.run_dir / "notebooks"
    archived = archive_outputs(recipe.run_dir, [nb.name for nb in selected], stamp)
    if archived is not None:
        if old_recipe_text is not None:
            (archived / RECIPE_FILE).write_text(old_recipe_text)
        echo(f"  previous executed notebooks kept in {archived}")
    params = {"profile": str(profile_path(profile)), "run_name": recipe.run_name}
    echo(f"run {recipe.run_name!r} -> {recipe.run_dir}")
    results: list[NotebookResult] = []
    start = time.perf_counter()
    for nb in selected:
        output = out_dir / nb.name
        t0 = time.perf_counter()
        try:
            with Heartbeat(nb.stem, recipe.run_dir, echo):
                run_notebook(nb, output, params, kernel_name)
        except Exception as err:  # papermill raises its own error type; any failure stops the run here
            seconds = time.perf_counter() - t0
            detail = _describe_failure(err)
            results.append(NotebookResult(nb.stem, seconds, output, False, detail))
            echo(f"  {nb.stem:<28} FAILED after {seconds:6.1f} s")
            _record_times(recipe.run_dir, results, profile_path(profile).stem, extra_times)
            raise PipelineError(
                f"Notebook {nb.name} failed in {detail}\nThe executed copy with the full traceback: {output}"
            ) from err
        seconds = time.perf_counter() - t0
        results.append(NotebookResult(nb.stem, seconds, output, True))
        echo(f"  {nb.stem:<28} ok    {seconds:6.1f} s")
    total = time.perf_counter() - start
    _record_times(recipe.run_dir, results, profile_path(profile).stem, extra_times)
    echo(f"  {'total':<28}       {total:6.1f} s")
    if (recipe.run_dir / "metrics.json").exists():
        from open_r1_nb.run_report import write_report

        # Again after notebook 06 wrote it: now with every notebook's wall time.
        echo(f"  report: {write_report(recipe.run_dir)}")
    return results


def merge_metrics(folder: Path, update: dict) -> dict:
    """Merge ``update`` into ``<run>/metrics.json`` one level deep: each step owns its own keys in the file."""
    path = Path(folder) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(metrics.get(key), dict):
            metrics[key].update(value)
        else:
            metrics[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2))
    return metrics


def _record_times(
    folder: Path, results: list[NotebookResult], profile: str, extra: dict[str, float] | None = None
) -> None:
    """Wall time per notebook (and of the asset build, in ``extra``), and their sum, into ``metrics.json``."""
    path = Path(folder) / "metrics.json"
    times = json.loads(path.read_text()).get("wall_seconds", {}) if path.exists() else {}
    times.update({name: round(seconds, 1) for name, seconds in (extra or {}).items()})
    times.update({r.name: round(r.seconds, 1) for r in results})
    times["total"] = round(sum(v for k, v in times.items() if k != "total"), 1)
    merge_metrics(folder, {"profile": profile, "wall_seconds": times})
