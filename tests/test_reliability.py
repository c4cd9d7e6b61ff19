"""Silent mistakes caught early: bad recipes, bad rows, over-length rows, contamination, re-runs that would
overwrite finished results, secrets, an unreachable Hub and remote code.

Each item of the reliability issue has its tests here or in the module's own test file; each section's comment
below says which.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace as NS

import datasets
import pytest
from profiles import DROP, recipe_dict, write_profile

from open_r1_nb import data, env, pipeline
from open_r1_nb import decontaminate as dc
from open_r1_nb.config import RecipeError, load_recipe, save_recipe
from open_r1_nb.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "open_r1_nb"
HF_DUMMY, WANDB_DUMMY = "hf_dummySECRET123456", "wandb_dummySECRET654321"


# Recipes build device state lazily: every test here starts and ends without an Accelerator or PartialState.
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _conv(question: str, answer: str = "<think>\nsteps\n</think>\n\nThe answer is \\boxed{1}.") -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------------------------
# 1. Recipes: every bad input stops at load time, naming the key, the value and the fix.
#    (tests/test_config.py holds the same cases one by one; here they are one catalogue, plus the new data keys
#    and the runner refusing before any notebook or launch.)
# ------------------------------------------------------------------------------------------------------------

BAD_RECIPES = [
    ("unknown key", {"learnig_rate": 1e-5}, "learnig_rate", "1e-05", "learning_rate"),
    ("wrong type", {"learning_rate": "fast"}, "learning_rate", "'fast'", "number"),
    ("wrong type (bool)", {"decontaminate": "yes"}, "decontaminate", "'yes'", "true or false"),
    ("missing model", {"model_name_or_path": DROP}, "model_name_or_path", "None", "add model_name_or_path"),
    (
        "per-device batch of 0",
        {"per_device_train_batch_size": 0},
        "per_device_train_batch_size",
        "0",
        "1 or more",
    ),
    (
        "mixture weight 0",
        {"dataset_name": DROP, "dataset_mixture": {"datasets": [{"id": "a/b", "weight": 0}]}},
        "dataset_mixture.datasets[0].weight",
        "0",
        "(0, 1]",
    ),
    (
        "mixture weight above 1",
        {"dataset_name": DROP, "dataset_mixture": {"datasets": [{"id": "a/b", "weight": 1.5}]}},
        "dataset_mixture.datasets[0].weight",
        "1.5",
        "(0, 1]",
    ),
    (
        "mixture columns differ",
        {
            "dataset_name": DROP,
            "dataset_mixture": {
                "datasets": [{"id": "a/b", "columns": ["messages"]}, {"id": "c/d", "columns": ["prompt"]}]
            },
        },
        "dataset_mixture.datasets[1].columns",
        "['prompt']",
        "same columns",
    ),
    ("accelerate config absent", {"accelerate_config": "zero4"}, "accelerate_config", "'zero4'", "zero3"),
    ("overlong policy unknown", {"overlong_policy": "cut"}, "overlong_policy", "'cut'", "truncate, drop"),
    ("n-gram size negative", {"decontamination_ngram": -1}, "decontamination_ngram", "-1", "8"),
    ("evaluation batch of zero", {"eval_batch_size": 0}, "eval_batch_size", "0", "1 or more"),
    (
        "decontaminate without evaluation data",
        {"decontaminate": True},
        "decontamination_against",
        "[]",
        "test_template.jsonl",
    ),
]


@pytest.mark.parametrize(
    "changes, key, value, fix", [case[1:] for case in BAD_RECIPES], ids=[case[0] for case in BAD_RECIPES]
)
def test_bad_recipe_names_key_value_and_fix(changes, key, value, fix):
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(**changes))
    message = str(exc.value)
    assert f"`{key}: {value}`" in message, message
    assert "Fix:" in message and fix in message, message
    assert exc.value.key == key and exc.value.fix


def test_eos_absent_from_the_vocabulary_names_the_token_and_the_fix(tiny_model_dir):
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(model_name_or_path=str(tiny_model_dir), eos_token="<|no_such_token|>"))
    message = str(exc.value)
    assert "`eos_token: '<|no_such_token|>'`" in message and "Fix:" in message and "<|im_end|>" in message


def test_missing_local_evaluation_file_is_named(tmp_path):
    missing = str(tmp_path / "eval" / "test.jsonl")
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(decontamination_against=[missing]))
    assert "decontamination_against[0]" in str(exc.value) and missing in str(exc.value)
    assert "Fix:" in str(exc.value)


def test_data_keys_default_and_round_trip(tmp_path):
    recipe = load_recipe(recipe_dict())
    p = recipe.pipeline
    assert (p.overlong_policy, p.decontaminate, p.decontamination_ngram, p.decontamination_against) == (
        "truncate",
        False,
        8,
        [],
    )
    given = recipe_dict(
        overlong_policy="drop",
        decontaminate=True,
        decontamination_ngram=0,
        decontamination_against="cache/data/gsm_symbolic/test_variant.jsonl",  # one path is read as a list
    )
    recipe = load_recipe(given, check_files=False)
    assert recipe.pipeline.decontamination_against == ["cache/data/gsm_symbolic/test_variant.jsonl"]
    again = load_recipe(save_recipe(recipe, tmp_path / "r.yaml"), check_files=False)
    assert again.to_dict() == recipe.to_dict()
    table = recipe.summary()
    assert table.loc["rows over max_length", "value"] == "drop"
    assert "remove whole problems found in cache/data" in table.loc["decontamination", "value"]


def _profile(tmp_path: Path, model: Path, dataset: Path, **changes) -> Path:
    return write_profile(tmp_path, model, dataset, "rerun", **changes)


@pytest.fixture
def fake_notebooks(monkeypatch, tmp_path):
    """The runner with notebooks that only write a marker (no kernel): records what ran."""
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path / "runs"))
    calls: list[str] = []

    def fake_run(notebook, output, parameters, kernel_name=None):
        calls.append(notebook.name)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"run": len(calls), "notebook": notebook.name}))

    monkeypatch.setattr(pipeline, "run_notebook", fake_run)
    return calls


def test_bad_recipe_stops_the_runner_before_any_notebook(
    fake_notebooks, tmp_path, tiny_model_dir, smoke_data_dir
):
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir, per_device_train_batch_size=0)
    with pytest.raises(RecipeError, match="per_device_train_batch_size"):
        pipeline.run_pipeline(profile, echo=lambda _: None)
    assert fake_notebooks == []
    assert not (tmp_path / "runs" / "rerun").exists()


def test_run_pipeline_script_exits_2_with_the_message(tmp_path, tiny_model_dir, smoke_data_dir):
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir, overlong_policy="cut")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "run_pipeline.py"), str(profile)],
        capture_output=True,
        text=True,
        env={**os.environ, "OPEN_R1_NB_RUNS": str(tmp_path / "runs")},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "overlong_policy: 'cut'" in proc.stderr and "Fix:" in proc.stderr
    assert not (tmp_path / "runs" / "rerun" / "notebooks").exists()


# ------------------------------------------------------------------------------------------------------------
# 2. Datasets. Row checks (no messages column, empty conversation, roles out of order, None or non-string
#    content, unbalanced think tags) are in tests/test_data.py; here: over-length rows and contamination.
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from open_r1_nb.model import get_tokenizer

    return get_tokenizer(NS(model_name_or_path=str(tiny_model_dir)), NS(eos_token=None, chat_template=None))


def _mixed_lengths() -> datasets.Dataset:
    short = _conv("1 + 1", "<think>\n1 + 1 = 2\n</think>\n\n\\boxed{2}")
    long_answer = _conv(
        "add these", "<think>\n" + "step " * 20 + "\n</think>\n\n" + "so " * 300 + "\\boxed{3}"
    )
    long_think = _conv("add these", "<think>\n" + "step " * 300 + "\n</think>\n\n\\boxed{3}")
    rows = [{"id": f"s{i}", "messages": short} for i in range(3)]
    rows += [{"id": "long-answer", "messages": long_answer}, {"id": "long-think", "messages": long_think}]
    return datasets.Dataset.from_list(rows)


def test_overlong_rows_truncate_keeps_and_reports(tokenizer, caplog):
    ds = _mixed_lengths()
    lengths = data.token_lengths(ds, tokenizer)
    with caplog.at_level("WARNING", logger="open_r1_nb.data"):
        kept, report = data.handle_overlong(ds, tokenizer, max_length=96, policy="truncate")
    assert len(kept) == 5 and report["rows_dropped"] == 0
    assert report["rows_over"] == 2 and report["share_rows_over"] == 0.4
    assert report["tokens_beyond"] == int(sum(n - 96 for n in lengths if n > 96))
    assert report["rows_eos_cut"] == 2  # both lose their end, EOS included
    assert report["rows_answer_cut"] == 1  # only the long reasoning pushes </think> past max_length
    assert report["over_rows"] == [3, 4]
    assert "2 of 5 rows" in caplog.text and "truncate" in caplog.text
    note = data.overlong_note("train", report, NS(packing=False, truncation_mode="keep_start"))
    assert "2 of 5 rows (40.0%)" in note and "lose the EOS" in note and "overlong_policy: drop" in note


def test_overlong_rows_drop_removes_them(tokenizer):
    kept, report = data.handle_overlong(_mixed_lengths(), tokenizer, max_length=96, policy="drop")
    assert kept["id"] == ["s0", "s1", "s2"]
    assert report["rows_dropped"] == 2 and report["rows_over"] == 2
    assert "removed them, 3 rows remain" in data.overlong_note("train", report)


def test_overlong_note_follows_packing_and_truncation_mode(tokenizer):
    _, report = data.handle_overlong(_mixed_lengths(), tokenizer, max_length=96)
    assert "bfd_split" in data.overlong_note("t", report, NS(packing=True, packing_strategy="bfd_split"))
    assert "lose their beginning" in data.overlong_note(
        "t", report, NS(packing=False, truncation_mode="keep_end")
    )
    assert "lose the EOS" in data.overlong_note("t", report, NS(packing=True, packing_strategy="bfd"))
    _, fits = data.handle_overlong(_mixed_lengths(), tokenizer, max_length=10_000)
    assert fits["rows_over"] == 0 and "all 5 rows fit" in data.overlong_note("t", fits)
    _, unset = data.handle_overlong(_mixed_lengths(), tokenizer, max_length=None)
    assert "unset" in data.overlong_note("t", unset)


def test_overlong_policy_must_be_known(tokenizer):
    with pytest.raises(ValueError, match="truncate.*drop"):
        data.handle_overlong(_mixed_lengths(), tokenizer, 96, policy="cut")


EVAL = [
    {"id": "e1", "problem": "Natalia sold clips to 48 of her friends in April and then half as many in May."},
    {"id": "e2", "problem": "What is 78 × 26?"},  # shorter than 8 words: matched whole
    {"id": "e3", "problem": "Add 3."},  # too short to check
]


def test_find_contamination_names_rows_problems_and_ngram():
    rows = [
        {"id": "clean", "messages": _conv("Tom has 3 apples and buys 4 more. How many?")},
        {
            "id": "leak",
            "messages": _conv("NATALIA sold   clips to 48 of her friends in April, how many in total?"),
        },
        {"id": "short-leak", "messages": _conv("What is 78 × 26?\n\nPlease reason step by step.")},
        {"id": "near-miss", "messages": _conv("What is 78 × 261?")},
        # the assistant turn is not a prompt: overlap there is not contamination of the question
        {"id": "in-answer", "messages": _conv("q", "natalia sold clips to 48 of her friends in april")},
    ]
    report = dc.find_contamination(rows, EVAL, n=8)
    assert [(f.row, f.row_id, f.eval_ids) for f in report.flagged] == [
        (1, "leak", ["e1"]),
        (2, "short-leak", ["e2"]),
    ]
    assert report.flagged[0].ngram == "natalia sold clips to 48 of her friends"
    assert report.short_problems == 1 and report.unchecked == ["e3"]
    summary = report.summary()
    assert "2 of 5 training rows (40.0%)" in summary and "e1" in summary and "Kept" in summary
    assert report.as_dict()["flagged"][0] == {
        "row": 1,
        "id": "leak",
        "eval_ids": ["e1"],
        "ngram": "natalia sold clips to 48 of her friends",
    }
    assert list(report.table().columns) == ["row", "id", "eval problems", "shared n-gram"]


def test_decontaminate_removes_them_and_keeps_order():
    ds = datasets.Dataset.from_list(
        [
            {"id": f"r{i}", "messages": _conv(f"Question number {i} about something else entirely here")}
            for i in range(4)
        ]
        + [{"id": "leak", "messages": _conv(EVAL[0]["problem"])}]
        + [{"id": "r5", "messages": _conv("last one")}]
    )
    clean, report = dc.decontaminate(ds, EVAL, n=8)
    assert clean["id"] == ["r0", "r1", "r2", "r3", "r5"] and report.removed == 1
    assert "Removed 1 rows" in report.summary()
    same, none = dc.decontaminate(clean, EVAL, n=8)
    assert same is clean and none.removed == 0


def test_instruction_shared_by_every_problem_is_not_contamination():
    instruction = "Please reason step by step, and put your final answer within \\boxed{}."
    problems = [
        {"id": f"e{i}", "messages": _conv(f"Problem {i}: count the {i} red marbles.\n\n{instruction}")}
        for i in range(10)
    ]
    rows = [{"messages": _conv(f"Unrelated question.\n\n{instruction}")}]
    report = dc.find_contamination(rows, problems, n=8)
    assert report.rows_flagged == 0 and report.boilerplate_ngrams > 0
    assert "ignored" in report.summary()


def test_whole_problem_mode_tells_templates_from_problems():
    # Same template, other numbers: 8-grams flag it, whole-problem matching (n=0) does not.
    template = "A farmer has {} cows and buys {} more at the market on a sunny day. How many cows now?"
    problems = [{"id": "variant-1", "problem": template.format(12, 5)}]
    rows = [{"messages": _conv(template.format(30, 7))}, {"messages": _conv(template.format(12, 5))}]
    assert dc.find_contamination(rows, problems, n=8).rows_flagged == 2
    whole = dc.find_contamination(rows, problems, n=0)
    assert [f.row for f in whole.flagged] == [1] and "whole evaluation problems" in whole.summary()


def test_load_eval_problems_from_files_and_folders(tmp_path):
    folder = tmp_path / "bench"
    _write_jsonl(folder / "train.jsonl", [{"id": "t", "problem": "training row, not evaluation"}])
    _write_jsonl(folder / "test.jsonl", [{"id": "a", "problem": "first problem text"}])
    _write_jsonl(folder / "test_other.jsonl", [{"messages": _conv("second problem text")}])
    (folder / "open_r1_nb_asset.json").write_text(json.dumps({"manifest": True}))
    problems = dc.load_eval_problems([str(folder)])
    assert [(p.id, p.text) for p in problems] == [
        ("a", "first problem text"),
        ("test_other.jsonl#0", "second problem text"),
    ]
    one = dc.load_eval_problems([str(folder / "train.jsonl")])
    assert [p.id for p in one] == ["t"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no evaluation file"):
        dc.load_eval_problems([str(tmp_path / "empty")])


def test_eval_problems_from_the_hub_offline_give_one_clear_message():
    with pytest.raises(data.DatasetLoadError, match="offline.*local"):
        dc.load_eval_problems(["HuggingFaceH4/MATH-500:test"])


def _recipe_for(tmp_path, tiny_model_dir, rows, **pipeline_keys):
    _write_jsonl(tmp_path / "train_data" / "train.jsonl", rows)
    return load_recipe(
        recipe_dict(
            model_name_or_path=str(tiny_model_dir),
            dataset_name=str(tmp_path / "train_data"),
            max_length=96,
            **pipeline_keys,
        )
    )


def test_prepare_for_training_reports_and_removes(tmp_path, tiny_model_dir, tokenizer):
    eval_file = _write_jsonl(tmp_path / "eval" / "test.jsonl", EVAL)
    rows = [r for r in _mixed_lengths().to_list()] + [{"id": "leak", "messages": _conv(EVAL[0]["problem"])}]
    recipe = _recipe_for(tmp_path, tiny_model_dir, rows, decontamination_against=[str(eval_file)])
    dataset = data.get_dataset(recipe.script)

    reports: dict = {}
    same, notes = data.prepare_for_training(dataset, tokenizer, recipe, reports=reports)
    assert len(same["train"]) == 6  # reported only
    assert any("1 of 6 training rows" in n and "Kept" in n for n in notes), notes
    assert any("2 of 6 rows" in n and "lose the EOS" in n for n in notes), notes
    assert reports["contamination"]["rows_flagged"] == 1 and reports["overlong"]["train"]["rows_over"] == 2

    recipe.pipeline.decontaminate, recipe.pipeline.overlong_policy = True, "drop"
    clean, notes = data.prepare_for_training(dataset, tokenizer, recipe)
    assert clean["train"]["id"] == ["s0", "s1", "s2"]
    assert any("Removed 1 rows" in n for n in notes) and any("removed them" in n for n in notes)


def test_prepare_for_training_says_when_contamination_is_not_checked(tmp_path, tiny_model_dir, tokenizer):
    recipe = _recipe_for(tmp_path, tiny_model_dir, [{"messages": _conv("q")}])
    single, notes = data.prepare_for_training(data.get_dataset(recipe.script)["train"], tokenizer, recipe)
    assert len(single) == 1 and "contamination not checked" in notes[0]


# ------------------------------------------------------------------------------------------------------------
# 3. Launches: tests/test_launch.py (non-zero exit with the log's tail, OOM advice, busy port) and
#    tests/test_smoke_pipeline.py (a failed launch raises inside the executed notebook).
# 4. Interruptions: tests/test_resume.py (SIGKILL then resume; partial checkpoints skipped). Here: re-runs.
# ------------------------------------------------------------------------------------------------------------


def test_rerun_keeps_the_previous_executed_notebooks(
    fake_notebooks, tmp_path, tiny_model_dir, smoke_data_dir
):
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir)
    lines: list[str] = []
    pipeline.run_pipeline(profile, only=["00", "01"], echo=lines.append)
    run = tmp_path / "runs" / "rerun"
    first = (run / "notebooks" / "01_configuration.ipynb").read_text()
    recipe_before = (run / "recipe.yaml").read_text()
    assert not (run / "notebooks" / "previous").exists()

    (run / "model").mkdir()
    (run / "model" / "model.safetensors").write_bytes(b"finished weights")
    pipeline.run_pipeline(profile, only=["01", "02"], echo=lines.append)
    archived = list((run / "notebooks" / "previous").iterdir())
    assert len(archived) == 1
    assert (archived[0] / "01_configuration.ipynb").read_text() == first  # the old copy, intact
    assert not (archived[0] / "02_dataset.ipynb").exists()  # nothing was there to keep
    assert (archived[0] / "recipe.yaml").read_text() == recipe_before
    assert (run / "notebooks" / "00_environment.ipynb").exists()  # not re-run, left in place
    assert (run / "model" / "model.safetensors").read_bytes() == b"finished weights"
    assert any("previous executed notebooks kept in" in line for line in lines)

    pipeline.run_pipeline(profile, only=["01"], echo=lines.append)  # a third run in the same second
    assert len(list((run / "notebooks" / "previous").iterdir())) == 2


def test_fresh_moves_the_old_run_aside_and_never_deletes(
    fake_notebooks, tmp_path, tiny_model_dir, smoke_data_dir
):
    profile = _profile(tmp_path, tiny_model_dir, smoke_data_dir)
    pipeline.run_pipeline(profile, only=["01"], echo=lambda _: None)
    run = tmp_path / "runs" / "rerun"
    (run / "model").mkdir()
    (run / "model" / "model.safetensors").write_bytes(b"finished weights")

    bad = _profile(tmp_path, tiny_model_dir, smoke_data_dir, learning_rate=-1)
    with pytest.raises(RecipeError):
        pipeline.run_pipeline(bad, fresh=True, echo=lambda _: None)
    assert (run / "model" / "model.safetensors").exists()  # a bad profile moves nothing

    lines: list[str] = []
    pipeline.run_pipeline(profile, only=["01"], fresh=True, echo=lines.append)
    aside = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("rerun.previous-")]
    assert len(aside) == 1
    assert (aside[0] / "model" / "model.safetensors").read_bytes() == b"finished weights"
    assert (aside[0] / "notebooks" / "01_configuration.ipynb").exists()
    assert not (run / "model").exists() and (run / "notebooks" / "01_configuration.ipynb").exists()
    assert any("starting over" in line for line in lines)


def test_run_pipeline_script_has_a_fresh_flag():
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "run_pipeline.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "--fresh" in out and "previous" in out


# ------------------------------------------------------------------------------------------------------------
# 5. Secrets: tests/test_smoke_pipeline.py walks a whole executed run for the dummy values; test_launch.py checks
#    the log redaction. Here: the environment report and the saved recipe.
# ------------------------------------------------------------------------------------------------------------


def test_environment_report_never_holds_the_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_DUMMY)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_DUMMY)
    text = json.dumps(env.report(), default=str)
    assert HF_DUMMY not in text and WANDB_DUMMY not in text
    assert "hidden" in env.hub_login_state() and "hidden" in env.wandb_state()


def test_saved_recipe_never_holds_a_hub_token(tmp_path):
    recipe = load_recipe(recipe_dict(hub_token=HF_DUMMY))
    text = save_recipe(recipe, tmp_path / "recipe.yaml").read_text()
    assert HF_DUMMY not in text and "hub_token" not in text


# ------------------------------------------------------------------------------------------------------------
# 6. Offline: HF_HUB_OFFLINE is tests/test_data.py and tests/test_model.py. Here: no Hub reachable and no flag set,
#    which used to cost five "Retrying in 8s" rounds (about 25 s for a dataset) before the same failure.
# ------------------------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch):
    for key in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")


def test_unreachable_hub_dataset_gives_one_message_at_once(unreachable_hub):
    reason = data.hub_unreachable_reason()
    assert reason and "offline" in reason and "127.0.0.1" in reason
    start = time.monotonic()
    with pytest.raises(data.DatasetLoadError) as exc:
        data.load_source("open-r1/Mixture-of-Thoughts", "all")
    assert time.monotonic() - start < 5
    message = str(exc.value)
    assert "looks offline" in message and "--local-dir" in message and "to that folder" in message


def test_unreachable_hub_model_gives_one_message_at_once(unreachable_hub):
    from types import SimpleNamespace

    from open_r1_nb import model

    start = time.monotonic()
    with pytest.raises(model.ModelLoadError) as exc:
        model.get_tokenizer(
            SimpleNamespace(model_name_or_path="open-r1/Qwen2.5-Math-7B-RoPE-300k"), SimpleNamespace()
        )
    assert time.monotonic() - start < 5
    assert "--local-dir" in str(exc.value) and "offline" in str(exc.value)


def test_reachable_or_proxied_hub_is_not_refused(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert data.hub_unreachable_reason() is None
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert data.hub_unreachable_reason() is None  # behind a proxy a direct connection proves nothing


# ------------------------------------------------------------------------------------------------------------
# 7. Code execution: remote code only when a recipe asks; benchmark code only in the evaluation sandbox.
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def captured_loads(monkeypatch):
    """Record the keyword arguments of every tokenizer/model load, then load for real."""
    import transformers

    calls: list[tuple[str, dict]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained

        def spy(*args, _original=original, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


@pytest.mark.parametrize("profile", ["smoke", "cpu_demo", "openr1_distill_7b"])
def test_trust_remote_code_is_off_in_every_profile(profile):
    assert load_recipe(profile, check_files=False).training.trust_remote_code is False


@pytest.mark.parametrize("setting", [None, True])
def test_loaders_trust_remote_code_only_when_the_recipe_says_so(setting, captured_loads, tiny_model_dir):
    from open_r1_nb.model import get_model, get_tokenizer

    extra = {} if setting is None else {"trust_remote_code": setting}
    recipe = load_recipe(recipe_dict(model_name_or_path=str(tiny_model_dir), eos_token="<|im_end|>", **extra))
    tokenizer = get_tokenizer(recipe.model, recipe.training)
    get_model(recipe.model, recipe.training, tokenizer=tokenizer)
    expected = setting is True
    names = {name for name, _ in captured_loads}
    assert names == {"AutoTokenizer", "AutoModelForCausalLM"}
    assert all(kwargs.get("trust_remote_code") is expected for _, kwargs in captured_loads), captured_loads


def _calls(tree: ast.AST, names: set[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            yield node


def test_no_remote_code_and_no_exec_outside_the_sandbox():
    sandbox = PACKAGE / "evaluate" / "sandbox.py"
    for path in [*PACKAGE.rglob("*.py"), *(REPO_ROOT / "scripts").rglob("*.py")]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), (
                    f"{path}:{node.value.lineno} hard-codes trust_remote_code=True"
                )
        if path != sandbox:
            found = [f"{path.name}:{n.lineno}" for n in _calls(tree, {"exec", "eval", "compile"})]
            assert not found, f"code execution outside the evaluation sandbox: {found}"
