"""Training set-ups the tests share: a small ``ThroughputSFTTrainer`` in this process (the tiny model, a few smoke
rows), and the two-process launch command of a smoke recipe whose run lives in a test's folder."""

from __future__ import annotations

import json
from pathlib import Path

from open_r1_nb import launch
from open_r1_nb.config import load_recipe, save_recipe
from open_r1_nb.paths import REPO_ROOT


def smoke_rows(smoke_data_dir: Path, count: int) -> list[dict]:
    """The first ``count`` rows of the smoke data's ``train.jsonl``."""
    lines = (smoke_data_dir / "train.jsonl").read_text().splitlines()[:count]
    return [json.loads(line) for line in lines]


def tiny_trainer(tiny_model_dir: Path, train, output_dir: Path, callbacks=None, **sft_config):
    """A ``ThroughputSFTTrainer`` on the tiny model and its prepared tokenizer, returned with that tokenizer.

    ``train`` is a list of rows (only their ``messages`` are kept) or a ``Dataset`` used as it is. The SFTConfig
    writes to ``output_dir`` on the CPU in fp32, reports nowhere and cuts at 256 tokens; ``sft_config`` adds to
    or changes that."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig

    from open_r1_nb.model import prepare_tokenizer
    from open_r1_nb.sft import ThroughputSFTTrainer

    if isinstance(train, list):
        train = Dataset.from_list([{"messages": row["messages"]} for row in train])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prepare_tokenizer(tokenizer)
    config = {"use_cpu": True, "report_to": "none", "bf16": False, "max_length": 256, **sft_config}
    trainer = ThroughputSFTTrainer(
        model=str(tiny_model_dir),
        args=SFTConfig(output_dir=str(output_dir), **config),
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return trainer, tokenizer


def smoke_launch_command(tmp_path: Path, port: int, **overrides) -> list[str]:
    """The launch command of two training processes for the smoke recipe changed by ``overrides``.

    The recipe is resolved for the run, its ``output_dir`` is ``tmp_path/checkpoints`` (so the run's folder is
    ``tmp_path``) and it is saved as ``tmp_path/recipe.yaml``; the rendezvous port is the first free one from
    ``port``."""
    recipe = load_recipe(REPO_ROOT / "parameters/smoke.yaml", overrides=overrides).resolved_for_run()
    recipe.training.output_dir = str(tmp_path / "checkpoints")
    recipe_path = save_recipe(recipe, tmp_path / "recipe.yaml")
    return launch.build_command(
        recipe_path, recipe.accelerate_config_file(), 2, main_process_port=launch.free_port(port)
    )
