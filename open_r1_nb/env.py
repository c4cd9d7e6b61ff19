"""Step 0: what this machine has — versions, devices, optional accelerators, and login state without secrets."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from open_r1_nb.hardware import cpu_class

CORE_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "math-verify",
    "papermill",
    "open_r1_nb",
)
OPTIONAL_PACKAGES = {
    "flash-attn": ("flash_attn", "fast attention kernels for training on GPU (else kernels, else sdpa)"),
    "kernels": ("kernels", "transformers' flash-attention kernel from the Hub, nothing to compile"),
    "vllm": ("vllm", "fast generation for evaluation on GPU"),
    "deepspeed": ("deepspeed", "ZeRO-2/3 for models that do not fit one GPU"),
    "liger-kernel": ("liger_kernel", "fused kernels that cut training memory (use_liger_kernel)"),
    "ctranslate2": ("ctranslate2", "fast generation for evaluation on CPU"),
    "wandb": ("wandb", "experiment tracking (report_to: wandb)"),
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **{name: _version(name) for name in CORE_PACKAGES}}


def devices() -> dict[str, Any]:
    import torch

    cpu = cpu_class()
    info: dict[str, Any] = {
        "cpu": cpu.describe(),
        "cpu class": cpu.name,
        "cpu peak fp32 (GFLOP/s)": cpu.as_dict()["peak_fp32_gflops"],
        "cpu cores": os.cpu_count(),
        "torch kernels": torch.backends.cpu.get_cpu_capability(),
        "torch threads": torch.get_num_threads(),
        "cuda available": torch.cuda.is_available(),
        "torch cuda build": torch.version.cuda,
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory (GiB)"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpus"] = torch.cuda.device_count()
        info["gpu 0"] = torch.cuda.get_device_name(0)
        info["bf16 supported"] = torch.cuda.is_bf16_supported()
        info["gpu 0 memory (GiB)"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def optional_packages() -> list[dict[str, Any]]:
    """Whether each optional accelerator is installed (found without importing it: some import slowly)."""
    rows = []
    for dist, (module, purpose) in OPTIONAL_PACKAGES.items():
        found = importlib.util.find_spec(module) is not None
        rows.append(
            {
                "package": dist,
                "installed": found,
                "version": _version(dist) if found else None,
                "for": purpose,
            }
        )
    return rows


def git_lfs() -> str:
    """Pushing model weights to the Hub through git needs git-lfs (the Python upload API does not)."""
    exe = shutil.which("git-lfs")
    if exe is None:
        return "not installed (only needed for git-based pushes; push_to_hub uses the HTTP API)"
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = "installed"
    return out


def hub_login_state() -> str:
    """Whether a Hub token is configured; the token itself is never read out or printed."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # an unreadable token file is the same as none for this purpose
        token = None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    state = "token configured (hidden)" if token else "no token (pushes run as dry runs)"
    return state + ("; HF_HUB_OFFLINE is set" if offline else "")


def wandb_state() -> str:
    """Whether W&B is configured; only presence is reported, never the key."""
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY set (hidden)"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "logged in via ~/.netrc (hidden)"
    return "not configured (TensorBoard logs locally instead)"


def report() -> dict[str, Any]:
    """Everything notebook 00 shows, JSON-serialisable, with no secret in it."""
    return {
        "versions": versions(),
        "devices": devices(),
        "optional": optional_packages(),
        "git-lfs": git_lfs(),
        "hub": hub_login_state(),
        "wandb": wandb_state(),
    }
