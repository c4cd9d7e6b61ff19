"""Keeping secrets out of what a launch shows: the values of secret-looking environment variables and command-line
options, found and replaced with ``***``.

Every line a training launch streams goes through ``redact`` before it reaches ``train.log``, the notebook's output
or an error message, and so does the command line itself; ``without_secret_arguments`` drops a token from a command
that needs none (the evaluation after training). ``open_r1_nb.launch`` is the main user and re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

# Names whose values must never reach a log or a notebook output.
_SECRET_NAME = re.compile(r"(^HF_TOKEN$|^WANDB_API_KEY$|_TOKEN$|_KEY$|_SECRET$|PASSWORD)", re.IGNORECASE)
# Shorter values are too likely to occur by chance ("1", "true") to be replaced everywhere.
_MIN_SECRET_LEN = 5
# Command-line options whose values are secrets (``--hub_token hf_...``, ``--set hub_token=hf_...``). Narrower than
# the environment's names: ``--eos_token``/``--pad_token`` name tokens of a vocabulary, which must stay readable.
_SECRET_OPTION = re.compile(
    r"^(hub_token|token|hf_token|wandb_api_key|api_key|\w+_api_key|\w+_secret|\w*password)$", re.IGNORECASE
)


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of the variables whose names look secret, longest first (so overlapping values redact fully)."""
    values = {v for k, v in env.items() if _SECRET_NAME.search(k) and v and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def _secret_option(arg: str) -> tuple[bool, str | None]:
    """(whether ``arg`` is a secret option, its value when given in the same argument)."""
    name, eq, value = arg.lstrip("-").partition("=")
    if not _SECRET_OPTION.match(name.replace("-", "_")) or (not eq and not arg.startswith("-")):
        return False, None
    return True, value if eq else None


def secret_arguments(args: Sequence[str]) -> list[str]:
    """Values of secret options on a command line: ``--hub_token X``, ``--hub_token=X`` and ``hub_token=X`` (the
    runner's ``--set``). Only environment values were redacted before; a token typed as an argument is as secret."""
    values = set()
    for i, arg in enumerate(args):
        secret, value = _secret_option(str(arg))
        if secret and value is None and i + 1 < len(args) and not str(args[i + 1]).startswith("--"):
            value = str(args[i + 1])
        if secret and value and len(value) >= _MIN_SECRET_LEN:
            values.add(value)
    return sorted(values, key=len, reverse=True)


def without_secret_arguments(args: Sequence[str]) -> list[str]:
    """``args`` without its secret options and their values (for a command that needs none of them)."""
    out, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        secret, value = _secret_option(str(arg))
        if secret:
            skip = value is None and i + 1 < len(args) and not str(args[i + 1]).startswith("--")
            continue
        out.append(arg)
    return out


def redact(text: str, env: Mapping[str, str] | Iterable[str]) -> str:
    """Replace every secret value (from an env mapping, or a list of values) in ``text`` with ``***``."""
    values = secret_values(env) if isinstance(env, Mapping) else env
    for v in values:
        text = text.replace(v, "***")
    return text
