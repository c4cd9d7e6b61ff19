"""open_r1_nb.sft: the pieces around SFTTrainer (integrations, saving rules)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from profiles import write_profile
from trainers import smoke_rows, tiny_trainer

from open_r1_nb import sft
from open_r1_nb.config import RecipeError


def _args(**kw):
    base = dict(
        report_to=["wandb"],
        use_liger_kernel=False,
        wandb_entity=None,
        wandb_project=None,
        wandb_run_group=None,
    )
    return SimpleNamespace(**{**base, **kw})


def test_unconfigured_wandb_falls_back_to_tensorboard_without_prompting(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    args = _args()
    sft.apply_optional_integrations(args)
    assert "wandb" not in args.report_to and "tensorboard" in args.report_to


def test_missing_liger_is_turned_off(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a)
    )
    args = _args(report_to=[], use_liger_kernel=True)
    sft.apply_optional_integrations(args)
    assert args.use_liger_kernel is False


def test_final_model_dir_follows_the_run_layout():
    assert sft.final_model_dir("runs/x/checkpoints") == Path("runs/x/model")
    assert sft.final_model_dir("data/OpenR1-Distill-7B") == Path("data/OpenR1-Distill-7B")


def test_generation_config_stops_at_the_tokenizers_eos(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from open_r1_nb.model import prepare_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prepare_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.use_cache = False
    sft.finalize_generation_config(model, tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.generation_config.temperature == 0.6 and model.generation_config.top_p == 0.95
    assert model.config.use_cache is True


def _loss_ours_then_trls(trainer, batch, items):
    """The batch's loss and gradients through the CPU full-logits path, then through TRL's own compute_loss."""
    model = trainer.model.train()
    results = []
    for ours in (True, False):
        trainer._labelled_head_loss = ours
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    return results


def test_cpu_loss_over_labelled_positions_equals_trls_fused_head_loss(
    tiny_model_dir, smoke_data_dir, tmp_path
):
    import torch

    trainer, _ = tiny_trainer(
        tiny_model_dir, smoke_rows(smoke_data_dir, 8), tmp_path,
        per_device_train_batch_size=4, gradient_checkpointing=False, max_length=1024,
    )  # fmt: skip
    assert trainer._labelled_head_loss
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["attention_mask"] == 0).any()  # padded: the masks matter
    items = (batch["labels"][:, 1:] != -100).sum()
    (ours, _), (trls, _) = _loss_ours_then_trls(trainer, batch, items)
    torch.testing.assert_close(ours, trls, rtol=1e-5, atol=1e-5)
    metrics = trainer._metrics["train"]
    assert len(metrics["entropy"]) == 2 and len(metrics["mean_token_accuracy"]) == 2
    assert abs(metrics["entropy"][0] - metrics["entropy"][1]) < 1e-3
    assert abs(metrics["mean_token_accuracy"][0] - metrics["mean_token_accuracy"][1]) < 1e-6
    # Both paths counted the batch's real tokens once each.
    assert metrics["num_tokens"] == [2 * int(batch["attention_mask"].sum())]


def test_completion_only_loss_trains_on_the_answer_and_its_eos(tiny_model_dir, smoke_data_dir, tmp_path):
    from datasets import Dataset

    from open_r1_nb.data import to_prompt_completion

    rows = smoke_rows(smoke_data_dir, 4)
    split = to_prompt_completion(Dataset.from_list([{"messages": r["messages"]} for r in rows]))
    assert split.column_names == ["prompt", "completion"]
    assert split[0]["prompt"] == rows[0]["messages"][:-1]
    assert split[0]["completion"] == rows[0]["messages"][-1:]

    trainer, tokenizer = tiny_trainer(
        tiny_model_dir, split, tmp_path,
        per_device_train_batch_size=4, gradient_checkpointing=False, max_length=1024, completion_only_loss=True,
    )  # fmt: skip
    for row, features in zip(rows, trainer.train_dataset, strict=True):
        ids, labels = features["input_ids"], features["labels"]
        prompt_ids = tokenizer.apply_chat_template(
            row["messages"][:-1], add_generation_prompt=True, tokenize=True
        )
        prompt_ids = prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids
        cut = len(prompt_ids)
        assert ids[:cut] == list(prompt_ids)
        assert all(t == -100 for t in labels[:cut])  # no loss on the question
        trained = [t for t in labels[cut:] if t != -100]
        assert trained == ids[cut:]  # the whole answer, to its end
        assert tokenizer.eos_token_id in trained  # the model learns to stop
        assert row["messages"][-1]["content"].strip() in tokenizer.decode(trained)

    # The CPU loss (LM head over the labelled positions) is TRL's loss on the masked batch, with the same gradients.
    import torch

    batch = next(iter(trainer.get_train_dataloader()))
    items = (batch["labels"][:, 1:] != -100).sum()
    assert 0 < items < (batch["attention_mask"][:, 1:] == 1).sum()  # the prompt is masked
    (ours, ours_grads), (trls, trls_grads) = _loss_ours_then_trls(trainer, batch, items)
    torch.testing.assert_close(ours, trls, rtol=1e-5, atol=1e-5)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert len(ours_grads) == len(trls_grads) == len(trainable)
    for a, b in zip(ours_grads, trls_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_completion_only_loss_needs_the_messages_column():
    import pytest
    from datasets import Dataset

    from open_r1_nb.data import DatasetValidationError, to_prompt_completion

    with pytest.raises(DatasetValidationError, match="completion_only_loss: false"):
        to_prompt_completion(Dataset.from_list([{"text": "a"}]))


def test_training_log_writes_each_transformers_line_once_under_ci():
    # transformers lets its records propagate to the root logger when CI is set; with its own handler on as well,
    # every trainer line used to appear twice in train.log on CI machines.
    import subprocess
    import sys

    code = (
        "import transformers, types\n"
        "from open_r1_nb.sft import setup_logging\n"
        "setup_logging(types.SimpleNamespace(get_process_log_level=lambda: 20))\n"
        "transformers.utils.logging.get_logger('transformers.trainer').info('Saving model checkpoint to X')\n"
    )
    env = {**__import__("os").environ, "CI": "true"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert (out.stdout + out.stderr).count("Saving model checkpoint to X") == 1, out.stdout + out.stderr


def test_an_unknown_benchmark_stops_the_training_entry_point_before_training(
    tmp_path, tiny_model_dir, smoke_data_dir, monkeypatch, fresh_accelerate_state
):
    """The benchmarks run after training: a misspelt name must stop ``python -m open_r1_nb.sft`` before it trains."""
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path / "runs"))
    profile = write_profile(
        tmp_path, tiny_model_dir, smoke_data_dir, "misspelt", benchmarks=["smoek"], accelerate_config="cpu_1proc",
        num_processes=1,
    )  # fmt: skip
    monkeypatch.setattr(sft, "train", lambda recipe: pytest.fail("training started"))
    with pytest.raises(
        RecipeError, match=r"`benchmarks: 'smoek'` is not a known benchmark \(did you mean `smoke`"
    ):
        sft.main(["--config", str(profile)])
