"""open_r1_nb.evaluate: benchmark loading, the evaluation runner's outputs, the comparison report."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest

from open_r1_nb.evaluate import benchmarks as b
from open_r1_nb.evaluate import report
from open_r1_nb.evaluate.runner import EvalSettings, evaluate, read_records


def test_local_split_keeps_the_training_prompt(smoke_data_dir):
    problems = b.load_problems("smoke")
    assert len(problems) == 8
    first = problems[0]
    assert first.kind == "math" and first.gold.strip()
    assert [m["role"] for m in first.messages] == ["user"]
    assert "\\boxed{}" in first.messages[0]["content"]


def test_limit_is_a_fixed_seeded_subset(smoke_data_dir):
    a = [p.id for p in b.load_problems("smoke", limit=3, seed=1)]
    assert a == [p.id for p in b.load_problems("smoke", limit=3, seed=1)]
    assert len(a) == 3 and len(set(a)) == 3
    assert (
        a != [p.id for p in b.load_problems("smoke", limit=3, seed=2)] or len(b.load_problems("smoke")) <= 3
    )


def test_unknown_benchmark_suggests_the_closest():
    with pytest.raises(b.BenchmarkLoadError, match="Did you mean 'math_500'"):
        b.get_benchmark("math500")


def test_hub_benchmark_offline_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(b.BenchmarkLoadError, match="local-dir"):
        b.load_problems("aime24")


def test_hub_benchmarks_from_local_files(tmp_path):
    (tmp_path / "aime.jsonl").write_text(json.dumps({"id": "p1", "problem": "1+1?", "answer": "2"}) + "\n")
    [problem] = b.load_problems("aime24", path=str(tmp_path / "aime.jsonl"))
    assert problem.gold == "2" and "\\boxed" in problem.messages[0]["content"]
    gpqa = {
        "Question": "Q?",
        "Correct Answer": "right",
        "Incorrect Answer 1": "w1",
        "Incorrect Answer 2": "w2",
        "Incorrect Answer 3": "w3",
    }
    (tmp_path / "gpqa.jsonl").write_text(json.dumps(gpqa) + "\n")
    [q] = b.load_problems("gpqa_diamond", path=str(tmp_path / "gpqa.jsonl"))
    text = q.messages[0]["content"]
    assert f"{q.gold}) right" in text and "Answer: $LETTER" in text


def test_lcb_private_tests_decode_strings_but_refuse_objects():
    payload = json.dumps([{"input": "1\n", "output": "2\n", "testtype": "stdin"}])
    encoded = base64.b64encode(zlib.compress(pickle.dumps(payload))).decode()
    row = {"public_test_cases": "[]", "private_test_cases": encoded}
    assert b._lcb_tests(row) == [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    hostile = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        b._lcb_tests({"private_test_cases": hostile})


def test_evaluate_writes_every_sample_and_a_summary(tiny_model_dir, smoke_data_dir, tmp_path):
    settings = EvalSettings(n=2, max_new_tokens=8, limit=3, backend="transformers", temperature=0.6)
    summary = evaluate(tiny_model_dir, "smoke", tmp_path, settings, label="tiny")
    assert summary["n"] == 2 and summary["problems"] == 3
    assert 0 <= summary["pass@1"] <= 1 and summary["pass@1_se"] >= 0
    records = read_records(tmp_path, "smoke", "tiny")
    assert len(records) == 6
    expected = {
        "problem_id",
        "sample_index",
        "completion",
        "extracted",
        "correct",
        "new_tokens",
        "ended_at_eos",
        "format_ok",
    }
    assert expected <= set(records[0])
    assert {r["sample_index"] for r in records} == {0, 1}
    # A random tiny model never closes a think block within 8 tokens.
    assert summary["format"] == 0 and all(r["new_tokens"] <= 8 for r in records)

    table = report.comparison_table(tmp_path, ["smoke"], ["tiny"])
    assert list(table["model"]) == ["tiny"] and table["problems"].iloc[0] == 3
    metrics = report.eval_metrics(tmp_path, ["smoke"], {"trained": "tiny"})
    assert set(metrics["smoke"]["trained"]) >= {"pass@1", "pass@1_se", "format", "eos", "n", "problems"}
    assert "<table>" in report.side_by_side(tmp_path, "smoke", ["tiny"], k=2)
    report.plot_comparison(table, tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").stat().st_size > 1000
