"""The estimate a run makes after its first optimizer steps: figures, budget warning, reasons, the log line."""

from __future__ import annotations

import types

import pytest

from open_r1_nb import estimate
from open_r1_nb.config import load_recipe
from open_r1_nb.estimate import Estimate, make_estimate, parse_estimate_line
from open_r1_nb.hardware import cpu_class
from open_r1_nb.paths import REPO_ROOT

AVX2 = {"vendor": "AuthenticAMD", "model": "AMD EPYC", "family": 23, "mhz": 3000.0, "flags": {"avx2"}}


@pytest.fixture
def demo():
    recipe = load_recipe(REPO_ROOT / "parameters/cpu_demo.yaml", check_files=False)
    assert recipe.pipeline.time_budget_minutes == 15
    return recipe


def test_training_time_is_the_measured_pace_over_the_steps_left(demo):
    est = make_estimate(
        demo, after_steps=4, total_steps=66, seconds_per_step=7.0, training_elapsed_s=35.0,
        real_tokens_per_second=280.0, cpu=cpu_class(AVX2, env={}), pipeline_start=1000.0, training_start=1100.0,
        now=1135.0,
    )  # fmt: skip
    assert est.training_s == pytest.approx(35.0 + 62 * 7.0)
    assert est.elapsed_before_training_s == pytest.approx(100.0)
    assert est.total_s == pytest.approx(100.0 + est.training_s + est.evaluation_s)
    assert est.budget_s == 900 and est.over_budget is (est.total_s > 900)


def test_evaluation_estimate_scales_with_the_work_and_the_speed(demo):
    slow = estimate.evaluation_seconds(demo, 100.0)
    fast = estimate.evaluation_seconds(demo, 300.0)
    assert slow > fast > estimate.AFTER_TRAINING_FIXED_S
    assert estimate.evaluation_seconds(demo, 100.0, base_evaluated=True) < slow
    demo.pipeline.eval_limit *= 2
    assert estimate.evaluation_seconds(demo, 100.0) > slow


def test_an_over_budget_run_names_the_likely_reasons(demo):
    demo.training.bf16 = False  # as the loader leaves it on a CPU without bf16 units
    est = make_estimate(
        demo, after_steps=4, total_steps=66, seconds_per_step=19.2, real_tokens_per_second=99.6,
        others_cores=0.9, cpu=cpu_class(AVX2, env={}),
    )  # fmt: skip
    assert est.over_budget
    assert "no bf16 units" in est.reasons[0] and "fp32" in est.reasons[0]
    assert any("other processes used ~0.9" in r for r in est.reasons)
    text = est.message()
    assert "WARNING: this run will pass its budget" in text and "budget 15.0 min" in text


def test_an_in_budget_run_has_no_warning(demo):
    est = make_estimate(
        demo, after_steps=4, total_steps=20, seconds_per_step=5.0, real_tokens_per_second=400.0,
        cpu=cpu_class(AVX2, env={}),
    )  # fmt: skip
    assert not est.over_budget and est.reasons == [] and "WARNING" not in est.message()


def test_the_log_line_round_trips(demo):
    est = make_estimate(
        demo, after_steps=4, total_steps=66, seconds_per_step=7.0, real_tokens_per_second=280.0
    )
    import json

    line = f"2026-11-30 09:00:00 - INFO - open_r1_nb.estimate - {estimate.MARK} {json.dumps(est.as_dict())}"
    found = parse_estimate_line(line)
    assert found is not None and Estimate(**found).message() == Estimate(**est.as_dict()).message()
    assert parse_estimate_line("{'loss': '1.0'}") is None


def test_callback_times_steps_after_the_first_and_records_once(demo, monkeypatch):
    clock = iter([100.0, 121.0])  # read at the end of step 1 (which warms up) and of step 4
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: next(clock))
    tokens = iter([2000.0, 2000.0 + 3 * 1900.0])
    recorded = []
    callback = estimate.estimate_callback(demo, lambda: next(tokens), recorded.append)
    args = types.SimpleNamespace(world_size=1, output_dir="/nonexistent/run/checkpoints")
    for step in range(1, 7):
        state = types.SimpleNamespace(is_world_process_zero=True, global_step=step, max_steps=66)
        callback.on_step_end(args, state, None)
    assert len(recorded) == 1
    est = recorded[0]
    assert est.after_steps == 4 and est.seconds_per_step == pytest.approx(7.0)
    assert est.real_tokens_per_second == pytest.approx(1900.0 / 7.0)


def test_other_ranks_do_not_estimate(demo):
    recorded = []
    callback = estimate.estimate_callback(demo, lambda: 0.0, recorded.append)
    args = types.SimpleNamespace(world_size=2, output_dir="/nonexistent")
    for step in range(1, 7):
        callback.on_step_end(
            args, types.SimpleNamespace(is_world_process_zero=False, global_step=step, max_steps=6), None
        )
    assert recorded == []


def test_a_resumed_run_counts_only_the_steps_it_runs(demo, monkeypatch):
    """Resumed at step 30: the estimate covers this process's steps (31..66), and its total adds up."""
    clock = iter([100.0, 121.0])  # the end of step 31 (warm-up here) and of step 34
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: next(clock))
    recorded = []
    callback = estimate.estimate_callback(demo, lambda: 0.0, recorded.append)
    args = types.SimpleNamespace(world_size=1, output_dir="/nonexistent/run/checkpoints")
    for step in range(31, 36):
        state = types.SimpleNamespace(is_world_process_zero=True, global_step=step, max_steps=66)
        callback.on_step_end(args, state, None)
    (est,) = recorded
    assert est.after_steps == 34 and est.seconds_per_step == pytest.approx(7.0)
    elapsed = est.training_s - (66 - 34) * 7.0  # what this process had spent when it estimated
    assert 0 <= elapsed < 5  # not the 34 steps' worth a fresh run would have spent
    assert est.total_s == pytest.approx(est.elapsed_before_training_s + est.training_s + est.evaluation_s)


def test_frozen_layers_train_faster_but_the_evaluation_is_not_shortened(demo):
    # Half of 30 layers frozen: forward 2N + backward 4N over half = 4N of 6N per token.
    assert estimate.training_token_cost(15, 30) == pytest.approx(4 / 6)
    assert estimate.training_token_cost(0, 30) == estimate.training_token_cost(15, None) == 1.0
    # A run that trains 1.5x faster because of the frozen layers expects the same evaluation as full fine-tuning.
    full = estimate.evaluation_seconds(demo, 180.0)
    frozen = estimate.evaluation_seconds(demo, 270.0, training_cost=estimate.training_token_cost(15, 30))
    assert frozen == pytest.approx(full)
    assert estimate.evaluation_seconds(demo, 270.0) < full  # what the estimate said before it knew


def test_callback_reads_the_depth_from_the_model(demo, monkeypatch):
    demo.training.freeze_layers = 15
    seen = {}
    monkeypatch.setattr(
        estimate, "make_estimate", lambda recipe, **kw: seen.update(kw) or make_estimate(recipe, **kw)
    )
    callback = estimate.estimate_callback(demo, lambda: 1000.0)
    model = types.SimpleNamespace(config=types.SimpleNamespace(num_hidden_layers=30))
    args = types.SimpleNamespace(world_size=1, output_dir="/nonexistent/checkpoints")
    for step in range(1, 6):
        state = types.SimpleNamespace(is_world_process_zero=True, global_step=step, max_steps=66)
        callback.on_step_end(args, state, None, model=model)
    assert seen["training_cost"] == pytest.approx(4 / 6)
