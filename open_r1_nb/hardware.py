"""What the hardware is and what a run does with it: the CPU's class, an AVX2-only emulation, the device choice.

The CPU demo's speed depends on the CPU's class far more than on its clock: with bf16 units (AVX512-BF16, AMX)
bf16 autocast roughly halves a training step; a CPU with AVX2 only trains in fp32. ``cpu_class`` names the class
from the CPU's feature flags, ``emulate_cpu_isa("avx2")`` makes a newer x86 CPU behave like an AVX2-only one for
every library the demo uses (so both classes can be measured on one machine), ``peak_flops`` gives the theoretical
FLOP/s that a measured throughput is compared with, and ``select_device`` picks CUDA, Apple's MPS or the CPU for a
profile whose ``device`` is ``auto``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Set to ``avx2`` (``make demo CPU_ISA=avx2``, ``--cpu-isa avx2``) to emulate an AVX2-only CPU.
CPU_ISA_ENV = "OPEN_R1_NB_CPU_ISA"

# Each library picks its kernels from the CPU's flags once, when it first runs, unless told a ceiling:
# torch's own kernels (ATen), oneDNN (torch's matmuls and its bf16 check), MKL, and CTranslate2. bf16 autocast
# then falls back to fp32 by itself, since oneDNN reports no native bf16 under an AVX2 ceiling.
EMULATIONS: dict[str, dict[str, str]] = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "CT2_FORCE_CPU_ISA": "AVX2",
    }
}


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_info(path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """Vendor, model name, family, MHz and feature flags of the first CPU (Linux); empty values elsewhere."""
    info: dict[str, Any] = {"vendor": "", "model": "", "family": None, "mhz": None, "flags": set()}
    try:
        text = Path(path).read_text()
    except OSError:
        return info
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "vendor_id":
            info["vendor"] = value
        elif key == "model name":
            info["model"] = value
        elif key == "cpu family" and value.isdigit():
            info["family"] = int(value)
        elif key == "cpu MHz":
            with contextlib.suppress(ValueError):
                info["mhz"] = float(value)
        elif key == "flags":
            info["flags"] = set(value.split())
    return info


@dataclass(frozen=True)
class CpuClass:
    """The class of this CPU for the demo, as measured and documented in docs/performance.md."""

    name: str  # amx, avx512_bf16, avx512, avx2 or other
    model: str
    vendor: str
    cores: int  # cores this process may use
    ghz: float | None
    bf16: bool  # native bf16 arithmetic (AVX512-BF16 or AMX): bf16 autocast is fast
    emulated: str | None  # "avx2" when the libraries were capped to AVX2 on a newer CPU
    fp32_flops_per_cycle: int  # per core
    bf16_flops_per_cycle: int  # per core (0 without bf16 units)

    def peak_flops(self, bf16: bool = False) -> float | None:
        """Theoretical FLOP/s of the usable cores: cores x clock x FLOPs per cycle (fp32, or bf16 when asked)."""
        if not self.ghz:
            return None
        per_cycle = self.bf16_flops_per_cycle if bf16 and self.bf16 else self.fp32_flops_per_cycle
        return self.cores * self.ghz * 1e9 * per_cycle

    def describe(self) -> str:
        label = {
            "amx": "AMX and AVX512-BF16 (bf16 units)",
            "avx512_bf16": "AVX-512 with AVX512-BF16 (bf16 units, no AMX)",
            "avx512": "AVX-512, no bf16 units",
            "avx2": "AVX2 only, no bf16 units",
        }.get(self.name, "no AVX2")
        emulated = f", emulated on a newer CPU ({CPU_ISA_ENV}={self.emulated})" if self.emulated else ""
        clock = f" at {self.ghz:.2f} GHz" if self.ghz else ""
        return f"{self.model or 'unknown CPU'}: {label}{emulated}; {self.cores} usable cores{clock}"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["description"] = self.describe()
        out["peak_fp32_gflops"] = round(self.peak_flops() / 1e9, 1) if self.ghz else None
        out["peak_bf16_gflops"] = (
            round(self.peak_flops(bf16=True) / 1e9, 1) if self.ghz and self.bf16 else None
        )
        return out


def cpu_class(info: dict[str, Any] | None = None, env: MutableMapping[str, str] | None = None) -> CpuClass:
    """Classify this CPU (or ``info``, as :func:`cpu_info` returns it) with the emulation in ``env`` applied.

    FLOPs per cycle and core, from the vendors' documented FMA widths: AVX2 has two 256-bit FMA units (32 fp32
    FLOPs); AVX-512 on Intel server cores and AMD Zen 5 has two 512-bit units (64); Zen 4 runs AVX-512 in two
    256-bit halves (32). AVX512-BF16 doubles the fp32 rate for bf16 dot products; AMX tiles reach 1024 bf16
    FLOPs per cycle. These are ceilings to compare a measured throughput with, not predictions.
    """
    info = cpu_info() if info is None else info
    env = os.environ if env is None else env
    flags = set(info.get("flags") or ())
    emulated = (env.get(CPU_ISA_ENV) or "").strip().lower() or None
    if emulated == "avx2":
        flags = {f for f in flags if not f.startswith(("avx512", "amx"))}
    if {"amx_bf16", "amx_tile"} <= flags:
        name = "amx"
    elif "avx512_bf16" in flags:
        name = "avx512_bf16"
    elif "avx512f" in flags:
        name = "avx512"
    elif "avx2" in flags:
        name = "avx2"
    else:
        name = "other"
    half_width_avx512 = info.get("vendor") == "AuthenticAMD" and (info.get("family") or 0) < 26  # Zen 4
    fp32 = {"avx2": 32, "other": 16}.get(name, 32 if half_width_avx512 else 64)
    bf16 = {"amx": 1024, "avx512_bf16": 2 * fp32}.get(name, 0)
    mhz = info.get("mhz")
    return CpuClass(
        name=name,
        model=info.get("model") or "",
        vendor=info.get("vendor") or "",
        cores=usable_cores(),
        ghz=round(mhz / 1000, 3) if mhz else None,
        bf16=bf16 > 0,
        emulated=emulated,
        fp32_flops_per_cycle=fp32,
        bf16_flops_per_cycle=bf16,
    )


def emulate_cpu_isa(isa: str, env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Cap every library the demo uses at ``isa`` (only ``avx2``) in ``env`` (default: this process's, so every
    notebook kernel, training and evaluation process started from here inherits it). Returns what was set.

    It must run before torch or CTranslate2 first computes anything in this process; the scripts call it first.
    """
    key = (isa or "").strip().lower()
    if key not in EMULATIONS:
        raise ValueError(
            f"Unknown CPU class to emulate {isa!r}; known: {sorted(EMULATIONS)}. "
            f"Fix: --cpu-isa avx2 (or {CPU_ISA_ENV}=avx2), or leave it unset for this CPU as it is."
        )
    info = cpu_info()
    if info["flags"] and "avx2" not in info["flags"]:
        raise ValueError(f"This CPU has no AVX2, so it cannot emulate an AVX2-only CPU ({info['model']}).")
    env = os.environ if env is None else env
    values = {**EMULATIONS[key], CPU_ISA_ENV: key}
    env.update(values)
    if env is os.environ and "torch" in sys.modules:
        # Too late for this process's torch (its kernels are chosen); child processes still get the cap.
        print(
            f"warning: {CPU_ISA_ENV}={key} was set after torch was imported; it applies to the processes "
            "started from here, not to this one",
            file=sys.stderr,
        )
    return values


def apply_cpu_isa_from_env(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """If ``OPEN_R1_NB_CPU_ISA`` is set, set the library caps it implies (missing ones only); else nothing."""
    env = os.environ if env is None else env
    isa = (env.get(CPU_ISA_ENV) or "").strip()
    if not isa:
        return {}
    values = {k: v for k, v in EMULATIONS.get(isa.lower(), {}).items() if k not in env}
    if isa.lower() not in EMULATIONS:
        raise ValueError(
            f"{CPU_ISA_ENV}={isa!r} is not a CPU class this project emulates; known: {sorted(EMULATIONS)}"
        )
    env.update(values)
    return values


# ------------------------------------------------------------------------------------------------ the device


def mps_available() -> bool:
    """Whether torch sees an Apple GPU (MPS)."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend) and backend.is_available()


@dataclass(frozen=True)
class DeviceChoice:
    """Where a ``device: auto`` profile trains and evaluates, and in which precision."""

    device: str  # cuda, mps or cpu
    bf16: bool
    fp16: bool
    accelerate_config: str
    eval_backend: str
    reason: str


def select_device(
    *,
    cuda_devices: int | None = None,
    cuda_bf16: bool | None = None,
    mps: bool | None = None,
    vllm_installed: bool | None = None,
    cpu_bf16: bool | None = None,
) -> DeviceChoice:
    """CUDA when a GPU is visible, else Apple's MPS, else the CPU. Every argument left as None is detected.

    On CUDA: bf16 where the GPU supports it (Ampere and newer), else fp16; one process on the first GPU
    (``single_gpu``); vLLM for evaluation when installed, else transformers. On MPS: fp32 (the Trainer's mixed
    precision on MPS depends on the macOS and torch versions), transformers for evaluation. On the CPU: bf16
    autocast where the CPU has bf16 units, the CPU accelerate config, CTranslate2 for evaluation.
    """
    import importlib.util

    if cuda_devices is None or cuda_bf16 is None or mps is None:
        import torch

        if cuda_devices is None:
            cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if cuda_bf16 is None:
            cuda_bf16 = bool(cuda_devices) and torch.cuda.is_bf16_supported()
        if mps is None:
            mps = mps_available()
    if vllm_installed is None:
        vllm_installed = importlib.util.find_spec("vllm") is not None
    if cuda_devices:
        return DeviceChoice(
            device="cuda",
            bf16=bool(cuda_bf16),
            fp16=not cuda_bf16,
            accelerate_config="single_gpu",
            eval_backend="vllm" if vllm_installed else "transformers",
            reason=f"{cuda_devices} CUDA GPU(s) visible: training on the first in "
            + ("bf16" if cuda_bf16 else "fp16 (this GPU has no bf16)"),
        )
    if mps:
        return DeviceChoice(
            device="mps",
            bf16=False,
            fp16=False,
            accelerate_config="cpu_1proc",
            eval_backend="transformers",
            reason="Apple GPU (MPS): training in fp32 there, evaluation with transformers",
        )
    if cpu_bf16 is None:
        cpu_bf16 = cpu_supports_bf16()
    return DeviceChoice(
        device="cpu",
        bf16=bool(cpu_bf16),
        fp16=False,
        accelerate_config="cpu_1proc",
        eval_backend="auto",
        reason="no GPU: the CPU, "
        + ("bf16 autocast (this CPU has bf16 units)" if cpu_bf16 else "fp32 (this CPU has no bf16 units)"),
    )


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX512-BF16 or AMX on x86; bf16 on Arm). False
    while an AVX2-only CPU is emulated (``OPEN_R1_NB_CPU_ISA=avx2``), whatever the CPU underneath has."""
    import torch

    if os.environ.get(CPU_ISA_ENV, "").strip().lower() == "avx2":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
