"""Scoring of sampled completions: answer extraction, math-verify, GPQA letters, pass@k with a standard error.

The protocol is open-r1's (DeepSeek-R1's, as run by LightEval): the reasoning is removed first, the final
answer is compared with math-verify (boxed answers first), GPQA by the chosen letter, and pass@1 is the mean
over n samples per problem, reported with a standard error over problems. Where this module departs from
LightEval the docstring says so; nothing here imports LightEval, which does not run on this stack (the
README's Evaluation section says why).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from open_r1_nb.data import THINK_CLOSE, THINK_OPEN

logger = logging.getLogger(__name__)

# Tolerance on numeric comparisons, in decimal places: LightEval's math metrics use precision=6.
FLOAT_ROUNDING = 6
# math-verify's own per-call timeout (seconds). Only usable in the main thread: it relies on signal.alarm.
MATH_VERIFY_TIMEOUT_S = 5


# --------------------------------------------------------------------------------------------------------------
# Reasoning and answer extraction
# --------------------------------------------------------------------------------------------------------------


def strip_reasoning(text: str) -> str:
    """The answer part of a completion: everything after the last ``</think>``.

    - ``<think>…</think> answer`` → ``answer``; with several blocks, everything up to the *last* close goes.
    - ``…</think> answer`` with no opening tag (templates such as DeepSeek-R1-Distill's open the think block in
      the prompt) → ``answer``.
    - ``<think>…`` never closed → ``""``: the model never finished thinking, so it gave no answer, even if a
      ``\\boxed{}`` appears mid-thought. LightEval only removes *complete* pairs and would score the raw text
      here; we are stricter on purpose (a guess scribbled mid-thought is not an answer), which can only lower
      the score of truncated samples, and those are reported separately (``truncated`` in ``summarize``).
    - No tags at all → the text unchanged (base models that never learned the format are still scored).
    """
    if not text:
        return ""
    close = text.rfind(THINK_CLOSE)
    if close != -1:
        after = text[close + len(THINK_CLOSE) :]
        # A think block re-opened after the last close and never closed: unfinished again.
        return "" if THINK_OPEN in after else after.strip()
    if THINK_OPEN in text:
        return ""
    return text.strip()


_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> list[str]:
    r"""Contents of every ``\boxed{…}`` / ``\fbox{…}`` in order, with nested braces balanced.

    Escaped braces (``\{``, ``\}``, as in ``\boxed{\{1,2\}}``) do not count towards the balance. A box whose
    braces never close (a truncated completion) is skipped.
    """
    found: list[str] = []
    for match in _BOX_RE.finditer(text):
        start = i = match.end()
        depth = 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start:i].strip())
                    break
            i += 1
    return found


def math_answer(completion: str) -> str | None:
    r"""The final answer shown for a completion: the last non-empty ``\boxed{}`` after the reasoning, else None.

    ``verify_math`` judges this same box; only when nothing is boxed does it fall back, like LightEval, to
    math-verify's "final answer is …" / "Answer: …" / trailing-expression extraction.
    """
    boxed = [b for b in extract_boxed(strip_reasoning(completion)) if b]
    return boxed[-1] if boxed else None


# --------------------------------------------------------------------------------------------------------------
# math-verify
# --------------------------------------------------------------------------------------------------------------


def _timeouts() -> int | None:
    """math-verify's timeout, or None off the main thread (its signal.alarm timeout raises there)."""
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def _parse_gold(gold: str) -> list[Any]:
    """Parse a reference answer. Bare LaTeX (``\\dfrac{3}{4}``, ``(1,2)``) only parses inside math delimiters."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold = gold.strip()
    delimited = _UNESCAPED_DOLLAR.search(gold) or "\\boxed" in gold
    candidates = [gold] if delimited else [f"${gold}$", gold]
    for text in candidates:
        parsed = parse(text, extraction_config=config, parsing_timeout=_timeouts())
        if parsed:
            return parsed
    # LightEval does the same when no gold can be extracted: compare as a plain string.
    return [gold]


def _parse_prediction(answer_text: str, *, boxed_only: bool, last_boxed: bool) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    boxed = [b for b in extract_boxed(answer_text) if b]
    if boxed and last_boxed:
        answer_text = f"\\boxed{{{boxed[-1]}}}"
    elif not boxed and boxed_only:
        return []
    # Boxed first (priority 0, as in open-r1's own LightEval tasks; LightEval's built-in default 55 lets
    # "final answer is X" win), then math-verify's anchored and plain matches.
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(answer_text, extraction_config=config, parsing_timeout=_timeouts())


def verify_math(gold: str, completion: str, *, boxed_only: bool = False, last_boxed: bool = True) -> bool:
    r"""Whether a completion's final answer equals ``gold``, judged by math-verify.

    - The reasoning is stripped first (``strip_reasoning``): a box inside the think block never counts.
    - The gold is parsed as LaTeX/expression (wrapped in ``$…$`` if bare, since math-verify only finds bare
      ``\dfrac``/intervals inside math delimiters); if it cannot be parsed it is compared as a string, as
      LightEval does.
    - The prediction: with ``last_boxed=True`` (default) only the last non-empty ``\boxed{}`` is handed to
      math-verify, like a human grader reading the final box. ``last_boxed=False`` hands the whole answer part
      to math-verify as LightEval does; then several boxes *without* ``$`` delimiters are read as one set
      (``\boxed{3} … \boxed{7}`` → {3, 7}), while ``$\boxed{3}$ … $\boxed{7}$`` gives 7: an inconsistency we
      avoid by default.
    - With nothing boxed, math-verify's own fallbacks ("final answer is X", "Answer: X", then the last
      expression) are used, as in open-r1/LightEval; ``boxed_only=True`` counts such answers as wrong.

    Numbers are compared to 6 decimal places (LightEval's precision). Never raises: parse errors and timeouts
    count as wrong. math-verify's timeout uses ``signal.alarm``, which only works in the main thread, so off it
    the timeout is disabled and the caller must bound the time (e.g. a process pool with a timeout).
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    answer_text = strip_reasoning(completion)
    if not answer_text:
        return False
    try:
        gold_parsed = _parse_gold(gold)
        pred_parsed = _parse_prediction(answer_text, boxed_only=boxed_only, last_boxed=last_boxed)
        if not pred_parsed:
            return False
        return bool(
            verify(gold_parsed, pred_parsed, float_rounding=FLOAT_ROUNDING, timeout_seconds=_timeouts())
        )
    except (Exception, TimeoutException):  # TimeoutException derives from BaseException
        logger.debug("math-verify failed on gold=%r", gold, exc_info=True)
        return False


# --------------------------------------------------------------------------------------------------------------
# GPQA: the chosen letter
# --------------------------------------------------------------------------------------------------------------

_LETTER = r"\(?\s*(?:\\text(?:bf)?\{\s*)?\(?([A-D])\)?\s*\}?\s*\)?"
_BOXED_LETTER_RE = re.compile(rf"^\s*{_LETTER}\s*[.:]?\s*$")
# "Answer: C", "**Answer:** (C)", "Answer: $C$", "final answer is C" (case-insensitive "answer").
_ANSWER_LETTER_RE = re.compile(
    r"(?i:answer)\s*(?:is)?\s*\**\s*[:：]?\s*\**\s*\$?\s*\\?\(?\s*([A-D])\b\)?",
)


def gpqa_letter(completion: str) -> str | None:
    r"""The letter (A–D) chosen by a completion, after the reasoning is stripped; None if there is none.

    LightEval's gpqa:diamond prompt asks for a last line ``Answer: $LETTER``; R1-style models also often box the
    letter. Order: the last ``\boxed{C}`` (also ``\boxed{\text{C}}``, ``\boxed{(C)}``), else the last
    "Answer: C" / "answer is C". Unlike LightEval we accept the boxed form too and do not guess from a bare
    letter elsewhere in the text.
    """
    answer_text = strip_reasoning(completion)
    for boxed in reversed(extract_boxed(answer_text)):
        m = _BOXED_LETTER_RE.match(boxed)
        if m:
            return m.group(1)
    matches = _ANSWER_LETTER_RE.findall(answer_text)
    return matches[-1] if matches else None


def verify_gpqa(gold_letter: str, completion: str) -> bool:
    """Whether the chosen letter is the gold one."""
    letter = gpqa_letter(completion)
    return letter is not None and letter == gold_letter.strip().upper()


# --------------------------------------------------------------------------------------------------------------
# Format
# --------------------------------------------------------------------------------------------------------------


def format_ok(completion: str, *, require_boxed: bool = True, prompt_opens_think: bool = False) -> bool:
    r"""The teacher's format: exactly one closed think block, then a final answer (``\boxed{}`` by default).

    ``prompt_opens_think=True`` is for chat templates that put ``<think>`` in the prompt (DeepSeek-R1-Distill):
    then the completion must hold no ``<think>`` and exactly one ``</think>``. Whether generation ended at the EOS
    token (rather than the length limit) is the generator's to record (``ended_at_eos``), not checked here.
    """
    opens, closes = completion.count(THINK_OPEN), completion.count(THINK_CLOSE)
    if closes != 1 or opens != (0 if prompt_opens_think else 1):
        return False
    if opens and completion.find(THINK_OPEN) > completion.find(THINK_CLOSE):
        return False
    answer = completion[completion.find(THINK_CLOSE) + len(THINK_CLOSE) :]
    if require_boxed:
        return any(b for b in extract_boxed(answer))
    return bool(answer.strip())


# --------------------------------------------------------------------------------------------------------------
# pass@k and the standard error
# --------------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Computed as the stable product ``1 - prod_{i=n-c+1..n} (1 - k/i)`` (no huge binomials), as LightEval does.
    For k=1 it equals c/n.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_1_with_se(correct_matrix: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """pass@1 and its standard error over problems.

    Each row is one problem's samples; its pass@1 is the fraction correct. The overall pass@1 is the mean of
    the per-problem scores, and the standard error is their sample standard deviation (ddof=1) / sqrt(problems):
    the uncertainty from *which problems* were drawn, which dominates at these sizes (0.0 for one problem).
    Rows may differ in length.
    """
    if not correct_matrix:
        raise ValueError("no problems to score")
    scores = []
    for row in correct_matrix:
        if len(row) == 0:
            raise ValueError("a problem has no samples")
        scores.append(sum(bool(x) for x in row) / len(row))
    p = len(scores)
    mean = sum(scores) / p
    if p == 1:
        return mean, 0.0
    var = sum((s - mean) ** 2 for s in scores) / (p - 1)
    return mean, math.sqrt(var / p)


def _mean_of(records: Iterable[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-sample records into the numbers a report shows.

    Each record: ``problem_id``, ``sample_index``, ``correct``, ``format_ok``, ``ended_at_eos``, ``new_tokens``.
    Returns ``pass@1`` and ``pass@1_se`` (see ``pass_at_1_with_se``), ``pass@k`` for k = 1, 2, 4, … up to the
    smallest per-problem sample count (mean over problems of the unbiased estimator), the fractions ``format``
    (teacher format), ``eos`` (ended at EOS) and ``truncated`` (hit the token limit), ``mean_new_tokens``,
    ``n`` (samples per problem; the smallest if they differ), ``problems`` and ``samples``. A fraction whose
    key no record carries is None.
    """
    if not records:
        raise ValueError("no records to summarize")
    by_problem: dict[Any, list[bool]] = defaultdict(list)
    for r in records:
        by_problem[r["problem_id"]].append(bool(r["correct"]))
    matrix = list(by_problem.values())
    mean, se = pass_at_1_with_se(matrix)
    n = min(len(row) for row in matrix)
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    pass_k = {k: sum(pass_at_k(len(row), sum(row), k) for row in matrix) / len(matrix) for k in ks}
    eos = _mean_of(records, "ended_at_eos")
    return {
        "pass@1": mean,
        "pass@1_se": se,
        "pass@k": pass_k,
        "format": _mean_of(records, "format_ok"),
        "eos": eos,
        "truncated": None if eos is None else 1.0 - eos,
        "mean_new_tokens": _mean_of(records, "new_tokens"),
        "n": n,
        "problems": len(matrix),
        "samples": len(records),
    }
