"""What the loader fills in: ``run_name`` and ``accelerate_config`` when an open-r1 recipe leaves them out, and
``device: auto`` (train where the hardware is best), each with a note."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from open_r1_nb.config.coerce import _coerce_number
from open_r1_nb.config.files import available_accelerate_configs, read_accelerate_config


def gpu_count() -> int:
    """CUDA devices this process sees (0 without CUDA); what :func:`default_accelerate_config` reads."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_accelerate_config(gpus: int, num_processes: int | None = None) -> tuple[str, str]:
    """The accelerate config (a name in ``parameters/accelerate/``) that ``gpus`` GPUs imply, and why, in words.

    open-r1 launches its SFT recipes with ZeRO-3 on a node of several GPUs; one GPU needs no sharding; without a GPU
    the CPU configs apply, one process (``cpu_1proc``) unless the recipe asks for more (``cpu_2proc``).
    """
    if gpus >= 2:
        return "zero3", f"{gpus} GPUs here: DeepSpeed ZeRO-3, as open-r1 launches its SFT recipes"
    if gpus == 1:
        return "single_gpu", "one GPU here: one process, no sharding"
    if num_processes is not None and num_processes >= 2:
        return "cpu_2proc", f"no GPU here and num_processes: {num_processes}: CPU ranks (gloo)"
    return "cpu_1proc", "no GPU here: one CPU process using every core"


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _default_run_name(data: dict[str, Any], path: Path | None) -> tuple[str, str] | None:
    """open-r1 recipes have no run_name: take the basename of hub_model_id, else of output_dir, else the file
    name, as a folder name. None when the recipe offers none of them (a dict without either key)."""
    for key in ("hub_model_id", "output_dir"):
        value = data.get(key)
        if isinstance(value, str) and value.strip().strip("/"):
            base = value.strip().rstrip("/").rsplit("/", 1)[-1]
            name = _UNSAFE_NAME_CHARS.sub("_", base).lstrip("._-")
            if name:
                return name, f"from {key} {value!r}"
    if path is not None:
        name = _UNSAFE_NAME_CHARS.sub("_", path.stem).lstrip("._-")
        if name:
            return name, f"from the file name {path.name!r}"
    return None


def _resolve_device(data: dict[str, Any], notes: list[str], choice: Any = None) -> None:
    """``device: auto``: train where the hardware is best, with a note saying what changed and why. On the CPU the
    recipe stays as written (its header names CPU settings); on a GPU the CPU-only keys give way."""
    if str(data.get("device", "given")).lower() != "auto":
        return
    from open_r1_nb.hardware import select_device

    choice = choice or select_device()
    if choice.device == "cpu":
        # The precision note, if any, comes from the CPU's own check (bf16 units or not).
        notes.append(
            "device auto -> cpu (no CUDA GPU or Apple MPS here): the recipe's CPU settings as written."
        )
        return
    changes = {
        "use_cpu": False,
        "bf16": choice.bf16,
        "fp16": choice.fp16,
        "accelerate_config": choice.accelerate_config,
        "num_processes": 1,
        "eval_backend": choice.eval_backend,
    }
    if data.get("freeze_layers"):
        # Frozen layers size a CPU run; a GPU trains every weight in the same time.
        changes["freeze_layers"] = 0
    changed = {k: v for k, v in changes.items() if data.get(k) != v}
    data.update(changes)
    listed = ", ".join(f"{k}: {v}" for k, v in changed.items()) or "nothing to change"
    notes.append(f"device auto -> {choice.device} ({choice.reason}): {listed}.")


def _fill_launch_defaults(
    data: dict[str, Any], path: Path | None, notes: list[str], gpus: int | None
) -> None:
    """Give ``run_name`` and ``accelerate_config`` their defaults when the recipe leaves them out, with a note
    each, so that open-r1's recipes (which have neither) load as they are."""
    if data.get("run_name") in (None, ""):
        found = _default_run_name(data, path)
        if found is not None:
            data["run_name"], origin = found
            notes.append(
                f"`run_name` not set: {data['run_name']!r}, {origin} (it names the run folder "
                f"runs/{data['run_name']}/)."
            )
    if data.get("accelerate_config") in (None, ""):
        gpus = gpu_count() if gpus is None else gpus
        processes = _coerce_number(data.get("num_processes"))
        name, why = default_accelerate_config(gpus, processes if isinstance(processes, int) else None)
        data["accelerate_config"] = name
        notes.append(
            f"`accelerate_config` not set: {name!r} ({why}); set accelerate_config to choose another "
            f"({', '.join(available_accelerate_configs())})."
        )
        if (
            name == "zero3"
            and processes is None
            and gpus != int(read_accelerate_config(name)["num_processes"])
        ):
            # zero3.yaml is sized for 8 GPUs; a node with another number launches one process per GPU.
            data["num_processes"] = gpus
            notes.append(f"`num_processes` not set: {gpus}, one process per GPU.")
