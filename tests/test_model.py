"""open_r1_nb.model: chat template fallback, EOS from the template, pad != EOS, attention fallback, loading."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
from transformers import AutoTokenizer

from open_r1_nb import model as m


@pytest.fixture
def raw_tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_chatml_applied_when_missing_and_eos_derived(raw_tokenizer):
    assert not raw_tokenizer.chat_template
    notes = m.prepare_tokenizer(raw_tokenizer)
    assert "<|im_start|>user" in raw_tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False
    )
    assert raw_tokenizer.eos_token == "<|im_end|>"
    assert m.end_of_turn_token(raw_tokenizer) == "<|im_end|>"
    assert raw_tokenizer.pad_token not in (None, raw_tokenizer.eos_token)
    assert any("ChatML" in n for n in notes) and any(n.startswith("pad:") for n in notes)


def test_pad_equal_to_eos_is_detected_and_fixed(raw_tokenizer):
    raw_tokenizer.chat_template = m.CHATML_TEMPLATE
    raw_tokenizer.eos_token = "<|im_end|>"
    raw_tokenizer.pad_token = "<|im_end|>"
    notes = m.prepare_tokenizer(raw_tokenizer)
    assert raw_tokenizer.pad_token != raw_tokenizer.eos_token
    assert raw_tokenizer.pad_token_id != raw_tokenizer.eos_token_id
    assert any("was the EOS" in n for n in notes)


def test_new_pad_token_added_and_embeddings_resized(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # Remove every pad candidate from play by making EOS the only special token that could serve.
    for candidate in m.PAD_CANDIDATES:
        assert candidate not in tok.get_vocab() or candidate == "<|endoftext|>"
    tok.chat_template = m.CHATML_TEMPLATE
    old_candidates = m.PAD_CANDIDATES
    try:
        m.PAD_CANDIDATES = ()
        notes = m.prepare_tokenizer(tok)
    finally:
        m.PAD_CANDIDATES = old_candidates
    assert tok.pad_token == m.NEW_PAD_TOKEN
    model = m.get_model(
        NS(model_name_or_path=str(tiny_model_dir), dtype="float32", attn_implementation="sdpa"),
        NS(gradient_checkpointing=False),
        tokenizer=tok,
        notes=notes,
    )
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_recipe_eos_that_is_not_in_vocab_is_refused(raw_tokenizer):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        m.prepare_tokenizer(raw_tokenizer, eos_token="<|eot_id|>")


def test_recipe_eos_that_disagrees_with_template_warns(raw_tokenizer):
    notes = m.prepare_tokenizer(raw_tokenizer, eos_token="<|endoftext|>")
    assert raw_tokenizer.eos_token == "<|endoftext|>"
    assert any(n.startswith("warning") and "<|im_end|>" in n for n in notes)


def test_chat_template_from_jinja_file(raw_tokenizer, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}<|im_end|>{% endfor %}")
    m.prepare_tokenizer(raw_tokenizer, chat_template=str(path))
    text = raw_tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert text == "[user]x<|im_end|>"


def test_missing_jinja_file_is_named(raw_tokenizer):
    from open_r1_nb.config import RecipeError

    with pytest.raises(RecipeError, match="nope.jinja"):
        m.prepare_tokenizer(raw_tokenizer, chat_template="parameters/chat_templates/nope.jinja")


def test_flash_attention_falls_back_without_cuda():
    impl, note = m.resolve_attn_implementation("flash_attention_2")
    assert impl == "sdpa" and "sdpa" in note
    assert m.resolve_attn_implementation("sdpa") == ("sdpa", None)


def test_get_model_training_settings(tiny_model_dir):
    model = m.get_model(
        NS(model_name_or_path=str(tiny_model_dir), dtype="float32", attn_implementation="flash_attention_2"),
        NS(gradient_checkpointing=True),
    )
    assert model.config.use_cache is False
    summary = m.model_summary(model)
    assert summary["attention"] == "sdpa" and summary["dtype"] == "float32" and summary["layers"] >= 1


def test_missing_hub_model_offline_is_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(m.ModelLoadError, match="local-dir"):
        m.get_tokenizer(NS(model_name_or_path="nobody/does-not-exist"), NS())


def test_render_sample_marks_assistant_part(raw_tokenizer):
    m.prepare_tokenizer(raw_tokenizer)
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>2+2=4</think> \\boxed{4}"},
    ]
    prompt, completion = m.split_prompt_completion(raw_tokenizer, messages)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion.startswith("&lt;") is False and completion.startswith("<think>")
    assert completion.rstrip().endswith("<|im_end|>")
    html = m.render_sample_html(raw_tokenizer, messages)
    assert "background" in html and "&lt;think&gt;" in html


def _partition_like_zero3(model) -> int:
    """Leave the input embedding as DeepSpeed ZeRO-3 leaves it on a rank: the full shape in ``ds_shape`` /
    ``ds_numel`` and an empty ``[0]`` tensor as the weight. Returns the true number of rows."""
    import torch

    weight = model.get_input_embeddings().weight
    rows = weight.shape[0]
    weight.ds_shape = weight.shape
    weight.ds_numel = weight.numel()
    weight.data = torch.empty(0, dtype=weight.dtype)
    assert weight.shape == (0,)
    return rows


def _tiny_model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    m.prepare_tokenizer(tok)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok


def test_zero3_partitioned_embedding_is_not_resized_down(tiny_model_dir, monkeypatch):
    model, tok = _tiny_model_and_tokenizer(tiny_model_dir)
    # Pad the matrix past the tokenizer, as Qwen2.5 does (152,064 rows for 151,665 tokens).
    model.resize_token_embeddings(len(tok) + 64)
    rows = _partition_like_zero3(model)
    assert len(tok) < rows
    calls: list[int] = []
    monkeypatch.setattr(model, "resize_token_embeddings", lambda n, *a, **k: calls.append(n))
    notes: list[str] = []
    m.align_model_with_tokenizer(model, tok, notes)
    assert calls == [], "a partitioned embedding was resized (shrunk) to the tokenizer's length"
    assert not any("resized" in n for n in notes)
    assert m.embedding_rows(model) == rows
    assert model.config.pad_token_id == tok.pad_token_id


def test_zero3_partitioned_embedding_grows_for_added_tokens_with_a_true_note(tiny_model_dir, monkeypatch):
    model, tok = _tiny_model_and_tokenizer(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|extra_a|>", "<|extra_b|>"]})
    rows = _partition_like_zero3(model)
    assert len(tok) > rows
    calls: list[int] = []
    monkeypatch.setattr(model, "resize_token_embeddings", lambda n, *a, **k: calls.append(n))
    notes: list[str] = []
    m.align_model_with_tokenizer(model, tok, notes)
    assert calls == [len(tok)]
    assert f"embeddings resized from {rows} to {len(tok)} rows for the added tokens" in notes


def test_embedding_rows_without_ds_shape_falls_back_to_the_module(tiny_model_dir):
    import torch

    model, _ = _tiny_model_and_tokenizer(tiny_model_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    model.get_input_embeddings().weight.data = torch.empty(0)
    assert m.embedding_rows(model) == rows


def _pretend_installed(monkeypatch, present: set[str], absent: set[str]) -> None:
    """Make ``importlib.util.find_spec`` report ``present`` packages as installed and ``absent`` ones as missing."""
    import importlib.machinery
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in present:
            return importlib.machinery.ModuleSpec(name, None)
        if name in absent:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_flash_attention_uses_the_hub_kernel_when_kernels_is_installed(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _pretend_installed(monkeypatch, present={"kernels"}, absent={"flash_attn", "flash_attn_interface"})
    impl, note = m.resolve_attn_implementation("flash_attention_2")
    # The request stays: transformers itself swaps in its Hub kernel; sdpa here would prevent that.
    assert impl == "flash_attention_2"
    assert m.hub_flash_kernel("flash_attention_2") in note and "kernels" in note
    impl, note = m.resolve_attn_implementation("flash_attention_3")
    assert impl == "flash_attention_3" and m.hub_flash_kernel("flash_attention_3") in note


def test_flash_attention_without_flash_attn_or_kernels_falls_back_to_sdpa(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _pretend_installed(monkeypatch, present=set(), absent={"flash_attn", "kernels"})
    impl, note = m.resolve_attn_implementation("flash_attention_2")
    assert impl == "sdpa" and "kernels" in note and ".[gpu]" in note and ".[flash]" in note


def test_flash_attention_with_flash_attn_installed_is_kept(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _pretend_installed(monkeypatch, present={"flash_attn"}, absent={"kernels"})
    assert m.resolve_attn_implementation("flash_attention_2") == ("flash_attention_2", None)


def test_hub_kernel_that_cannot_load_falls_back_to_sdpa(tiny_model_dir, monkeypatch):
    # As on a GPU node with `kernels` but no flash-attn and no Hub: the resolver keeps flash_attention_2, and
    # transformers cannot provide it (here: no CUDA, no flash_attn, no kernel), so it raises while building the model.
    monkeypatch.setattr(m, "resolve_attn_implementation", lambda requested: (requested, None))
    _pretend_installed(monkeypatch, present={"kernels"}, absent={"flash_attn"})
    notes: list[str] = []
    model = m.get_model(
        NS(model_name_or_path=str(tiny_model_dir), dtype="float32", attn_implementation="flash_attention_2"),
        NS(gradient_checkpointing=False),
        notes=notes,
    )
    assert model.config._attn_implementation == "sdpa"
    assert any(m.hub_flash_kernel("flash_attention_2") in n and "using sdpa" in n for n in notes)


def test_freeze_bottom_ends_the_backward_pass_above_the_frozen_layers(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    layers = model.get_decoder().layers
    assert len(layers) == 2
    note = m.freeze_bottom(model, 1)
    assert "decoder layers 0-0 of 2" in note and "parameters train" in note
    assert not model.get_input_embeddings().weight.requires_grad
    assert not model.get_output_embeddings().weight.requires_grad  # tied to the embeddings: the same tensor
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())

    needs_grad = {}
    for i, layer in enumerate(layers):
        layer.register_forward_hook(
            lambda _m, _a, out, i=i: needs_grad.__setitem__(
                i, (out[0] if isinstance(out, tuple) else out).requires_grad
            )
        )
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    # Autograd records nothing below layer 1: the frozen layer's output needs no gradient, so no backward runs there.
    assert needs_grad == {0: False, 1: True}
    assert all(p.grad is None for p in layers[0].parameters())
    assert model.get_input_embeddings().weight.grad is None
    assert all(p.grad is not None for p in layers[1].parameters())


@pytest.mark.parametrize("layers", [0, 2, 5])
def test_freeze_bottom_refuses_a_depth_that_leaves_nothing_or_freezes_nothing(tiny_model_dir, layers):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="freeze_layers: .* of 2 decoder layers. Fix: use 1 to 1"):
        m.freeze_bottom(model, layers)
    assert all(p.requires_grad for p in model.parameters())
