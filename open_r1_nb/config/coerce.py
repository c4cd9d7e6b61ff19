"""Types: check and coerce a recipe value against its field's annotation (``"4e-5"`` is a float, an enum may be
spelled as a string, one value is a list of one, ...)."""

from __future__ import annotations

import contextlib
import enum
import functools
import re
import types
import typing
from typing import Any, Literal

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce_number(value: Any) -> Any:
    """'4e-5' -> 4e-05: YAML 1.1 reads exponents without a dot as strings."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if re.match(r"^[+-]?\d+$", value.strip()) else number
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` where that is unambiguous, or raise _Mismatch."""
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str) and str in args:
            # `SchedulerType | str` means "a SchedulerType, possibly spelled as a string".
            for e in enums:
                with contextlib.suppress(ValueError):
                    return e(value).value
            raise _Mismatch
        # Try the strict arms first so that "4e-5" becomes a float where a float is allowed.
        order = sorted((a for a in args if a is not type(None)), key=lambda a: a is str)
        for arm in order:
            with contextlib.suppress(_Mismatch):
                return _coerce(value, arm)
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        value = _coerce_number(value)
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        value = _coerce_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value.value
        try:
            return tp(value).value
        except ValueError:
            raise _Mismatch from None
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is list or tp is list:
        (item,) = typing.get_args(tp) or (Any,)
        items = value if isinstance(value, (list, tuple)) else [value]  # `--benchmarks aime24` -> [aime24]
        if isinstance(value, dict):
            raise _Mismatch
        return [_coerce(v, item) for v in items]
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value
