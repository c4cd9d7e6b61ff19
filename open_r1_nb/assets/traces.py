"""What every embedded dataset shares: the user prompt, the ``<think>`` teacher trace, the row schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# DeepSeek-R1's recommended math prompt, which open-r1's distillation data uses.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


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


def _assert_disjoint(train: Sequence[dict[str, Any]], *evals: Sequence[dict[str, Any]]) -> None:
    seen = {row["problem"] for row in train}
    for rows in evals:
        leaked = [row["problem"] for row in rows if row["problem"] in seen]
        assert not leaked, f"{len(leaked)} evaluation problems also appear in training, e.g. {leaked[0]!r}"
    ids = [row["id"] for rows in (train, *evals) for row in rows]
    assert len(ids) == len(set(ids)), "row ids are not unique"
