"""Interruption: a SIGKILL after the first checkpoint, then a relaunch, finishes from that checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from trainers import smoke_launch_command

from open_r1_nb import launch, sft
from open_r1_nb.paths import REPO_ROOT


def test_partial_checkpoints_are_never_chosen(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if complete:
            (folder / sft.COMPLETE_MARKER).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name: ignored
    assert sft.last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert sft.last_complete_checkpoint(tmp_path, quarantine=True) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    assert any(p.name.startswith("checkpoint-6.partial") for p in tmp_path.iterdir())
    assert sft.last_complete_checkpoint(tmp_path / "missing") is None


@pytest.mark.slow
def test_sigkill_after_first_checkpoint_then_resume(tiny_model_dir, smoke_data_dir, tmp_path):
    max_steps, save_steps = 160, 40
    cmd = smoke_launch_command(
        tmp_path,
        29517,
        run_name="resume_test",
        max_steps=max_steps,
        save_steps=save_steps,
        save_total_limit=3,
    )
    env = launch.launch_env(cpu=True)

    first_log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        cmd, stdout=first_log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True
    )
    marker = tmp_path / "checkpoints" / f"checkpoint-{save_steps}" / sft.COMPLETE_MARKER
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, f"training exited early: {(tmp_path / 'first.log').read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    family = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    for pid in family:  # SIGKILL everything at once: no handler runs, as when a node dies
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    first_log.close()

    state = json.loads((marker.parent / "trainer_state.json").read_text())
    assert state["global_step"] == save_steps
    assert not (tmp_path / "checkpoints" / f"checkpoint-{max_steps}").exists(), (
        "killed too late to test resume"
    )

    result = launch.run(cmd, tmp_path / "second.log", env=env, echo=False)
    assert result.returncode == 0
    second = (tmp_path / "second.log").read_text()
    resumed_from = [
        line for line in second.splitlines() if "resuming from the last complete checkpoint" in line
    ]
    assert resumed_from and all(
        Path(line.split()[-1]).name.startswith("checkpoint-") for line in resumed_from
    )
    resumed_step = int(Path(resumed_from[0].split()[-1]).name.split("-")[1])
    assert resumed_step >= save_steps
    final = json.loads((tmp_path / "checkpoints" / "trainer_state.json").read_text())
    assert final["global_step"] == max_steps
    logged_steps = [h["step"] for h in final["log_history"] if "loss" in h]
    assert logged_steps[-1] == max_steps and min(logged_steps) <= resumed_step + 1
    assert (tmp_path / "model" / "model.safetensors").exists()
