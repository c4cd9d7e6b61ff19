"""Run model-written code against LiveCodeBench-style tests in a resource-limited subprocess.

Never in the notebook's kernel: every test runs in a fresh ``python -I`` child, in a temporary directory, with a
minimal environment (no tokens or other secrets), limits on address space, CPU time, file size, processes and
core dumps, and a wall-clock timeout that kills the child's whole process group.

Tests follow LiveCodeBench's ``code_generation_lite`` format: ``{"input": str, "output": str}``.
- ``mode="stdin"``: the program reads ``input`` on stdin; its stdout must match ``output`` line by line after
  stripping each line (and the whole text), with a numeric fallback (``1.0`` == ``1``), as LiveCodeBench grades.
- ``mode="call"`` (LiveCodeBench's "functional" tests, LeetCode style): ``input`` holds one JSON value per line,
  the arguments; ``fn_name`` (the problem's ``metadata["func_name"]``) is called on ``Solution()`` if the code
  defines that class, else as a module-level function; its JSON-encoded result (tuples become lists) must equal
  ``json.loads(output)``.
Like LiveCodeBench, the code runs after a prelude of standard-library imports (``typing``'s ``List``,
``collections``, ``math``, …), because LeetCode starter code uses them without importing.

This is a guard against accidents (infinite loops, memory blow-ups, runaway output), not a security boundary:
run untrusted code at scale in containers (open-r1 uses E2B, Morph or Piston). Running as root weakens it further
(root may raise its own limits, and RLIMIT_NPROC does not apply to root).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from open_r1_nb.evaluate.scoring import strip_reasoning

Status = Literal["passed", "failed", "timeout", "memory", "error"]

# Exit codes the child harness uses to say what happened (a candidate exiting with these is vanishingly rare).
_EXIT_MEMORY = 83
_EXIT_ERROR = 84
_EXIT_NO_FUNCTION = 85
_EXIT_OUTPUT = 86

# Wall-clock allowance on top of the time limit for interpreter start-up and the import prelude.
_STARTUP_GRACE_S = 1.0

# Executed in the child before the candidate code, into the candidate's namespace (LiveCodeBench does the
# same). Builtins are re-imported last so that math's pow/floor-style names never shadow them.
_PRELUDE = """\
import bisect, collections, copy, functools, heapq, itertools, math, operator, random, re, string, sys
from bisect import *
from collections import *
from functools import *
from heapq import *
from itertools import *
from math import *
from typing import *
from builtins import *
sys.setrecursionlimit(50000)
"""

# The child: set limits, run the candidate, report through its exit code. Kept as text so that it runs in a
# bare interpreter (-I: no user site, no PYTHON* variables) without importing this package.
_HARNESS = r"""
import errno, io, json, os, resource, sys, traceback

cfg = json.loads(sys.argv[1])
EXIT = cfg["exit_codes"]


def set_limit(name, soft, hard=None):
    kind = getattr(resource, name, None)
    if kind is None:
        return
    hard = soft if hard is None else hard
    _, cur_hard = resource.getrlimit(kind)
    if cur_hard != resource.RLIM_INFINITY:  # an unprivileged process may only lower its hard limit
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    try:
        resource.setrlimit(kind, (soft, hard))
    except (ValueError, OSError):
        pass


set_limit("RLIMIT_CORE", 0)
set_limit("RLIMIT_FSIZE", cfg["fsize_bytes"])
if cfg["nproc"] is not None:
    set_limit("RLIMIT_NPROC", cfg["nproc"])
set_limit("RLIMIT_CPU", cfg["cpu_s"], cfg["cpu_s"] + 1)  # SIGXCPU, then SIGKILL a second later

with open(cfg["code_path"], encoding="utf-8") as f:
    source = f.read()
mode, fn_name = cfg["mode"], cfg["fn_name"]
call_input = sys.stdin.read() if mode == "call" else None
real_stdout = sys.stdout

# The address-space limit goes last: everything above must not be what hits it.
set_limit("RLIMIT_AS", cfg["memory_bytes"])

namespace = {"__name__": "__main__" if mode == "stdin" else "solution", "__builtins__": __builtins__}
try:
    exec(compile(cfg["prelude"], "<prelude>", "exec"), namespace)
    if mode == "stdin":
        try:
            exec(compile(source, "solution.py", "exec"), namespace)
        except SystemExit:
            pass  # exit() after printing the answer is fine (LiveCodeBench ignores SystemExit too)
        sys.stdout.flush()
    else:
        args = [json.loads(line) for line in call_input.split("\n") if line.strip()]
        sys.stdout = io.StringIO()  # the candidate's own prints must not mix with the result
        exec(compile(source, "solution.py", "exec"), namespace)
        target = namespace.get("Solution")
        if isinstance(target, type) and hasattr(target, fn_name):
            fn = getattr(target(), fn_name)
        elif callable(namespace.get(fn_name)):
            fn = namespace[fn_name]
        else:
            sys.stderr.write(f"no function {fn_name!r} (nor Solution.{fn_name})\n")
            os._exit(EXIT["no_function"])
        result = fn(*args)
        sys.stdout = real_stdout
        try:
            text = json.dumps(result)
        except (TypeError, ValueError):
            text = json.dumps({"__not_json__": repr(result)[:200]})
        real_stdout.write(text)
        real_stdout.flush()
except MemoryError:
    os._exit(EXIT["memory"])
except OSError as e:
    if e.errno == errno.EFBIG:  # the output passed the file-size limit (Python ignores SIGXFSZ)
        os._exit(EXIT["output"])
    sys.stdout = real_stdout
    traceback.print_exc()
    os._exit(EXIT["error"])
except BaseException:
    sys.stdout = real_stdout
    try:
        traceback.print_exc()
    except BaseException:
        pass
    os._exit(EXIT["error"])
os._exit(0)
"""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program on a list of tests. ``status`` is that of the first test that did not pass."""

    passed: bool
    status: Status
    passed_tests: int
    total_tests: int
    detail: str
    elapsed_s: float = 0.0


def _child_env(workdir: str) -> dict[str, str]:
    """A minimal environment built from scratch: nothing of the parent's (tokens, keys) leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Numeric libraries would otherwise start a thread per core in every child.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _nproc_limit(headroom: int = 64) -> int | None:
    """RLIMIT_NPROC counts *all* tasks of the user, so allow what runs now plus some headroom.

    Enough for the common ``threading`` trick for deep recursion, not enough for a fork bomb. None for root,
    where the limit is not enforced anyway.
    """
    uid = os.getuid()
    if uid == 0:
        return None
    count = 0
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        count += len(os.listdir(f"/proc/{entry.name}/task"))
                except OSError:
                    continue
    except OSError:
        return 4096
    return count + headroom


def _stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _as_decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except InvalidOperation:
        return None


def outputs_match(actual: str, expected: str) -> bool:
    """LiveCodeBench's stdout comparison: same number of lines, each equal after strip, or equal as numbers."""
    got, want = _stripped_lines(actual), _stripped_lines(expected)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if g == w:
            continue
        gd, wd = _as_decimals(g), _as_decimals(w)
        if gd is None or wd is None or gd != wd:
            return False
    return True


def _call_outputs_match(actual: str, expected: str) -> bool:
    try:
        return json.loads(actual) == json.loads(expected)
    except (json.JSONDecodeError, ValueError):
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit // 2] + " … " + text[-limit // 2 :]


def _tail(text: str, limit: int = 300) -> str:
    """The end of a traceback: the exception and the candidate's last frames, not the harness's."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def _run_one(
    workdir: Path,
    harness: Path,
    cfg: dict,
    test_input: str,
    wall_s: float,
    max_output_bytes: int,
) -> tuple[Status | None, str, str]:
    """Run the child once. Returns (status if it already failed, detail, stdout)."""
    in_path, out_path, err_path = workdir / "stdin.txt", workdir / "stdout.txt", workdir / "stderr.txt"
    in_path.write_text(test_input, encoding="utf-8")
    with open(in_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
        # No preexec_fn: it is unsafe when the caller runs sandboxes from threads; the harness sets its own
        # limits before touching the candidate code. A new session makes the child a process-group leader.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-X", "utf8", str(harness), json.dumps(cfg)],
            stdin=fin,
            stdout=fout,
            stderr=ferr,
            cwd=workdir,
            env=_child_env(str(workdir)),
            start_new_session=True,
            close_fds=True,
        )
        timed_out = False
        started = time.monotonic()
        try:
            rc = proc.wait(timeout=wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.wait()
        finally:
            _kill_group(proc)  # leftovers the candidate may have started
        ran_s = time.monotonic() - started
    with open(out_path, "rb") as f:
        stdout = f.read(max_output_bytes + 1).decode("utf-8", errors="replace")
    with open(err_path, "rb") as f:
        stderr = f.read(20_000).decode("utf-8", errors="replace")

    if timed_out:
        return "timeout", f"killed after {wall_s:.1f} s wall clock", stdout
    if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU) or (rc == -signal.SIGKILL and ran_s >= cfg["cpu_s"]):
        return "timeout", "CPU time limit exceeded", stdout
    if rc == _EXIT_MEMORY or rc == -signal.SIGKILL:
        # A SIGKILL that we did not send, early: the kernel's OOM killer.
        return "memory", f"memory limit exceeded ({cfg['memory_bytes'] // 2**20} MB)", stdout
    if rc == _EXIT_OUTPUT or rc == -signal.SIGXFSZ or len(stdout.encode()) > max_output_bytes:
        return "error", f"output limit exceeded ({max_output_bytes // 2**20} MB)", stdout
    if rc == _EXIT_NO_FUNCTION:
        return "error", _tail(stderr) or "function not found", stdout
    if rc != 0:
        if "MemoryError" in stderr:
            return "memory", _tail(stderr), stdout
        why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        return "error", _tail(stderr) or why, stdout
    return None, "", stdout


def run_tests(
    code: str | None,
    tests: list[dict],
    *,
    time_limit_s: float = 6.0,
    memory_limit_mb: int = 512,
    mode: Literal["stdin", "call"] = "stdin",
    fn_name: str | None = None,
    fail_fast: bool = True,
    max_output_mb: int = 64,
) -> SandboxResult:
    """Run ``code`` on each test in a fresh, limited subprocess and grade it (see the module docstring).

    ``time_limit_s`` is per test (LiveCodeBench: 6 s); a busy child is killed after that plus a
    ``_STARTUP_GRACE_S`` allowance, and ``RLIMIT_CPU`` backs it up. ``memory_limit_mb`` caps the address space.
    ``fail_fast`` (default, as LiveCodeBench) stops at the first test that does not pass, so ``passed_tests``
    counts the tests passed before it; ``fail_fast=False`` runs them all.
    """
    start = time.monotonic()
    total = len(tests)
    if mode not in ("stdin", "call"):
        raise ValueError(f"mode must be 'stdin' or 'call', got {mode!r}")
    if mode == "call" and not fn_name:
        raise ValueError("mode='call' needs fn_name (LiveCodeBench's metadata['func_name'])")
    if not code or not code.strip():
        return SandboxResult(False, "error", 0, total, "no code to run", time.monotonic() - start)
    if total == 0:
        return SandboxResult(False, "error", 0, 0, "no tests to run", time.monotonic() - start)

    max_output_bytes = max_output_mb * 2**20
    passed = 0
    first_failure: tuple[Status, str] | None = None
    with tempfile.TemporaryDirectory(prefix="open_r1_nb_sandbox_") as tmp:
        workdir = Path(tmp)
        harness = workdir / "_harness.py"
        harness.write_text(_HARNESS, encoding="utf-8")
        code_path = workdir / "solution.py"
        code_path.write_text(code, encoding="utf-8")
        cfg = {
            "mode": mode,
            "fn_name": fn_name,
            "code_path": str(code_path),
            "prelude": _PRELUDE,
            "memory_bytes": int(memory_limit_mb) * 2**20,
            "cpu_s": math.ceil(time_limit_s) + 1,
            # The output file must fit the cap plus a little, so that "over the cap" is detectable.
            "fsize_bytes": max_output_bytes + 4096,
            "nproc": _nproc_limit(),
            "exit_codes": {
                "memory": _EXIT_MEMORY,
                "error": _EXIT_ERROR,
                "no_function": _EXIT_NO_FUNCTION,
                "output": _EXIT_OUTPUT,
            },
        }
        wall_s = time_limit_s + _STARTUP_GRACE_S
        for i, test in enumerate(tests):
            status, detail, stdout = _run_one(
                workdir, harness, cfg, str(test["input"]), wall_s, max_output_bytes
            )
            if status is None:
                ok = (_call_outputs_match if mode == "call" else outputs_match)(stdout, str(test["output"]))
                if ok:
                    passed += 1
                    continue
                status = "failed"
                detail = f"wrong answer: got {_short(stdout, 120)!r}, expected {_short(str(test['output']), 120)!r}"
            if first_failure is None:
                first_failure = (status, f"test {i}: {detail}")
            if fail_fast:
                break
    elapsed = time.monotonic() - start
    if first_failure is None:
        return SandboxResult(True, "passed", passed, total, f"all {total} tests passed", elapsed)
    return SandboxResult(False, first_failure[0], passed, total, first_failure[1], elapsed)


_FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str | None:
    """The code to grade: the last ```` ```python ```` block after the reasoning, else the last untagged block.

    LiveCodeBench takes the last fenced block whatever its language; preferring a Python-tagged one keeps a
    trailing sample-output block from being run as the program. Blocks in the think section never count, and an
    unclosed fence (a truncated completion) is ignored.
    """
    answer = strip_reasoning(completion)
    python, untagged = [], []
    for match in _FENCE_RE.finditer(answer):
        lang, body = match.group(1).lower(), match.group(2)
        if lang in ("python", "py", "python3"):
            python.append(body)
        elif not lang:
            untagged.append(body)
    blocks = python or untagged
    return blocks[-1].rstrip() + "\n" if blocks and blocks[-1].strip() else None
