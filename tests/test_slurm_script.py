"""scripts/slurm/train.slurm run by bash with stand-ins for ``srun``, ``scontrol``, ``accelerate`` and ``python``.

The stand-ins record their arguments (NUL-separated, so arguments with spaces stay whole); ``srun`` runs its command
as task 0, as Slurm would on the first node. This checks how the script reads its arguments, what it launches and
its save-and-requeue handler; a real Slurm cluster is another matter.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from open_r1_nb.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "slurm" / "train.slurm"

FAKES = {
    # srun: record, then run the command (the first argument that is not an option) as task 0.
    "srun": """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_LOG/srun.argv"
while [[ $# -gt 0 && "$1" == -* ]]; do shift; done
export SLURM_PROCID=0
exec "$@"
""",
    "scontrol": """#!/bin/bash
printf '%s\\0' "$@" >> "$FAKE_LOG/scontrol.argv"
if [[ "$1 $2" == "show hostnames" ]]; then echo gpu-node-1; echo gpu-node-2; fi
""",
    # python: the CUDA preflight; record and pass.
    "python": """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_LOG/python.argv"
cat > /dev/null
""",
    # accelerate: record; with FAKE_WAIT_FOR_STOP, behave like ranks that save and exit once the stop file appears.
    "accelerate": """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_LOG/accelerate.argv"
echo "$OPEN_R1_NB_STOP_FILE" > "$FAKE_LOG/stop_file"
if [[ -n "${FAKE_WAIT_FOR_STOP:-}" ]]; then
    touch "$FAKE_LOG/started"
    for _ in $(seq 300); do
        if [[ -e "$OPEN_R1_NB_STOP_FILE" ]]; then touch "$FAKE_LOG/saw_stop"; exit 0; fi
        sleep 0.1
    done
    exit 3
fi
""",
}


@pytest.fixture
def slurm(tmp_path: Path):
    """A repository-like working folder, a bin folder of stand-ins first on PATH, and a log folder."""
    work, bin_dir, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "log"
    for d in (work / "parameters" / "accelerate", work / "runs" / "r", bin_dir, log):
        d.mkdir(parents=True)
    for name in ("zero3", "fsdp"):
        shutil.copy(
            REPO_ROOT / "parameters" / "accelerate" / f"{name}.yaml", work / "parameters" / "accelerate"
        )
    (work / "runs" / "r" / "recipe.yaml").write_text("run_name: r\n")
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CONDA_ENV"))},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu-node-[1-2]",
    }
    return work, log, env


def _run(slurm, *args: str, **popen) -> subprocess.CompletedProcess:
    work, _, env = slurm
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=work, env=env, capture_output=True, text=True, timeout=60, **popen
    )


def _argv(log: Path, name: str) -> list[str]:
    return (log / f"{name}.argv").read_text().split("\0")[:-1]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_overrides_after_the_recipe_are_not_taken_for_the_accelerate_config(slurm):
    _, log, _ = slurm
    done = _run(slurm, "runs/r/recipe.yaml", "--gradient_accumulation_steps", "4", "--learning_rate", "4e-5")
    assert done.returncode == 0, done.stderr
    argv = _argv(log, "accelerate")
    assert argv[0] == "launch"
    assert _option(argv, "--config_file") == "parameters/accelerate/zero3.yaml"
    assert _option(argv, "--num_machines") == "2" and _option(argv, "--num_processes") == "16"
    assert _option(argv, "--machine_rank") == "0" and _option(argv, "--main_process_ip") == "gpu-node-1"
    tail = argv[argv.index("-m") :]
    assert tail == ["-m", "open_r1_nb.sft", "--config", "runs/r/recipe.yaml",
                    "--gradient_accumulation_steps", "4", "--learning_rate", "4e-5"]  # fmt: skip
    assert "--kill-on-bad-exit=1" in _argv(log, "srun")
    # The CUDA preflight ran on the same recipe and config.
    assert _argv(log, "python")[-2:] == ["runs/r/recipe.yaml", "parameters/accelerate/zero3.yaml"]


def test_a_named_config_and_overrides_with_spaces(slurm):
    _, log, _ = slurm
    done = _run(slurm, "runs/r/recipe.yaml", "fsdp", "--run_name", "two words", "--seed", "3")
    assert done.returncode == 0, done.stderr
    argv = _argv(log, "accelerate")
    assert _option(argv, "--config_file") == "parameters/accelerate/fsdp.yaml"
    assert argv[-4:] == ["--run_name", "two words", "--seed", "3"]


def test_an_unknown_config_stops_before_srun_with_the_known_names(slurm):
    _, log, _ = slurm
    done = _run(slurm, "runs/r/recipe.yaml", "zero9", "--seed", "3")
    assert done.returncode == 2
    assert "zero9" in done.stderr and "fsdp" in done.stderr and "zero3" in done.stderr
    assert not (log / "srun.argv").exists()


def test_a_missing_recipe_stops_before_srun(slurm):
    _, log, _ = slurm
    done = _run(slurm, "runs/nope/recipe.yaml")
    assert done.returncode == 2 and "runs/nope/recipe.yaml not found" in done.stderr
    assert not (log / "srun.argv").exists()


def test_the_job_is_requeueable_and_warned_before_its_time_limit():
    header = [line.split()[1] for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "--requeue" in header
    assert any(h.startswith("--signal=B:USR1@") for h in header)
    # A requeued job appends to its log instead of overwriting the first attempt's.
    assert "--open-mode=append" in header


def test_usr1_makes_the_ranks_save_and_stop_then_requeues_the_job(slurm):
    work, log, env = slurm
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "runs/r/recipe.yaml"],
        cwd=work,
        env={**env, "FAKE_WAIT_FOR_STOP": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (log / "started").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the stand-in launcher never started"
            time.sleep(0.05)
        stop_file = Path((log / "stop_file").read_text().strip())
        assert stop_file.parent == work / "runs" / "r" and not stop_file.exists()
        proc.send_signal(signal.SIGUSR1)  # what Slurm sends 15 minutes before the time limit
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert (log / "saw_stop").exists(), "the ranks were not asked to save and stop"
    assert "received SIGUSR1" in out
    assert _argv(log, "scontrol")[-2:] == ["requeue", "4242"]
    assert not stop_file.exists(), "the stop file must not stop the requeued job at once"


def test_a_node_list_written_in_several_pieces_does_not_stop_the_script(slurm):
    # `scontrol show hostnames` prints one line per node; the script wants the first. Reading it with `| head -n 1`
    # under `set -o pipefail` ended the whole job with status 141 whenever scontrol was still writing when head
    # exited (SIGPIPE): a race that depends on the load and the length of the node list. This stand-in writes the
    # second line after a pause, so the race is always lost.
    work, log, env = slurm
    scontrol = Path(env["PATH"].split(os.pathsep)[0]) / "scontrol"
    scontrol.write_text("""#!/bin/bash
printf '%s\\0' "$@" >> "$FAKE_LOG/scontrol.argv"
if [[ "$1 $2" == "show hostnames" ]]; then echo gpu-node-1; sleep 0.3; echo gpu-node-2; fi
""")
    done = _run(slurm, "runs/r/recipe.yaml")
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert _option(_argv(log, "accelerate"), "--main_process_ip") == "gpu-node-1"
