"""The single-GPU profile validates on a CPU like the 7B recipe: Hub ids unchecked, no device touched."""

from __future__ import annotations

import pytest
import torch

from open_r1_nb import paths
from open_r1_nb.config import load_recipe

PROFILE = "single_gpu_1p5b"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_single_gpu_profile_validates_on_cpu_without_touching_devices():
    recipe = load_recipe(PROFILE)  # check_files: Hub ids are not checked offline
    t, p, m, s = recipe.training, recipe.pipeline, recipe.model, recipe.script
    assert recipe.run_name == PROFILE
    assert (p.accelerate_config, p.num_processes) == ("single_gpu", 1)
    assert recipe.global_batch_size() == 128 and t.per_device_train_batch_size == 4
    assert m.model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct" and m.dtype == "bfloat16"
    assert t.bf16 and t.gradient_checkpointing and not t.use_cpu and t.max_length == 16384
    assert t.eos_token == "<|im_end|>"
    [entry] = s.dataset_mixture.datasets
    assert (entry.id, entry.config, entry.split, entry.columns) == (
        "open-r1/Mixture-of-Thoughts",
        "math",
        "train",
        ["messages"],
    )
    assert 0 < entry.weight < 1  # a subset of the maths traces
    assert p.overlong_policy == "drop"
    assert t.devices_deferred and not torch.cuda.is_initialized()
    assert not torch.distributed.is_initialized()
    # No renamed or dropped upstream keys to report: only what this CPU lacks (liger, flash-attn, a bf16 GPU).
    assert not any("->" in note or "dropped" in note for note in recipe.notes), recipe.notes


def test_single_gpu_profile_evaluates_math_500_with_vllm_within_its_context():
    recipe = load_recipe(PROFILE)
    t, p = recipe.training, recipe.pipeline
    assert t.benchmarks == ["math_500"] and p.eval_backend == "vllm"
    assert 0 < p.eval_limit < 500  # a fixed seeded subset of MATH-500
    settings = p.eval_settings()
    assert settings["vllm_max_model_length"] >= p.eval_max_new_tokens + 512  # room for the prompt
    assert (
        0 < settings["vllm_gpu_memory_utilization"] < 0.92
    )  # below vLLM's default: training's process remains


def test_single_gpu_profile_header_names_the_hardware_and_estimates():
    text = (paths.PARAMETERS_DIR / f"{PROFILE}.yaml").read_text()
    assert text.splitlines()[0].startswith("# Hardware: ONE NVIDIA GPU with 80 GB")
    header = text.split("\n\n")[0] + text.split("\n\n")[1]
    assert "ESTIMATED" in header and "not measured" in header
    for subject in ("training", "memory", "evaluation"):
        assert f"#   {subject}" in text
