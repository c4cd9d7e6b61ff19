"""The code sandbox: grading, limits (time, memory, output), a clean environment, and code extraction."""

from __future__ import annotations

import resource
import time

import pytest

from open_r1_nb.evaluate.sandbox import extract_code, outputs_match, run_tests

ADD_TESTS = [
    {"input": "1 2\n", "output": "3\n"},
    {"input": "5 7\n", "output": "12"},
    {"input": "-4 4\n", "output": "0\n"},
]
ADD = "a, b = map(int, input().split())\nprint(a + b)\n"


def test_correct_solution_passes():
    result = run_tests(ADD, ADD_TESTS)
    assert result.passed and result.status == "passed"
    assert (result.passed_tests, result.total_tests) == (3, 3)


def test_wrong_solution_fails_and_counts():
    # Always printing 3 is right on the first test only.
    result = run_tests("input()\nprint(3)\n", ADD_TESTS, fail_fast=False)
    assert not result.passed and result.status == "failed"
    assert (result.passed_tests, result.total_tests) == (1, 3)
    assert "test 1" in result.detail and "wrong answer" in result.detail
    # fail_fast (the default, as LiveCodeBench) stops at the first failure.
    result = run_tests("input()\nprint(3)\n", ADD_TESTS)
    assert (result.status, result.passed_tests) == ("failed", 1)


def test_stdout_comparison_like_livecodebench():
    assert outputs_match("3  \n4\n\n", "3\n4")  # trailing spaces and blank lines
    assert outputs_match(" 1 2 \n", "1 2")
    assert outputs_match("1.0\n", "1")  # numeric fallback, token by token
    assert not outputs_match("1 2", "1\n2")
    assert not outputs_match("YES", "yes")


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_tests("while True:\n    pass\n", ADD_TESTS, time_limit_s=1.0)
    elapsed = time.monotonic() - start
    assert result.status == "timeout" and not result.passed
    assert result.passed_tests == 0
    assert elapsed < 1.0 + 2.0, elapsed


def test_sleeping_program_times_out_on_the_wall_clock():
    # No CPU used, so only the wall-clock timeout can catch it.
    start = time.monotonic()
    result = run_tests("import time\ntime.sleep(60)\n", ADD_TESTS, time_limit_s=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(4 * 1024**3)\nprint(len(x))\n",  # one 4 GB allocation
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n",  # grows until the limit
    ],
    ids=["4GB-at-once", "gradual"],
)
def test_memory_hog_is_reported_and_contained(code: str):
    before = resource.getrlimit(resource.RLIMIT_AS)
    start = time.monotonic()
    result = run_tests(code, ADD_TESTS, memory_limit_mb=256)
    assert result.status == "memory", result
    assert time.monotonic() - start < 5.0
    # The limit lived in the child only: this process can still allocate, with its limits unchanged.
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert len(bytearray(300 * 2**20)) == 300 * 2**20


def test_exception_is_an_error():
    result = run_tests("raise ValueError('boom')\n", ADD_TESTS)
    assert result.status == "error" and not result.passed
    assert "ValueError: boom" in result.detail


def test_syntax_error_and_crash_are_errors():
    assert run_tests("def f(:\n", ADD_TESTS).status == "error"
    crash = run_tests("import ctypes\nctypes.string_at(0)\n", ADD_TESTS)  # segfault in the child
    assert crash.status == "error" and "signal" in crash.detail


def test_exit_after_printing_is_fine():
    assert run_tests(ADD + "exit(0)\n", ADD_TESTS).passed
    assert run_tests("import sys\n" + ADD + "sys.exit(1)\n", ADD_TESTS).passed  # as LiveCodeBench


def test_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "dummy-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "dummy-secret-2")
    # The child checks its own environment; it passes only if no secret reached it.
    code = (
        "import os\n"
        "print('HF_TOKEN' in os.environ, 'OPENAI_API_KEY' in os.environ)\n"
        "print(any('dummy-secret' in v for v in os.environ.values()))\n"
    )
    result = run_tests(code, [{"input": "", "output": "False False\nFalse"}])
    assert result.passed, result


def test_output_is_capped():
    result = run_tests("while True:\n    print('x' * 10000)\n", ADD_TESTS, max_output_mb=1, time_limit_s=3.0)
    assert result.status == "error" and "output limit" in result.detail


def test_prelude_and_deep_recursion():
    # LeetCode-style code uses List and gcd without importing them; LiveCodeBench's prelude provides them.
    code = (
        "import sys, threading\n"
        "def depth(n: int) -> int:\n"
        "    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "def main():\n"
        "    xs: List[int] = [gcd(12, 18)]\n"
        "    print(xs[0], depth(int(input())))\n"
        "threading.stack_size(2**26)\n"
        "t = threading.Thread(target=main)\n"
        "t.start()\n"
        "t.join()\n"
    )
    result = run_tests(code, [{"input": "20000", "output": "6 20000"}])
    assert result.passed, result


TWO_SUM = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        print("debug output must not break grading")
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)  # a tuple compares as a list, as in LiveCodeBench
            seen[x] = i
"""
TWO_SUM_TESTS = [
    {"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"},
    {"input": "[3,2,4]\n6", "output": "[1,2]", "testtype": "functional"},
    {"input": "[3,3]\n6", "output": "[0,1]", "testtype": "functional"},
]


def test_call_mode_class_solution():
    result = run_tests(TWO_SUM, TWO_SUM_TESTS, mode="call", fn_name="twoSum")
    assert result.passed and result.passed_tests == 3, result


def test_call_mode_module_function_and_wrong_answer():
    code = "def add(a, b):\n    return a + b if a != 10 else a - b\n"
    tests = [
        {"input": "1\n2", "output": "3"},
        {"input": "[1]\n[2]", "output": "[1, 2]"},
        {"input": "10\n1", "output": "11"},
    ]
    result = run_tests(code, tests, mode="call", fn_name="add", fail_fast=False)
    assert (result.status, result.passed_tests) == ("failed", 2)
    missing = run_tests(code, tests, mode="call", fn_name="subtract")
    assert missing.status == "error" and "subtract" in missing.detail
    with pytest.raises(ValueError):
        run_tests(code, tests, mode="call")


def test_nothing_to_run():
    assert run_tests(None, ADD_TESTS).status == "error"
    assert run_tests("   ", ADD_TESTS).status == "error"
    assert run_tests(ADD, []).status == "error"


def test_extract_code_takes_the_last_python_block_outside_the_reasoning():
    completion = (
        "<think>Draft:\n```python\nprint('draft in the reasoning')\n```\nhmm</think>\n"
        "First attempt:\n```python\nprint(1)\n```\n"
        "Better:\n```python\nprint(2)\n```\n"
        "Sample output:\n```\n2\n```\n"
    )
    assert extract_code(completion) == "print(2)\n"
    assert extract_code("<think>```python\nprint(0)\n```</think> no code") is None
    assert extract_code("<think>```python\nprint(0)\n```") is None  # unfinished thinking
    assert extract_code("```py\nx = 1\n```") == "x = 1\n"
    assert extract_code("```\nx = 2\n```") == "x = 2\n"  # untagged, when nothing is tagged python
    assert extract_code("```cpp\nint main(){}\n```") is None
    assert extract_code("```python\nprint('truncated'") is None
