"""Scoring of sampled completions: answer extraction, math-verify, GPQA letters, pass@k with a standard error.

The protocol is open-r1's (DeepSeek-R1's, as run by LightEval): the reasoning is removed first, the final
answer is compared with math-verify (boxed answers first), GPQA by the chosen letter, and pass@1 is the mean
over n samples per problem, reported with a standard error over problems. Where this module departs from
LightEval the docstring says so; nothing here imports LightEval, which does not run on this stack (the
README's Evaluation section says why).

Maths has three rules (``MATH_RULES``), differing only in what counts as the answer when nothing is boxed:

- ``stated`` (the default): a boxed answer, else an explicit final statement ("the answer is 1333", "Answer: 12",
  a last line ending "= 1333"), judged by math-verify as if it had been boxed. An expression copied from the
  question ("the answer is 617 + 716") is not an answer, boxed or not.
- ``number`` (the embedded local splits, whose answers are numbers): the same stated answer, reduced to the one
  number it states (the right-hand side of its last "="), compared numerically with the gold.
- ``lighteval``: LightEval's reading, kept for comparison with published Hub-benchmark numbers. With no box,
  math-verify's own fallbacks read the whole answer: "final answer is …", then the last expression or number
  anywhere in it, which it evaluates, so text that only restates the question ("the calculation of 617 + 716 is
  …") scores when the gold is 1333.
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


#: The ways to read a maths answer (see the module docstring): ``stated``, ``number``, ``lighteval``.
MATH_RULES = ("stated", "number", "lighteval")

# "the answer is X", "final answer: X", "**Answer:** X" (the last one in the answer counts).
_STATEMENT = re.compile(r"(?i)\banswer\s*(?:\*\*)?\s*(?:is\b|:|=)\s*(?:\*\*)?\s*:?\s*")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_DECORATION = re.compile(r"^[\s*$:]+|[\s*$.!,;]+$")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")
_NUMBER_IN_WORDS = re.compile(r"^(\\?\$?-?[\d.,]*\d)\s+[A-Za-z][A-Za-z ]*$")
_OPERATION = re.compile(r"[\d)a-zA-Z}]\s*(?:[-+*/^×÷·]|\\times|\\cdot|\\div)\s*[\d(a-zA-Z\\{]")


def _statement(answer_text: str) -> str | None:
    """The explicit final statement of an unboxed answer: after the last "answer is / answer:", else a last line
    ending in "= X" or holding a lone number; of a statement that is a calculation ("9 * 2 = 18"), its result.
    None when nothing is stated."""
    found = None
    for match in _STATEMENT.finditer(answer_text):
        rest = answer_text[match.end() :]
        end = _SENTENCE_END.search(rest)
        found = rest[: end.start()] if end else rest
    if not found:
        lines = [line for line in answer_text.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        found = last if "=" in last or _NUMBER.fullmatch(_DECORATION.sub("", last)) else None
    if found is None:
        return None
    found = _DECORATION.sub("", found.rsplit("=", 1)[-1])
    # "18 dollars", "12 eggs": the number with its unit in words (math-verify reads some words as symbols).
    unit = _NUMBER_IN_WORDS.match(found)
    return (unit.group(1) if unit else found) or None


def _normalise(text: str) -> str:
    text = re.sub(r"\\(?:left|right|,|;|!|\s)", "", text)
    for old, new in (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("·", "*"), ("÷", "/")):
        text = text.replace(old, new)
    return re.sub(r"[\s$]", "", text)


def copied_from_question(answer: str, question: str | None) -> bool:
    """Whether ``answer`` is an expression (an operation, not a lone number) that the question already contains:
    ``617 + 716`` for "What is 617 + 716?". Restating the problem is not solving it."""
    if not question or not _OPERATION.search(answer):
        return False
    return _normalise(answer) in _normalise(question)


def stated_answer(completion: str, question: str | None = None) -> str | None:
    r"""The answer a completion states, after its reasoning: the last non-empty ``\boxed{}``, else an explicit
    final statement ("the answer is 1333", "Answer: 12", a last line "... = 1333"). None when it states none, or
    when what it states is an expression copied from ``question``."""
    answer_text = strip_reasoning(completion)
    if not answer_text:
        return None
    boxed = [b for b in extract_boxed(answer_text) if b]
    answer = boxed[-1] if boxed else _statement(answer_text)
    if answer is None or copied_from_question(answer, question):
        return None
    return answer


def final_number(answer: str) -> float | None:
    r"""The one number a stated answer gives: ``"1,333"``, ``"\$12.50"``, ``"5 apples"``, ``"x = 7"`` (the
    right-hand side of the last "="). None for an expression (``"617 + 716"``, ``"1/2"``) or when no number is
    stated."""
    text = answer.rsplit("=", 1)[-1]
    text = re.sub(r"\\text\{[^{}]*\}|\\[a-zA-Z]+|\\[$%,;! ]", " ", text)
    if _OPERATION.search(re.sub(r"[a-zA-Z]+", "", text)):
        return None
    numbers = _NUMBER.findall(text)
    return float(numbers[0].replace(",", "")) if numbers else None


def math_answer(completion: str) -> str | None:
    r"""The final answer shown for a completion: the last non-empty ``\boxed{}`` after the reasoning, else None.

    ``verify_math`` judges this same box; when nothing is boxed, :func:`stated_answer` reads the explicit final
    statement instead (and the ``lighteval`` rule math-verify's own fallbacks).
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


def score_math(
    gold: str,
    completion: str,
    *,
    question: str | None = None,
    rule: str = "stated",
    boxed_only: bool = False,
    last_boxed: bool = True,
) -> tuple[str | None, bool]:
    r"""(the answer read, whether it equals ``gold``) for one completion, under ``rule`` (``MATH_RULES``).

    - The reasoning is stripped first (``strip_reasoning``): a box inside the think block never counts.
    - ``stated``: the last ``\boxed{}``, else the explicit final statement (:func:`stated_answer`), judged by
      math-verify; an expression copied from ``question`` counts as wrong.
    - ``number``: the same answer reduced to its number (:func:`final_number`), compared with a numeric gold to 6
      decimal places; a gold that is not a number is judged as under ``stated``.
    - ``lighteval``: LightEval's reading: the last box, else math-verify's own fallbacks on the whole answer
      ("final answer is X", "Answer: X", then the last expression anywhere, evaluated), with no question check.
    - ``last_boxed=False`` hands the whole answer part to math-verify as LightEval does, so several boxes
      *without* ``$`` delimiters are read as one set (``\boxed{3} … \boxed{7}`` → {3, 7}), while
      ``$\boxed{3}$ … $\boxed{7}$`` gives 7: an inconsistency the default avoids. ``boxed_only=True`` counts any
      answer without a box as wrong.

    The gold is parsed as LaTeX/expression (wrapped in ``$…$`` if bare, since math-verify only finds bare
    ``\dfrac``/intervals inside math delimiters), or compared as a string when it cannot be parsed, as LightEval
    does. Numbers are compared to 6 decimal places (LightEval's precision). Never raises: parse errors and timeouts
    count as wrong. math-verify's timeout uses ``signal.alarm``, which only works in the main thread, so off it the
    timeout is disabled and the caller must bound the time (e.g. a process pool with a timeout).
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    if rule not in MATH_RULES:
        raise ValueError(f"unknown maths rule {rule!r}; use one of {list(MATH_RULES)}")
    answer_text = strip_reasoning(completion)
    if not answer_text:
        return None, False
    boxed = [b for b in extract_boxed(answer_text) if b]
    if boxed_only and not boxed:
        return None, False
    if rule == "lighteval":
        answer, prediction = (boxed[-1] if boxed else None), answer_text
    else:
        answer = stated_answer(answer_text, question)
        if answer is None:
            return (boxed[-1] if boxed else None), False
        prediction = answer_text if boxed else f"\\boxed{{{answer}}}"
        if rule == "number":
            expected = final_number(str(gold))
            if expected is not None and _NUMBER.fullmatch(str(gold).strip().replace("$", "")):
                got = final_number(answer)
                return answer, got is not None and round(got - expected, FLOAT_ROUNDING) == 0
    try:
        gold_parsed = _parse_gold(gold)
        pred_parsed = _parse_prediction(prediction, boxed_only=boxed_only, last_boxed=last_boxed)
        if not pred_parsed:
            return answer, False
        ok = verify(gold_parsed, pred_parsed, float_rounding=FLOAT_ROUNDING, timeout_seconds=_timeouts())
        return answer, bool(ok)
    except (Exception, TimeoutException):  # TimeoutException derives from BaseException
        logger.debug("math-verify failed on gold=%r", gold, exc_info=True)
        return answer, False


def verify_math(
    gold: str,
    completion: str,
    *,
    boxed_only: bool = False,
    last_boxed: bool = True,
    question: str | None = None,
    rule: str = "stated",
) -> bool:
    """Whether a completion's final answer equals ``gold`` (see :func:`score_math` for the rules)."""
    return score_math(
        gold, completion, question=question, rule=rule, boxed_only=boxed_only, last_boxed=last_boxed
    )[1]


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
