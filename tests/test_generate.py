"""Generation backends: one schema, the same greedy tokens from transformers and CTranslate2, EOS vs length cut."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from open_r1_nb.evaluate import generate as gen
from open_r1_nb.evaluate.generate import GenerationConfig, Sample, generate

CPU_BACKENDS = [
    "transformers",
    pytest.param(
        "ctranslate2",
        marks=pytest.mark.skipif(not gen._importable("ctranslate2"), reason="ctranslate2 is not installed"),
    ),
]
PROMPTS = [[{"role": "user", "content": f"What is {i} + {3 * i}?"}] for i in range(6)]
PROMPTS[2] = [
    {"role": "system", "content": "Think first."},
    {"role": "user", "content": "A longer one: 12 × 7?"},
]
# In the varied model below, EOS wins wherever this token would have been the greedy choice.
EOS_STANDS_IN_FOR = 268


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model's tokenizer with random weights large enough to give varied greedy outputs, and an EOS.

    The smoke model's small initialisation makes it repeat one token forever, which would make "identical
    outputs" trivially true. Here the output head is untied and its EOS row is a scaled copy of one ordinary
    token's row, so generation ends exactly where that token would first have been chosen: some prompts end at
    EOS, others run to the limit.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("varied_model")
    for path in Path(tiny_model_dir).iterdir():
        if path.name.startswith("tokenizer"):
            shutil.copy(path, out)
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    config.initializer_range = 0.2
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    eos_id = AutoTokenizer.from_pretrained(tiny_model_dir).convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        model.lm_head.weight[eos_id] = 1.02 * model.lm_head.weight[EOS_STANDS_IN_FOR]
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_schema_order_and_n(tiny_model_dir, backend):
    config = GenerationConfig(n=3, max_new_tokens=4, batch_size=4)
    results = generate(tiny_model_dir, PROMPTS, config, backend=backend, progress=False)
    assert len(results) == len(PROMPTS)
    for samples in results:
        assert len(samples) == 3
        for sample in samples:
            assert isinstance(sample, Sample)
            assert isinstance(sample.text, str)
            assert 1 <= sample.new_tokens <= 4
            assert isinstance(sample.ended_at_eos, bool)
        # Greedy copies are equal but separate objects, so a caller may annotate one without touching the others.
        assert samples[0] == samples[1] and samples[0] is not samples[1]
    # In order: each prompt alone gives what it gave inside the (length-sorted) batch.
    alone = generate(
        tiny_model_dir, [PROMPTS[2]], GenerationConfig(max_new_tokens=4), backend, progress=False
    )
    assert alone[0][0] == results[2][0]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_eos_and_length_cut(varied_model_dir, backend):
    results = generate(
        varied_model_dir, PROMPTS, GenerationConfig(max_new_tokens=24), backend, progress=False
    )
    samples = [s[0] for s in results]
    assert any(s.ended_at_eos for s in samples) and not all(s.ended_at_eos for s in samples)
    for s in samples:
        assert s.new_tokens == 24 or s.ended_at_eos
        assert "<|im_end|>" not in s.text
    # Cut at exactly the EOS position: still an EOS end, counted as a new token.
    ended = next(i for i, s in enumerate(samples) if s.ended_at_eos)
    k = samples[ended].new_tokens
    exact = generate(
        varied_model_dir, [PROMPTS[ended]], GenerationConfig(max_new_tokens=k), backend, progress=False
    )
    assert exact[0][0] == samples[ended]
    cut = generate(
        varied_model_dir, [PROMPTS[ended]], GenerationConfig(max_new_tokens=k - 1), backend, progress=False
    )
    assert cut[0][0].new_tokens == k - 1 and not cut[0][0].ended_at_eos


@pytest.mark.skipif(not gen._importable("ctranslate2"), reason="ctranslate2 is not installed")
@pytest.mark.parametrize("max_new_tokens", [3, 24])
def test_greedy_ctranslate2_matches_transformers(varied_model_dir, max_new_tokens):
    config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=4)
    reference = generate(varied_model_dir, PROMPTS, config, "transformers", progress=False)
    fast = generate(varied_model_dir, PROMPTS, config, "ctranslate2", progress=False)
    # Same text, same token count, same ending: the same tokens (texts differ between prompts, so it is a real test).
    assert fast == reference
    assert len({s[0].text for s in reference}) == len(PROMPTS)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sampling_gives_n_samples(varied_model_dir, backend):
    config = GenerationConfig(n=4, temperature=0.6, top_p=0.95, max_new_tokens=12, seed=1)
    results = generate(varied_model_dir, PROMPTS[:2], config, backend, progress=False)
    assert [len(s) for s in results] == [4, 4]
    assert all(len({x.text for x in s}) > 1 for s in results)  # draws, not one greedy answer copied
    again = generate(varied_model_dir, PROMPTS[:2], config, backend, progress=False)
    assert again == results  # the seed makes a sampled evaluation repeatable


def test_choose_backend_falls_back(monkeypatch):
    installed = {"vllm": True, "ctranslate2": True, "transformers": True}
    monkeypatch.setattr(gen, "_importable", lambda name: installed[name])
    monkeypatch.setattr(gen, "_cuda_available", lambda: True)
    assert gen.choose_backend() == "vllm"
    monkeypatch.setattr(gen, "_cuda_available", lambda: False)
    assert gen.choose_backend() == "ctranslate2"  # vLLM installed but no GPU
    assert gen.available_backends() == ["ctranslate2", "transformers"]
    installed["ctranslate2"] = False
    assert gen.choose_backend("auto") == "transformers"
    with pytest.raises(RuntimeError, match="cpu-eval"):
        gen.choose_backend("ctranslate2")
    with pytest.raises(ValueError, match="unknown backend"):
        gen.choose_backend("llama.cpp")
    assert gen.choose_backend("transformers") == "transformers"


def test_ct2_conversion_is_cached_and_renewed(tiny_model_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    first = gen.ct2_model_dir(model)
    assert (first / "model.bin").exists() and first.name.startswith(f"{tmp_path.name}-model-")
    assert gen.ct2_model_dir(model) == first  # cached
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "retrained"
    second = gen.ct2_model_dir(model)
    assert second != first and (second / "model.bin").exists() and not first.exists()


def test_vllm_backend_maps_outputs(tiny_model_dir, monkeypatch):
    """The vLLM path against a stand-in ``vllm`` module: request order, n, seeds, EOS and length endings."""
    import sys
    import types
    from types import SimpleNamespace

    seen: dict = {}

    class FakeLLM:
        def __init__(self, model, **kwargs):
            seen["llm"] = {"model": model, **kwargs}

        def generate(self, requests, params, use_tqdm=True):
            seen["params"] = params
            outputs = []
            for request, p in zip(requests, params, strict=True):
                length = len(request["prompt_token_ids"])
                draws = [
                    SimpleNamespace(
                        text=f"{length}/{k}",
                        token_ids=[7] * (k + 1),
                        finish_reason="stop" if k % 2 == 0 else "length",
                    )
                    for k in range(p.n)
                ]
                outputs.append(SimpleNamespace(outputs=draws))
            return outputs

    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(gen, "_importable", lambda name: True)
    monkeypatch.setattr(gen, "_cuda_available", lambda: True)

    config = GenerationConfig(n=2, temperature=0.6, top_p=0.95, max_new_tokens=9, seed=5)
    results = generate(tiny_model_dir, PROMPTS, config, backend="vllm", progress=False)
    tokenizer = gen.load_tokenizer(tiny_model_dir)
    lengths = [len(ids) for ids in gen.render_prompts(tokenizer, PROMPTS)]
    assert [[s.text for s in r] for r in results] == [[f"{n}/0", f"{n}/1"] for n in lengths]
    assert [s.ended_at_eos for s in results[0]] == [True, False]
    assert [s.new_tokens for s in results[0]] == [1, 2]
    assert seen["llm"]["dtype"] == "bfloat16" and seen["llm"]["model"] == str(tiny_model_dir)
    p = seen["params"][3]
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.seed) == (2, 0.6, 0.95, 9, 8)
    assert p.stop_token_ids == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_top_k_reaches_the_sampler(varied_model_dir, backend):
    # Sampling among the single likeliest token is greedy decoding, whatever the temperature: proof that the cut
    # is applied, not dropped on the way to the backend.
    greedy = generate(varied_model_dir, PROMPTS, GenerationConfig(max_new_tokens=12), backend, progress=False)
    config = GenerationConfig(n=1, temperature=1.5, top_p=1.0, top_k=1, max_new_tokens=12, seed=3)
    sampled = generate(varied_model_dir, PROMPTS, config, backend, progress=False)
    assert [s[0].text for s in sampled] == [g[0].text for g in greedy]
    wide = generate(varied_model_dir, PROMPTS, replace(config, top_k=0), backend, progress=False)
    assert [s[0].text for s in wide] != [g[0].text for g in greedy]  # without the cut, T=1.5 draws differ
