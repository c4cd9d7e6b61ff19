"""No stale results: a model or an evaluation made with another recipe is never reused under the new one.

recipe.yaml is rewritten by every notebook 01 and every runner call, so it cannot say what an existing model was
trained with. Training records its keys when it starts (``runs/<run>/training_fingerprint.json``) and every
evaluation result records its settings; the runner, notebooks 04 and 06, ``training_finished`` and
``read_summary`` compare with those. Each test runs the re-run both ways: unchanged, it reuses; changed, it stops
naming the keys and the flag, or (``read_summary``) does not return the old result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from profiles import write_profile

from open_r1_nb import launch, pipeline, training
from open_r1_nb.evaluate import runner
from open_r1_nb.evaluate.runner import EvalSettings, evaluate, read_summary
from open_r1_nb.paths import NOTEBOOKS_DIR

# Two processes of two rows with accumulation 2 (a global batch of 8), evaluated on two smoke problems.
_KEYS = dict(
    per_device_train_batch_size=2,
    gradient_accumulation_steps=2,
    benchmarks=["smoke"],
    eval_limit=2,
    eval_n=1,
    eval_max_new_tokens=4,
    eval_backend="transformers",
)


def _profile(tmp_path: Path, model: Path, dataset: Path, **changes) -> Path:
    return write_profile(tmp_path, model, dataset, "stale", **{**_KEYS, **changes})


@pytest.fixture
def runs(monkeypatch, tmp_path):
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture
def fake_training(monkeypatch):
    """``launch.launch`` replaced by what a finished training leaves (a checkpoint, the model): the code under
    test is everything around it (the plan, the checks, the record)."""
    launched: list[Path] = []

    def fake_launch(recipe_path, config, num_processes, *, log_path=None, **kwargs):
        run = Path(recipe_path).parent
        launched.append(run)
        (run / "checkpoints" / "checkpoint-2").mkdir(parents=True, exist_ok=True)
        (run / "model").mkdir(exist_ok=True)
        (run / "model" / "model.safetensors").write_bytes(b"weights %d" % len(launched))
        (run / "model" / "training_metrics.json").write_text("{}")
        return launch.LaunchResult([], 0, Path(log_path), 0.1)

    monkeypatch.setattr(launch, "launch", fake_launch)
    return launched


def _train(profile: Path, **overrides):
    """Notebook 01 then notebook 04's training cell, as their code does it."""
    recipe = pipeline.write_run_recipe(profile, overrides=overrides or None)
    recipe = pipeline.load_run_recipe(profile)
    training.plan_training(recipe).run(env={})
    return recipe


# ------------------------------------------------------------------------------------------------ training


def test_training_finished_only_for_the_recipe_that_trained_it(
    runs, fake_training, tiny_model_dir, smoke_data_dir, tmp_path
):
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir)
    _train(profile)

    # Unchanged (and a batch layout with the same global batch, and logging): the model is reused.
    assert training.training_finished(pipeline.load_run_recipe(profile))
    relaid = pipeline.write_run_recipe(
        profile, overrides={"num_processes": 4, "gradient_accumulation_steps": 1, "logging_steps": 7}
    )
    assert training.training_finished(relaid)

    # Notebook 01 alone with a new learning rate rewrites recipe.yaml; the model is still the old recipe's.
    changed = pipeline.write_run_recipe(profile, overrides={"learning_rate": 1e-3})
    with pytest.raises(pipeline.PipelineError) as err:
        training.training_finished(changed)
    message = str(err.value)
    assert "learning_rate 2e-05 -> 0.001" in message
    assert "--retrain" in message and "retrain = True" in message
    # Its checkpoints are not resumed from either: the launch stops before starting.
    with pytest.raises(pipeline.PipelineError, match="learning_rate"):
        training.plan_training(changed).run(env={})
    assert len(fake_training) == 1

    # What the record holds: the training keys, the global batch; no logging, output or evaluation keys.
    record = json.loads((runs / "stale" / "training_fingerprint.json").read_text())["training"]
    assert record["learning_rate"] == pytest.approx(2e-5) and record["global batch"] == 8
    assert not {"report_to", "output_dir", "logging_steps", "eval_limit", "num_processes"} & set(record)


def test_runner_compares_with_what_trained_the_model_not_with_recipe_yaml(
    runs, fake_training, monkeypatch, tiny_model_dir, smoke_data_dir, tmp_path
):
    monkeypatch.setattr(pipeline, "run_notebook", lambda *args, **kwargs: None)
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir)
    _train(profile)
    pipeline.run_pipeline(profile, only=["04"], echo=lambda _: None)  # unchanged: reused, nothing moved
    assert (runs / "stale" / "model" / "model.safetensors").read_bytes() == b"weights 1"

    edited = _profile(tmp_path, tiny_model_dir, smoke_data_dir, max_length=128)
    pipeline.write_run_recipe(edited)  # notebook 01 alone: recipe.yaml now says max_length 128
    with pytest.raises(pipeline.PipelineError, match=r"max_length 256 -> 128.*--retrain"):
        pipeline.run_pipeline(edited, only=["04", "05", "06"], echo=lambda _: None)
    assert (runs / "stale" / "model" / "model.safetensors").read_bytes() == b"weights 1"

    pipeline.run_pipeline(edited, only=["04"], retrain=True, echo=lambda _: None)
    (aside,) = (runs / "stale" / "previous").iterdir()
    assert (aside / "training_fingerprint.json").exists()  # the record went with the model it describes
    assert not (runs / "stale" / "training_fingerprint.json").exists()


# ---------------------------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def summary_dir(tiny_model_dir, smoke_data_dir, tmp_path_factory):
    """One real evaluation of the tiny model: 2 problems, 1 sample, 4 new tokens."""
    out = tmp_path_factory.mktemp("eval")
    settings = EvalSettings(n=1, limit=2, max_new_tokens=4, backend="transformers")
    evaluate(tiny_model_dir, "smoke", out, settings, label="tiny")
    return out, settings


@pytest.mark.parametrize(
    "change",
    [
        {"limit": 3},
        {"n": 2},
        {"max_new_tokens": 8},
        {"temperature": 0.0},
        {"top_p": 1.0},
        {"top_k": 5},
        {"backend": "ctranslate2"},
        {"math_rule": "lighteval"},
        {"seed": 1},
    ],
)
def test_read_summary_never_returns_a_result_made_with_other_settings(summary_dir, change):
    from dataclasses import replace

    out, settings = summary_dir
    assert read_summary(out, "smoke", "tiny", settings)["problems"] == 2
    assert read_summary(out, "smoke", "tiny", replace(settings, batch_size=3)) is not None  # speed only
    assert read_summary(out, "smoke", "tiny", replace(settings, **change)) is None
    key = runner.RESULT_SETTINGS[next(iter(change))]
    assert key in runner.settings_changes(json.loads((out / "smoke" / "tiny.json").read_text()),
                                          replace(settings, **change), "smoke")  # fmt: skip


def test_zero_means_the_benchmarks_own_n_and_length(summary_dir):
    """``eval_n: 0`` is the benchmark's protocol value: a result made with that value explicitly is the same."""
    from dataclasses import replace

    from open_r1_nb.evaluate.benchmarks import get_benchmark

    out, settings = summary_dir
    spec = get_benchmark("smoke")
    summary = json.loads((out / "smoke" / "tiny.json").read_text())
    assert runner.settings_changes(summary, replace(settings, n=0), "smoke") == (
        {} if spec.n == 1 else {"eval_n": (1, spec.n)}
    )


def test_runner_stops_on_results_made_with_other_settings(
    runs, summary_dir, monkeypatch, tiny_model_dir, smoke_data_dir, tmp_path
):
    monkeypatch.setattr(pipeline, "run_notebook", lambda *args, **kwargs: None)
    out, _ = summary_dir
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir)
    pipeline.write_run_recipe(profile)
    (runs / "stale" / "eval" / "smoke").mkdir(parents=True)
    for suffix in (".json", ".jsonl"):  # the base model's result, made with the profile's settings
        (runs / "stale" / "eval" / "smoke" / f"base{suffix}").write_bytes(
            (out / "smoke" / f"tiny{suffix}").read_bytes()
        )
    pipeline.run_pipeline(profile, only=["06"], echo=lambda _: None)  # unchanged: reused

    edited = _profile(tmp_path, tiny_model_dir, smoke_data_dir, eval_limit=3, eval_max_new_tokens=8)
    pipeline.write_run_recipe(edited)  # notebook 01 alone
    with pytest.raises(pipeline.PipelineError) as err:
        pipeline.run_pipeline(edited, only=["06"], echo=lambda _: None)
    message = str(err.value)
    assert (
        "base.json" in message and "eval_limit 2 -> 3" in message and "eval_max_new_tokens 4 -> 8" in message
    )
    assert "--re-evaluate" in message and "re_evaluate = True" in message
    assert (runs / "stale" / "eval" / "smoke" / "base.json").exists()  # nothing moved, nothing lost

    pipeline.run_pipeline(edited, only=["06"], re_evaluate=True, echo=lambda _: None)
    assert not (runs / "stale" / "eval").exists()  # moved aside; notebook 06 evaluates anew
    assert list((runs / "stale" / "previous").glob("*/eval/smoke/base.json"))


def test_learning_curve_points_are_compared_with_their_own_settings(summary_dir, tmp_path):
    """A curve point records n=1 on N problems: that is no change, but another token limit is."""
    from dataclasses import replace

    out, settings = summary_dir
    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / "curve-3.json").write_bytes((out / "smoke" / "tiny.json").read_bytes())
    wide = replace(settings, n=4, limit=10)
    assert runner.stale_results(tmp_path, ["smoke"], wide, learning_curve_problems=2) == {}
    assert runner.stale_results(tmp_path, ["smoke"], replace(wide, max_new_tokens=9), 2) == {
        folder / "curve-3.json": {"eval_max_new_tokens": (4, 9)}
    }


# ------------------------------------------------------------------------------------------- the notebooks


@pytest.mark.slow
def test_notebooks_04_and_06_stop_on_a_changed_recipe(
    runs, fake_training, summary_dir, tiny_model_dir, smoke_data_dir, tmp_path
):
    """The notebooks run alone (as in JupyterLab) after notebook 01 rewrote recipe.yaml: each stops at its check,
    naming the keys, before training or evaluating anything."""
    from papermill.exceptions import PapermillExecutionError

    out, _ = summary_dir
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir)
    _train(profile)
    run = runs / "stale"
    (run / "eval" / "smoke").mkdir(parents=True)
    for suffix in (".json", ".jsonl"):
        (run / "eval" / "smoke" / f"base{suffix}").write_bytes((out / "smoke" / f"tiny{suffix}").read_bytes())

    pipeline.write_run_recipe(profile, overrides={"learning_rate": 1e-3, "eval_limit": 3})
    parameters = {"profile": str(profile), "run_name": "stale"}
    for name, expected in (
        ("04_sft_training.ipynb", "learning_rate 2e-05 -> 0.001"),
        ("06_evaluation.ipynb", "learning_rate 2e-05 -> 0.001"),
    ):
        with pytest.raises(PapermillExecutionError) as err:
            pipeline.run_notebook(NOTEBOOKS_DIR / name, tmp_path / name, parameters, "python3")
        assert err.value.ename == "StaleOutputsError" and expected in err.value.evalue, err.value.evalue
    assert (run / "model" / "model.safetensors").read_bytes() == b"weights 1"

    # The same model under a recipe that changes only the evaluation: notebook 06 names the evaluation keys.
    pipeline.write_run_recipe(profile, overrides={"eval_limit": 3})
    with pytest.raises(PapermillExecutionError) as err:
        pipeline.run_notebook(
            NOTEBOOKS_DIR / "06_evaluation.ipynb", tmp_path / "06b.ipynb", parameters, "python3"
        )
    assert err.value.ename == "StaleOutputsError" and "eval_limit 2 -> 3" in err.value.evalue
    assert "re_evaluate = True" in err.value.evalue
