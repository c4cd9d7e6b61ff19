"""Generation backend ``transformers``: the reference. Batched, left-padded ``generate`` with the KV cache;
fp32 on CPU, bf16 on GPU. Reached through :func:`open_r1_nb.evaluate.generate.generate`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from open_r1_nb.evaluate.generate_common import _chunks_by_length, _copies, _decode, _progress_bar

if typing.TYPE_CHECKING:  # annotations only
    from open_r1_nb.evaluate.generate_common import GenerationConfig, Sample


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
