"""The runner's knobs (``--set``, ``--num-processes``, ``--retrain``, ``--re-evaluate``), the guard against reusing a
model or results under a different recipe, what each notebook is passed, and a quiet kernel.

The notebooks are replaced by a recorder here (no kernel, no training): these tests check the recipe the runner
writes, the parameters each notebook receives and what is moved aside, in seconds. The smoke pipeline in
``tests/test_smoke_pipeline.py`` retrains for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml
from profiles import write_profile

from open_r1_nb import pipeline
from open_r1_nb.config import RecipeError, load_recipe
from open_r1_nb.paths import NOTEBOOKS_DIR, REPO_ROOT

RUNNER = [sys.executable, str(REPO_ROOT / "scripts" / "run_pipeline.py")]


def _profile(tmp_path: Path, model: Path, dataset: Path, **changes) -> Path:
    keys = dict(
        per_device_train_batch_size=2, gradient_accumulation_steps=2, benchmarks=["smoke"], eval_limit=4
    )
    return write_profile(tmp_path, model, dataset, "knobs", **{**keys, **changes})


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """The runner with notebooks that only record their parameters (no kernel)."""
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path / "runs"))
    calls: list[tuple[str, dict]] = []

    def fake_run(notebook, output, parameters, kernel_name=None):
        calls.append((notebook.name[:2], dict(parameters)))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"notebook": notebook.name}))

    monkeypatch.setattr(pipeline, "run_notebook", fake_run)
    return calls


@pytest.fixture
def profile(tmp_path, tiny_model_dir, smoke_data_dir):
    return _profile(tmp_path, tiny_model_dir, smoke_data_dir)


def _run(profile, **kw):
    lines: list[str] = []
    pipeline.run_pipeline(profile, echo=lines.append, **kw)
    return lines


def _saved(tmp_path) -> dict:
    return yaml.safe_load((tmp_path / "runs" / "knobs" / "recipe.yaml").read_text())


def _finish(run: Path, label: str = "knobs") -> None:
    """What a finished run leaves: a model, a checkpoint, the log, results of both models, metrics."""
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.safetensors").write_bytes(b"old weights")
    (run / "model" / "training_metrics.json").write_text("{}")
    (run / "checkpoints" / "checkpoint-6").mkdir(parents=True)
    (run / "train.log").write_text("old log\n")
    for name in ("base", label, "curve-3"):
        (run / "eval" / "smoke").mkdir(parents=True, exist_ok=True)
        (run / "eval" / "smoke" / f"{name}.json").write_text(json.dumps({"pass@1": 0.5}))
        (run / "eval" / "smoke" / f"{name}.jsonl").write_text("")
    (run / "eval_comparison.png").write_bytes(b"png")
    (run / "metrics.json").write_text(
        json.dumps({"profile": "p", "train": {"loss_last": 1.0}, "eval": {"smoke": {}}})
    )


# ------------------------------------------------------------------------------------------- --set


def test_set_reaches_the_recipe_and_notebook_01_only(recorded, profile, tmp_path):
    overrides = pipeline.parse_set(["learning_rate=1e-4", "report_to=[tensorboard]"])
    lines = _run(profile, overrides=overrides)
    saved = _saved(tmp_path)
    assert saved["learning_rate"] == pytest.approx(1e-4) and saved["report_to"] == ["tensorboard"]
    assert any("override `learning_rate`" in line for line in lines)
    params = dict(recorded)
    # Notebook 01 rewrites the recipe from the profile, so it needs the overrides; the others read recipe.yaml.
    assert params["01"]["overrides"] == {"learning_rate": "1e-4", "report_to": ["tensorboard"]}
    assert all("overrides" not in p for step, p in recorded if step != "01")
    assert set(params["04"]) == {"profile", "run_name"}
    assert params["01"]["run_name"] == "knobs"


def test_set_is_validated_like_the_file_before_anything_runs(recorded, profile, tmp_path):
    with pytest.raises(
        RecipeError, match=r"command-line overrides .*learning_rat.*did you mean `learning_rate`"
    ):
        _run(profile, overrides=pipeline.parse_set(["learning_rat=1e-4"]))
    with pytest.raises(RecipeError, match="takes a number"):
        _run(profile, overrides=pipeline.parse_set(["learning_rate=fast"]))
    with pytest.raises(RecipeError, match="not a key=value pair"):
        pipeline.parse_set(["learning_rate"])
    assert recorded == [] and not (tmp_path / "runs").exists()


def test_an_unknown_benchmark_stops_the_run_before_anything_runs(recorded, profile, tmp_path, tiny_model_dir,
                                                                  smoke_data_dir):  # fmt: skip
    with pytest.raises(
        RecipeError, match=r"command-line overrides .*not a known benchmark \(did you mean `smoke`"
    ):
        _run(profile, overrides=pipeline.parse_set(["benchmarks=[smoek]"]))
    # In the profile itself, the error is the profile's, not the overrides'.
    bad = _profile(tmp_path, tiny_model_dir, smoke_data_dir, benchmarks=["aime25"])
    with pytest.raises(
        RecipeError, match=r"^recipe .*`benchmarks: 'aime25'` is not a known benchmark"
    ) as exc:
        _run(bad, overrides=pipeline.parse_set(["learning_rate=1e-4"]))
    assert exc.value.key == "benchmarks" and "aime24" in str(exc.value)
    assert recorded == [] and not (tmp_path / "runs").exists()


def test_set_run_name_is_the_run_folder(recorded, profile, tmp_path):
    _run(profile, overrides=pipeline.parse_set(["run_name=other"]), only=["01"])
    assert (tmp_path / "runs" / "other" / "recipe.yaml").exists()
    assert recorded[0][1]["run_name"] == "other"


# ---------------------------------------------------------------------------------------- --num-processes


def test_num_processes_keeps_the_global_batch(recorded, profile, tmp_path):
    lines = _run(profile, num_processes=4, only=["01"])
    saved = _saved(tmp_path)
    assert (saved["num_processes"], saved["gradient_accumulation_steps"]) == (4, 1)  # 2 x 2 x 2 = 4 x 2 x 1
    assert any("gradient_accumulation_steps 2 -> 1 keeps the global batch at 8" in line for line in lines)
    assert recorded[0][1]["overrides"] == {"num_processes": 4, "gradient_accumulation_steps": 1}
    # One process needs a one-process accelerate config: the loader says so, naming the command line.
    with pytest.raises(RecipeError, match="command-line overrides.*cpu_1proc"):
        _run(profile, num_processes=1, only=["01"])
    with pytest.raises(pipeline.PipelineError, match="at least 1"):
        _run(profile, num_processes=0, only=["01"])


def test_a_new_layout_with_the_same_global_batch_reuses_the_model(recorded, profile, tmp_path):
    _run(profile, only=["01"])
    _finish(tmp_path / "runs" / "knobs")
    _run(profile, num_processes=4, only=["04"])  # not a different model: no error, nothing moved
    assert (tmp_path / "runs" / "knobs" / "model" / "model.safetensors").read_bytes() == b"old weights"
    assert not (tmp_path / "runs" / "knobs" / "previous").exists()


# ------------------------------------------------------------------------------- a changed recipe, --retrain


def test_a_changed_recipe_never_reuses_the_model(recorded, profile, tmp_path):
    _run(profile, only=["01"])
    run = tmp_path / "runs" / "knobs"
    _finish(run)
    before = (run / "recipe.yaml").read_text()
    with pytest.raises(pipeline.PipelineError) as err:
        _run(profile, overrides={"learning_rate": 1e-3}, only=["04"])
    message = str(err.value)
    assert "learning_rate" in message and "--retrain" in message and "--fresh" in message
    assert (run / "recipe.yaml").read_text() == before  # nothing written, nothing moved
    assert (run / "model" / "model.safetensors").exists()
    assert len(recorded) == 1  # only the first run's notebook


def test_retrain_moves_the_old_model_and_its_results_aside(recorded, profile, tmp_path):
    _run(profile, only=["01"])
    run = tmp_path / "runs" / "knobs"
    _finish(run)
    old_recipe = (run / "recipe.yaml").read_text()
    lines = _run(profile, overrides={"learning_rate": 1e-3}, retrain=True, only=["04", "05", "06"])
    (aside,) = list((run / "previous").iterdir())
    assert (aside / "model" / "model.safetensors").read_bytes() == b"old weights"
    assert (aside / "checkpoints" / "checkpoint-6").is_dir() and (aside / "train.log").exists()
    assert (aside / "eval" / "smoke" / "knobs.json").exists() and (
        aside / "eval" / "smoke" / "curve-3.json"
    ).exists()
    assert (aside / "recipe.yaml").read_text() == old_recipe  # what the old model was trained with
    assert json.loads((aside / "metrics.json").read_text())["train"] == {"loss_last": 1.0}
    assert not (run / "model").exists() and not (run / "checkpoints").exists()  # notebook 04 trains from zero
    assert (run / "eval" / "smoke" / "base.json").exists()  # the base model's results stay
    assert not {"train", "eval"} & set(
        json.loads((run / "metrics.json").read_text())
    )  # they described the old one
    assert _saved(tmp_path)["learning_rate"] == pytest.approx(1e-3)
    assert any("training again" in line for line in lines)


def test_retrain_and_re_evaluate_need_their_notebooks(recorded, profile):
    with pytest.raises(pipeline.PipelineError, match="add 04 to --only"):
        _run(profile, retrain=True, only=["05", "06"])
    with pytest.raises(pipeline.PipelineError, match="add 06 to --only"):
        _run(profile, re_evaluate=True, only=["04"])
    assert recorded == []


# ---------------------------------------------------------------------------------------------- --re-evaluate


def test_changed_evaluation_settings_need_re_evaluate(recorded, profile, tmp_path):
    _run(profile, only=["01"])
    run = tmp_path / "runs" / "knobs"
    _finish(run)
    with pytest.raises(pipeline.PipelineError, match=r"eval_limit 4 -> 2.*--re-evaluate"):
        _run(profile, overrides={"eval_limit": 2}, only=["06"])
    assert (run / "eval" / "smoke" / "base.json").exists()
    # Retraining leaves the base model's results, which are just as stale.
    with pytest.raises(pipeline.PipelineError, match="--re-evaluate"):
        _run(profile, overrides={"eval_limit": 2}, retrain=True, only=["04", "06"])

    lines = _run(profile, overrides={"eval_limit": 2}, re_evaluate=True, only=["06"])
    (aside,) = list((run / "previous").iterdir())
    assert {p.name for p in (aside / "eval" / "smoke").iterdir()} >= {
        "base.json",
        "knobs.json",
        "curve-3.json",
    }
    assert (aside / "eval_comparison.png").exists() and not (run / "eval").exists()
    assert (run / "model" / "model.safetensors").exists()  # the model stays
    assert "eval" not in json.loads((run / "metrics.json").read_text())
    assert any("evaluating again" in line for line in lines)


def test_a_batch_size_for_evaluation_is_not_a_new_result(recorded, profile, tmp_path):
    _run(profile, only=["01"])
    _finish(tmp_path / "runs" / "knobs")
    _run(profile, overrides={"eval_batch_size": 8, "logging_steps": 5}, only=["06"])  # speed and logging only


def test_recipe_differences_split_training_and_evaluation(tiny_model_dir, smoke_data_dir, tmp_path):
    base = load_recipe(_profile(tmp_path, tiny_model_dir, smoke_data_dir), check_files=False)
    same = load_recipe(
        _profile(tmp_path, tiny_model_dir, smoke_data_dir, num_processes=4, gradient_accumulation_steps=1),
        check_files=False,
    )
    assert pipeline.recipe_differences(base, same) == ({}, {})
    other = load_recipe(
        _profile(tmp_path, tiny_model_dir, smoke_data_dir, max_length=128, eval_top_p=0.9, save_steps=7),
        check_files=False,
    )
    training, evaluation = pipeline.recipe_differences(base, other)
    assert training == {"max_length": (256, 128)}
    assert evaluation == {"eval_top_p": (0.95, 0.9)}
    bigger = load_recipe(
        _profile(tmp_path, tiny_model_dir, smoke_data_dir, gradient_accumulation_steps=4), check_files=False
    )
    assert pipeline.recipe_differences(base, bigger)[0] == {"global batch": (8, 16)}


@pytest.mark.parametrize("name", ["smoke", "cpu_demo", "cpu_long", "openr1_distill_7b"])
def test_a_profile_and_its_saved_recipe_do_not_differ(name, tmp_path):
    from open_r1_nb.config import save_recipe

    recipe = load_recipe(REPO_ROOT / "parameters" / f"{name}.yaml", check_files=False).resolved_for_run()
    again = load_recipe(save_recipe(recipe, tmp_path / "recipe.yaml"), check_files=False)
    assert pipeline.recipe_differences(recipe, again) == ({}, {})


# --------------------------------------------------------------------------- notebooks and their parameters


def test_each_notebook_declares_what_the_runner_passes():
    declared = {
        p.name[:3].rstrip("_"): pipeline.notebook_parameters(p) for p in NOTEBOOKS_DIR.glob("*.ipynb")
    }
    assert all({"profile", "run_name"} <= names for names in declared.values())
    assert "overrides" in declared["01"]
    assert {"num_processes", "retrain"} <= declared["04"] and "re_evaluate" in declared["06"]


def test_under_the_hood_runs_only_when_asked():
    assert [p.name[:2] for p in pipeline.notebooks()] == ["00", "01", "02", "03", "04", "05", "06"]
    assert [p.name for p in pipeline.notebooks(["03b"])] == ["03b_under_the_hood.ipynb"]
    with pytest.raises(pipeline.PipelineError, match="No notebook numbered"):
        pipeline.notebooks(["07"])


def test_a_dead_kernel_is_explained(monkeypatch, profile, tmp_path):
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path / "runs"))

    class DeadKernelError(RuntimeError):
        pass

    def dies(*args, **kwargs):
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(pipeline, "run_notebook", dies)
    with pytest.raises(pipeline.PipelineError, match=r"(?s)DeadKernelError.*out of memory.*eval_batch_size"):
        _run(profile, only=["06"])


# ------------------------------------------------------------------------------------------------- the script


def test_script_documents_and_checks_its_flags(tmp_path):
    env = {**os.environ, "OPEN_R1_NB_RUNS": str(tmp_path / "runs")}
    out = subprocess.run([*RUNNER, "--help"], capture_output=True, text=True, timeout=120, env=env).stdout
    for flag in ("--set KEY=VALUE", "--num-processes N", "--retrain", "--re-evaluate", "--fresh"):
        assert flag in out
    bad = subprocess.run(
        [*RUNNER, "parameters/smoke.yaml", "--num-processes", "0"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "not a whole number of processes" in bad.stderr
    bad = subprocess.run(
        [*RUNNER, "parameters/smoke.yaml", "--set", "learning_rate"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "not a key=value pair" in bad.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------- the kernel


def test_the_kernel_runs_encrypted_and_says_nothing_about_tcp(tmp_path):
    """ipykernel 7 warns on every start that its TCP channels are unencrypted; the runner gives the kernel
    CurveZMQ keys instead. The first run (plain TCP) shows the warning is real and would be seen here."""
    notebook = tmp_path / "t.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from open_r1_nb import notebook_exec, pipeline
        if sys.argv[1] == "plain":
            notebook_exec.kernel_config = lambda: None  # where run_notebook looks it up
        pipeline.run_notebook(Path(sys.argv[2]), Path(sys.argv[3]), {})
        """
    )
    stderr = {}
    for mode in ("plain", "runner"):
        out = tmp_path / f"{mode}.ipynb"
        proc = subprocess.run(
            [sys.executable, "-c", script, mode, str(notebook), str(out)],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert nbformat.read(out, as_version=4).cells[0].outputs[0]["text"] == "42\n"
        stderr[mode] = proc.stderr
    assert "without encryption" in stderr["plain"]
    assert "without encryption" not in stderr["runner"]
