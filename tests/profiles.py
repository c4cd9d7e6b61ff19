"""Test recipes, changed by keyword (DROP removes a key): a minimal one in memory (Hub ids, nothing on disk checked),
and a profile on disk with the tiny model and data, one CPU, two processes."""

from __future__ import annotations

from pathlib import Path

import yaml

DROP = object()


def recipe_dict(**changes) -> dict:
    """A minimal valid recipe with Hub ids only (nothing on disk is checked), changed by ``changes``."""
    base = {
        "model_name_or_path": "org/model",
        "dataset_name": "org/data",
        "run_name": "unit",
        "use_cpu": True,
        "bf16": False,
        "accelerate_config": "cpu_2proc",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


def write_profile(tmp_path: Path, model: Path, dataset: Path, run_name: str, **changes) -> Path:
    """A new ``profile_<n>.yaml`` in ``tmp_path`` (each call its own file, so an edited profile sits beside the old)."""
    body = {
        "model_name_or_path": str(model),
        "dataset_name": str(dataset),
        "eos_token": "<|im_end|>",
        "run_name": run_name,
        "use_cpu": True,
        "bf16": False,
        "max_length": 256,
        "report_to": "none",
        "accelerate_config": "cpu_2proc",
        "num_processes": 2,
        **changes,
    }
    body = {k: v for k, v in body.items() if v is not DROP}
    path = tmp_path / f"profile_{len(list(tmp_path.glob('profile_*')))}.yaml"
    path.write_text("# Hardware: any CPU (a test profile)\n" + yaml.safe_dump(body))
    return path
