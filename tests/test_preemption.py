"""Save-and-stop on the scheduler's request (open_r1_nb.preemption): a checkpoint at the next step, then an exit."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback

from open_r1_nb import launch, sft
from open_r1_nb.config import load_recipe, save_recipe
from open_r1_nb.paths import REPO_ROOT
from open_r1_nb.preemption import STOP_FILE_ENV, SaveAndStopOnRequest, StopRequested, stop_callback_from_env


def _tiny_trainer(tiny_model_dir, output_dir, callbacks, max_steps=6):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    ids = torch.randint(0, 200, (8, 16)).tolist()
    data = Dataset.from_list([{"input_ids": row, "labels": row} for row in ids])
    args = TrainingArguments(
        output_dir=str(output_dir), use_cpu=True, max_steps=max_steps, per_device_train_batch_size=2,
        save_strategy="no", report_to="none", logging_strategy="no",
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)


class _CreateAtStep(TrainerCallback):
    """Creates the stop file at a given step, as the batch shell's signal handler would."""

    def __init__(self, path, step):
        self.path, self.step = path, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.path.touch()
        return control


def test_stop_file_saves_a_complete_checkpoint_at_the_next_step_and_stops(tiny_model_dir, tmp_path):
    stop_file = tmp_path / "stop-requested-1"
    stop = SaveAndStopOnRequest(stop_file)
    callbacks = [_CreateAtStep(stop_file, 2), sft.CheckpointCompleteCallback(), stop]
    trainer = _tiny_trainer(tiny_model_dir, tmp_path / "checkpoints", callbacks)
    trainer.train()
    # save_strategy is "no": the checkpoint exists only because the stop was requested.
    assert trainer.state.global_step == 2
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    assert sft.checkpoint_is_complete(checkpoint)
    assert sft.last_complete_checkpoint(tmp_path / "checkpoints") == checkpoint
    with pytest.raises(StopRequested) as stopped:
        stop.raise_if_stopped(tmp_path / "checkpoints")
    assert stopped.value.code == 0 and stopped.value.checkpoint == checkpoint


def test_without_the_stop_file_training_runs_to_the_end(tiny_model_dir, tmp_path):
    stop = SaveAndStopOnRequest(tmp_path / "never")
    trainer = _tiny_trainer(tiny_model_dir, tmp_path / "checkpoints", [stop], max_steps=3)
    trainer.train()
    assert trainer.state.global_step == 3 and stop.requested_at is None
    stop.raise_if_stopped(tmp_path / "checkpoints")  # nothing to do
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_the_callback_exists_only_when_the_launch_names_a_stop_file(monkeypatch, tmp_path):
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    assert stop_callback_from_env() is None
    monkeypatch.setenv(STOP_FILE_ENV, str(tmp_path / "stop"))
    assert stop_callback_from_env().stop_file == tmp_path / "stop"


@pytest.mark.slow
def test_two_ranks_agree_save_once_and_exit_without_the_final_model(tiny_model_dir, smoke_data_dir, tmp_path):
    """The real entry point on two gloo ranks, with a stop already requested: both stop at step 1 after one
    complete checkpoint, exit 0, and leave no final model for a finished run to be mistaken for."""
    recipe = load_recipe(
        REPO_ROOT / "parameters/smoke.yaml",
        overrides={"run_name": "stop_test", "max_steps": 20, "save_steps": 100, "benchmarks": []},
    ).resolved_for_run()
    recipe.training.output_dir = str(tmp_path / "checkpoints")
    recipe_path = save_recipe(recipe, tmp_path / "recipe.yaml")
    cmd = launch.build_command(
        recipe_path, recipe.accelerate_config_file(), 2, main_process_port=launch.free_port(29531)
    )
    stop_file = tmp_path / "stop-requested-7"
    stop_file.touch()
    env = {**launch.launch_env(cpu=True), STOP_FILE_ENV: str(stop_file)}
    result = launch.run(cmd, tmp_path / "train.log", env=env, echo=False)
    assert result.returncode == 0
    log = (tmp_path / "train.log").read_text()
    assert "stopped on request after saving" in log
    checkpoint = tmp_path / "checkpoints" / "checkpoint-1"
    assert sft.checkpoint_is_complete(checkpoint)
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 1
    assert not (tmp_path / "model").exists()
