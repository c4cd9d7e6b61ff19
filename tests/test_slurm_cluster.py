"""scripts/slurm/train.slurm on a real one-node Slurm cluster: warned, killed, requeued, resumed, finished.

The fixture starts munged, slurmctld and slurmd on this machine with a private configuration (its own ports,
munge socket and key, state and spool folders under a temporary folder, ``SLURM_CONF``), so it never touches a
Slurm the machine may already run; it needs the ``slurm-wlm`` and ``munge`` packages (``scripts/system_packages.sh``
installs them as root; ``make test`` calls it). When the daemons cannot start the test fails and says why.

The job is the smoke profile's recipe, submitted with ``sbatch scripts/slurm/train.slurm <recipe> cpu_2proc
--max_steps ... --save_steps ...`` (overrides after the recipe; the recipe file itself says 6 steps). It is
interrupted twice, as a cluster does:

1. ``scancel --signal=USR1 --batch``: what Slurm sends the batch shell before the time limit (``--signal``). The
   ranks save a checkpoint at their next step and stop; the script requeues the job itself.
2. ``scontrol requeue``: preemption or a node failure without warning; the job is killed mid-run and Slurm puts it
   back in the queue (the job asks for that with ``#SBATCH --requeue``; this cluster, like many, requeues only jobs
   that ask).

Each time the job comes back by itself (``SLURM_RESTART_COUNT`` 1, then 2) and resumes from the last complete
checkpoint; the third attempt finishes at the step the override asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from open_r1_nb import launch, sft
from open_r1_nb.config import load_recipe, save_recipe
from open_r1_nb.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "slurm" / "train.slurm"
PR_SET_PDEATHSIG = 1  # prctl(2)
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo")
NODE = "localhost"  # resolves on any machine: the script makes the first node of the job the rendezvous host
# A requeued job may start again only once the previous run's credential has expired (Slurm's default: 120 s).
CRED_EXPIRE_S = 5

SLURM_CONF = """\
ClusterName=openr1nbtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire={cred_expire}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# Look at pending jobs every second: a requeued job then starts as soon as its begin time has passed.
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
# The node has 2 CPUs whatever this machine has.
SlurmdParameters=config_overrides
# Only jobs that ask for it (sbatch --requeue) are requeued.
JobRequeue=0
KillWait=5
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _which(command: str) -> str | None:
    """``command``'s path; the daemons live in sbin folders, which a user's PATH often lacks."""
    return shutil.which(command, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Cluster:
    """A running one-node cluster: its folder, the environment its clients need, and a few queries."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.daemons: list[tuple[str, subprocess.Popen]] = []
        self.sweep: list[str] = []  # more folders whose processes the teardown ends (the test's own)

    @property
    def env(self) -> dict[str, str]:
        """This process's environment now (the test's asset cache among it), pointed at this cluster: no variable of
        a Slurm job this test may itself run in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, Restarts, ...), or {} once the record is gone."""
        done = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return dict(f.split("=", 1) for f in done.stdout.split() if "=" in f) if done.returncode == 0 else {}

    def logs(self) -> str:
        parts = [f"--- {p.name}\n{_tail(p)}" for p in sorted((self.root / "log").glob("*")) if p.is_file()]
        return "\n".join(parts)


def _die_with_parent() -> None:
    """In the child, before exec: end (SIGTERM) when the test process ends, even killed, when no finaliser runs."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _start(cluster: Cluster, name: str, args: list[str]) -> None:
    out = (cluster.root / "log" / f"{name}.out").open("w")
    # The daemons run in the foreground, so the fixture holds their pids; they inherit this process's niceness.
    proc = subprocess.Popen(
        args,
        env=cluster.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    cluster.daemons.append((name, proc))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _bring_up(cluster: Cluster) -> None:
    missing = [c for c in COMMANDS if _which(c) is None]
    if missing:
        pytest.fail(
            f"Slurm is not installed (missing: {', '.join(missing)}). Install it with `bash scripts/system_packages.sh` "
            "as root (make test runs it), or `sudo apt-get install -y --no-install-recommends slurm-wlm munge`."
        )
    root, user = cluster.root, getpass.getuser()
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    (root / "plugstack.conf").write_text("")
    cluster.conf.write_text(
        SLURM_CONF.format(
            node=NODE,
            root=root,
            user=user,
            ctld_port=_free_port(),
            slurmd_port=_free_port(),
            cred_expire=CRED_EXPIRE_S,
        )
    )
    sock = root / "munge" / "munge.sock"
    # --force: munged refuses a socket folder that is not searchable by everyone; this one is private on purpose.
    _start(cluster, "munged", [_which("munged"), "--foreground", "--force", f"--socket={sock}",
                               f"--key-file={key}", f"--pid-file={root}/munge/munged.pid",
                               f"--log-file={root}/log/munged.log", f"--seed-file={root}/munge/seed"])  # fmt: skip
    deadline = time.monotonic() + 30
    while not sock.exists():
        if cluster.daemons[0][1].poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"munged did not start (its socket {sock} never appeared):\n{cluster.logs()}")
        time.sleep(0.1)
    _start(cluster, "slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(cluster.conf)])
    _start(cluster, "slurmd", [_which("slurmd"), "-D", "-N", NODE, "-f", str(cluster.conf)])
    deadline = time.monotonic() + 60
    state = ""
    while state != "idle":
        for name, proc in cluster.daemons:
            if proc.poll() is not None:
                pytest.fail(
                    f"{name} exited with {proc.returncode} while the cluster started:\n{cluster.logs()}"
                )
        if time.monotonic() > deadline:
            pytest.fail(f"the node never became idle (last state {state!r}):\n{cluster.logs()}")
        time.sleep(0.5)
        state = cluster.run("sinfo", "-h", "-n", NODE, "-o", "%T", check=False).stdout.strip()


def _processes_naming(*folders: str) -> list[psutil.Process]:
    """Processes (other than this one) with one of ``folders`` on their command line."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and any(f in " ".join(p.info["cmdline"] or []) for f in folders):
                found.append(p)
    return found


def _tear_down(cluster: Cluster) -> None:
    """Cancel every job of this cluster, wait until its processes are gone, stop the daemons; then sweep."""
    with contextlib.suppress(Exception):
        if any(p.poll() is None for _, p in cluster.daemons):
            cluster.run("scancel", "--user", getpass.getuser(), check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and cluster.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
    for _, proc in reversed(cluster.daemons):
        with contextlib.suppress(Exception):
            _stop(proc)
    # Anything still running from this cluster's jobs names the cluster's folder or the job's on its command line.
    for p in _processes_naming(str(cluster.root), *cluster.sweep):
        with contextlib.suppress(psutil.Error):
            p.kill()
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture
def slurm_cluster():
    # A short folder: a Unix socket path has at most 107 characters, and pytest's tmp_path can be long.
    root = Path(tempfile.mkdtemp(prefix="onb-slurm-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cluster = Cluster(root)
    try:
        _bring_up(cluster)
        yield cluster
    finally:
        _tear_down(cluster)


# --------------------------------------------------------------------------------------------------- the test
MAX_STEPS, SAVE_STEPS = 120, 10
# Job states after which nothing more happens to a job.
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def _wait(what: str, ready, cluster: Cluster, job_id: str, log: Path, timeout_s: float = 480.0):
    """Poll ``ready()`` until it returns something truthy; fail naming ``what``, with the job's log, otherwise."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        value = ready()
        if value:
            print(f"{what}: after {time.monotonic() - start:.1f} s")  # shown when the test fails
            return value
        job = cluster.job(job_id)
        ended = job.get("JobState") in FINISHED
        if ended or time.monotonic() > deadline:
            reason = f"the job ended ({job.get('JobState')})" if ended else f"not within {timeout_s:.0f} s"
            fields = {k: job.get(k) for k in ("JobState", "Reason", "Restarts", "ExitCode", "RunTime")}
            pytest.fail(f"{what}: {reason}. Job: {fields}\n--- job log\n{_tail(log, 40)}\n{cluster.logs()}")
        time.sleep(0.1)


def _attempts(log: Path) -> dict[int, str]:
    """The job log split by attempt: {SLURM_RESTART_COUNT: the lines that attempt wrote}."""
    out: dict[int, str] = {}
    current = None
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        found = re.match(r"job=\d+ restart=(\d+) ", line)
        if found:
            current = int(found.group(1))
            out[current] = ""
        if current is not None:
            out[current] += line + "\n"
    return out


def _resumed_from(text: str) -> list[str]:
    return re.findall(r"resuming from the last complete checkpoint (\S+)", text)


def _complete_steps(output_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in sft.find_checkpoints(output_dir)[0]]


@pytest.mark.slow
def test_requeued_job_comes_back_and_resumes_from_its_last_complete_checkpoint(
    tiny_model_dir, smoke_data_dir, slurm_cluster, tmp_path
):
    cluster = slurm_cluster
    recipe = load_recipe(
        REPO_ROOT / "parameters" / "smoke.yaml", overrides={"run_name": "slurm"}
    ).resolved_for_run()
    output_dir = tmp_path / "checkpoints"
    recipe.training.output_dir = str(output_dir)
    recipe_path = save_recipe(recipe, tmp_path / "recipe.yaml")
    assert recipe.training.max_steps != MAX_STEPS  # only the override can make the trainer run MAX_STEPS
    cluster.sweep = [str(tmp_path)]
    log = tmp_path / "slurm.out"

    # The job environment: the test's Python first on PATH (the script also activates the repository's .venv when
    # there is one), 2 ranks on the node (the script assumes 8 GPUs), a free rendezvous port.
    env = cluster.env
    assert env.get("OPEN_R1_NB_CACHE") == str(tiny_model_dir.parents[1])  # the test's assets, not the user's
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GPUS_PER_NODE="2", MASTER_PORT=str(launch.free_port(0)), PYTHONUNBUFFERED="1")
    # Command-line options win over the script's #SBATCH lines: no GPUs here, and the log goes to the test's folder.
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--gres=none", f"--output={log}", f"--error={log}", str(SCRIPT), str(recipe_path),
         "cpu_2proc", "--max_steps", str(MAX_STEPS), "--save_steps", str(SAVE_STEPS), "--save_total_limit", "3",
         "--benchmarks", "[]"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]

    # 1. The warning before the time limit, once the first checkpoint exists: save at the next step, requeue.
    _wait("the first checkpoint", lambda: _complete_steps(output_dir), cluster, job_id, log)
    cluster.run("scancel", "--signal=USR1", "--batch", job_id)
    _wait("the job back after the USR1 requeue", lambda: 1 in _attempts(log), cluster, job_id, log)
    first = _attempts(log)[0]
    assert "received SIGUSR1" in first and f"requeueing job {job_id}" in first, first[-3000:]
    saved = [int(s) for s in re.findall(r"stop requested .* saving checkpoint-(\d+)", first)]
    assert len(saved) == 1, f"one checkpoint saved on request, once: {saved}"
    stopped_at = saved[0]
    assert stopped_at < MAX_STEPS, "the run finished before the signal arrived: raise MAX_STEPS"
    assert (output_dir / f"checkpoint-{stopped_at}" / sft.COMPLETE_MARKER).exists()

    # 2. Preemption without warning, after a checkpoint newer than the one saved on request.
    _wait(
        "a checkpoint after the first requeue",
        lambda: [s for s in _complete_steps(output_dir) if s > stopped_at],
        cluster,
        job_id,
        log,
    )
    cluster.run("scontrol", "requeue", job_id)
    # Once the job is pending again nothing of the killed run is left: its last complete checkpoint is the one the
    # next attempt must resume from.
    _wait("the killed job's processes gone", lambda: cluster.job(job_id).get("JobState") == "PENDING",
          cluster, job_id, log)  # fmt: skip
    left = [" ".join(p.info["cmdline"])[:200] for p in _processes_naming(str(tmp_path))]
    assert not left, f"processes of the killed attempt still run beside the next one: {left}"
    killed_at = max(_complete_steps(output_dir))
    assert stopped_at < killed_at < MAX_STEPS, f"killed too late to test resume (last checkpoint {killed_at})"

    # 3. Back by itself, resumed, finished.
    deadline = time.monotonic() + 600
    while (job := cluster.job(job_id)).get("JobState") not in FINISHED:
        fields = {k: job.get(k) for k in ("JobState", "Reason", "Restarts", "RunTime")}
        assert time.monotonic() < deadline, f"the job did not finish within 600 s: {fields}\n{_tail(log, 40)}"
        time.sleep(0.2)
    attempts = _attempts(log)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "2", (job, log.read_text()[-4000:])
    assert sorted(attempts) == [0, 1, 2]
    assert {Path(p).name for p in _resumed_from(attempts[1])} == {f"checkpoint-{stopped_at}"}
    assert {Path(p).name for p in _resumed_from(attempts[2])} == {f"checkpoint-{killed_at}"}

    state = json.loads((output_dir / "trainer_state.json").read_text())
    # The overrides after the recipe reached the trainer: the recipe file says 6 steps and a checkpoint every 3.
    assert state["max_steps"] == MAX_STEPS and state["save_steps"] == SAVE_STEPS
    assert state["global_step"] == MAX_STEPS
    # One loss per step from 1 to the end: each attempt went on from its checkpoint's history, nothing repeated.
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, MAX_STEPS + 1))
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert not list(tmp_path.glob("stop-requested-*")), (
        "a stop file left behind would stop the next run at once"
    )
