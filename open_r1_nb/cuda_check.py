"""Whether torch can use a CUDA GPU here, and, when it cannot, why, in words with the fix.

torch only says ``torch.cuda.is_available() == False``; ``cuda_problem`` tells the usual causes apart: a CPU-only
build of torch, no NVIDIA driver loaded (not a GPU node, or a job given no GPU), a driver older than torch's CUDA
build needs, or GPUs hidden from the process. ``open_r1_nb.launch`` refuses a GPU launch with this message
(``check_cuda_for``) and re-exports these names.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path


def cuda_available() -> bool:
    """Whether torch sees a GPU (imports torch, which the training kernel has loaded anyway)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# The oldest NVIDIA driver branch each CUDA major version runs on (minor-version compatibility): torch 2.13.0's
# PyPI wheel for Linux x86_64 is built for CUDA 13.0, so it needs R580; CUDA 12.x builds run on R525 and newer.
MIN_DRIVER_FOR_CUDA = {13: 580, 12: 525, 11: 450}
_DRIVER_VERSION = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")


def nvidia_driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (e.g. ``550.54.15``), or None when there is none."""
    with contextlib.suppress(OSError):
        found = _DRIVER_VERSION.search(Path("/proc/driver/nvidia/version").read_text())
        if found:
            return found.group(1)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        lines = out.stdout.split()
        if out.returncode == 0 and lines:
            return lines[0]
    return None


def cuda_problem() -> str | None:
    """Why torch sees no CUDA device here, with the fix, in words; None when it sees one."""
    import torch

    if torch.cuda.is_available():
        return None
    built = torch.version.cuda
    if built is None:
        return (
            f"torch {torch.__version__} is a CPU-only build. On the GPU node install the CUDA build: "
            "`conda env create -f environment.yml`, or `pip install torch==2.13.0` from PyPI (built for CUDA 13.0)."
        )
    driver = nvidia_driver_version()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if driver is None:
        return (
            f"torch {torch.__version__} is built for CUDA {built}, but no NVIDIA driver is loaded here (no "
            "/proc/driver/nvidia/version, no nvidia-smi): this is not a GPU node, or the job was given no GPU "
            "(under Slurm: --gres=gpu:N)."
        )
    needed = MIN_DRIVER_FOR_CUDA.get(int(built.split(".")[0]))
    if needed and int(driver.split(".")[0]) < needed:
        return (
            f"torch {torch.__version__} is built for CUDA {built}, which needs an NVIDIA driver R{needed} or newer; "
            f"this machine's driver is {driver}. Fix: upgrade the driver to R{needed}+, or install a torch 2.13.0 "
            "built for a CUDA this driver runs (R525+: CUDA 12.x, from PyTorch's cu128 or cu126 index where it "
            "publishes that build; environment.yml shows the command), with a vLLM built for the same CUDA."
        )
    return (
        f"torch {torch.__version__} (CUDA {built}) with NVIDIA driver {driver} finds no usable GPU"
        + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
        + ": check `nvidia-smi` and that the GPUs are visible to this process."
    )
