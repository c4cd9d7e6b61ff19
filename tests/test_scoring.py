"""Scoring: reasoning stripping, boxed extraction, math-verify on tricky answers, GPQA letters, pass@k ± SE.

Every expected value below was checked by running math-verify 0.9.0. Where math-verify's verdict differs from what
a careful human grader would say, the case stays in the table with math-verify's verdict and a "MV≠human" note.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from open_r1_nb.evaluate import scoring
from open_r1_nb.evaluate.scoring import (
    extract_boxed,
    format_ok,
    gpqa_letter,
    math_answer,
    pass_at_1_with_se,
    pass_at_k,
    strip_reasoning,
    summarize,
    verify_gpqa,
    verify_math,
)

T = "<think>Let me work it out step by step.</think>\n"

# (gold, completion, expected, why)
MATH_CASES = [
    # fractions and decimals
    (r"\frac{1}{2}", T + r"The answer is $\boxed{0.5}$.", True, "fraction vs decimal"),
    (r"\frac{1}{2}", T + r"$\boxed{1/2}$", True, "fraction vs slash"),
    (r"\frac{1}{2}", T + r"$\boxed{\dfrac{1}{2}}$", True, "\\dfrac is \\frac"),
    ("0.5", T + r"\boxed{\frac12}", True, "brace-less \\frac12"),
    ("1/2", T + r"\boxed{\frac{1}{2}}", True, "slash gold"),
    ("0.25", T + r"\boxed{\frac{1}{4}}", True, "decimal gold, fraction answer"),
    ("18", T + r"\boxed{18.0}", True, "trailing .0"),
    (r"\frac{1}{3}", T + r"\boxed{0.33}", False, "1/3 vs 0.33: two decimals is not 1/3"),
    # Compared to 6 decimal places (LightEval's precision), so a 6-digit rounding counts. A strict human might
    # not accept 0.333333 for 1/3; the protocol does.
    (r"\frac{1}{3}", T + r"\boxed{0.333333}", True, "6-place rounding accepted (protocol's precision)"),
    (r"\frac{1}{2}", T + r"\boxed{\frac{1}{\sqrt{4}}}", True, "unsimplified but equal"),
    # thousands separators
    ("1000", T + r"\boxed{1,000}", True, "comma thousands separator"),
    ("1,000", T + r"\boxed{1000}", True, "comma in the gold"),
    # MV≠human: the LaTeX thin space "1\,000" is a thousands separator to a human; math-verify reads it otherwise.
    ("1000", T + r"\boxed{1\,000}", False, "MV≠human: \\, thousands separator not understood"),
    # units and currency
    ("5", T + r"\boxed{5 \text{ cm}}", True, "unit in \\text"),
    ("5", T + r"\boxed{5\text{ dollars}}", True, "\\text{ dollars}"),
    ("5", T + r"\boxed{5 cm}", True, "bare unit"),
    ("5", T + r"\boxed{\$5}", True, "dollar sign in the answer"),
    (r"\$18", T + r"\boxed{18}", True, "dollar sign in the gold"),
    # percentages: math-verify accepts 10, 10% and 0.1 for each other; lenient but what the protocol does.
    (r"10\%", T + r"\boxed{10}", True, "percent gold, bare number"),
    (r"10\%", T + r"\boxed{0.1}", True, "percent gold, fraction of one"),
    ("50", T + r"\boxed{50\%}", True, "bare gold, percent answer"),
    # roots, pi, symbolic forms
    (r"3\sqrt{2}", T + r"\boxed{\sqrt{18}}", True, "equal surds"),
    (r"\sqrt{2}/2", T + r"\boxed{\frac{\sqrt{2}}{2}}", True, "surd fraction forms"),
    (r"\frac{\pi}{2}", T + r"\boxed{\pi/2}", True, "pi forms"),
    (r"\frac{\pi}{2}", T + r"\boxed{1.5708}", False, "4-decimal approximation of pi/2 is not pi/2"),
    (r"2\pi", T + r"\boxed{6.28}", False, "approximation of 2 pi"),
    (r"x^2+2x+1", T + r"\boxed{(x+1)^2}", True, "expanded vs factored polynomial"),
    # intervals, tuples, sets
    ("[0,1)", T + r"\boxed{[0, 1)}", True, "half-open interval"),
    ("[0,1)", T + r"\boxed{[0, 1]}", False, "closed vs half-open interval"),
    ("(1,2)", T + r"\boxed{\left( 1, 2 \right)}", True, "\\left( \\right)"),
    (r"\{1,2\}", T + r"\boxed{\{2,1\}}", True, "set order does not matter"),
    ("(-1, 3)", T + r"\boxed{(3, -1)}", False, "ordered pair order matters"),
    ("1,2", T + r"\boxed{1, 2}", True, "list of solutions"),
    ("12", T + r"\boxed{1, 2}", False, "1, 2 is not twelve"),
    # negative numbers
    ("-3", T + r"\boxed{-3}", True, "negative"),
    ("-3", T + r"\boxed{3}", False, "sign matters"),
    # wrong answers that look right
    ("2", T + r"\boxed{2.5}", False, "2 vs 2.5"),
    ("10", T + r"\boxed{100}", False, "10 vs 100"),
    # Decision: an assignment "x=5" answers "5" (math-verify compares the right-hand side), both ways round.
    ("5", T + r"\boxed{x=5}", True, "x=5 accepted for 5 (documented decision)"),
    ("x=5", T + r"\boxed{5}", True, "5 accepted for x=5"),
    # several boxed answers: the last one wins (see the last_boxed=False cases below for LightEval's reading)
    ("7", T + r"First \boxed{3}, then correcting myself: \boxed{7}", True, "last box wins"),
    ("3", T + r"First \boxed{3}, then correcting myself: \boxed{7}", False, "earlier box ignored"),
    # boxes inside the reasoning never count
    ("5", r"<think>maybe \boxed{4}</think> so the answer is \boxed{5}", True, "box after the think block"),
    ("4", r"<think>maybe \boxed{4}</think> so the answer is \boxed{5}", False, "box in think block ignored"),
    ("4", r"<think>maybe \boxed{4}</think> I am not sure.", False, "only a box inside the think block"),
    ("4", r"<think>so it is \boxed{4} hmm, wait", False, "unclosed think: no answer at all"),
    ("9", r"the prompt opened the think block</think> \boxed{9}", True, "close tag only (R1-style template)"),
    ("9", r"no think tags here, just \boxed{9}", True, "no tags: scored as is"),
    # nested braces
    ("2", T + r"\boxed{\sqrt{\frac{16}{4}}}", True, "nested braces"),
    # no box: math-verify's fallbacks, as in LightEval (boxed_only=True turns these off, tested below)
    ("5", T + "The answer is 5.", True, "unboxed 'answer is'"),
    ("8", T + "I computed 3 apples and 5 pears, total 8.", True, "fallback: the last number"),
    ("5", T + "I computed 3 apples and 5 pears, total 8.", False, "fallback does not pick an earlier number"),
    # multiple-choice style gold
    (r"\text{(C)}", T + r"\boxed{C}", True, "letter gold in \\text"),
    # empty
    ("5", "", False, "empty completion"),
    ("5", T, False, "nothing after the think block"),
]


def test_enough_cases():
    assert len(MATH_CASES) >= 30


@pytest.mark.parametrize(
    ("gold", "completion", "expected"),
    [c[:3] for c in MATH_CASES],
    ids=[c[3] for c in MATH_CASES],
)
def test_verify_math(gold: str, completion: str, expected: bool):
    assert verify_math(gold, completion) is expected


def test_last_boxed_false_is_math_verifys_reading():
    # LightEval hands the whole answer part to math-verify: several undelimited boxes become one set {3, 7},
    # which matches neither answer ...
    text = T + r"First \boxed{3}, then correcting myself: \boxed{7}"
    assert not verify_math("7", text, last_boxed=False)
    assert not verify_math("3", text, last_boxed=False)
    assert verify_math(r"\{3, 7\}", text, last_boxed=False)
    # ... while the same boxes inside $…$ give the last one: the inconsistency last_boxed=True avoids.
    delimited = T + r"First $\boxed{3}$, then correcting myself: $\boxed{7}$"
    assert verify_math("7", delimited, last_boxed=False)
    # "\boxed{1} and \boxed{2}" for the gold "1, 2": only the set reading gets it right.
    both = T + r"\boxed{1} and \boxed{2}"
    assert verify_math("1,2", both, last_boxed=False)
    assert not verify_math("1,2", both)


def test_boxed_only():
    assert verify_math("5", T + "The answer is 5.") is True
    assert verify_math("5", T + "The answer is 5.", boxed_only=True) is False
    assert verify_math("5", T + r"\boxed{5}", boxed_only=True) is True


def test_verify_math_off_the_main_thread():
    # math-verify's signal-based timeout raises off the main thread; verify_math must disable it, not fail.
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(verify_math(r"\frac{1}{2}", T + r"\boxed{0.5}")))
    worker.start()
    worker.join(60)
    assert results == [True]


def test_verify_math_survives_a_pathological_answer(monkeypatch):
    # A power tower makes sympy compute for ever; math-verify's timeout (signal.alarm, main thread) stops it and
    # verify_math reports "wrong" instead of hanging. Shortened to 1 s here.
    monkeypatch.setattr(scoring, "MATH_VERIFY_TIMEOUT_S", 1)
    start = time.monotonic()
    assert verify_math("2", T + r"\boxed{10^{10^{10}}}") is False
    assert time.monotonic() - start < 10


def test_strip_reasoning():
    assert strip_reasoning("<think>a</think> b ") == "b"
    assert strip_reasoning("<think>a</think>x<think>b</think> c") == "c"
    assert strip_reasoning("a</think>b") == "b"
    assert strip_reasoning("<think>never closed") == ""
    assert strip_reasoning("<think>a</think>b<think>again, unfinished") == ""
    assert strip_reasoning("plain answer") == "plain answer"
    assert strip_reasoning("") == ""


def test_extract_boxed():
    assert extract_boxed(r"\boxed{1} and \fbox{2}") == ["1", "2"]
    assert extract_boxed(r"\boxed{\frac{a}{\sqrt{b}}}") == [r"\frac{a}{\sqrt{b}}"]
    assert extract_boxed(r"\boxed{\{1,2\}}") == [r"\{1,2\}"]  # escaped braces do not close the box
    assert extract_boxed(r"\boxed {3}") == ["3"]
    assert extract_boxed(r"\boxed{unclosed {") == []
    assert extract_boxed("no box") == []


def test_math_answer():
    assert math_answer(T + r"\boxed{3} no, \boxed{\dfrac{7}{2}}") == r"\dfrac{7}{2}"
    assert math_answer(r"<think>\boxed{4}</think> none") is None
    assert math_answer(r"<think>\boxed{4}") is None
    assert math_answer(T + r"\boxed{}") is None
    assert math_answer("") is None


GPQA_CASES = [
    (T + "Answer: C", "C"),
    (T + "**Answer:** (C)", "C"),
    (T + "Answer: $C$", "C"),
    (T + "The answer is (B).", "B"),
    (T + "The final answer is B. I hope it is correct", "B"),
    (T + r"\boxed{D}", "D"),
    (T + r"$\boxed{\text{B}}$", "B"),
    (T + r"Answer: \boxed{(A)}", "A"),
    (T + "Answer: C\n\nWait, no. Answer: D", "D"),
    ("<think>Answer: A</think>\nI cannot decide.", None),  # the letter in the reasoning does not count
    ("<think>Answer: A", None),  # unfinished thinking
    (T + "Answer: E", None),  # only A-D
    (T + "Answer: Abnormal cells", None),  # a word starting with A is not a letter
    ("Answer: C", "C"),
]


@pytest.mark.parametrize(("completion", "letter"), GPQA_CASES)
def test_gpqa_letter(completion: str, letter: str | None):
    assert gpqa_letter(completion) == letter


def test_verify_gpqa():
    assert verify_gpqa("C", T + "Answer: C")
    assert verify_gpqa(" c ", T + "Answer: C")
    assert not verify_gpqa("B", T + "Answer: C")
    assert not verify_gpqa("A", "<think>Answer: A</think>")


@pytest.mark.parametrize(
    ("completion", "kwargs", "ok"),
    [
        (r"<think>steps</think> \boxed{5}", {}, True),
        (r"<think>steps</think> the answer is 5", {}, False),  # no box
        (r"<think>steps</think> the answer is 5", {"require_boxed": False}, True),
        (r"<think>steps \boxed{5}</think> done", {}, False),  # the box is inside the reasoning
        (r"<think>steps \boxed{5}", {}, False),  # never closed
        (r"<think>a</think><think>b</think> \boxed{5}", {}, False),  # two blocks
        (r"</think><think> \boxed{5}", {}, False),  # closed before opened
        (r"\boxed{5}", {}, False),  # no think block
        (r"steps</think> \boxed{5}", {}, False),
        (r"steps</think> \boxed{5}", {"prompt_opens_think": True}, True),
        (r"<think>steps</think> \boxed{}", {}, False),  # empty box
        ("", {}, False),
    ],
)
def test_format_ok(completion: str, kwargs: dict, ok: bool):
    assert format_ok(completion, **kwargs) is ok


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (8, 3, 4, 1 - 5 / 70),  # 1 - C(5,4)/C(8,4)
        (4, 0, 2, 0.0),
        (4, 4, 1, 1.0),
        (64, 64, 8, 1.0),
        (10, 9, 2, 1.0),  # n - c < k: every k-subset holds a correct sample
    ],
)
def test_pass_at_k(n: int, c: int, k: int, expected: float):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_binomials_and_rejects_nonsense():
    for n, c, k in [(16, 5, 3), (64, 20, 8), (200, 1, 100)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)
    for bad in [(4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_pass_at_1_with_se_by_hand():
    # per-problem scores 1.0, 0.5, 0.0, 0.5 -> mean 0.5; sample variance (0.25+0+0.25+0)/3 = 1/6;
    # SE = sqrt(1/6 / 4) = 0.2041241...
    matrix = [[True, True], [True, False], [False, False], [False, True]]
    mean, se = pass_at_1_with_se(matrix)
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(1 / 24))
    assert pass_at_1_with_se([[True, False, False, False]]) == (0.25, 0.0)  # one problem: no spread
    assert pass_at_1_with_se([[True], [False, True]])[0] == pytest.approx(0.75)  # ragged rows
    with pytest.raises(ValueError):
        pass_at_1_with_se([])


def test_summarize():
    rows = [[True, True, False, False], [False, False, False, False], [True, True, True, True]]
    records = [
        {
            "problem_id": f"p{p}",
            "sample_index": s,
            "correct": ok,
            "format_ok": s != 3,
            "ended_at_eos": s < 2,
            "new_tokens": 10 * (s + 1),
        }
        for p, row in enumerate(rows)
        for s, ok in enumerate(row)
    ]
    out = summarize(records[::-1])  # order does not matter
    assert out["pass@1"] == pytest.approx(0.5)  # (0.5 + 0 + 1) / 3
    assert out["pass@1_se"] == pytest.approx(math.sqrt(0.25 / 3))  # scores 0.5, 0, 1: variance 0.25
    assert set(out["pass@k"]) == {1, 2, 4}
    assert out["pass@k"][1] == pytest.approx(0.5)
    assert out["pass@k"][2] == pytest.approx((5 / 6 + 0 + 1) / 3)  # 1 - C(2,2)/C(4,2) = 5/6
    assert out["pass@k"][4] == pytest.approx((1 + 0 + 1) / 3)
    assert out["format"] == pytest.approx(0.75)
    assert out["eos"] == pytest.approx(0.5)
    assert out["truncated"] == pytest.approx(0.5)
    assert out["mean_new_tokens"] == pytest.approx(25.0)
    assert (out["n"], out["problems"], out["samples"]) == (4, 3, 12)
