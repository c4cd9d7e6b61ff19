"""Run the numbered notebooks headless with papermill, one run folder per profile.

``scripts/run_pipeline.py`` is the command-line face of ``run_pipeline``; the notebooks use ``load_run_recipe``
to read what notebook 01 (or the runner) wrote, so any notebook can be re-run alone.

A run folder never mixes a model or results with a recipe they were not made with: before any notebook runs, the
runner compares the recipe it is about to write with the one already in ``runs/<run>/`` and stops, naming the keys,
when a trained model or evaluation results would be reused under a different recipe. ``retrain`` and
``re_evaluate`` move the old outputs aside (``runs/<run>/previous/<time>/``), never delete them.

Beside it: ``open_r1_nb.notebook_exec`` executes one notebook (papermill, its kernel, the heartbeat) and
``open_r1_nb.run_files`` holds the run folder's shared files (``metrics.json``, moving outputs aside); their names
are re-exported here.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A name imported as itself (``X as X``) moved out of this module and is re-exported: pipeline.X keeps working.
from open_r1_nb.estimate import PIPELINE_START_ENV
from open_r1_nb.notebook_exec import HEADLESS_KERNEL as HEADLESS_KERNEL
from open_r1_nb.notebook_exec import Heartbeat, describe_failure, run_notebook
from open_r1_nb.notebook_exec import _last_progress as _last_progress
from open_r1_nb.notebook_exec import kernel_config as kernel_config
from open_r1_nb.paths import NOTEBOOKS_DIR, REPO_ROOT, resolve_local, run_dir
from open_r1_nb.run_files import (
    FINGERPRINT_FILE,
    PREVIOUS_DIR,
    RECIPE_FILE,
    archive_evaluation,
    archive_outputs,
    archive_run_dir,
    archive_training_outputs,
    merge_metrics,
    timestamp,
    write_atomic,
)

#: The label notebook 06 gives the base model's evaluation results (``eval/<benchmark>/base.json``).
BASE_LABEL = "base"

# Keys that decide how a run is laid out, logged or published, not what the trained model is. The batch layout
# (processes x per-device batch x accumulation) counts as the same when its product, the global batch, is.
_LAYOUT_KEYS = frozenset({"num_processes", "per_device_train_batch_size", "gradient_accumulation_steps"})
_RUN_ONLY_KEYS = frozenset(
    {
        "accelerate_config", "assets", "run_name", "output_dir", "logging_dir", "logging_steps",
        "logging_strategy", "logging_first_step", "log_level", "log_level_replica", "disable_tqdm", "report_to",
        "save_strategy", "save_steps", "save_total_limit", "save_only_model", "push_to_hub", "hub_model_id",
        "hub_model_revision", "hub_strategy", "hub_private_repo", "hub_token", "callbacks", "wandb_entity",
        "wandb_project", "wandb_run_group", "dataloader_num_workers", "dataset_num_proc", "benchmarks",
        "learning_curve", "eval_batch_size",
        # Where and when the model is published, which tracker sees the run, how long it may take: not the model.
        "hub_always_push", "hub_revision", "overwrite_hub_revision", "push_to_hub_revision", "project",
        "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "time_budget_minutes",
        # The evaluation engine's layout (memory share, context window, copies): its speed, not its answers.
        "vllm_gpu_memory_utilization", "vllm_max_model_length", "vllm_tensor_parallel_size",
        "vllm_data_parallel_size",
    }
)  # fmt: skip
# Keys that change what an evaluation produces (the eval_batch_size only changes its speed).
_EVAL_KEYS = frozenset(
    {
        "eval_n",
        "eval_limit",
        "eval_max_new_tokens",
        "eval_temperature",
        "eval_top_p",
        "eval_top_k",
        "eval_backend",
        "eval_math_rule",
    }
)


class PipelineError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


@dataclass
class NotebookResult:
    name: str
    seconds: float
    output: Path
    ok: bool
    error: str | None = None


def _prefix(path: Path) -> str:
    return path.name.split("_", 1)[0]


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose prefix is in ``only``.

    The steps are ``00_`` to ``06_``; a notebook with a letter after its number (``03b_under_the_hood``) looks
    inside a step and runs only when ``only`` names it.
    """
    found = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]*_*.ipynb"))
    if only:
        wanted = {o.strip().zfill(2) for o in only if o.strip()}
        unknown = wanted - {_prefix(p) for p in found}
        if unknown:
            raise PipelineError(
                f"No notebook numbered {sorted(unknown)}; there are {[p.name for p in found]}."
            )
        return [p for p in found if _prefix(p) in wanted]
    return [p for p in found if _prefix(p).isdigit()]


def notebook_parameters(notebook: Path) -> set[str]:
    """The names a notebook's ``parameters`` cell assigns: the only values papermill should pass to it."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {
                target.id
                for node in tree.body
                if isinstance(node, (ast.Assign, ast.AnnAssign))
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)
            }
    return set()


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["learning_rate=1e-4", "report_to=[tensorboard]"]`` -> recipe overrides, each value read as YAML (as in a
    profile file). The loader validates them like the file's own keys."""
    from open_r1_nb.config import RecipeError, parse_overrides

    for item in items or []:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip() or key.startswith("-"):
            raise RecipeError(
                f"--set {item!r} is not a key=value pair. Fix: write --set key=value, e.g. --set learning_rate=1e-4 "
                "(a list: --set 'report_to=[tensorboard]')",
                key=item,
                value=item,
                fix="--set key=value",
            )
    return parse_overrides([f"--{item.strip()}" for item in items or []])


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


def write_run_recipe(profile: str | Path, run_name: str = "", overrides: dict | None = None):
    """Validate the profile and write ``runs/<run>/recipe.yaml``; return the resolved recipe."""
    from open_r1_nb.config import load_recipe, save_recipe

    overrides = {**(overrides or {}), **({"run_name": run_name} if run_name else {})}
    recipe = load_recipe(
        profile_path(profile), overrides=overrides or None, check_files=True
    ).resolved_for_run()
    save_recipe(recipe, recipe.run_dir / RECIPE_FILE)
    return recipe


def _recipe_values(recipe) -> dict[str, Any]:
    """Every field of the recipe's four argument groups, as plain values (what a recipe file could say)."""
    from open_r1_nb.config import plain_value

    values: dict[str, Any] = {}
    for section in ("model", "script", "training", "pipeline"):
        obj = getattr(recipe, section)
        for f in dataclasses.fields(obj):
            if f.init and f.name not in values:
                values[f.name] = plain_value(getattr(obj, f.name))
    return values


def _json_plain(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as they read back from a JSON file (tuples become lists), so recorded and new ones compare."""
    return json.loads(json.dumps(values, default=str))


def training_fingerprint(recipe) -> dict[str, Any]:
    """The recipe's values that decide what training produces, as plain JSON values.

    Every key counts except the run's layout, logging, saving and publishing (``_RUN_ONLY_KEYS``: the output
    folders, report_to, hub_*, logging_*, save_*, the evaluation's batch size and engine layout), the evaluation
    settings (``_EVAL_KEYS``: they change the results, not the model) and the batch layout, which counts through
    its product, the ``global batch`` (2 processes x 2 x 2 trains the same model as 4 x 2 x 1).
    """
    skip = _RUN_ONLY_KEYS | _EVAL_KEYS | _LAYOUT_KEYS
    values = {k: v for k, v in _recipe_values(recipe).items() if k not in skip}
    values["global batch"] = recipe.global_batch_size()
    return _json_plain(values)


def evaluation_fingerprint(recipe) -> dict[str, Any]:
    """The ``eval_*`` settings that change what an evaluation produces (``_EVAL_KEYS``)."""
    return _json_plain({k: v for k, v in _recipe_values(recipe).items() if k in _EVAL_KEYS})


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple]:
    """``{key: (old, new)}`` for the keys both fingerprints hold with different values.

    A key only one side holds is a field that a newer (or older) version of trl/transformers added: the run was
    made with its default, so it is no change.
    """
    return {k: (old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]}


def recipe_differences(old, new) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """What changed between two recipes: ``(training, evaluation)``, each ``{key: (old value, new value)}``.

    Training keys are those of :func:`training_fingerprint`, evaluation keys those of
    :func:`evaluation_fingerprint`.
    """
    return (
        fingerprint_changes(training_fingerprint(old), training_fingerprint(new)),
        fingerprint_changes(evaluation_fingerprint(old), evaluation_fingerprint(new)),
    )


def record_training_fingerprint(run_folder: Path, recipe) -> Path:
    """Write ``runs/<run>/training_fingerprint.json`` for the training about to start (see ``FINGERPRINT_FILE``)."""
    path = Path(run_folder) / FINGERPRINT_FILE
    write_atomic(path, json.dumps({"training": training_fingerprint(recipe)}, indent=2))
    return path


def recorded_training_fingerprint(run_folder: Path) -> dict[str, Any] | None:
    """The training keys the run's checkpoints and model were made with, or None when nothing recorded them (a
    run folder from an older version of the project, or training launched by hand)."""
    path = Path(run_folder) / FINGERPRINT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["training"]
    except (ValueError, KeyError, TypeError) as err:
        raise PipelineError(
            f"{path} cannot be read ({type(err).__name__}: {err}), so there is no telling which recipe trained the "
            f"model in {run_folder}. Fix: --retrain (notebook 04: retrain = True), or --fresh."
        ) from err


def _changes(diff: dict[str, tuple]) -> str:
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in diff.items())


def _has_training_outputs(run_folder: Path) -> bool:
    return (run_folder / "model").exists() or any((run_folder / "checkpoints").glob("checkpoint-*"))


def _has_evaluation_outputs(run_folder: Path) -> bool:
    return any((run_folder / "eval").glob("*/*.json"))


class StaleOutputsError(PipelineError):
    """A run folder holds a model or results made with a different recipe; the message names the keys and the
    flag (or notebook parameter) that makes them anew."""


_OTHERS = "--fresh (the whole run folder moves aside) or another --run-name"


def _saved_recipe(run_folder: Path):
    """``runs/<run>/recipe.yaml`` as a recipe, or None when there is none."""
    from open_r1_nb.config import load_recipe

    saved = run_folder / RECIPE_FILE
    if not saved.exists():
        return None
    try:
        return load_recipe(saved, check_files=False)
    except Exception as err:  # a recipe file from an older version of the project, edited by hand, ...
        raise StaleOutputsError(
            f"{run_folder} holds outputs, but its {RECIPE_FILE} cannot be read ({type(err).__name__}: {err}), so "
            f"there is no telling whether they match this recipe. Fix: --retrain and --re-evaluate, or {_OTHERS}."
        ) from err


def training_changes(run_folder: Path, new_recipe) -> dict[str, tuple]:
    """The training keys that differ between the recipe that made the run's model or checkpoints and
    ``new_recipe``; {} when they match or when there is no model and no checkpoint.

    The record written when training started (``FINGERPRINT_FILE``) is the reference; a run folder without one
    (an older version of the project) is compared with its recipe.yaml, as before.
    """
    run_folder = Path(run_folder)
    if not _has_training_outputs(run_folder):
        return {}
    recorded = recorded_training_fingerprint(run_folder)
    if recorded is not None:
        return fingerprint_changes(recorded, training_fingerprint(new_recipe))
    old = _saved_recipe(run_folder)
    return recipe_differences(old, new_recipe)[0] if old is not None else {}


def check_training_reuse(run_folder: Path, new_recipe, retrain: bool = False) -> None:
    """Stop when ``runs/<run>/`` holds a model or checkpoints trained with different training keys (the checkpoints
    would be resumed from, the model reused), unless ``retrain`` (which moves them aside)."""
    training = {} if retrain else training_changes(run_folder, new_recipe)
    if training:
        raise StaleOutputsError(
            f"{run_folder} holds a model (or checkpoints) trained with a different recipe: {_changes(training)}. "
            "Reusing it would report the old model under the new recipe. Fix: --retrain (in notebook 04: retrain = "
            f"True; the old model and its results move to {Path(run_folder) / PREVIOUS_DIR}/<time>/), or "
            f"{_OTHERS}."
        )


def check_reuse(run_folder: Path, new_recipe, retrain: bool = False, re_evaluate: bool = False) -> None:
    """Stop before anything runs when ``runs/<run>/`` holds a model or results made with a different recipe.

    Reusing them would put old results under the new recipe's name. The model is compared with the training keys
    recorded when it was trained (:func:`check_training_reuse`), each result with the settings it records itself,
    and both with the run's recipe.yaml. The message names the keys and the fixes: ``--retrain`` /
    ``--re-evaluate`` (notebooks 04 and 06: ``retrain`` / ``re_evaluate = True``; the old outputs move to
    ``runs/<run>/previous/``), ``--fresh`` (the whole run folder moves aside) or another ``--run-name``.
    """
    from open_r1_nb.evaluate.runner import stale_results

    run_folder = Path(run_folder)
    evaluated = _has_evaluation_outputs(run_folder)
    if not (_has_training_outputs(run_folder) or evaluated):
        return
    check_training_reuse(run_folder, new_recipe, retrain)
    if re_evaluate or not evaluated:
        return
    old = _saved_recipe(run_folder)
    evaluation = recipe_differences(old, new_recipe)[1] if old is not None else {}
    # Retraining moves the trained model's results aside; the base model's stay, and are stale all the same.
    stale = _base_results(run_folder) if retrain else evaluated
    if stale and evaluation:
        raise StaleOutputsError(
            f"{run_folder / 'eval'} holds results made with different evaluation settings: {_changes(evaluation)}. "
            "Fix: --re-evaluate (in notebook 06: re_evaluate = True; the old results move to "
            f"{run_folder / PREVIOUS_DIR}/<time>/), or {_OTHERS}."
        )
    # Each result also records its own settings: recipe.yaml may have been rewritten since (notebook 01 alone).
    from open_r1_nb.evaluate.runner import EvalSettings

    settings = EvalSettings(**new_recipe.pipeline.eval_settings())
    found = stale_results(
        run_folder / "eval",
        list(new_recipe.training.benchmarks or []),
        settings,
        new_recipe.pipeline.learning_curve,
    )
    if retrain:
        found = {path: diff for path, diff in found.items() if path.stem == BASE_LABEL}
    if found:
        raise StaleOutputsError(
            "Evaluation results made with different settings: "
            + "; ".join(f"{path}: {_changes(diff)}" for path, diff in found.items())
            + ". Fix: --re-evaluate (in notebook 06: re_evaluate = True; the old results move to "
            f"{run_folder / PREVIOUS_DIR}/<time>/), or {_OTHERS}."
        )


def _base_results(run_folder: Path) -> list[Path]:
    return list((run_folder / "eval").glob(f"*/{BASE_LABEL}.*"))


def _validate(profile: str | Path, overrides: dict[str, Any]):
    """The profile with the overrides, checked like a profile file (files not yet: assets come first), and its
    benchmarks by name. An error caused by an override says so."""
    from open_r1_nb.config import RecipeError, load_recipe
    from open_r1_nb.evaluate.benchmarks import check_benchmark_names

    def checked(changes: dict[str, Any] | None):
        recipe = load_recipe(profile_path(profile), overrides=changes or None, check_files=False)
        check_benchmark_names(recipe.training.benchmarks, f"recipe {recipe.source}")
        return recipe

    try:
        return checked(overrides)
    except RecipeError as err:
        given = {k: v for k, v in overrides.items() if k != "run_name"}
        if not given:
            raise
        checked(None)  # the profile alone: its own error, if it has one
        raise RecipeError(f"command-line overrides {given}: {err}", err.key, err.value, err.fix) from None


def _token_to_environment(overrides: dict[str, Any], echo) -> None:
    """``--set hub_token=...`` goes to HF_TOKEN, where huggingface_hub reads it for every push, and leaves the
    overrides: they are passed to notebook 01 as a parameter (kept in its executed copy), printed in errors and
    notes, and recipe.yaml never holds a token, so training would not have seen it there anyway."""
    from open_r1_nb.config import RENAMED_KEYS

    for key in [k for k in overrides if RENAMED_KEYS.get(k, k) == "hub_token"]:
        token = overrides.pop(key)
        if token:
            os.environ["HF_TOKEN"] = str(token)
            echo(f"  --set {key}: given to the notebooks and training as HF_TOKEN (never written to a file)")


def run_pipeline(
    profile: str | Path,
    only: list[str] | None = None,
    run_name: str = "",
    kernel_name: str | None = None,
    echo=print,
    fresh: bool = False,
    overrides: dict[str, Any] | None = None,
    num_processes: int | None = None,
    retrain: bool = False,
    re_evaluate: bool = False,
) -> list[NotebookResult]:
    """Execute the notebooks in order into ``runs/<run>/notebooks/``; stop at the first failure.

    The recipe is validated and written before any notebook starts, so a bad profile fails in seconds.
    ``overrides`` change recipe keys (``--set key=value``), validated like the file's own; ``num_processes``
    launches that many training processes and changes ``gradient_accumulation_steps`` to keep the global batch.

    Running again on an existing run folder loses nothing: the executed notebooks about to be replaced move to
    ``runs/<run>/notebooks/previous/<timestamp>/`` with the recipe they ran with, a finished model is not trained
    again (notebook 04), evaluation results are reused (notebook 06), and metrics are merged. A model or results
    made with a different recipe stop the run before anything starts (:func:`check_reuse`). ``retrain=True``
    moves the model, checkpoints and their results to ``runs/<run>/previous/<timestamp>/`` so notebook 04 trains
    from the start; ``re_evaluate=True`` moves ``eval/`` there so notebook 06 evaluates again. ``fresh=True``
    starts the run over: the whole old run folder moves aside to ``runs/<run>.previous-<timestamp>/``. Nothing is
    ever deleted.
    """
    from open_r1_nb import assets, launch

    # Every process started from here (notebook kernels, training, evaluation) measures the run from this moment.
    os.environ[PIPELINE_START_ENV] = str(time.time())
    overrides = dict(overrides or {})
    _token_to_environment(overrides, echo)
    if "run_name" in overrides:
        run_name = run_name or str(overrides["run_name"])
    if run_name:
        overrides["run_name"] = run_name
    selected = notebooks(only)
    prefixes = {_prefix(nb) for nb in selected}
    for flag, needed_step, what in (
        (retrain, "04", "--retrain trains again in notebook 04"),
        (re_evaluate, "06", "--re-evaluate evaluates again in notebook 06"),
    ):
        if flag and needed_step not in prefixes:
            raise PipelineError(f"{what}, which --only leaves out. Fix: add {needed_step} to --only.")
    planned = _validate(profile, overrides)
    if num_processes is not None:
        if num_processes < 1:
            raise PipelineError(f"--num-processes {num_processes}: launch at least 1 training process.")
        accumulation, message = launch.adjust_accumulation(
            planned.training.per_device_train_batch_size,
            planned.training.gradient_accumulation_steps,
            planned.num_processes,
            num_processes,
        )
        overrides.update(num_processes=num_processes, gradient_accumulation_steps=accumulation)
        planned = _validate(profile, overrides)
        echo(f"  --num-processes {num_processes}: " + (message or "the recipe's own number of processes"))

    # The profile's offline assets are built first (cached, so instant the second time): validating the recipe
    # checks that its local model and data exist.
    extra_times: dict[str, float] = {}
    if planned.pipeline.assets:
        t0 = time.perf_counter()
        assets.prepare(list(planned.pipeline.assets))
        extra_times["assets"] = time.perf_counter() - t0
        echo(f"  {'assets':<28} ok    {extra_times['assets']:6.1f} s")
    stamp = timestamp()
    target = run_dir(planned.run_name)
    old_recipe = target / RECIPE_FILE
    old_recipe_text = old_recipe.read_text() if old_recipe.exists() and not fresh else None
    if fresh:
        # Validate before anything moves: a bad profile must not leave the user without the old run in place.
        from open_r1_nb.config import load_recipe

        load_recipe(profile_path(profile), overrides=overrides or None)
        moved = archive_run_dir(target, stamp)
        if moved is not None:
            echo(f"  starting over: the previous run folder is now {moved}")
    else:
        check_reuse(target, planned, retrain=retrain, re_evaluate=re_evaluate)
    if (
        re_evaluate
    ):  # first: it moves all of eval/, then retraining has only the model and the log left to move
        moved = archive_evaluation(target, stamp, old_recipe_text)
        if moved is not None:
            echo(f"  evaluating again: the previous results are in {moved}")
    if retrain:
        moved = archive_training_outputs(target, planned.run_name, stamp, old_recipe_text)
        if moved is not None:
            echo(f"  training again: the previous model, checkpoints and their results are in {moved}")
    recipe = write_run_recipe(profile, overrides=overrides)
    out_dir = recipe.run_dir / "notebooks"
    archived = archive_outputs(recipe.run_dir, [nb.name for nb in selected], stamp)
    if archived is not None:
        if old_recipe_text is not None:
            (archived / RECIPE_FILE).write_text(old_recipe_text)
        echo(f"  previous executed notebooks kept in {archived}")
    for note in recipe.notes:
        if note.startswith("override"):
            echo(f"  {note}")
    values = {"profile": str(profile_path(profile)), "run_name": recipe.run_name, "overrides": overrides}
    hardware = run_hardware(recipe)
    merge_metrics(recipe.run_dir, {"hardware": hardware})
    echo(f"  hardware: {hardware['summary']}")
    echo(f"run {recipe.run_name!r} -> {recipe.run_dir}")
    results: list[NotebookResult] = []
    start = time.perf_counter()
    for nb in selected:
        output = out_dir / nb.name
        t0 = time.perf_counter()
        try:
            params = {k: v for k, v in values.items() if k in notebook_parameters(nb)}
            with Heartbeat(nb.stem, recipe.run_dir, echo):
                run_notebook(nb, output, params, kernel_name)
        except Exception as err:  # papermill raises its own error type; any failure stops the run here
            seconds = time.perf_counter() - t0
            detail = describe_failure(err)
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


def run_hardware(recipe) -> dict[str, Any]:
    """Which device trains and evaluates this run, in which precision, on what CPU class (for metrics.json)."""
    from open_r1_nb.evaluate.generate import choose_backend
    from open_r1_nb.hardware import cpu_class

    cpu = cpu_class()
    t = recipe.training
    if t.use_cpu:
        device = "cpu"
    else:
        from open_r1_nb.cuda_check import cuda_available
        from open_r1_nb.hardware import mps_available

        device = "cuda" if cuda_available() else "mps" if mps_available() else "cpu"
    precision = "bf16" if t.bf16 else "fp16" if t.fp16 else "fp32"
    try:
        backend = choose_backend(recipe.pipeline.eval_backend)
    except Exception as err:  # an engine the recipe names but this machine lacks: the evaluation will say so
        backend = f"{recipe.pipeline.eval_backend} ({type(err).__name__})"
    summary = f"training on {device} in {precision}, evaluation with {backend}; CPU {cpu.describe()}"
    return {
        "device": device,
        "precision": precision,
        "eval_backend": backend,
        "cpu": cpu.as_dict(),
        "summary": summary,
    }


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
