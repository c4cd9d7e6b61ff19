"""A rank that stops responding fails the launch within a set time, naming the rank.

A hung rank is alive and silent: stuck in a collective that another rank never joins, in a deadlocked data loader,
on a dead network filesystem. Nothing fails then: torchrun waits for a process that never exits, and the run
sits until someone notices. So each training rank writes a heartbeat file while it trains (``beat``, from the
Trainer's step, log, save and evaluation events), and the launcher (``open_r1_nb.launch.run``) watches the files of
its own ranks: when a rank whose process is alive has not beaten for ``rank_timeout_s()`` seconds, it stops the
training processes and raises, naming the rank, its process, what it last did and how long it has been silent.

Only training is watched, from the first step's start to the end of training: before it a rank may wait for
minutes while rank 0 prepares the data, and after it rank 0 saves and evaluates while the others have exited.

The limit is ``OPEN_R1_NB_RANK_TIMEOUT`` (seconds; default 1800, torch's own default for a collective). Raise it
when one step, or one checkpoint save, really takes longer.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_DIR_ENV = "OPEN_R1_NB_HEARTBEAT_DIR"
TIMEOUT_ENV = "OPEN_R1_NB_RANK_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
_MIN_INTERVAL_S = 1.0  # a beat is a small file write; more than one a second says nothing more


def rank_timeout_s(env: dict[str, str] | None = None) -> float:
    """The silence after which a rank counts as hung: ``OPEN_R1_NB_RANK_TIMEOUT`` seconds, else 1800."""
    raw = (os.environ if env is None else env).get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(
            f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds. Fix: e.g. {TIMEOUT_ENV}=3600, or unset it "
            f"for the default ({DEFAULT_TIMEOUT_S:.0f} s)."
        )
    return value


# ------------------------------------------------------------------------------------------------- in a rank
def _heartbeat_file(directory: str | os.PathLike, rank: int) -> Path:
    return Path(directory) / f"rank-{rank}.json"


class Heartbeat:
    """A rank's heartbeat file: ``beat(what)`` rewrites it (at most once a second), ``stop()`` removes it."""

    def __init__(self, directory: str | os.PathLike, rank: int | None = None):
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.path = _heartbeat_file(directory, self.rank)
        self._last = float("-inf")

    def beat(self, what: str, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < _MIN_INTERVAL_S:
            return
        self._last = now
        record = {
            "rank": self.rank,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "what": what,
            "time": now,
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with contextlib.suppress(OSError):  # a heartbeat must never fail the training it reports on
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


@functools.cache
def _callback_class() -> type:
    # Made on first use: the launcher imports this module too, and must not pay for importing transformers.
    from transformers import TrainerCallback

    class HeartbeatCallback(TrainerCallback):
        """Beats on the Trainer's events while training; stops at the end of training."""

        def __init__(self, heartbeat: Heartbeat):
            self.heartbeat = heartbeat

        def on_train_begin(self, args, state, control, **kwargs):
            self.heartbeat.beat("training started", force=True)

        def on_step_begin(self, args, state, control, **kwargs):
            self.heartbeat.beat(f"step {state.global_step + 1}")

        def on_substep_end(self, args, state, control, **kwargs):
            self.heartbeat.beat(f"step {state.global_step + 1} (accumulating)")

        def on_step_end(self, args, state, control, **kwargs):
            self.heartbeat.beat(f"after step {state.global_step}")

        def on_save(self, args, state, control, **kwargs):
            self.heartbeat.beat(f"saved checkpoint-{state.global_step}", force=True)

        def on_prediction_step(self, args, state, control, **kwargs):
            self.heartbeat.beat("evaluating")

        def on_log(self, args, state, control, **kwargs):
            self.heartbeat.beat(f"logged step {state.global_step}")

        def on_train_end(self, args, state, control, **kwargs):
            self.heartbeat.stop()

    return HeartbeatCallback


def heartbeat_callback_from_env():
    """A Trainer callback that beats while training, when the launcher asked for heartbeats
    (``OPEN_R1_NB_HEARTBEAT_DIR``); else None."""
    directory = os.environ.get(HEARTBEAT_DIR_ENV)
    return _callback_class()(Heartbeat(directory)) if directory else None


# ------------------------------------------------------------------------------------------ in the launcher
@dataclass
class Silence:
    rank: int
    pid: int
    host: str
    what: str
    seconds: float


def _alive(pid: int) -> bool:
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except Exception:  # psutil.NoSuchProcess, or no psutil: ask the kernel
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def silences(directory: str | os.PathLike, now: float | None = None) -> list[Silence]:
    """Every watched rank whose process is alive, with how long it has been silent, longest first."""
    now = time.time() if now is None else now
    found = []
    for path in Path(directory).glob("rank-*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now
        if _alive(int(record["pid"])):
            found.append(
                Silence(record["rank"], record["pid"], record["host"], record["what"], now - record["time"])
            )
    return sorted(found, key=lambda s: s.seconds, reverse=True)


class Watchdog:
    """Watches the heartbeat files in ``directory``; when the longest-silent rank passes ``timeout_s``, calls
    ``stop`` once (from its own thread) and keeps what it found in ``hung``."""

    def __init__(self, directory: str | os.PathLike, timeout_s: float, stop: Callable[[], None]):
        self.directory, self.timeout_s, self.stop = Path(directory), timeout_s, stop
        self.hung: list[Silence] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rank-watchdog", daemon=True)

    def _watch(self) -> None:
        every = min(max(self.timeout_s / 4, 0.2), 10.0)
        while not self._done.wait(every):
            found = silences(self.directory)
            if found and found[0].seconds > self.timeout_s:
                self.hung = found
                self.stop()
                return

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def close(self) -> None:
        self._done.set()
        self._thread.join()

    def message(self) -> str:
        first, others = self.hung[0], self.hung[1:]
        text = (
            f"rank {first.rank} (pid {first.pid} on {first.host}) stopped responding: alive, but silent for "
            f"{first.seconds:.0f} s since '{first.what}', past the limit of {self.timeout_s:g} s ({TIMEOUT_ENV}). "
            "It is stuck (a collective another rank never joined, a data loader, a filesystem), so the training "
            "processes were stopped."
        )
        if others:
            text += " Also silent, likely waiting for it: " + ", ".join(
                f"rank {s.rank} ({s.seconds:.0f} s, since '{s.what}')" for s in others
            )
            text += "."
        return (
            text
            + f" Training resumes from the last complete checkpoint when launched again. If one step or one "
            f"checkpoint save really takes longer than {self.timeout_s:g} s, raise the limit: {TIMEOUT_ENV}=<seconds>."
        )
