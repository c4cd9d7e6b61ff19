"""Notebook 04's step: plan a training launch from a recipe, run it, and summarise what it did.

``open_r1_nb.launch`` owns the process mechanics (command, port, streaming, errors); this module connects them
to a run folder: the recipe file the command reads, the log, the finished-model check and ``metrics.json``.
"""

from __future__ import annotations

import json
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from open_r1_nb import launch
from open_r1_nb.config import save_recipe
from open_r1_nb.pipeline import check_training_reuse, record_training_fingerprint
from open_r1_nb.run_files import RECIPE_FILE, merge_metrics


@dataclass
class TrainingPlan:
    recipe: Any
    recipe_path: Path
    num_processes: int
    notes: list[str] = field(default_factory=list)

    @property
    def command(self) -> list[str]:
        config = self.recipe.accelerate_config_file()
        return launch.build_command(self.recipe_path, config, self.num_processes)

    @property
    def shell(self) -> str:
        return launch.format_command(self.command)

    def run(
        self, on_line: Callable[[str], Any] | None = None, env: dict | None = None
    ) -> launch.LaunchResult:
        if env is None:
            # A CPU recipe tells every rank to use the CPU; otherwise the launcher looks for a GPU.
            env = launch.launch_env(cpu=True if self.recipe.training.use_cpu else None)
        # Checkpoints of another recipe would be resumed from: stop, naming the keys. Then record what this
        # training is made with, for every later run to compare against.
        check_training_reuse(self.recipe.run_dir, self.recipe)
        record_training_fingerprint(self.recipe.run_dir, self.recipe)
        return launch.launch(
            self.recipe_path,
            self.recipe.accelerate_config_file(),
            self.num_processes,
            log_path=self.recipe.run_dir / "train.log",
            on_line=on_line,
            env=env,
        )


def plan_training(recipe, num_processes: int | None = None) -> TrainingPlan:
    """Fix the number of processes, keep the global batch, and write the recipe the command will read.

    With a different number of processes than the recipe's, gradient accumulation changes so that the global
    batch (processes x per-device batch x accumulation) stays what the recipe says; the note says so.
    """
    notes: list[str] = []
    wanted = num_processes or recipe.num_processes
    if wanted != recipe.num_processes:
        accumulation, message = launch.adjust_accumulation(
            recipe.training.per_device_train_batch_size,
            recipe.training.gradient_accumulation_steps,
            recipe.num_processes,
            wanted,
        )
        if message:
            notes.append(message)
        recipe.training.gradient_accumulation_steps = accumulation
        recipe.pipeline.num_processes = wanted
        for key in ("gradient_accumulation_steps", "num_processes"):
            if key not in recipe.given_keys:
                recipe.given_keys.append(key)
    path = save_recipe(recipe, recipe.run_dir / RECIPE_FILE)
    notes.append(
        f"{wanted} processes x {recipe.training.per_device_train_batch_size} per device x "
        f"{recipe.training.gradient_accumulation_steps} accumulation = global batch {recipe.global_batch_size(wanted)}"
    )
    return TrainingPlan(recipe=recipe, recipe_path=Path(path), num_processes=wanted, notes=notes)


def training_finished(recipe) -> bool:
    """A finished run leaves ``runs/<run>/model`` with weights and its training metrics, trained with this recipe.

    A model trained with other training keys (recorded in ``runs/<run>/training_fingerprint.json`` when its
    training started) is not this recipe's: that raises ``StaleOutputsError`` naming the keys and the fix
    (``retrain``), never counts as finished.
    """
    model = recipe.run_dir / "model"
    finished = (model / "training_metrics.json").exists() and any(model.glob("*.safetensors"))
    if finished:
        check_training_reuse(recipe.run_dir, recipe)
    return finished


def trainer_state(recipe) -> dict[str, Any]:
    """The newest ``trainer_state.json`` of the run (written at the end of training, and into every checkpoint),
    or {} when there is none."""
    output_dir = Path(recipe.training.output_dir)
    states = [output_dir / "trainer_state.json"]
    states += sorted(output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: p.stat().st_mtime)
    states = [p for p in states if p.exists()]
    return json.loads(max(states, key=lambda p: p.stat().st_mtime).read_text()) if states else {}


def training_frame(recipe):
    """The run's training logs, one row per log (``step`` first), for the curves and the summary.

    train.log holds what the launcher streamed, but only until the launcher stopped: a notebook (or runner) killed
    near the end of training leaves the log cut short while the training itself finishes, and a resumed launch logs
    only its own steps. The Trainer's own record, ``trainer_state.json`` (written at the end, and into every
    checkpoint), holds every log of the run with its step; the newest one is used when it reaches further.
    """
    import pandas as pd

    log = recipe.run_dir / "train.log"
    frame = (
        launch.TrainingLog.from_file(log, logging_steps=recipe.training.logging_steps).to_frame()
        if log.exists()
        else launch.TrainingLog().to_frame()
    )
    history = trainer_state(recipe).get("log_history", [])
    rows = [
        {k: float(v) for k, v in entry.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for entry in history
        if "train_runtime" not in entry and "step" in entry
    ]
    recorded = pd.DataFrame(rows)
    if recorded.empty or "loss" not in recorded:
        return frame
    if not frame.empty and "loss" in frame and frame["step"].max() >= recorded["step"].max():
        return frame
    recorded["step"] = recorded["step"].astype(int)
    return recorded[["step", *[c for c in recorded.columns if c != "step"]]]


def peak_child_rss_mib() -> float | None:
    """Peak resident memory of the largest finished child process tree member (the training ranks)."""
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if not rss:
        return None
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


def training_summary(recipe, frame) -> dict[str, Any]:
    """Loss, throughput in real tokens, padding share, runtime and memory; also merged into ``metrics.json``."""
    steps = frame.dropna(subset=["loss"]) if frame is not None and "loss" in frame else None
    model_dir = recipe.run_dir / "model"
    metrics_file = model_dir / "training_metrics.json"
    final = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}

    def last(column: str):
        if steps is None or column not in steps or steps[column].dropna().empty:
            return None
        return float(steps[column].dropna().iloc[-1])

    # The trainer's own step count: the log's last step is a multiple of logging_steps (140 of cpu_long's 143).
    logged = int(steps["step"].max()) if steps is not None and len(steps) else None
    global_step = trainer_state(recipe).get("global_step")
    summary = {
        "steps": max(global_step, logged or 0) if global_step else logged,
        "loss_first": float(steps["loss"].iloc[0]) if steps is not None and len(steps) else None,
        "loss_last": float(steps["loss"].iloc[-1]) if steps is not None and len(steps) else None,
        "tokens_per_second": last("real_tokens_per_second"),
        "real_tokens": last("real_tokens"),
        "padding_fraction": last("padding_fraction"),
        "samples_per_second": final.get("train_samples_per_second"),
        "train_runtime_s": final.get("train_runtime"),
        "num_processes": recipe.num_processes,
        "global_batch": recipe.global_batch_size(),
        "peak_rss_mib": peak_child_rss_mib(),
    }
    # The estimate the training made after its first steps, beside what it then took.
    metrics_path = recipe.run_dir / "metrics.json"
    estimate = json.loads(metrics_path.read_text()).get("estimate") if metrics_path.exists() else None
    if estimate:
        summary["estimated_training_s"] = estimate.get("training_s")
        summary["estimated_total_s"] = estimate.get("total_s")
        summary["estimate_after_steps"] = estimate.get("after_steps")
    merge_metrics(recipe.run_dir, {"train": summary})
    return summary
