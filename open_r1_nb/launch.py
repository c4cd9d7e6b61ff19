"""Step 4's launcher: run ``accelerate launch ... -m open_r1_nb.sft --config runs/<run>/recipe.yaml``.

The training notebook never trains in its own kernel. It builds the command here, shows it as one shell line
(the same line works from a terminal or a Slurm job), runs it as a subprocess and streams every line into the
notebook, into ``runs/<run>/train.log`` and into a callback that feeds the live loss plot.

Beside it: ``open_r1_nb.training_log`` reads the Trainer's log dicts from those lines (``TrainingLog``),
``open_r1_nb.redaction`` keeps secret values out of them, and ``open_r1_nb.cuda_check`` says why torch finds no
GPU; their names are re-exported here.

Facts this module relies on (checked with accelerate 1.15, torch 2.13 CPU, transformers 5.17):

- ``accelerate launch --cpu --num_processes 2`` and a ``distributed_type: MULTI_CPU`` config both start ONE
  process (the simple launcher; MULTI_CPU only fans out through ``mpirun``). Two CPU ranks need the
  multi-GPU launcher (``distributed_type: MULTI_GPU`` in the config, or ``--multi_gpu``), which runs torchrun.
- Under that launcher on a machine without CUDA, each rank becomes a gloo rank (``MULTI_CPU``) only when it asks
  for the CPU: ``TrainingArguments(use_cpu=True)`` or ``ACCELERATE_USE_CPU=true`` in its environment. Otherwise
  every rank silently trains alone as rank 0 of 1 (two duplicate runs writing one folder), so ``launch_env``
  sets ``ACCELERATE_USE_CPU=true`` whenever CUDA is absent. That is right for a CPU recipe only: a GPU recipe
  (no ``use_cpu: true``) on a node where torch finds no CUDA, typically a driver older than torch's CUDA build
  needs, would train on the CPU without a word, so ``launch`` refuses it first (``check_cuda_for``).
- torchrun starts every rank in its own session, so killing our child's process group does not reach the
  ranks; ``run`` sends SIGTERM (torchrun forwards it to the ranks), waits, then kills what is left by pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# A name imported as itself (``X as X``) moved out of this module and is re-exported: launch.X keeps working.
from open_r1_nb.cuda_check import _DRIVER_VERSION as _DRIVER_VERSION
from open_r1_nb.cuda_check import MIN_DRIVER_FOR_CUDA as MIN_DRIVER_FOR_CUDA
from open_r1_nb.cuda_check import cuda_available, cuda_problem
from open_r1_nb.cuda_check import nvidia_driver_version as nvidia_driver_version
from open_r1_nb.paths import PARAMETERS_DIR, REPO_ROOT, resolve_local
from open_r1_nb.redaction import redact, secret_arguments, secret_values
from open_r1_nb.redaction import without_secret_arguments as without_secret_arguments
from open_r1_nb.training_log import TrainingLog as TrainingLog
from open_r1_nb.training_log import parse_log_line as parse_log_line

ACCELERATE_CONFIG_DIR = PARAMETERS_DIR / "accelerate"
DEFAULT_PORT = 29500
PORT_ATTEMPTS = 3  # launches when the rendezvous port is taken before it is bound
TAIL_LINES = 40

# A tqdm bar, e.g. " 25%|██▌       | 1/4 [00:00<00:00, 13.26it/s]" (possibly with a description first).
_PROGRESS = re.compile(r"\d+%\|.*\|\s*(\d+)/(\d+)")

_OOM = re.compile(
    r"OutOfMemoryError|CUDA out of memory|std::bad_alloc|Cannot allocate memory|can't allocate memory"
    r"|exitcode\s*:\s*-9\b|Signal 9 \(SIGKILL\)|Signals\.SIGKILL",
    re.IGNORECASE,
)
_PORT_IN_USE = re.compile(
    r"address already in use|EADDRINUSE|failed to listen on any local network", re.IGNORECASE
)


# --------------------------------------------------------------------------------------------------- the command
def _absolute(path: str | os.PathLike) -> Path:
    """An absolute path; a relative one is found from the cwd or the repository root (a kernel runs in notebooks/)."""
    p = Path(path)
    return p.absolute() if p.is_absolute() else (resolve_local(p) or p.absolute())


def accelerate_config_path(config: str | os.PathLike) -> Path:
    """Map a bare name like ``cpu_2proc`` to ``parameters/accelerate/cpu_2proc.yaml``; paths pass through."""
    p = Path(config)
    if p.suffix in (".yaml", ".yml", ".json") or p.parent != Path("."):
        return _absolute(p)
    return ACCELERATE_CONFIG_DIR / f"{p.name}.yaml"


def build_command(
    recipe_path: str | os.PathLike,
    accelerate_config: str | os.PathLike,
    num_processes: int,
    *,
    main_process_port: int | None = None,
    extra_args: Sequence[str] | None = None,
    launcher_args: Sequence[str] | None = None,
    module: str = "open_r1_nb.sft",
    python: str = sys.executable,
) -> list[str]:
    """The exact ``accelerate launch`` command that trains ``recipe_path``.

    It runs accelerate through ``python -m accelerate.commands.launch`` with the kernel's own interpreter: a
    papermill kernel's PATH may not hold the venv's ``accelerate`` script, but its ``sys.executable`` is the
    venv's python (not resolved: resolving a venv's python symlink would leave the venv). ``launcher_args`` go to
    accelerate (e.g. ``["--mixed_precision", "bf16"]``), ``extra_args`` to the training module after ``--config``.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    cmd = [
        str(python),
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config_path(accelerate_config)),
        "--num_processes",
        str(num_processes),
    ]
    if main_process_port is not None:
        cmd += ["--main_process_port", str(main_process_port)]
    cmd += list(launcher_args or [])
    cmd += ["-m", module, "--config", str(_absolute(recipe_path))]
    cmd += list(extra_args or [])
    return cmd


def _relative(arg: str, root: Path) -> str:
    """``arg`` relative to ``root`` when it is an absolute path under it."""
    if not os.path.isabs(arg):
        return arg
    for base in (root, root.resolve()):
        try:
            return str(Path(arg).relative_to(base))
        except ValueError:
            continue
    return arg


def format_command(cmd: Sequence[str], root: Path = REPO_ROOT) -> str:
    """A copy-pasteable shell line, with paths under the repository root made relative (run it from there)."""
    return shlex.join(_relative(str(a), root) for a in cmd)


# ------------------------------------------------------------------------------------------- batch and port
def adjust_accumulation(
    per_device: int, grad_accum: int, recipe_processes: int, actual_processes: int
) -> tuple[int, str | None]:
    """Keep the global batch (per_device × accumulation × processes) when the process count changes.

    Returns the new ``gradient_accumulation_steps`` and a message saying what changed (None when nothing did).
    When the global batch cannot be kept exactly, returns the accumulation giving the nearest global batch and
    a message that starts with ``WARNING`` and names the nearest batch and, if one exists, an exact alternative.
    """
    for name, value in (
        ("per_device_train_batch_size", per_device),
        ("gradient_accumulation_steps", grad_accum),
        ("recipe_processes", recipe_processes),
        ("actual_processes", actual_processes),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if recipe_processes == actual_processes:
        return grad_accum, None
    target = per_device * grad_accum * recipe_processes
    per_step = per_device * actual_processes
    if target % per_step == 0:
        new = target // per_step
        return new, (
            f"{actual_processes} processes instead of the recipe's {recipe_processes}: "
            f"gradient_accumulation_steps {grad_accum} -> {new} keeps the global batch at {target} "
            f"({per_device} per device × {new} steps × {actual_processes} processes)."
        )
    low = max(1, target // per_step)
    high = low + 1
    # Nearest global batch; on a tie, the larger one (closer to the recipe's number of tokens per step).
    new = low if abs(target - low * per_step) < abs(high * per_step - target) else high
    alternatives = [
        (pd, target // (pd * actual_processes))
        for pd in range(per_device, 0, -1)
        if target % (pd * actual_processes) == 0
    ]
    hint = (
        f" For the exact batch use per_device_train_batch_size={alternatives[0][0]} with "
        f"gradient_accumulation_steps={alternatives[0][1]}."
        if alternatives
        else ""
    )
    return new, (
        f"WARNING: the recipe's global batch {target} ({per_device} × {grad_accum} × {recipe_processes}) is not "
        f"divisible by {per_device} per device × {actual_processes} processes; gradient_accumulation_steps "
        f"{grad_accum} -> {new} gives the nearest global batch, {new * per_step}.{hint}"
    )


def free_port(preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` if nothing listens on it, else a port the OS reports free (bind test on 127.0.0.1)."""
    if preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As torch's TCPStore does: a port left in TIME_WAIT by the previous run counts as free, one that
            # something listens on does not.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------- GPU check, environment
class CudaUnavailableError(RuntimeError):
    """A GPU recipe was launched where torch finds no CUDA device; the message says why and what to do."""


def wants_gpu(recipe_path: str | os.PathLike, accelerate_config: str | os.PathLike) -> bool:
    """Whether the launch is meant for GPUs: neither the accelerate config nor the recipe says ``use_cpu: true``."""
    import yaml

    for path in (accelerate_config_path(accelerate_config), _absolute(recipe_path)):
        with contextlib.suppress(OSError, yaml.YAMLError):
            data = yaml.safe_load(Path(path).read_text())
            if isinstance(data, dict) and data.get("use_cpu") is True:
                return False
    return True


def check_cuda_for(recipe_path: str | os.PathLike, accelerate_config: str | os.PathLike) -> None:
    """Refuse a GPU launch without CUDA, before anything starts.

    Without this the ranks would not fail: with no CUDA device, accelerate and the Trainer fall back to the CPU and
    train a GPU recipe there, slowly and silently (a driver too old for torch's CUDA build is the usual cause).
    """
    if not wants_gpu(recipe_path, accelerate_config):
        return
    problem = cuda_problem()
    if problem:
        name = Path(accelerate_config).stem
        raise CudaUnavailableError(
            f"This launch is for GPUs (accelerate config {name!r}, no use_cpu: true in the recipe), but CUDA is not "
            f"available, and the ranks would train on the CPU instead. {problem} To train on the CPU on purpose, "
            "use a CPU profile (use_cpu: true with accelerate_config cpu_1proc or cpu_2proc)."
        )


def launch_env(*, cpu: bool | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the launch: ``base`` (default os.environ) plus what streaming and CPU ranks need.

    ``cpu=None`` detects it: without CUDA the ranks must be told to use the CPU, or each trains alone (see the
    module docstring). The repository root goes on PYTHONPATH so ``-m open_r1_nb.sft`` imports from any cwd.
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if cpu is None:
        from open_r1_nb.hardware import mps_available

        cpu = not (cuda_available() or mps_available())  # an Apple GPU must not be skipped either
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    return env


# ------------------------------------------------------------------------------------------------- running it
@dataclass
class LaunchResult:
    """What a finished launch left: its command, exit code, log file, duration and last lines."""

    command: list[str]
    returncode: int
    log_path: Path
    duration_s: float
    tail: list[str] = field(default_factory=list)


class LaunchError(RuntimeError):
    """The launched command failed; the message carries the exit code, the command, advice and the log tail."""

    def __init__(
        self, message: str, *, returncode: int, command: list[str], tail: list[str], kind: str | None
    ):
        super().__init__(message)
        self.returncode = returncode
        self.command = command
        self.tail = tail
        self.kind = kind  # "oom", "port", "after_training" or None


OOM_ADVICE = """\
This looks like running out of memory (CUDA OOM, a failed CPU allocation, or a rank killed with SIGKILL, which
is what the kernel's OOM killer does; `dmesg` says for sure). In the recipe, try, in this order:
  - lower per_device_train_batch_size and raise gradient_accumulation_steps by the same factor, which keeps the
    global batch (open_r1_nb.launch.adjust_accumulation computes it);
  - gradient_checkpointing: true (recomputes activations in the backward pass: less memory, ~30% slower);
  - a shorter max_length (activation memory grows with the sequence length);
  - on GPUs, shard parameters, gradients and optimizer states with DeepSpeed ZeRO-3: the `zero3` accelerate
    config (parameters/accelerate/zero3.yaml)."""

PORT_ADVICE = """\
The rendezvous port is taken (another training run, or one that has not finished exiting). Launch with a free
port: main_process_port=open_r1_nb.launch.free_port(), or `--main_process_port 0` to let accelerate pick one."""


AFTER_TRAINING_ADVICE = """\
Training itself finished (the trainer printed its final summary); a process failed afterwards, while saving,
evaluating or exiting. Look above the tail for the first traceback. "terminate called without an active
exception" / SIGABRT right after the summary is a crash while a rank exits (seen rarely with gloo on CPU);
whatever was saved before it is intact."""


def failure_kinds(line: str) -> set[str]:
    """The failure kinds a line of output points to: "oom", "port", both or neither."""
    return {kind for kind, pattern in (("oom", _OOM), ("port", _PORT_IN_USE)) if pattern.search(line)}


def diagnose(returncode: int, kinds: Iterable[str], trained: bool = False) -> tuple[str | None, str | None]:
    """Classify a failure: (kind, advice) or (None, None).

    ``kinds`` are those ``failure_kinds`` found in the output; ``trained`` says the trainer printed its final
    summary (``train_runtime``) before the failure, i.e. a process died after training.
    """
    kinds = set(kinds)
    # A SIGKILL nobody asked for is, in practice, the kernel's OOM killer.
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) or "oom" in kinds:
        return "oom", OOM_ADVICE
    if "port" in kinds:
        return "port", PORT_ADVICE
    if trained:
        return "after_training", AFTER_TRAINING_ADVICE
    return None, None


def _descendants(pid: int) -> list[Any]:
    """The live descendants of ``pid`` (psutil comes with accelerate; without it, none are tracked)."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def terminate(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Stop ``proc`` and everything it started.

    SIGTERM goes to the child's process group first: torchrun handles it by stopping its ranks, which live in
    sessions of their own that a group signal would not reach. What is still alive after ``grace_s`` (the child,
    its group, or any descendant found before the signal) is killed by pid; a second interrupt skips the wait.
    """
    if proc.poll() is not None:
        return
    family = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        for p in family:
            with contextlib.suppress(Exception):  # psutil.TimeoutExpired, NoSuchProcess
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass  # a second interrupt: stop waiting and kill now
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for p in family:
        with contextlib.suppress(Exception):
            if p.is_running():
                p.kill()
    proc.wait()


def _stop_with_parent() -> Callable[[], None] | None:
    """For Popen's ``preexec_fn``: the child gets SIGTERM when the process that launched it dies (Linux).

    A notebook's kernel exits within a second of its runner being killed, and a training it launched would
    otherwise go on alone, writing checkpoints and results into the run folder while the re-run trains there too.
    torchrun handles the SIGTERM by stopping its ranks (and their process groups, the evaluation after training
    among them). Elsewhere: None, and ``launch`` still refuses to start beside a training left running.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent, pr_set_pdeathsig = os.getpid(), 1

    def stop_with_parent() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)

    return stop_with_parent


def running_trainings(recipe_path: str | os.PathLike) -> list[Any]:
    """Live processes that train, or evaluate after training, from ``recipe_path`` (``-m open_r1_nb.sft --config
    <recipe_path>``): the ranks and launcher of an earlier launch that is still running."""
    try:
        import psutil
    except ImportError:
        return []
    target = str(_absolute(recipe_path))
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if proc.pid == os.getpid() or "open_r1_nb.sft" not in cmd:
            continue
        configs = {_absolute(cmd[i + 1]) for i, arg in enumerate(cmd[:-1]) if arg == "--config"}
        if any(str(c) == target for c in configs):
            found.append(proc)
    return found


class AlreadyRunningError(RuntimeError):
    """An earlier launch of the same recipe is still running; two would write the same checkpoints."""


def check_not_running(recipe_path: str | os.PathLike, wait_s: float = 30.0) -> None:
    """Wait up to ``wait_s`` for an earlier training of ``recipe_path`` to end (one whose launcher was just
    stopped is shutting down), then refuse to start beside it, naming its processes and how to stop them."""
    deadline = time.monotonic() + wait_s
    while (others := running_trainings(recipe_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if others:
        pids = " ".join(str(p.pid) for p in others)
        raise AlreadyRunningError(
            f"A training of {recipe_path} is already running (pids {pids}), left by an earlier launch (a notebook "
            "or runner stopped while it trained?). Two would write the same checkpoints and model. Fix: wait for "
            f"it to end, or stop it: kill {pids}; then launch again (training resumes from the last complete "
            "checkpoint)."
        )


def run(
    cmd: Sequence[str],
    log_path: str | os.PathLike,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike = REPO_ROOT,
    on_line: Callable[[str], None] | None = None,
    echo: bool = True,
    progress_every_s: float = 10.0,
    stop_grace_s: float = 15.0,
    rank_timeout_s: float | None = None,
) -> LaunchResult:
    """Run ``cmd``, streaming its merged stdout/stderr line by line; raise LaunchError when it fails.

    Every line is redacted of secret values, appended to ``log_path`` (flushed each line), printed when ``echo``
    (papermill records prints in the executed notebook) and passed to ``on_line``. Carriage returns count as line
    ends, so tqdm's bars arrive as lines; only one bar line per ``progress_every_s`` is printed (all go to the
    log and to ``on_line``). ``env=None`` means ``launch_env()``; PYTHONUNBUFFERED=1 is always set so output
    arrives as it is written. A KeyboardInterrupt (the kernel's stop button) stops the processes (SIGTERM, then
    SIGKILL after ``stop_grace_s``) and re-raises. A training rank that stops responding (alive, no heartbeat for
    ``rank_timeout_s``, default ``OPEN_R1_NB_RANK_TIMEOUT`` or 1800 s; see ``open_r1_nb.watchdog``) stops the
    processes too, and the LaunchError (kind ``"hung"``) names the rank.
    """
    from open_r1_nb import watchdog

    cmd = [str(c) for c in cmd]
    child_env = launch_env() if env is None else dict(env)
    child_env["PYTHONUNBUFFERED"] = "1"
    timeout_s = watchdog.rank_timeout_s(child_env) if rank_timeout_s is None else rank_timeout_s
    heartbeats = Path(tempfile.mkdtemp(prefix="open_r1_nb_heartbeat_"))
    child_env[watchdog.HEARTBEAT_DIR_ENV] = str(heartbeats)
    secrets = sorted(
        {*secret_values({**os.environ, **child_env}), *secret_arguments(cmd)}, key=len, reverse=True
    )
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    kinds: set[str] = set()
    trained = False
    last_progress = float("-inf")
    start = time.monotonic()

    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"# {datetime.now().isoformat(timespec='seconds')} cwd={cwd}\n")
        log.write(f"# $ {redact(format_command(cmd), secrets)}\n")
        log.flush()
        # A new session makes the child a process-group leader, so one signal reaches the launcher and
        # everything it starts in its own group; text mode with universal newlines splits on \r too.
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
            preexec_fn=_stop_with_parent(),
        )
        watch = watchdog.Watchdog(heartbeats, timeout_s, lambda: terminate(proc, stop_grace_s)).start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = redact(raw.rstrip("\n"), secrets)
                if not line.strip():
                    continue  # tqdm clears its bar with a line of spaces
                log.write(line + "\n")
                log.flush()
                progress = _PROGRESS.search(line)
                if not progress:
                    tail.append(line)
                    # Scan every line: with several ranks the root cause is often far above the last 40 lines.
                    kinds |= failure_kinds(line)
                    trained = trained or "'train_runtime'" in line
                if echo:
                    now = time.monotonic()
                    done = progress is not None and progress.group(1) == progress.group(2)
                    if progress is None or done or now - last_progress >= progress_every_s:
                        print(line, flush=True)
                        if progress is not None:
                            last_progress = now
                if on_line is not None:
                    on_line(line)
            returncode = proc.wait()
        except BaseException as exc:
            # Kernel interrupt, or an error in on_line: never leave training processes behind.
            terminate(proc, stop_grace_s)
            note = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped after {exc!r}"
            log.write(f"# {note}: the training processes were stopped\n")
            if echo:
                print(f"[launch] {note}: the training processes were stopped.", flush=True)
            raise
        finally:
            watch.close()
            shutil.rmtree(heartbeats, ignore_errors=True)
        duration = time.monotonic() - start
        log.write(f"# exit code {returncode} after {duration:.1f} s\n")
        if watch.hung:
            log.write(f"# {watch.message()}\n")

    if watch.hung:
        message = (
            f"{watch.message()}\n  {redact(format_command(cmd), secrets)}\nlog: {log_path}\n"
            f"\nLast {len(tail)} lines of the log:\n" + "\n".join(tail)
        )
        raise LaunchError(message, returncode=returncode, command=cmd, tail=list(tail), kind="hung")
    if returncode != 0:
        kind, advice = diagnose(returncode, kinds, trained)
        message = f"the command exited with code {returncode}"
        if returncode < 0:
            with contextlib.suppress(ValueError):
                message += f" (killed by {signal.Signals(-returncode).name})"
        message += f":\n  {redact(format_command(cmd), secrets)}\nlog: {log_path}\n"
        if advice:
            message += f"\n{advice}\n"
        message += f"\nLast {len(tail)} lines of the log:\n" + "\n".join(tail)
        raise LaunchError(message, returncode=returncode, command=cmd, tail=list(tail), kind=kind)
    return LaunchResult(
        command=cmd, returncode=returncode, log_path=log_path, duration_s=duration, tail=list(tail)
    )


def launch(
    recipe_path: str | os.PathLike,
    accelerate_config: str | os.PathLike,
    num_processes: int,
    *,
    log_path: str | os.PathLike | None = None,
    port: int = DEFAULT_PORT,
    extra_args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    echo: bool = True,
    module: str = "open_r1_nb.sft",
) -> LaunchResult:
    """One call for the notebook: pick a free port, show the command, run it (log: ``<recipe dir>/train.log``)."""
    recipe_path = _absolute(recipe_path)
    config = accelerate_config_path(accelerate_config)
    for what, p in (("recipe", recipe_path), ("accelerate config", config)):
        if not p.is_file():
            raise FileNotFoundError(f"{what} not found: {p}")
    check_cuda_for(recipe_path, config)
    check_not_running(recipe_path)
    log_path = Path(log_path) if log_path is not None else recipe_path.parent / "train.log"
    # The port is free when chosen, but another program can bind it before the rendezvous does (the launcher
    # starts seconds later): that failure happens before any rank trains, so launching again on a new port is safe.
    attempts = PORT_ATTEMPTS if num_processes > 1 else 1
    for attempt in range(1, attempts + 1):
        chosen = free_port(port) if num_processes > 1 else None
        if chosen is not None and chosen != port:
            print(
                f"[launch] port {port} is busy (another run?); using {chosen} for the rendezvous.", flush=True
            )
        cmd = build_command(
            recipe_path, config, num_processes, main_process_port=chosen, extra_args=extra_args, module=module
        )
        print(f"[launch] $ {redact(format_command(cmd), secret_arguments(cmd))}", flush=True)
        try:
            return run(cmd, log_path, env=env, on_line=on_line, echo=echo)
        except LaunchError as err:
            if err.kind != "port" or attempt == attempts:
                raise
            print(
                f"[launch] port {chosen} was taken between choosing it and the rendezvous binding it (another "
                f"program got there first); launching again on a new port (attempt {attempt + 1} of {attempts}).",
                flush=True,
            )
            port = 0  # any port the OS reports free
    raise AssertionError("unreachable")
