"""A small model whose greedy outputs vary between prompts and sometimes end at EOS, for backend comparisons."""

from __future__ import annotations

import shutil
from pathlib import Path

# EOS wins wherever this token would have been the greedy choice.
EOS_STANDS_IN_FOR = 268


def build_varied_model(tiny_model_dir: Path, out: Path, head_dim: int | None = None) -> Path:
    """The tiny smoke model's tokenizer with random weights large enough to give varied greedy outputs, and an EOS.

    The smoke model's small initialisation makes it repeat one token forever, which would make "identical
    outputs" trivially true. Here the output head is untied and its EOS row is a scaled copy of one ordinary
    token's row, so generation ends exactly where that token would first have been chosen: some prompts end at
    EOS, others run to the limit. ``head_dim`` widens the attention heads (vLLM's CPU kernels start at 32; the
    smoke model's are 16) and leaves everything else as it is.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    for path in Path(tiny_model_dir).iterdir():
        if path.name.startswith("tokenizer"):
            shutil.copy(path, out)
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    config.initializer_range = 0.2
    if head_dim is not None:
        config.head_dim = head_dim
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    eos_id = AutoTokenizer.from_pretrained(tiny_model_dir).convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        model.lm_head.weight[eos_id] = 1.02 * model.lm_head.weight[EOS_STANDS_IN_FOR]
    model.save_pretrained(out)
    return out
