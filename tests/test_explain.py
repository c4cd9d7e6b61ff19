"""What the notebooks say follows the profile in use, and what they show of a row is what TRL trains on."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
import torch

from open_r1_nb import explain, hardware
from open_r1_nb.config import load_recipe
from open_r1_nb.paths import NOTEBOOKS_DIR, REPO_ROOT


def _recipe(name: str, **overrides):
    return load_recipe(
        REPO_ROOT / "parameters" / f"{name}.yaml", overrides=overrides or None, check_files=False
    )


# ------------------------------------------------------------------------------------------ profile text


def test_devices_and_ranks_follow_the_profile(monkeypatch):
    # The loader keeps cpu_demo's bf16, and the notebooks' text says so.
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    smoke, demo, gpu = _recipe("smoke"), _recipe("cpu_demo"), _recipe("openr1_distill_7b")
    assert "**2 training processes** on the CPU" in explain.devices_text(smoke)
    assert "float32" in explain.devices_text(smoke)
    assert "**one training process** on the CPU" in explain.devices_text(demo)
    assert "bf16 autocast" in explain.devices_text(demo)
    assert "**8 training processes**" in explain.devices_text(gpu) and "ZeRO-3" in explain.devices_text(gpu)
    assert "`rank 1 of 2`" in explain.ranks_text(smoke)
    assert "**one process**" in explain.ranks_text(demo) and "rank 1" not in explain.ranks_text(demo)
    assert "8 processes" in explain.ranks_text(gpu)


def test_precision_says_why_bf16_is_off_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: False)
    demo = _recipe("cpu_demo")
    demo.training.bf16 = False  # what the loader does on such a CPU
    assert "this CPU has no bf16 units" in explain.devices_text(demo)
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    assert explain.devices_text(_recipe("smoke")).endswith("in float32.")  # the profile's own choice


def test_loss_text_follows_completion_only_loss():
    assert "the answer only" in explain.loss_text(_recipe("cpu_demo"))
    assert "the whole row" in explain.loss_text(_recipe("cpu_long"))
    assert "the whole row" in explain.loss_text(_recipe("smoke"))
    assert "the answer only" in explain.loss_text(_recipe("smoke", completion_only_loss=True))


def test_notebook_markdown_states_no_profile_specific_layout():
    """The layout (how many processes, which precision) is computed from the recipe, never written in markdown:
    notebook 00 once said "float32 with two processes" and notebook 04 "both ranks print" for a one-process demo."""
    pattern = re.compile(r"\b(two|both|2) (processes|ranks)\b", re.IGNORECASE)
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                assert not pattern.search(cell.source), (
                    f"{path.name}: {pattern.search(cell.source).group(0)!r}"
                )
    sources = {p.name[:2]: p.read_text() for p in NOTEBOOKS_DIR.glob("0[034]_*.ipynb")}
    assert "explain.devices_text(recipe)" in sources["00"]
    assert "explain.ranks_text(recipe)" in sources["04"]
    assert "explain.loss_text(recipe)" in sources["03"] and "explain.labels_html" in sources["03"]


# ------------------------------------------------------------------------------------- rows and labels


@pytest.fixture(scope="module")
def smoke_parts(tiny_model_dir, smoke_data_dir):
    from open_r1_nb.model import get_tokenizer

    recipe = load_recipe(
        {
            "model_name_or_path": str(tiny_model_dir), "dataset_name": str(smoke_data_dir),
            "eos_token": "<|im_end|>", "run_name": "explain", "use_cpu": True, "bf16": False, "max_length": 256,
        },
        check_files=False,
    )  # fmt: skip
    tokenizer = get_tokenizer(recipe.model, recipe.training)
    rows = [
        json.loads(line)["messages"] for line in (smoke_data_dir / "train.jsonl").read_text().splitlines()
    ]
    model = explain.demo_model(recipe, tokenizer)
    return recipe, tokenizer, model, rows


def _grey_green(html: str) -> tuple[int, int]:
    found = re.search(r"(\d+) tokens with label -100 .* (\d+) tokens the model learns", html)
    return int(found.group(1)), int(found.group(2))


def test_whole_row_training_marks_nothing_as_unlearned(smoke_parts):
    """The old notebook 03 greyed the prompt for every profile; under whole-row training every token is a target."""
    recipe, tokenizer, model, rows = smoke_parts
    batch = explain.collate(explain.sft_trainer(recipe, tokenizer, model, rows[:1]))
    html = explain.labels_html(tokenizer, batch["input_ids"][0], batch["labels"][0])
    grey, green = _grey_green(html)
    assert grey == 0 and green == len(batch["input_ids"][0])
    assert "the EOS" in html and "among them" in html


def test_answer_only_training_greys_exactly_the_prompt(smoke_parts):
    recipe, tokenizer, model, rows = smoke_parts
    batch = explain.collate(
        explain.sft_trainer(recipe, tokenizer, model, rows[:2], completion_only_loss=True)
    )
    prompt = tokenizer.apply_chat_template(rows[0][:-1], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    html = explain.labels_html(
        tokenizer, batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
    )
    grey, green = _grey_green(html)
    assert grey == n_prompt and green == int(batch["attention_mask"][0].sum()) - n_prompt
    assert tokenizer.eos_token_id in batch["labels"][0].tolist()  # the model learns to stop
    table = explain.label_table(
        tokenizer, batch["input_ids"][0], {"labels": batch["labels"][0]}, 0, n_prompt + 1
    )
    assert (table["labels"].iloc[:n_prompt] == -100).all() and table["labels"].iloc[n_prompt] != -100


def test_the_loss_by_hand_is_trls(smoke_parts):
    """What notebook 03b asserts, on padded rows of both modes."""
    recipe, tokenizer, model, rows = smoke_parts
    rows = [rows[0], min(rows, key=lambda r: len(str(r)))]
    for only in (False, True):
        trainer = explain.sft_trainer(recipe, tokenizer, model, rows, completion_only_loss=only)
        batch = explain.collate(trainer)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            trl_loss = trainer.compute_loss(model, dict(batch))
        labels = batch["labels"][:, 1:]
        keep = labels != -100
        by_hand = -logits[:, :-1][keep].log_softmax(-1).gather(-1, labels[keep][:, None]).mean()
        torch.testing.assert_close(by_hand, trl_loss, rtol=1e-5, atol=1e-5)


def test_a_large_model_is_shown_on_a_small_random_copy(tmp_path, smoke_parts):
    recipe, tokenizer, _, _ = smoke_parts
    big = tmp_path / "big"
    big.mkdir()
    config = {"model_type": "llama", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
              "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4}  # fmt: skip
    (big / "config.json").write_text(json.dumps(config))
    recipe.model.model_name_or_path = str(big)
    notes: list[str] = []
    model = explain.demo_model(recipe, tokenizer, notes=notes)
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tokenizer)
    assert "~8B parameters" in notes[0]


# ------------------------------------------------------------------------------ template: train vs evaluation

# A DeepSeek-R1-distill-like template: the generation prompt prefills "<think>", which a training row never has.
PREFILLING = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|User|>{{ m['content'] }}"
    "{% else %}<|Assistant|>{{ m['content'] }}<|im_end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)


def test_a_template_that_prompts_differently_from_training_is_named(tiny_model_dir):
    from transformers import AutoTokenizer

    from open_r1_nb.model import generation_prompt_mismatch, prepare_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    notes = prepare_tokenizer(tokenizer, chat_template=PREFILLING)
    (warning,) = [n for n in notes if "opens the assistant's turn" in n]
    assert "'<think>\\n'" in warning and "when prompting" in warning and "chat_template" in warning

    for template in (None, REPO_ROOT / "parameters/chat_templates/openr1_qwen.jinja"):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        prepare_tokenizer(tokenizer, chat_template=str(template) if template else None)  # ChatML, open-r1's
        assert generation_prompt_mismatch(tokenizer) is None


# ------------------------------------------------------------------------------------- troubleshooting messages


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a CUDA machine may have bf16: nothing is refused there"
)
def test_bf16_refused_by_the_hardware_names_fp16_for_older_gpus():
    """transformers refuses bf16 without a bf16 GPU; the message says what a V100 or T4 user should do."""
    from open_r1_nb.config import RecipeError

    with pytest.raises(
        RecipeError, match=r"support bf16.*older than Ampere.*--set bf16=false --set fp16=true"
    ):
        load_recipe(REPO_ROOT / "parameters/openr1_distill_7b.yaml", check_files=False, setup_devices=True)
    deferred = _recipe("openr1_distill_7b")
    with pytest.raises(RecipeError, match=r"older than Ampere.*fp16: true"):
        deferred.training.setup_devices()
