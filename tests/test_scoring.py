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
    # no box: an explicit final statement counts (boxed_only=True turns these off, tested below); LightEval's
    # reading differs here, see RULE_CASES
    ("5", T + "The answer is 5.", True, "unboxed 'answer is'"),
    ("12", T + "**Answer:** 12", True, "markdown 'Answer:'"),
    ("1333", T + "Adding the columns: 617 + 716 = 1333.", True, "a last line ending in '= 1333'"),
    ("8", T + "I computed 3 apples and 5 pears, total 8.", False, "no explicit statement (LightEval: right)"),
    ("5", T + "I computed 3 apples and 5 pears, total 8.", False, "an earlier number is not the answer"),
    # multiple-choice style gold
    (r"\text{(C)}", T + r"\boxed{C}", True, "letter gold in \\text"),
    # empty
    ("5", "", False, "empty completion"),
    ("5", T, False, "nothing after the think block"),
]


# Where the rules differ: (gold, question, completion, {rule: verdict}, why). "lighteval" is LightEval's reading,
# checked against math-verify 0.9.0; "stated" the default; "number" the embedded local splits' rule.
ARITHMETIC_Q = "What is 617 + 716?\n\nPlease reason step by step, and put your final answer within \\boxed{}."
RULE_CASES = [
    # The demo's base-model sample that LightEval's fallback credited: it never states a result; math-verify
    # evaluates the last expression it finds, 617 + 716 = 1333, the gold.
    (
        "1333",
        ARITHMETIC_Q,
        "To find the sum, the calculation of 617 + 716 is a recursive process that involves adding the digits",
        {"lighteval": True, "stated": False, "number": False},
        "restated question, no result (the demo's case)",
    ),
    (
        "1333",
        ARITHMETIC_Q,
        T + "The answer is 617 + 716.",
        {"lighteval": True, "stated": False, "number": False},
        "an expression copied from the question, stated",
    ),
    (
        "1333",
        ARITHMETIC_Q,
        T + r"The answer is $\boxed{617+716}$.",
        {"lighteval": True, "stated": False, "number": False},
        "an expression copied from the question, boxed",
    ),
    (
        "1333",
        "Compute 617 × 716.",
        T + r"\boxed{617 \times 716}",
        {"lighteval": False, "stated": False, "number": False},
        "x and \\times are the same copied operation (and it is not 1333)",
    ),
    (
        "1333",
        ARITHMETIC_Q,
        T + "617 + 716 = 1333",
        {"lighteval": True, "stated": True, "number": True},
        "the sum carried out to its result",
    ),
    (
        "1333",
        ARITHMETIC_Q,
        T + "The answer is 1,333.",
        {"lighteval": True, "stated": True, "number": True},
        "a stated number with a thousands separator",
    ),
    (
        "1333",
        ARITHMETIC_Q,
        T + "Adding the units, then the tens: 1333 is what I get, maybe 1323",
        {"lighteval": False, "stated": False, "number": False},
        "numbers in passing, none stated",
    ),
    (
        "8",
        "Tom has 3 apples and 5 pears. How many fruits?",
        T + "I computed 3 apples and 5 pears, total 8.",
        {"lighteval": True, "stated": False, "number": False},
        "the last number in prose: LightEval takes it, the stated rule does not",
    ),
    (
        "18",
        "Janet sells 16 - 3 - 4 eggs at $2 each. How much does she make?",
        T + "She sells 9 eggs, so the answer is 9 * 2 = 18 dollars.",
        {"lighteval": True, "stated": True, "number": True},
        "a statement ending in '= 18 dollars'",
    ),
    (
        "18",
        "Janet sells 16 - 3 - 4 eggs at $2 each. How much does she make?",
        T + r"The answer is $\boxed{\$18}$.",
        {"lighteval": True, "stated": True, "number": True},
        "boxed with a dollar sign",
    ),
    (
        "5",
        "What is 10 / 2?",
        T + r"\boxed{10/2}",
        {"lighteval": True, "stated": False, "number": False},
        "a copied division",
    ),
    (
        "0.5",
        "What is one half as a number?",
        T + r"\boxed{\frac{1}{2}}",
        {"lighteval": True, "stated": True, "number": False},
        "number rule: a fraction is not a stated number",
    ),
    (
        "12",
        "What is 3 times 4?",
        T + r"\boxed{12} wait, no: \boxed{3 \cdot 4}",
        {"lighteval": True, "stated": True, "number": False},
        "the last box is an expression not in the question: math-verify evaluates it, the number rule does not",
    ),
]


@pytest.mark.parametrize(
    ("gold", "question", "completion", "verdicts"),
    [c[:4] for c in RULE_CASES],
    ids=[c[4] for c in RULE_CASES],
)
def test_the_rules_on_stated_and_unstated_answers(gold, question, completion, verdicts):
    for rule, expected in verdicts.items():
        assert verify_math(gold, completion, question=question, rule=rule) is expected, rule


def test_score_math_returns_the_answer_it_read():
    assert scoring.score_math("1333", T + "So 617 + 716 = 1333.", rule="number") == ("1333", True)
    assert scoring.score_math("1333", T + "The answer is 617 + 716.", question=ARITHMETIC_Q) == (None, False)
    # A copied box is shown as what the model boxed, and judged wrong.
    assert scoring.score_math("1333", T + r"\boxed{617 + 716}", question=ARITHMETIC_Q) == ("617 + 716", False)
    with pytest.raises(ValueError, match="unknown maths rule 'strict'"):
        scoring.score_math("1", T + r"\boxed{1}", rule="strict")


@pytest.mark.parametrize(
    ("completion", "question", "answer"),
    [
        (T + r"First \boxed{3}, then \boxed{7}", None, "7"),
        (T + "The final answer is 42. I hope it is correct.", None, "42"),
        (T + "Answer: 3.5\nDone", None, "3.5"),
        (T + "So x = 12.", None, "12"),
        (T + "The sum of 2 and 3 is five.", None, None),
        (T + "The answer is 2 + 3.", "What is 2+3?", None),
        (T + "The answer is 2 + 3.", "What is 2 + 4?", "2 + 3"),  # not the question's expression
        (T + "The answer is 5.", "What is 2 + 3 + 5?", "5"),  # a lone number is an answer even if quoted
        ("<think>the answer is 4", None, None),  # unfinished thinking states nothing
    ],
)
def test_stated_answer(completion, question, answer):
    assert scoring.stated_answer(completion, question) == answer


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1,333", 1333.0),
        (r"\$12.50", 12.5),
        ("5 apples", 5.0),
        (r"5 \text{ cm}", 5.0),
        ("x = -7", -7.0),
        ("617 + 716 = 1333", 1333.0),
        ("617 + 716", None),
        ("1/2", None),
        ("five", None),
    ],
)
def test_final_number(text, number):
    assert scoring.final_number(text) == number


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


# --------------------------------------------------------------------------------------------------------------
# The rule each benchmark uses, and re-scoring saved samples
# --------------------------------------------------------------------------------------------------------------


def test_each_benchmark_has_a_rule():
    from open_r1_nb.evaluate.benchmarks import BENCHMARKS

    rules = {name: b.math_rule for name, b in BENCHMARKS.items() if b.kind == "math"}
    assert rules == {
        "aime24": "stated",
        "math_500": "stated",
        "gsm_symbolic_variant": "number",
        "gsm_symbolic_template": "number",
        "arithmetic": "number",
        "smoke": "number",
    }


def test_score_sample_reads_the_question_from_the_prompt():
    from open_r1_nb.evaluate.benchmarks import Problem
    from open_r1_nb.evaluate.runner import score_sample

    problem = Problem("a-1", [{"role": "user", "content": ARITHMETIC_Q}], "1333", "math")
    copied = T + "The answer is 617 + 716."
    assert score_sample(problem, copied, "lighteval") == (None, True)
    assert score_sample(problem, copied, "stated") == (None, False)
    assert score_sample(problem, T + r"\boxed{1333}", "number") == ("1333", True)


def test_an_unknown_rule_stops_before_generation(tmp_path):
    from open_r1_nb.evaluate.runner import EvalSettings, evaluate_many

    with pytest.raises(ValueError, match="math_rule 'strict'"):
        evaluate_many(tmp_path / "no-model", ["smoke"], tmp_path, EvalSettings(math_rule="strict"))


def _save_samples(out_dir, benchmark: str, label: str, problems, completions, rule: str) -> None:
    """Samples written exactly as the runner writes them, scored under ``rule``."""
    from types import SimpleNamespace

    from open_r1_nb.evaluate import runner

    outputs = [
        [SimpleNamespace(text=t, new_tokens=9, ended_at_eos=True) for t in texts] for texts in completions
    ]
    records = runner._score(problems, outputs, rule)
    runner._write(out_dir, benchmark, label, records, scoring.summarize(records))


@pytest.fixture
def saved_runs(tmp_path):
    """Two runs with saved samples scored under LightEval's reading (what the evaluation wrote before)."""
    from open_r1_nb.evaluate.benchmarks import Problem

    def problem(i, a, b):
        question = (
            f"What is {a} + {b}?\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
        )
        return Problem(f"arith-{i}", [{"role": "user", "content": question}], str(a + b), "math")

    problems = [problem(0, 617, 716), problem(1, 120, 35), problem(2, 401, 99)]
    base = [
        [
            "the calculation of 617 + 716 is a recursive process",
            T + "The answer is 1333.",
        ],  # right -> wrong, =
        [
            "I think the answer is 120 + 35.",
            "155",
        ],  # copied: right -> wrong; a lone number is stated
        [T + r"\boxed{500}", T + r"\boxed{499}"],  # unchanged
    ]
    tuned = [[T + r"\boxed{1333}", T + r"\boxed{1,333}"], [T + "= 155", T + "155."], [T + r"\boxed{500}"] * 2]
    _save_samples(tmp_path / "demo" / "eval", "arithmetic", "base", problems, base, "lighteval")
    _save_samples(tmp_path / "demo" / "eval", "arithmetic", "demo", problems, tuned, "lighteval")
    _save_samples(tmp_path / "long" / "eval", "arithmetic", "base", problems[:1], base[:1], "lighteval")
    gpqa = tmp_path / "demo" / "eval" / "gpqa_diamond"
    gpqa.mkdir(parents=True)
    (gpqa / "base.jsonl").write_text('{"problem_id": "g", "gold": "A", "completion": "A", "correct": true}\n')
    return tmp_path


def test_rescore_counts_the_verdicts_that_change(saved_runs):
    from open_r1_nb.evaluate.rescore import rescore

    results = {(r.run, r.model): r for r in rescore(saved_runs)}
    assert set(results) == {("demo", "base"), ("demo", "demo"), ("long", "base")}  # GPQA has no maths rule
    base = results[("demo", "base")]
    assert (base.old_rule, base.new_rule, base.samples, base.problems) == ("lighteval", "number", 6, 3)
    assert base.correct_saved == base.correct_old == 5  # the file's own verdicts, re-derived
    assert base.correct_new == 3 and (base.gained, base.lost) == (0, 2)
    assert sorted((c.problem_id, c.sample_index) for c in base.changed) == [("arith-0", 0), ("arith-1", 0)]
    assert "617 + 716 is a recursive process" in base.changed[0].tail
    tuned = results[("demo", "demo")]
    assert tuned.correct_old == tuned.correct_new == 6 and tuned.changed == []
    assert (results[("long", "base")].lost, results[("long", "base")].samples) == (1, 2)
    stated = {(r.run, r.model): r for r in rescore(saved_runs, "lighteval", "stated", runs=["demo"])}
    assert set(stated) == {("demo", "base"), ("demo", "demo")}
    assert stated[("demo", "base")].lost == 2 and stated[("demo", "base")].new_rule == "stated"


def test_rescore_script_prints_the_changes(saved_runs, capsys):
    import importlib.util

    from open_r1_nb import paths

    spec = importlib.util.spec_from_file_location(
        "rescore_script", paths.REPO_ROOT / "scripts" / "rescore.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--runs-root", str(saved_runs), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrong -> right" in out and "right -> wrong" in out
    assert "3 of 14 verdicts change." in out
    assert "demo / arithmetic / base: problem arith-0 sample 0, gold '1333': lighteval right" in out
