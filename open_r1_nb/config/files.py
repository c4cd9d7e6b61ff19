"""Files a recipe names: accelerate configs, profiles, local paths and chat templates (inline Jinja or a ``.jinja``
path), and the ChatML template a tokenizer without one gets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from open_r1_nb import paths
from open_r1_nb.config.errors import recipe_error

ACCELERATE_DIR = paths.PARAMETERS_DIR / "accelerate"


#: The chat template a tokenizer without one gets (the model step applies it).
CHATML_TEMPLATE = (Path(__file__).parent / "chatml.jinja").read_text()


def available_accelerate_configs() -> list[str]:
    """Names of the accelerate configs shipped in ``parameters/accelerate/``."""
    return sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml"))


def available_profiles() -> list[str]:
    """Names of the profiles in ``parameters/`` (``smoke``, ``cpu_demo``, ...)."""
    return sorted(p.stem for p in paths.PARAMETERS_DIR.glob("*.yaml"))


def accelerate_config_path(name_or_path: str) -> Path:
    """The accelerate config file a recipe's ``accelerate_config`` names: a name in ``parameters/accelerate/``
    (``zero3``) or a path to a YAML file. Raises :class:`RecipeError` listing the names when it is missing."""
    value = str(name_or_path)
    is_path = "/" in value or os.sep in value or value.endswith((".yaml", ".yml"))
    found = paths.resolve_local(value) if is_path else ACCELERATE_DIR / f"{value}.yaml"
    if found is None or not Path(found).is_file():
        raise recipe_error(
            "accelerate_config",
            value,
            "names no accelerate config file"
            + ("" if is_path else f" ({ACCELERATE_DIR}/{value}.yaml is absent)"),
            f"use one of {', '.join(available_accelerate_configs())} (files in parameters/accelerate/), "
            "or a path to an accelerate config YAML",
        )
    return Path(found)


def read_accelerate_config(name_or_path: str) -> dict[str, Any]:
    """The accelerate config as a dict."""
    path = accelerate_config_path(name_or_path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise recipe_error(
            "accelerate_config",
            str(name_or_path),
            f"points to {path}, which is not a YAML mapping",
            "use a config written by `accelerate config` or one of parameters/accelerate/",
        )
    return data


def _looks_local(value: str) -> bool:
    """A path rather than a Hub id (``org/name``): absolute, relative with ./ or ~, or two or more levels deep."""
    return value.startswith((".", "/", "~")) or value.count("/") >= 2 or "\\" in value


def local_path(value: str | os.PathLike) -> Path | None:
    """Where a recipe path points on disk, or None (then it is a Hub id); see :func:`paths.resolve_local`."""
    return paths.resolve_local(value)


def _is_template_path(value: str) -> bool:
    return "\n" not in value and value.strip().endswith((".jinja", ".j2"))


def resolve_chat_template(value: str | None) -> str | None:
    """The Jinja text of a recipe's ``chat_template``: read from the file when it is a ``.jinja`` path."""
    if value is None or not _is_template_path(value):
        return value
    found = local_path(value.strip())
    if found is None or not found.is_file():
        raise recipe_error(
            "chat_template",
            value,
            "is a template path that does not exist (looked in the working directory and the repository root)",
            "point to an existing file such as parameters/chat_templates/openr1_qwen.jinja, or inline the template",
        )
    return found.read_text()
