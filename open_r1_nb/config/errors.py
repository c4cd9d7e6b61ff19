"""Recipe errors: :class:`RecipeError`, and the one way its messages name the key, the value and the fix (a token
never shown)."""

from __future__ import annotations

import difflib
from typing import Any

from open_r1_nb.config.keys import _SECRET_FIELDS, RENAMED_KEYS


class RecipeError(ValueError):
    """A recipe that cannot run. The message names the key, the value and the fix."""

    def __init__(self, message: str, key: str | None = None, value: Any = None, fix: str | None = None):
        super().__init__(message)
        self.key, self.value, self.fix = key, value, fix


def recipe_error(key: str, value: Any, problem: str, fix: str, where: str = "") -> RecipeError:
    # A token is never shown: errors are printed, logged and kept in executed notebooks.
    secret = key in _SECRET_FIELDS or RENAMED_KEYS.get(key) in _SECRET_FIELDS
    shown = "(hidden)" if secret else _short(value)
    prefix = f"{where}: " if where else ""
    return RecipeError(f"{prefix}`{key}: {shown}` {problem}. Fix: {fix}", key=key, value=value, fix=fix)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text)} chars)"


def did_you_mean(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _older_gpu_hint(message: str) -> str:
    """What to do on a GPU that transformers refuses bf16 on: fp16 mixed precision, which those GPUs have."""
    if "support bf16" not in message:
        return ""
    return (
        " On a GPU without bf16 (older than Ampere: V100, T4), train in fp16 instead: bf16: false and fp16: true "
        "(scripts/run_pipeline.py … --set bf16=false --set fp16=true)."
    )
