"""What every generation backend shares: the request (:class:`GenerationConfig`), the result (:class:`Sample`),
the tokenizer and the prompts rendered through its chat template, and the one rule that turns a completion's token
ids into a :class:`Sample`.

The backends (``generate_transformers``, ``generate_ctranslate2``, ``generate_vllm``) build on it; the call that
picks one and runs it is :func:`open_r1_nb.evaluate.generate.generate`, which re-exports these names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

# The logger of the module this code was split from, so that a filter or a test listening there still hears it.
logger = logging.getLogger("open_r1_nb.evaluate.generate")


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
