"""TRL's assistant_only_loss on ``messages`` rows: the marked ChatML template, the labels it gives, the recipe checks,
and a training run of the smoke profile with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from open_r1_nb import paths
from open_r1_nb.model import CHATML_TEMPLATE, prepare_tokenizer

TEMPLATE = "parameters/chat_templates/chatml_training.jinja"
TEMPLATE_TEXT = (paths.REPO_ROOT / TEMPLATE).read_text()

MULTI_TURN = [
    {"role": "system", "content": "Think first."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "<think>\n2 + 2 = 4\n</think>\n\nThe answer is \\boxed{4}."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "<think>\n3 + 3 = 6\n</think>\n\nThe answer is \\boxed{6}."},
]


def _tokenizer(tiny_model_dir, template: str | None = TEMPLATE):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prepare_tokenizer(tokenizer, template, "<|im_end|>")
    return tokenizer


def _smoke_rows(smoke_data_dir, n: int) -> list[dict]:
    lines = (smoke_data_dir / "train.jsonl").read_text().splitlines()[:n]
    return [{"messages": json.loads(line)["messages"]} for line in lines]


def _trainer(tiny_model_dir, tokenizer, rows, tmp_path, **config):
    from trl import SFTConfig

    from open_r1_nb.sft import ThroughputSFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, report_to="none",
        gradient_checkpointing=False, bf16=False, max_length=1024, **config,
    )  # fmt: skip
    return ThroughputSFTTrainer(
        model=str(tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def test_marked_template_renders_exactly_like_chatml(tiny_model_dir):
    tokenizer = _tokenizer(tiny_model_dir, None)  # the ChatML fallback
    for messages, prompt in ((MULTI_TURN, False), (MULTI_TURN[:2], True), (MULTI_TURN[1:3], False)):
        plain = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        marked = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=prompt, chat_template=TEMPLATE_TEXT
        )
        assert marked == plain
    assert tokenizer.chat_template == CHATML_TEMPLATE


def test_labels_fall_on_every_assistant_turn_and_its_end_of_turn(tiny_model_dir, smoke_data_dir, tmp_path):
    tokenizer = _tokenizer(tiny_model_dir)
    rows = [{"messages": MULTI_TURN}, *_smoke_rows(smoke_data_dir, 3)]
    trainer = _trainer(tiny_model_dir, tokenizer, rows, tmp_path, assistant_only_loss=True)
    for row, features in zip(rows, trainer.train_dataset, strict=True):
        ids, labels = features["input_ids"], features["labels"]
        trained = [t for t in labels if t != -100]
        assert trained == [t for t, label in zip(ids, labels, strict=True) if label != -100]
        # The labelled tokens are the assistant turns, each to its end of turn, and nothing else.
        answers = [m["content"] + "<|im_end|>\n" for m in row["messages"] if m["role"] == "assistant"]
        assert tokenizer.decode(trained) == "".join(answers)
        untrained = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label == -100])
        for turn in row["messages"]:
            if turn["role"] != "assistant":
                assert turn["content"] in untrained
        assert untrained.count("<|im_start|>assistant\n") == len(answers)  # the header is prompt, not target
    # The collator keeps the mask: the batch's loss counts only the assistant's tokens.
    batch = next(iter(trainer.get_train_dataloader()))
    assert 0 < (batch["labels"] != -100).sum() < batch["attention_mask"].sum()


def test_single_turn_labels_equal_completion_only_loss(tiny_model_dir, smoke_data_dir, tmp_path):
    """On one question and one answer, TRL's assistant_only_loss and this project's completion_only_loss on
    conversations (split into prompt and completion) train on the same tokens."""
    from open_r1_nb.data import to_prompt_completion

    rows = _smoke_rows(smoke_data_dir, 4)
    tokenizer = _tokenizer(tiny_model_dir)
    assistant = _trainer(tiny_model_dir, tokenizer, rows, tmp_path / "a", assistant_only_loss=True)
    split = to_prompt_completion(Dataset.from_list(rows)).to_list()
    completion = _trainer(tiny_model_dir, tokenizer, split, tmp_path / "c", completion_only_loss=True)
    for a, c in zip(assistant.train_dataset, completion.train_dataset, strict=True):
        assert a["input_ids"] == c["input_ids"]
        assert a["labels"] == c["labels"]


def test_recipe_checks_the_template_for_markers(tiny_model_dir, smoke_data_dir):
    from open_r1_nb.config import RecipeError, load_recipe

    base = {
        "model_name_or_path": str(tiny_model_dir), "dataset_name": str(smoke_data_dir), "run_name": "aol",
        "use_cpu": True, "bf16": False, "accelerate_config": "cpu_1proc", "eos_token": "<|im_end|>",
        "assistant_only_loss": True,
    }  # fmt: skip
    # The tiny model has no template; the ChatML fallback has no markers and TRL has no training version of it.
    with pytest.raises(RecipeError) as exc:
        load_recipe(base)
    message = str(exc.value)
    assert "assistant_only_loss" in message and "{% generation %}" in message and TEMPLATE in message
    recipe = load_recipe({**base, "chat_template": TEMPLATE})
    assert recipe.training.assistant_only_loss and not any("assistant_only_loss" in n for n in recipe.notes)
    # A marked template whose end of turn sits outside the markers: it loads, with a note.
    outside = TEMPLATE_TEXT.replace(
        "{% generation %}{{ message['content'] + '<|im_end|>' + '\\n' }}{% endgeneration %}",
        "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' + '\\n' }}",
    )
    assert outside != TEMPLATE_TEXT
    recipe = load_recipe({**base, "chat_template": outside})
    assert any("would not learn to stop" in n for n in recipe.notes)


def test_smoke_profile_trains_with_assistant_only_loss(tiny_model_dir, smoke_data_dir, tmp_path):
    """The smoke profile, with assistant_only_loss and the marked template, through the training entry point."""
    out = tmp_path / "checkpoints"
    command = [
        sys.executable, "-m", "open_r1_nb.sft", "--config", "smoke",
        "--assistant_only_loss", "true", "--chat_template", TEMPLATE, "--output_dir", str(out),
        "--max_steps", "2", "--benchmarks", "[]", "--accelerate_config", "cpu_1proc",
        "--num_processes", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=paths.REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model_dir = tmp_path / "model"
    metrics = json.loads((model_dir / "training_metrics.json").read_text())
    assert metrics["train_samples"] > 0 and metrics["train_loss"] > 0
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 2
    import torch

    args = torch.load(model_dir / "training_args.bin", weights_only=False)  # what the trainer ran with
    assert args.assistant_only_loss is True and args.chat_template == TEMPLATE
    assert "end-of-turn token in the loss mask" not in done.stdout + done.stderr  # TRL's warning, not raised
    # The saved tokenizer keeps the marked template, which renders the same prompts at inference.
    saved = AutoTokenizer.from_pretrained(model_dir)
    assert "{% generation %}" in saved.chat_template
