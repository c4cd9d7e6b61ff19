"""Loading: read a recipe (a YAML file, a profile name or a dict), map upstream key names, apply overrides, coerce
each value to its field's type, check, and build the :class:`Recipe` (:func:`load_recipe`)."""

from __future__ import annotations

import copy
import enum
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig

from open_r1_nb import hardware, paths
from open_r1_nb.config.checks import (
    _check_evaluation,
    _check_files,
    _check_launch,
    _check_required,
    _runtime_notes,
)
from open_r1_nb.config.coerce import _coerce, _coerce_number, _describe, _Mismatch, _type_hints
from open_r1_nb.config.defaults import _fill_launch_defaults, _resolve_device
from open_r1_nb.config.errors import RecipeError, _older_gpu_hint, _short, did_you_mean, recipe_error
from open_r1_nb.config.files import available_profiles, local_path
from open_r1_nb.config.keys import _SECRET_FIELDS, DROPPED_KEYS, RENAMED_KEYS
from open_r1_nb.config.recipe import Recipe
from open_r1_nb.config.schema import (
    _FIELDS,
    _KNOWN_KEYS,
    _SECTIONS,
    PipelineArguments,
    ScriptArguments,
    SFTConfig,
    _device_setup_deferred,
    _quiet,
)

# The package's name, as before config.py became a package: the recipe notes log under it still.
logger = logging.getLogger("open_r1_nb.config")


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``["--learning_rate", "1e-4", "--report_to=none", "--bf16"]`` -> ``{"learning_rate": "1e-4", ...}``.

    Values are read as YAML scalars (``1e-4`` stays a string until the loader coerces it for a float field;
    ``[a, b]`` is a list); a flag followed by another flag, or last, is ``true``. Dashes in names become
    underscores. ``--config`` is returned like any other key: the caller pops it.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) < 3:
            raise RecipeError(
                f"Command-line override {token!r} is not a `--key value` pair. Fix: write --key value or "
                "--key=value, e.g. --learning_rate 1e-4",
                key=token,
                value=token,
                fix="--key value",
            )
        name, eq, raw = token[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                raw = argv[i + 1]
                i += 1
            else:
                raw = "true"
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out[name.replace("-", "_")] = value
        i += 1
    return out


def _read_source(source: str | os.PathLike | dict) -> tuple[dict[str, Any], Path | None, str]:
    if isinstance(source, dict):
        return copy.deepcopy(source), None, ""
    text_source = str(source)
    path = None
    if not text_source.endswith((".yaml", ".yml")) and "/" not in text_source and os.sep not in text_source:
        candidate = paths.PARAMETERS_DIR / f"{text_source}.yaml"
        path = candidate if candidate.is_file() else None
    if path is None:
        path = local_path(text_source)
    if path is None or not path.is_file():
        raise recipe_error(
            "config",
            text_source,
            "is not a recipe file (looked in the working directory and the repository root)",
            f"pass a path to a YAML recipe, or a profile name: {', '.join(available_profiles())}",
        )
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise recipe_error(
            "config", str(path), f"is not valid YAML ({exc})", "fix the YAML syntax at the line shown"
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise recipe_error(
            "config", str(path), "is not a YAML mapping of `key: value` lines", "write one key per line"
        )
    header = []
    for line in text.splitlines():
        if line.startswith(("# Resolved and validated", "# note:")):
            continue  # written by save_recipe; it writes them again
        if line.startswith("#"):
            header.append(line)
        elif line.strip() or header:
            break
    return raw, path.resolve(), "\n".join(header)


def _rename(raw: dict[str, Any], notes: list[str], where: str, origin: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise recipe_error(str(key), value, "is not a key name", "write keys as plain names", where)
        if key in DROPPED_KEYS:
            notes.append(f"{origin}`{key}: {_short(value)}` dropped: {DROPPED_KEYS[key]}.")
            continue
        if key in RENAMED_KEYS:
            new = RENAMED_KEYS[key]
            if new in raw:
                raise recipe_error(
                    key,
                    value,
                    f"is the old name of `{new}`, which is also given "
                    f"({'(hidden)' if new in _SECRET_FIELDS else repr(raw[new])})",
                    f"keep only `{new}`",
                    where,
                )
            if key == "warmup_ratio":
                ratio = _coerce_number(value)
                if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
                    raise recipe_error(
                        key,
                        value,
                        "must be a fraction in [0, 1) of the training steps",
                        "write warmup_ratio: 0.03, or warmup_steps: <number of steps>",
                        where,
                    )
                value = ratio
                notes.append(
                    f"{origin}`warmup_ratio: {value}` read as `warmup_steps: {value}` (transformers 5 removed "
                    "warmup_ratio; a warmup_steps below 1 is a fraction of the training steps)."
                )
            else:
                notes.append(f"{origin}`{key}` read as `{new}` (renamed upstream, same meaning).")
            out[new] = value
            continue
        out[key] = value
    return out


def _resolve_sections(raw: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    kwargs: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for key, value in raw.items():
        owners = [section for section in _SECTIONS if key in _FIELDS[section]]
        if not owners:
            raise recipe_error(
                key,
                value,
                f"is not a recipe key{did_you_mean(key, _KNOWN_KEYS)}",
                "use a field of trl's ModelConfig, ScriptArguments, SFTConfig (with open-r1's extras) or the "
                f"pipeline keys {', '.join(_FIELDS['pipeline'])}; remove the line if it is not needed",
                where,
            )
        for section in owners:
            kwargs[section][key] = _check_value(section, key, value, where)
    return kwargs


def _check_value(section: str, key: str, value: Any, where: str) -> Any:
    f = _FIELDS[section][key]
    tp = _type_hints(_SECTIONS[section])[key]
    try:
        value = _coerce(value, tp)
    except _Mismatch:
        expected = _describe(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and any(
            isinstance(a, type) and issubclass(a, enum.Enum) for a in typing.get_args(tp)
        ):
            choices = [
                m.value
                for a in typing.get_args(tp)
                if isinstance(a, type) and issubclass(a, enum.Enum)
                for m in a
            ]
            hint = did_you_mean(str(value), choices)
            raise recipe_error(
                key, value, f"is not a valid value{hint}", f"use one of: {', '.join(choices)}", where
            ) from None
        example = {"a number": "a number such as 4.0e-05", "an integer": "a whole number such as 8"}.get(
            expected, expected
        )
        raise recipe_error(
            key, value, f"has the wrong type: `{key}` takes {expected}", f"write {example}", where
        ) from None
    choices = f.metadata.get("choices")
    if choices is not None and value is not None:
        allowed = list(choices)
        if value not in allowed:
            raise recipe_error(
                key,
                value,
                f"is not a valid value{did_you_mean(str(value), allowed)}",
                f"use one of: {', '.join(map(str, allowed))}",
                where,
            )
    return value


def _apply_cpu_fp32_overrides(data: dict[str, Any], notes: list[str], where: str) -> None:
    """``cpu_fp32_overrides``: where a CPU recipe asks for bf16 and this CPU has no bf16 units (so it will train
    in fp32), the listed keys replace the recipe's, and a note says which."""
    overrides = data.get("cpu_fp32_overrides")
    if overrides is None:
        return
    if not isinstance(overrides, dict) or "cpu_fp32_overrides" in overrides:
        raise recipe_error(
            "cpu_fp32_overrides",
            overrides,
            "is not a mapping of recipe keys to values",
            "write it as a mapping, e.g. cpu_fp32_overrides: {freeze_layers: 15}",
            where,
        )
    # Only real booleans count, as when the keys are checked (a string "true" is refused there).
    if not (data.get("bf16") is True and data.get("use_cpu") is True) or hardware.cpu_supports_bf16():
        return
    renamed = _rename(dict(overrides), notes, where, "cpu_fp32_overrides ")
    changed = {k: v for k, v in renamed.items() if data.get(k) != v}
    data.update(renamed)
    listed = ", ".join(f"{k}: {v}" for k, v in changed.items()) or "nothing to change"
    notes.append(f"no bf16 units on this CPU, so training runs in fp32: cpu_fp32_overrides apply ({listed}).")


def load_recipe(
    source: str | os.PathLike | dict,
    overrides: dict[str, Any] | None = None,
    check_files: bool = True,
    *,
    setup_devices: bool = False,
    gpu_count: int | None = None,
    device_choice: Any = None,
) -> Recipe:
    """Read, map, check and build a recipe.

    ``source`` is a YAML path, a profile name (``"smoke"`` -> ``parameters/smoke.yaml``) or a dict; ``overrides``
    (e.g. from :func:`parse_overrides`) replace keys after the file is read. With ``check_files`` a local model
    folder must exist and its tokenizer load and contain ``eos_token``; local chat templates and dataset folders
    must exist. Hub ids are not checked. ``setup_devices=True`` (the training process) runs
    ``TrainingArguments``' hardware checks and device setup; the default defers them (see the module docstring).

    open-r1's recipes name neither a run nor a launcher: a missing ``run_name`` is taken from ``hub_model_id``,
    ``output_dir`` or the file name, and a missing ``accelerate_config`` from the hardware
    (:func:`default_accelerate_config`; ``gpu_count`` stands in for the GPUs this machine has), each with a note.
    ``device: auto`` picks CUDA, MPS or the CPU (``device_choice``, an ``open_r1_nb.hardware.DeviceChoice``, stands
    in for the detection).
    """
    raw, path, header = _read_source(source)
    where = f"recipe {path}" if path else "recipe"
    notes: list[str] = []
    data = _rename(raw, notes, where, "")
    before: dict[str, Any] = {}
    if overrides:
        changed = _rename(dict(overrides), notes, where, "override ")
        for key, value in changed.items():
            before[key] = data.get(key, "(not set)")
            data[key] = value
    _resolve_device(data, notes, device_choice)
    _apply_cpu_fp32_overrides(data, notes, where)
    _fill_launch_defaults(data, path, notes, gpu_count)
    kwargs = _resolve_sections(data, where)
    for key, old in before.items():
        new = next(kw[key] for kw in kwargs.values() if key in kw)
        if key in _SECRET_FIELDS:  # notes are printed and written into recipe.yaml's header
            old, new = ("(hidden)" if v not in (None, "(not set)") else v for v in (old, new))
        if old != new:
            notes.append(f"override `{key}`: {_short(old)} -> {_short(new)}.")
    _check_required(kwargs, where)
    _check_launch(kwargs, notes, where)

    try:
        model = ModelConfig(**kwargs["model"])
        script = ScriptArguments(**kwargs["script"])
        pipeline = PipelineArguments(**kwargs["pipeline"])
        with _device_setup_deferred(not setup_devices), _quiet():
            training = SFTConfig(**kwargs["training"])
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}", exc.key, exc.value, exc.fix) from None
    except (ValueError, TypeError) as exc:
        message = str(exc)
        key = next((k for k in sorted(data, key=len, reverse=True) if k in message), None)
        raise RecipeError(
            f"{where}: transformers/trl refused the recipe{f' (key `{key}`)' if key else ''}: {message}. Fix: change "
            "the key the message names"
            + (" (the hardware checks ran because setup_devices=True)" if setup_devices else "")
            + ("." + _older_gpu_hint(message) if _older_gpu_hint(message) else ""),
            key=key,
            value=data.get(key) if key else None,
            fix="change the key the message names",
        ) from exc

    recipe = Recipe(
        script=script,
        training=training,
        model=model,
        pipeline=pipeline,
        source=path,
        notes=notes,
        given_keys=list(data),
        header=header,
    )
    _check_evaluation(recipe, where)
    if check_files:
        _check_files(recipe, notes, where)
    _runtime_notes(recipe, notes)
    for note in notes:
        logger.info("recipe: %s", note)
    return recipe
