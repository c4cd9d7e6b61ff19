"""Generation backend ``ctranslate2``: the CPU fast path. The Hugging Face folder is converted once (float32, so
greedy outputs match the reference) and cached under ``cache/ct2/``; CTranslate2 drops finished sequences from the
batch and runs fused CPU kernels (level with ``generate`` on a few dozen short prompts on two cores, ahead by
1.2-1.3x on 152: docs/performance.md). Reached through :func:`open_r1_nb.evaluate.generate.generate`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import typing
from pathlib import Path

from open_r1_nb.evaluate.generate_common import _chunks_by_length, _copies, _decode, _progress_bar
from open_r1_nb.hardware import usable_cores
from open_r1_nb.paths import cache_dir

if typing.TYPE_CHECKING:  # annotations only
    from open_r1_nb.evaluate.generate_common import GenerationConfig, Sample

# The logger of the module this code was split from, so that a filter or a test listening there still hears it.
logger = logging.getLogger("open_r1_nb.evaluate.generate")

# Bump when the CT2 conversion settings change, so stale conversions are not reused.
CT2_FORMAT = 1
SOURCE_FILE = "open_r1_nb_source.json"  # in each conversion: which folder it was made from


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
