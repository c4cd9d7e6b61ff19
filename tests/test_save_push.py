"""Saving and publishing the final model (open_r1_nb.sft.save_and_push): one save, one upload.

``Trainer.save_model`` pushes by itself when ``push_to_hub`` is set, saving the model a second time on the way;
these tests count saves and uploads with a stand-in for the Hub API, so nothing leaves the machine.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from trainers import smoke_rows, tiny_trainer


class FakeHubApi:
    """Records what the Trainer and ``publish.push_model`` would send to the Hub."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"someone/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub
    import transformers.trainer

    from open_r1_nb import publish

    FakeHubApi.calls = []
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: FakeHubApi())
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHubApi)
    monkeypatch.setattr(publish, "hub_token", lambda: "hf_not_a_real_token")
    return FakeHubApi.calls


def _trainer(tiny_model_dir, smoke_data_dir, output_dir: Path, push_to_hub: bool):
    trainer, tokenizer = tiny_trainer(
        tiny_model_dir, smoke_rows(smoke_data_dir, 4), output_dir,
        push_to_hub=push_to_hub, hub_model_id="tiny-distill" if push_to_hub else None,
    )  # fmt: skip
    saves: list[Path] = []
    original = trainer._save

    def counting_save(output_dir=None, state_dict=None):
        saves.append(Path(output_dir or trainer.args.output_dir))
        return original(output_dir, state_dict=state_dict)

    trainer._save = counting_save
    return trainer, tokenizer, saves


def test_push_to_hub_saves_once_and_uploads_once(tiny_model_dir, smoke_data_dir, tmp_path, fake_hub):
    from open_r1_nb import sft

    output_dir = tmp_path / "run" / "checkpoints"
    trainer, tokenizer, saves = _trainer(tiny_model_dir, smoke_data_dir, output_dir, push_to_hub=True)
    script_args = SimpleNamespace(dataset_mixture=None, dataset_name="local/smoke")
    model_dir = sft.save_and_push(trainer, tokenizer, script_args, {"train_loss": 1.0})

    assert model_dir == tmp_path / "run" / "model"
    # One save (one ZeRO-3 gather on a GPU node), into the final folder; none into the checkpoints folder.
    assert saves == [model_dir]
    assert not list(output_dir.glob("*.safetensors"))
    uploads = [kwargs for name, kwargs in fake_hub if name == "upload_folder"]
    assert len(uploads) == 1, f"expected one upload, got {len(uploads)}: {uploads}"
    assert Path(uploads[0]["folder_path"]) == model_dir
    # What was uploaded is the complete model folder: weights, tokenizer, card and metrics.
    for name in ("model.safetensors", "tokenizer_config.json", "README.md", "training_metrics.json"):
        assert (model_dir / name).exists(), name


def test_without_push_to_hub_nothing_is_uploaded(tiny_model_dir, smoke_data_dir, tmp_path, fake_hub):
    from open_r1_nb import sft

    trainer, tokenizer, saves = _trainer(
        tiny_model_dir, smoke_data_dir, tmp_path / "out" / "checkpoints", push_to_hub=False
    )
    script_args = SimpleNamespace(dataset_mixture=None, dataset_name="local/smoke")
    model_dir = sft.save_and_push(trainer, tokenizer, script_args, {})
    assert saves == [model_dir]
    assert fake_hub == []
