"""The CPU class, the AVX2-only emulation, peak FLOP/s and the device choice for `device: auto`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from open_r1_nb import hardware
from open_r1_nb.config import RecipeError, cpu_supports_bf16, load_recipe
from open_r1_nb.hardware import CPU_ISA_ENV, DeviceChoice, cpu_class, emulate_cpu_isa, select_device
from open_r1_nb.paths import REPO_ROOT

AMX_XEON = {
    "vendor": "GenuineIntel",
    "model": "Intel(R) Xeon(R) Platinum",
    "family": 6,
    "mhz": 2000.0,
    "flags": {"fma", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"},
}
ZEN4 = {"vendor": "AuthenticAMD", "model": "AMD EPYC", "family": 25, "mhz": 2500.0,
        "flags": {"fma", "avx2", "avx512f", "avx512_bf16"}}  # fmt: skip
AVX2_ONLY = {
    "vendor": "AuthenticAMD",
    "model": "AMD EPYC",
    "family": 23,
    "mhz": 3000.0,
    "flags": {"fma", "avx2"},
}


def test_cpuinfo_is_parsed(tmp_path):
    text = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel name\t: AMD EPYC 9B45\n"
        "cpu MHz\t\t: 2596.122\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    )
    (tmp_path / "cpuinfo").write_text(text)
    info = hardware.cpu_info(tmp_path / "cpuinfo")
    assert info["vendor"] == "AuthenticAMD" and info["family"] == 26 and info["model"] == "AMD EPYC 9B45"
    assert info["mhz"] == pytest.approx(2596.122) and info["flags"] == {
        "fpu",
        "avx2",
        "avx512f",
        "avx512_bf16",
    }
    assert hardware.cpu_info(tmp_path / "missing")["flags"] == set()


@pytest.mark.parametrize(
    ("info", "name", "bf16", "fp32_per_cycle"),
    [(AMX_XEON, "amx", True, 64), (ZEN4, "avx512_bf16", True, 32), (AVX2_ONLY, "avx2", False, 32)],
)
def test_cpu_classes(info, name, bf16, fp32_per_cycle):
    cls = cpu_class(info, env={})
    assert (cls.name, cls.bf16, cls.fp32_flops_per_cycle, cls.emulated) == (name, bf16, fp32_per_cycle, None)
    assert cls.peak_flops() == pytest.approx(cls.cores * info["mhz"] * 1e6 * fp32_per_cycle)
    assert (cls.peak_flops(bf16=True) > cls.peak_flops()) is bf16


def test_emulated_avx2_on_an_amx_cpu_is_an_avx2_cpu():
    cls = cpu_class(AMX_XEON, env={CPU_ISA_ENV: "avx2"})
    assert cls.name == "avx2" and not cls.bf16 and cls.emulated == "avx2"
    assert cls.peak_flops() == cls.cores * 2.0e9 * 32 and cls.peak_flops(bf16=True) == cls.peak_flops()
    assert "emulated" in cls.describe() and "AVX2 only" in cls.describe()


def test_emulation_sets_every_librarys_cap_and_refuses_unknown_classes():
    env: dict[str, str] = {}
    emulate_cpu_isa("AVX2", env)
    assert env == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "CT2_FORCE_CPU_ISA": "AVX2",
        CPU_ISA_ENV: "avx2",
    }
    with pytest.raises(ValueError, match="Unknown CPU class to emulate 'sse4'.*--cpu-isa avx2"):
        emulate_cpu_isa("sse4", {})
    only_flag = {CPU_ISA_ENV: "avx2", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    hardware.apply_cpu_isa_from_env(only_flag)  # fills in what is missing, keeps what the user set
    assert only_flag["ATEN_CPU_CAPABILITY"] == "avx2" and only_flag["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"


def test_emulation_reaches_torch_in_a_child_process():
    """The caps are read when torch starts: a process started with them runs AVX2 kernels and has no bf16."""
    env = dict(os.environ)
    emulate_cpu_isa("avx2", env)
    code = (
        "import json, torch; from open_r1_nb.config import cpu_supports_bf16; "
        "print(json.dumps([torch.backends.cpu.get_cpu_capability(), "
        "bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), cpu_supports_bf16()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    capability, onednn_bf16, ours = json.loads(out.stdout.strip().splitlines()[-1])
    assert capability == "AVX2" and onednn_bf16 is False and ours is False


def test_bf16_is_turned_off_under_the_emulation(monkeypatch):
    monkeypatch.setenv(CPU_ISA_ENV, "avx2")
    assert cpu_supports_bf16() is False
    recipe = load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", check_files=False)
    assert recipe.training.bf16 is False
    assert any(note.startswith("bf16: true -> false") for note in recipe.notes)


@pytest.mark.parametrize(
    ("kwargs", "device", "bf16", "fp16", "config", "backend"),
    [
        ({"cuda_devices": 2, "cuda_bf16": True, "vllm_installed": True}, "cuda", True, False, "single_gpu", "vllm"),
        ({"cuda_devices": 1, "cuda_bf16": False, "vllm_installed": False}, "cuda", False, True, "single_gpu",
         "transformers"),
        ({"cuda_devices": 0, "cuda_bf16": False, "mps": True}, "mps", False, False, "cpu_1proc", "transformers"),
        ({"cuda_devices": 0, "cuda_bf16": False, "mps": False, "cpu_bf16": True}, "cpu", True, False, "cpu_1proc",
         "auto"),
        ({"cuda_devices": 0, "cuda_bf16": False, "mps": False, "cpu_bf16": False}, "cpu", False, False,
         "cpu_1proc", "auto"),
    ],
)  # fmt: skip
def test_device_selection(kwargs, device, bf16, fp16, config, backend):
    kwargs.setdefault("mps", False)
    kwargs.setdefault("vllm_installed", False)
    choice = select_device(**kwargs)
    assert (choice.device, choice.bf16, choice.fp16, choice.accelerate_config, choice.eval_backend) == (
        device, bf16, fp16, config, backend)  # fmt: skip


def test_device_auto_moves_the_demo_to_a_gpu_and_leaves_it_on_a_cpu():
    gpu = DeviceChoice("cuda", True, False, "single_gpu", "vllm", "1 CUDA GPU(s) visible")
    recipe = load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", check_files=False, device_choice=gpu)
    t, p = recipe.training, recipe.pipeline
    assert (t.use_cpu, t.bf16, p.accelerate_config, p.num_processes, p.eval_backend) == (
        False, True, "single_gpu", 1, "vllm")  # fmt: skip
    assert any(n.startswith("device auto -> cuda") and "use_cpu: False" in n for n in recipe.notes)
    assert t.freeze_layers == 0  # every weight trains on a GPU

    cpu = DeviceChoice("cpu", False, False, "cpu_1proc", "auto", "no GPU")
    recipe = load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", check_files=False, device_choice=cpu)
    assert recipe.training.use_cpu and recipe.pipeline.accelerate_config == "cpu_1proc"
    assert any(n.startswith("device auto -> cpu") for n in recipe.notes)


def test_a_cpu_without_bf16_units_applies_the_profiles_fp32_overrides(monkeypatch):
    import open_r1_nb.hardware as hardware

    cpu = DeviceChoice("cpu", False, False, "cpu_1proc", "auto", "no GPU")
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    recipe = load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", check_files=False, device_choice=cpu)
    assert recipe.training.bf16 and recipe.training.freeze_layers == 0  # bf16 units: every weight trains
    assert not any("cpu_fp32_overrides" in n for n in recipe.notes)

    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: False)
    recipe = load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", check_files=False, device_choice=cpu)
    assert not recipe.training.bf16 and recipe.training.freeze_layers == 15
    assert any("cpu_fp32_overrides apply (freeze_layers: 15)" in n for n in recipe.notes)

    # A GPU never takes the CPU's fp32 sizing, whatever the CPU beside it has.
    gpu = DeviceChoice("cuda", True, False, "single_gpu", "vllm", "1 CUDA GPU(s) visible")
    recipe = load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", check_files=False, device_choice=gpu)
    assert recipe.training.freeze_layers == 0


def test_cpu_fp32_overrides_must_be_a_mapping():
    with pytest.raises(RecipeError, match="cpu_fp32_overrides.*mapping.*Fix"):
        load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", {"cpu_fp32_overrides": [15]}, check_files=False)


def test_unknown_device_value_is_refused():
    with pytest.raises(RecipeError, match="device"):
        load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", overrides={"device": "tpu"}, check_files=False)
