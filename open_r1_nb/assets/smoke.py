"""The smoke profile's assets, built in seconds for CI.

- ``models/tiny-llama-smoke/``  a tiny random Llama with its own byte-level BPE tokenizer;
- ``data/smoke/``               a few dozen short arithmetic traces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from open_r1_nb.assets.arithmetic import ARITHMETIC_FORMAT, arithmetic_rows
from open_r1_nb.assets.cache import FORMAT_VERSION, _cached_build, _write_jsonl
from open_r1_nb.paths import cache_dir

TINY_MODEL_NAME = "tiny-llama-smoke"
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SMOKE_KINDS = ("add_2d_2d", "mul_2d_1d")


def build_smoke_data(seed: int = 42, n_train: int = 32, n_test: int = 8, force: bool = False) -> Path:
    """``data/smoke/{train,test}.jsonl``: a few dozen short arithmetic traces for the CI smoke profile."""
    key = {
        "format": FORMAT_VERSION,
        "traces": ARITHMETIC_FORMAT,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "kinds": list(SMOKE_KINDS),
    }

    def make(tmp: Path) -> dict[str, Any]:
        train, test = arithmetic_rows(seed, n_train, n_test, SMOKE_KINDS, source="smoke")
        _write_jsonl(tmp / "train.jsonl", train)
        _write_jsonl(tmp / "test.jsonl", test)
        return {"rows": {"train": len(train), "test": len(test)}}

    return _cached_build("smoke_data", cache_dir() / "data" / "smoke", key, force, make)


def _tiny_tokenizer_corpus(seed: int) -> list[str]:
    """Smoke traces rendered as ChatML (plus the bare problems), the text the tiny tokenizer is trained on."""
    train, test = arithmetic_rows(seed, 32, 8, SMOKE_KINDS, source="smoke")
    texts = []
    for row in train + test:
        texts.append(row["problem"])
        texts.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in row["messages"]))
    return texts


def build_tiny_model(force: bool = False, seed: int = 0) -> Path:
    """``models/tiny-llama-smoke/``: a 2-layer, hidden-64 random Llama and its own byte-level BPE tokenizer.

    Deliberately incomplete in the ways real checkpoints are: the tokenizer has no chat template, no pad token,
    and its EOS is ``<|endoftext|>`` rather than the end of turn, so the smoke profile exercises the model
    step's ChatML fallback, EOS derivation and pad fix.
    """
    key = {
        "format": FORMAT_VERSION,
        "traces": ARITHMETIC_FORMAT,  # the tokenizer is trained on the smoke traces
        "seed": seed,
        "layers": 2,
        "hidden": 64,
        "heads": 4,
        "vocab": 1024,
    }

    def make(tmp: Path) -> dict[str, Any]:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        bpe = Tokenizer(models.BPE())
        # Digits one by one, as SmolLM2's tokenizer does, so arithmetic is tokenised the same way.
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=1024,
            special_tokens=TINY_SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        bpe.train_from_iterator(_tiny_tokenizer_corpus(42), trainer)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, eos_token="<|endoftext|>", model_max_length=2048
        )
        tokenizer.save_pretrained(tmp)

        eos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # grouped-query attention, like SmolLM2
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=eos_id,
            pad_token_id=None,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.save_pretrained(tmp)
        return {
            "description": "random weights; for plumbing tests only",
            "tokenizer": {
                "vocab_size": len(tokenizer),
                "eos": "<|endoftext|>",
                "pad": None,
                "chat_template": None,
            },
            "parameters": sum(p.numel() for p in model.parameters()),
        }

    return _cached_build("tiny_model", cache_dir() / "models" / TINY_MODEL_NAME, key, force, make)
