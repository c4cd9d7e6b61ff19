"""The run report (report.md), batched evaluation across benchmarks, and the runner's progress lines."""

from __future__ import annotations

import json
from dataclasses import replace

from open_r1_nb import pipeline, run_report
from open_r1_nb.config import load_recipe, save_recipe
from open_r1_nb.evaluate import benchmarks as b
from open_r1_nb.evaluate import generate as g
from open_r1_nb.evaluate.runner import EvalSettings, evaluate, evaluate_many, read_records


def _write_eval(run_dir, bench, label, rows):
    folder = run_dir / "eval" / bench
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{label}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _record(pid, text, correct, eos, question=None):
    return {
        "problem_id": pid,
        "sample_index": 0,
        "question": question,
        "completion": text,
        "extracted": "7" if correct else None,
        "gold": "7",
        "correct": correct,
        "new_tokens": 12 if eos else 320,
        "ended_at_eos": eos,
        "format_ok": eos,
    }


def test_report_holds_every_section_from_the_run_folder(tiny_model_dir, smoke_data_dir, tmp_path):
    run_dir = tmp_path / "demo"
    recipe = load_recipe("parameters/smoke.yaml", overrides={"run_name": "demo"})
    save_recipe(recipe, run_dir / "recipe.yaml")
    (run_dir / "data").mkdir()
    (run_dir / "data" / "length_stats.json").write_text(
        json.dumps({"rows": 32, "tokens": 4321, "p50": 120.0})
    )
    stats = {"pass@1": 0.25, "pass@1_se": 0.125, "format": 0.9375, "eos": 1.0, "n": 2, "problems": 8}
    metrics = {
        "profile": "smoke",
        "wall_seconds": {"04_sft_training": 61.2, "total": 90.0},
        "train": {
            "steps": 20,
            "train_runtime_s": 50.0,
            "loss_first": 10.5,
            "loss_last": 2.25,
            "num_processes": 2,
        },
        "eval": {"smoke": {"base": {**stats, "pass@1": 0.0, "format": 0.0}, "trained": stats}},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    _write_eval(
        run_dir, "smoke", "base", [_record("p1", "I am rambling " * 80, False, False, "What is 3+4?")]
    )
    _write_eval(
        run_dir, "smoke", "demo", [_record("p1", "<think>3+4=7</think> \\boxed{7}", True, True, "What?")]
    )

    text = run_report.write_report(run_dir).read_text()
    assert text.startswith("# demo: distillation report")
    assert "| training rows / tokens | 32 / 4321 |" in text
    assert "| data (id × share of its train split) | `cache/data/smoke` |" in text
    assert "constant" in text and "SchedulerType" not in text
    assert "| time per optimizer step (s) | 2.5 |" in text  # 50 s / 20 steps
    assert "10.5 → 2.25" in text
    assert "| smoke | trained | 25.0 ± 12.5 | 0.94 | 1.00 | 8 × 2 |" in text
    assert "| smoke | base | 0.0 ± 12.5 | 0.00 | 1.00 | 8 × 2 |" in text
    assert "| smoke | +25.0 | 35.4 | no |" in text  # 2 * sqrt(12.5² + 12.5²)
    # One completion per model for the problem, with its question, verdict and how it stopped.
    assert "> What is 3+4?" in text
    assert "**base**: wrong" in text and "cut at the length limit" in text
    assert "**trained**: correct (answer 7, gold 7), 12 tokens, ended at EOS" in text
    assert "more characters)" in text  # the rambling base completion is cut to keep one page
    assert "| 04_sft_training | 61 |" in text


def test_report_of_a_run_without_evaluation_says_so(tmp_path):
    run_dir = tmp_path / "bare"
    recipe = load_recipe("parameters/cpu_demo.yaml", overrides={"run_name": "bare"}, check_files=False)
    save_recipe(recipe, run_dir / "recipe.yaml")
    text = run_report.write_report(run_dir).read_text()
    assert "`cache/data/gsm_symbolic` × 0.38; `cache/data/arithmetic` × 0.03" in text
    assert "notebook 04 did not finish" in text and "Not evaluated" in text
    assert "## Completions" not in text


def test_evaluate_many_generates_once_and_matches_one_at_a_time(
    tiny_model_dir, smoke_data_dir, tmp_path, monkeypatch
):
    # A second local benchmark over the same file, so that two benchmarks share one generation call.
    monkeypatch.setitem(b.BENCHMARKS, "smoke_again", replace(b.BENCHMARKS["smoke"], name="smoke_again"))
    calls = []
    real_generate = g.generate

    def counting(model_dir, prompts, config, **kw):
        calls.append(len(prompts))
        return real_generate(model_dir, prompts, config, **kw)

    monkeypatch.setattr(g, "generate", counting)
    settings = EvalSettings(n=1, temperature=0.0, max_new_tokens=8, limit=3, backend="transformers")
    together = evaluate_many(tiny_model_dir, ["smoke", "smoke_again"], tmp_path / "a", settings, label="tiny")
    assert calls == [6]  # 3 + 3 prompts in one call
    assert together["smoke"]["generated_with"] == ["smoke", "smoke_again"]
    alone = evaluate(tiny_model_dir, "smoke", tmp_path / "b", settings, label="tiny")
    assert calls == [6, 3]
    first = read_records(tmp_path / "a", "smoke", "tiny")
    again = read_records(tmp_path / "b", "smoke", "tiny")
    assert [r["completion"] for r in first] == [
        r["completion"] for r in again
    ]  # greedy: batching changes nothing
    assert together["smoke"]["pass@1"] == alone["pass@1"]
    assert (
        first[0]["question"]
        and first[0]["question"] in read_records(tmp_path / "a", "smoke_again", "tiny")[0]["question"]
    )


def test_heartbeat_reports_the_newest_training_progress(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "{'loss': '1.2'}\n 10%|█         | 3/30 [00:30<04:30, 10.0s/it]\r 13%|█▎        | 4/30 [00:40<04:20, 10.0s/it]\n"
    )
    assert pipeline._last_progress(log).endswith("4/30 [00:40<04:20, 10.0s/it]")
    assert pipeline._last_progress(tmp_path / "missing.log") == ""
    lines = []
    with pipeline.Heartbeat("04_sft_training", tmp_path, lines.append, every_s=0.05):
        log.write_text(log.read_text() + " 17%|█▋        | 5/30 [00:50<04:10, 10.0s/it]\n")
        import time

        time.sleep(0.3)
    assert lines and "04_sft_training" in lines[-1] and "5/30" in lines[-1]


def test_learning_curve_evaluates_base_and_every_checkpoint_in_order(
    tiny_model_dir, smoke_data_dir, tmp_path
):
    import shutil

    from open_r1_nb.evaluate import report
    from open_r1_nb.evaluate.runner import learning_curve

    run_dir = tmp_path / "run"
    for step, tokens in ((10, 1500.0), (2, 300.0)):  # created out of order: the curve sorts by step
        ckpt = run_dir / "checkpoints" / f"checkpoint-{step}"
        shutil.copytree(tiny_model_dir, ckpt)
        history = [{"step": s, "loss": 1.0, "num_tokens": tokens * s / step} for s in range(1, step + 1)]
        (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    (run_dir / "checkpoints" / "checkpoint-7.partial-x").mkdir()  # quarantined partial saves are not points
    shutil.copytree(tiny_model_dir, run_dir / "model")
    (run_dir / "metrics.json").write_text(json.dumps({"train": {"steps": 12, "real_tokens": 1800.0}}))
    settings = EvalSettings(temperature=0.0, max_new_tokens=4, backend="transformers")
    rows = learning_curve(run_dir, "smoke", settings, problems=2, base_model=tiny_model_dir)
    assert [(r["step"], r["tokens"]) for r in rows] == [(0, 0.0), (2, 300.0), (10, 1500.0), (12, 1800.0)]
    assert all(0 <= r["pass@1"] <= 1 for r in rows)
    assert len(read_records(run_dir / "eval", "smoke", "curve-10")) == 2  # 2 problems, one sample each
    fig = report.plot_learning_curve(rows, "smoke", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000 and fig is not None


def test_learning_curve_needs_kept_checkpoints_and_a_benchmark():
    import pytest

    from open_r1_nb.config import RecipeError

    with pytest.raises(RecipeError, match="save_total_limit: null"):
        load_recipe("parameters/smoke.yaml", overrides={"learning_curve": 4, "save_total_limit": 1})
    with pytest.raises(RecipeError, match="needs a benchmark"):
        load_recipe("parameters/smoke.yaml", overrides={"learning_curve": 4, "benchmarks": []})


def test_cpu_bf16_recipe_falls_back_to_fp32_where_the_cpu_has_no_bf16(monkeypatch):
    from open_r1_nb import hardware

    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: False)
    recipe = load_recipe("parameters/cpu_long.yaml", check_files=False)
    assert recipe.training.bf16 is False
    assert any("bf16: true -> false" in note for note in recipe.notes)
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    recipe = load_recipe("parameters/cpu_long.yaml", check_files=False)
    assert recipe.training.bf16 is True and not any("bf16" in note for note in recipe.notes)
