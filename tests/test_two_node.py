"""Two machines over loopback: two ``accelerate launch`` processes, ``--num_machines 2``, one rank each (gloo).

Each launcher is what one node of a multi-node job runs (scripts/slurm/train.slurm starts one per node): the
project's own command (``launch.build_command``: ``accelerate launch ... -m open_r1_nb.sft --config <recipe>``)
plus the machine's rank and the rendezvous address, here 127.0.0.1. Both read the same recipe and write the same
output folder, as nodes sharing a file system do; each starts in a working folder of its own.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import pytest

from open_r1_nb import launch, sft
from open_r1_nb.config import load_recipe, save_recipe
from open_r1_nb.paths import REPO_ROOT

FIRST_STEPS, SAVE_STEPS, SECOND_STEPS = 4, 2, 8


def _launch_two_machines(
    recipe, recipe_path: Path, tmp_path: Path, name: str, overrides: list[str]
) -> list[str]:
    """Run both machines to the end; return their logs (machine 0's first). Fails with both logs' tails."""
    port = launch.free_port(0)
    env = launch.launch_env(cpu=True)
    env["OMP_NUM_THREADS"] = (
        "1"  # one rank per "machine", two on this CPU: one thread each, as torchrun would set
    )
    procs, logs = [], []
    try:
        for rank in (0, 1):
            cmd = launch.build_command(
                recipe_path,
                recipe.accelerate_config_file(),
                2,  # processes in all, over both machines
                main_process_port=port,
                launcher_args=[
                    "--num_machines",
                    "2",
                    "--machine_rank",
                    str(rank),
                    "--main_process_ip",
                    "127.0.0.1",
                ],
                extra_args=overrides,
            )
            workdir = tmp_path / f"machine{rank}"
            workdir.mkdir(exist_ok=True)
            log = tmp_path / f"{name}-machine{rank}.log"
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=workdir,
                    env=env,
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 600
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            launch.terminate(p, grace_s=10)
    texts = [log.read_text(errors="replace") for log in logs]
    if any(p.returncode != 0 for p in procs):
        tails = "\n".join(
            f"--- machine {r} (exit {p.returncode})\n" + "\n".join(t.splitlines()[-30:])
            for r, (p, t) in enumerate(zip(procs, texts, strict=True))
        )
        pytest.fail(f"{name}: a machine failed or the run took over 600 s\n{tails}")
    return texts


@pytest.mark.slow
def test_two_machines_share_one_run_and_resume_it(tiny_model_dir, smoke_data_dir, tmp_path):
    recipe = load_recipe(
        REPO_ROOT / "parameters" / "smoke.yaml",
        overrides={
            "run_name": "two_nodes",
            "max_steps": FIRST_STEPS,
            "save_steps": SAVE_STEPS,
            "benchmarks": [],
            # The trainer's own account on each machine's main rank (it logs on each node): batch size, saves.
            "log_level": "info",
        },
    ).resolved_for_run()
    output_dir = tmp_path / "checkpoints"
    recipe.training.output_dir = str(output_dir)
    recipe_path = save_recipe(recipe, tmp_path / "recipe.yaml")

    first = _launch_two_machines(recipe, recipe_path, tmp_path, "first", [])
    # One world of two ranks, not two runs of one: each machine's rank knows the other.
    assert "rank 0 of 2" in first[0] and "rank 1 of 2" in first[1]

    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == FIRST_STEPS
    # The global batch counts both machines: 2 ranks x 2 per device, and an epoch takes half the steps one machine
    # alone would need.
    per_device = recipe.training.per_device_train_batch_size
    assert f"Total train batch size (w. parallel, distributed & accumulation) = {2 * per_device}" in first[0]
    metrics = json.loads((tmp_path / "model" / "training_metrics.json").read_text())
    batches = math.ceil(metrics["train_samples"] / per_device)
    steps_per_epoch = math.ceil(batches / 2)
    assert steps_per_epoch != batches
    assert state["log_history"][-1]["epoch"] == pytest.approx(FIRST_STEPS / steps_per_epoch)

    # Only the main process saved: one final model, written by machine 0; each checkpoint once, holding both
    # ranks' random states (what a resume with two ranks reads back) beside one copy of the weights.
    models = [
        p.parent for p in tmp_path.rglob("model.safetensors") if not p.parent.name.startswith("checkpoint-")
    ]
    assert models == [tmp_path / "model"]
    assert first[0].count("model saved to") == 1 and "model saved to" not in first[1]
    # The trainer's saves: each checkpoint and the final model by machine 0, none by machine 1 (whose main rank
    # would save too with save_on_each_node, meant for nodes without a shared file system).
    assert first[0].count("Saving model checkpoint to") == FIRST_STEPS // SAVE_STEPS + 1
    assert "Saving model checkpoint to" not in first[1]
    checkpoints, partial = sft.find_checkpoints(output_dir)
    assert [c.name for c in checkpoints] == [
        f"checkpoint-{s}" for s in range(SAVE_STEPS, FIRST_STEPS + 1, SAVE_STEPS)
    ]
    assert not partial
    for checkpoint in checkpoints:
        assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
        assert len(list(checkpoint.glob("*.safetensors"))) == 1
    assert not any((tmp_path / "machine1").iterdir()), "machine 1 wrote into its working folder"

    # A second launch of both machines, asked for more steps, resumes from the last checkpoint on both.
    second = _launch_two_machines(recipe, recipe_path, tmp_path, "second", ["--max_steps", str(SECOND_STEPS)])
    last = output_dir / f"checkpoint-{FIRST_STEPS}"
    for log in second:
        assert f"resuming from the last complete checkpoint {last}" in log
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == SECOND_STEPS
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, SECOND_STEPS + 1))
    assert state["log_history"][-1]["epoch"] == pytest.approx(SECOND_STEPS / steps_per_epoch)
