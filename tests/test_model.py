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
