"""``data/arithmetic/``: column-addition and partial-product traces written by code (the smoke data's too)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from open_r1_nb.assets.cache import _cached_build, _write_jsonl
from open_r1_nb.assets.traces import _assert_disjoint, make_row
from open_r1_nb.paths import cache_dir

ARITHMETIC_FORMAT = 2  # 2: addition traces carry the result so far
ARITHMETIC_KINDS = ("add_3d_3d", "mul_3d_1d", "mul_2d_2d")

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
