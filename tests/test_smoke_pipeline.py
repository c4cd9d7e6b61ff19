"""The smoke profile end to end through the papermill runner: notebooks 00-05, two training ranks, a saved model."""

from __future__ import annotations

import json

import nbformat
import pytest
import yaml
from walkthrough import NOTEBOOKS

from open_r1_nb.paths import REPO_ROOT
from open_r1_nb.pipeline import PipelineError, run_pipeline

pytestmark = pytest.mark.slow

# Known dummy secrets set for the whole run: no file the run writes may contain them.
SECRETS = {"HF_TOKEN": "hf_dummySECRET123456", "WANDB_API_KEY": "wandb_dummySECRET654321"}


def _outputs_text(path) -> str:
    nb = nbformat.read(path, as_version=4)
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", ""))
            chunks.append("\n".join(out.get("traceback", [])))
            chunks.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(chunks)


@pytest.fixture(scope="module")
def smoke_run(session_cache, tmp_path_factory, monkeypatch_module):
    runs = tmp_path_factory.mktemp("runs")
    monkeypatch_module.setenv("OPEN_R1_NB_RUNS", str(runs))
    for name, value in SECRETS.items():
        monkeypatch_module.setenv(name, value)
    lines: list[str] = []
    results = run_pipeline(REPO_ROOT / "parameters/smoke.yaml", echo=lines.append)
    return runs / "smoke", results, lines


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_every_notebook_ran_and_was_timed(smoke_run):
    run_dir, results, lines = smoke_run
    names = [r.name for r in results]
    assert names[:6] == list(NOTEBOOKS[:6])  # 00-05 first, in order
    for r in results:
        assert r.ok and (run_dir / "notebooks" / f"{r.name}.ipynb").exists()
        assert any(line.strip().startswith(r.name) and line.rstrip().endswith(" s") for line in lines)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["profile"] == "smoke" and metrics["wall_seconds"]["total"] > 0


def test_recipe_written_and_points_into_the_run(smoke_run):
    run_dir, _, _ = smoke_run
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert recipe["run_name"] == "smoke"
    assert recipe["output_dir"] == str(run_dir / "checkpoints")


def test_two_training_ranks_in_the_log(smoke_run):
    run_dir, _, _ = smoke_run
    log = (run_dir / "train.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log


def test_saved_model_stops_at_the_tokenizers_eos(smoke_run):
    from transformers import AutoTokenizer

    run_dir, _, _ = smoke_run
    model = run_dir / "model"
    assert (model / "model.safetensors").exists() and (model / "README.md").exists()
    tokenizer = AutoTokenizer.from_pretrained(model)
    generation = json.loads((model / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_id in (eos if isinstance(eos, list) else [eos])
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert "open-r1" in (model / "README.md").read_text()


def test_training_metrics_recorded(smoke_run):
    run_dir, _, _ = smoke_run
    train = json.loads((run_dir / "metrics.json").read_text())["train"]
    assert train["steps"] == 6 and train["num_processes"] == 2
    assert train["loss_last"] < train["loss_first"]
    assert 0 <= train["padding_fraction"] < 1 and train["tokens_per_second"] > 0
    assert (run_dir / "training_curves.png").stat().st_size > 5000
    assert (run_dir / "data" / "length_histogram.png").exists()


def test_estimate_and_hardware_recorded(smoke_run):
    """After its first steps the training estimates the run's time; metrics.json says where it ran."""
    run_dir, _, _ = smoke_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    est = metrics["estimate"]
    assert est["total_steps"] == 6 and est["after_steps"] == 4 and est["seconds_per_step"] > 0
    assert est["total_s"] >= est["training_s"] > 0 and est["budget_s"] is None and not est["over_budget"]
    assert "open_r1_nb estimate:" in (run_dir / "train.log").read_text()
    hw = metrics["hardware"]
    assert hw["device"] == "cpu" and hw["precision"] == "fp32" and hw["cpu"]["cores"] >= 1


def test_second_run_does_not_train_again(smoke_run):
    run_dir, _, _ = smoke_run
    before = (run_dir / "model" / "model.safetensors").stat().st_mtime_ns
    run_pipeline(REPO_ROOT / "parameters/smoke.yaml", only=["04"], echo=lambda _: None)
    assert (run_dir / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert "already holds a finished model" in _outputs_text(run_dir / "notebooks" / "04_sft_training.ipynb")


def test_failed_launch_raises_in_the_notebook_with_the_logs_tail(smoke_run, tmp_path):
    run_dir, _, _ = smoke_run
    profile = yaml.safe_load((REPO_ROOT / "parameters/smoke.yaml").read_text())
    profile.update(run_name="smoke_bad_model", model_name_or_path="nobody/no-such-model-135M")
    path = tmp_path / "bad_model.yaml"
    path.write_text(
        "# Hardware: any CPU; a smoke profile whose model does not exist\n" + yaml.safe_dump(profile)
    )
    with pytest.raises(PipelineError, match="04_sft_training"):
        run_pipeline(path, only=["04"], echo=lambda _: None)
    executed = run_dir.parent / "smoke_bad_model" / "notebooks" / "04_sft_training.ipynb"
    text = _outputs_text(executed)
    assert "LaunchError" in text
    assert "Last" in text and "lines of the log" in text
    assert "no-such-model-135M" in text


def test_no_secret_in_any_file_of_the_run(smoke_run):
    """Executed notebooks (and their previous copies), train.log, recipe.yaml, model card, metrics, checkpoint
    json/txt files, environment.json: every file under runs/ (this module's runs), read as bytes."""
    run_dir, _, _ = smoke_run
    environment = json.loads((run_dir / "environment.json").read_text())
    # The values did reach the notebooks' kernels (notebook 00 sees both), and only their presence was written.
    assert environment["hub"].startswith("token configured (hidden)")
    assert environment["wandb"] == "WANDB_API_KEY set (hidden)"
    runs = run_dir.parent
    checked = 0
    for path in sorted(p for p in runs.rglob("*") if p.is_file()):
        content = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in content, f"{name}'s value is in {path.relative_to(runs)}"
        checked += 1
    names = {p.name for p in runs.rglob("*") if p.is_file()}
    assert {"train.log", "recipe.yaml", "README.md", "metrics.json", "00_environment.ipynb"} <= names
    assert checked > 20


def test_malformed_rows_fail_in_notebook_02_naming_row_and_problem(smoke_run, tmp_path):
    run_dir, _, _ = smoke_run
    good = {"role": "user", "content": "What is 2 + 2?"}
    rows = [
        {
            "id": "fine",
            "messages": [good, {"role": "assistant", "content": "<think>2+2=4</think> \\boxed{4}"}],
        },
        {"id": "no-answer", "messages": [good]},
        {"id": "bad-content", "messages": [good, {"role": "assistant", "content": 42}]},
    ]
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    profile = yaml.safe_load((REPO_ROOT / "parameters/smoke.yaml").read_text())
    profile.update(
        run_name="smoke_bad_rows", dataset_name=str(folder), decontaminate=False, decontamination_against=[]
    )
    path = tmp_path / "bad_rows.yaml"
    path.write_text(
        "# Hardware: any CPU; a smoke profile whose data has malformed rows\n" + yaml.safe_dump(profile)
    )
    with pytest.raises(PipelineError, match="02_dataset"):
        run_pipeline(path, only=["02"], echo=lambda _: None)
    text = _outputs_text(run_dir.parent / "smoke_bad_rows" / "notebooks" / "02_dataset.ipynb")
    assert "DatasetValidationError" in text
    assert "row 1 (id no-answer)" in text and "end with an assistant turn" in text
    assert "row 2 (id bad-content)" in text and "int content" in text


def test_retrain_starts_from_zero_and_keeps_the_old_model(smoke_run):
    """Notebook 04 resumes from the newest checkpoint, which for a finished run is its end: retraining must first
    move the model and the checkpoints aside (runs/<run>/previous/<time>/) and then train every step again."""
    run_dir, _, _ = smoke_run
    old_model = run_dir / "model" / "model.safetensors"
    before, old_bytes = old_model.stat().st_mtime_ns, old_model.read_bytes()
    lines: list[str] = []
    run_pipeline(REPO_ROOT / "parameters/smoke.yaml", only=["04"], retrain=True, echo=lines.append)
    (aside,) = list((run_dir / "previous").iterdir())
    assert (aside / "model" / "model.safetensors").read_bytes() == old_bytes
    assert (aside / "checkpoints").is_dir() and (aside / "train.log").exists()
    log = (run_dir / "train.log").read_text()
    assert "resuming from" not in log and "*** Train ***" in log
    assert old_model.stat().st_mtime_ns > before
    assert any("training again" in line for line in lines)
