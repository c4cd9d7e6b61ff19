"""Executing one notebook headless: papermill runs it in a fresh kernel, with the notebooks' working directory.

``run_notebook`` executes it (``kernel_config`` encrypts the kernel's channels), ``Heartbeat`` prints the elapsed
time and the newest training progress while it runs, and ``describe_failure`` turns papermill's error into the
cell and the error, with advice when the kernel died. ``open_r1_nb.pipeline`` runs the numbered notebooks in order
with these, and re-exports their names.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from open_r1_nb.paths import NOTEBOOKS_DIR

KERNEL_DIED_ADVICE = (
    "The notebook's kernel process died without a Python error, which almost always means the machine ran out of "
    "memory (the kernel's OOM killer; `dmesg | tail` says for sure). Close other programs, or make the notebook's "
    "work smaller: in evaluation, fewer sequences at once (--set eval_batch_size=16) or fewer problems "
    "(--set eval_limit=10). Training runs in its own processes and reports its own memory errors."
)


def describe_failure(err: Exception) -> str:
    # papermill's execution error carries the cell index and the exception's name and value.
    cell = getattr(err, "exec_count", None) or getattr(err, "cell_index", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    where = f"cell {cell}" if cell is not None else "a cell"
    detail = f"{where}: {ename}: {evalue}"
    if ename == "DeadKernelError" or "Kernel died" in str(evalue):
        detail += f"\n{KERNEL_DIED_ADVICE}"
    return detail


def kernel_config():
    """Kernel-manager settings for the notebooks' kernels: CurveZMQ keys on the kernel's channels.

    jupyter_client connects to a kernel over local TCP ports, and ipykernel 7 warns on every start that this is
    unencrypted ("Kernel is running over TCP without encryption"). With ``transport_encryption: auto`` the manager
    gives the kernel CurveZMQ keys when its kernelspec declares support (ipykernel's does), so the channels are
    encrypted and the warning has no cause. A kernel or a libzmq without CurveZMQ keeps plain TCP, and its warning.
    """
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if not zmq.has("curve") or not KernelManager.class_traits().get("transport_encryption"):
        return None
    return Config({"KernelManager": {"transport_encryption": "auto"}})


#: The kernel papermill starts when none is named: ipykernel's own spec runs the interpreter that runs the pipeline,
#: so this environment, wherever the notebooks' named kernel (``make install`` registers it) points.
HEADLESS_KERNEL = "python3"


def run_notebook(notebook: Path, output: Path, parameters: dict, kernel_name: str | None = None) -> None:
    import papermill as pm

    from open_r1_nb import progress

    output.parent.mkdir(parents=True, exist_ok=True)
    config = kernel_config()
    # The kernel inherits this environment: nothing renders widgets here, so its progress bars are text lines,
    # even when the runner itself was started from a JupyterLab kernel (which would pass JupyterLab's mark on).
    saved = os.environ.get(progress.ENV)
    os.environ[progress.ENV] = "text"
    try:
        pm.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name or HEADLESS_KERNEL,
            cwd=str(NOTEBOOKS_DIR),  # same working directory as in JupyterLab
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,
            **({"config": config} if config is not None else {}),
        )
    finally:
        if saved is None:
            os.environ.pop(progress.ENV, None)
        else:
            os.environ[progress.ENV] = saved


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
            self._echo_estimate()
            elapsed = time.perf_counter() - self._t0
            progress = (
                _last_progress(self.log)
                if self.log.exists() and self.log.stat().st_mtime > self._since
                else ""
            )
            self.echo(f"  {self.name:<28} ...   {elapsed:6.0f} s" + (f"   {progress}" if progress else ""))

    def _echo_estimate(self) -> None:
        """Once per notebook: the training's estimate of the run's time, as soon as train.log has it."""
        if self._estimate_shown or not self.log.exists() or self.log.stat().st_mtime <= self._since:
            return
        from open_r1_nb.estimate import Estimate, parse_estimate_line

        with self.log.open(errors="replace") as handle:
            for line in handle:
                found = parse_estimate_line(line)
                if found is not None:
                    self._estimate_shown = True
                    self.echo(f"  {Estimate(**found).message()}")
                    return

    def __enter__(self) -> Heartbeat:
        self._estimate_shown = False
        self._since = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
