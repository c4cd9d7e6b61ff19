"""Failures that used to go unnoticed or unexplained, each caused for real (or as close to it as a test can) and
each ending in a clear message: a hung rank, a full disk while saving, a pipeline killed mid-notebook, a token
given as an argument, a rendezvous port lost between choice and bind, a mixture whose sources differ in schema.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from open_r1_nb import data, launch, pipeline, sft
from open_r1_nb.config import load_recipe, save_recipe
from open_r1_nb.paths import REPO_ROOT

TOKEN = "hf_dummyARGUMENTtoken0123456789"
ENV_TOKEN = "hf_dummyENVIRONMENTtoken9876543"


def _files_holding(folder: Path, *values: str) -> list[str]:
    """Every file under ``folder`` whose bytes hold one of ``values``."""
    return [
        str(p.relative_to(folder))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and any(v.encode() in p.read_bytes() for v in values)
    ]


# ------------------------------------------------------------------------------------------------------------
# A mixture whose sources share column names but not their types fails while the data loads (notebook 02, or the
# training command before any model is built), naming each column, both types and the fix.
# ------------------------------------------------------------------------------------------------------------


def _conv(question: str) -> list[dict]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<think>\nsteps\n</think>\n\nThe answer is \\boxed{1}."},
    ]


def _source(folder: Path, rows: list[dict]) -> str:
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def _mixture(*ids: str):
    entries = [NS(id=i, config=None, split="train", columns=None, weight=None) for i in ids]
    return NS(dataset_mixture=NS(datasets=entries, seed=0, test_split_size=None))


def test_mixture_sources_of_other_types_fail_naming_the_columns(tmp_path):
    named = _source(tmp_path / "named", [{"id": f"q{i}", "messages": _conv(f"q {i}")} for i in range(4)])
    numbered = _source(tmp_path / "numbered", [{"id": i, "messages": _conv(f"n {i}")} for i in range(4)])
    with pytest.raises(data.DatasetLoadError) as err:
        data.get_dataset(_mixture(named, numbered))
    message = str(err.value)
    assert "column 'id' is Value('string')" in message and "Value('int64')" in message
    assert "numbered" in message and "Fix: keep only the columns training reads" in message

    # Turns with an extra field: the messages column itself differs.
    extra = [
        {"id": f"r{i}", "messages": [dict(m, reasoning="...") for m in _conv(f"r {i}")]} for i in range(4)
    ]
    with pytest.raises(data.DatasetLoadError, match=r"column 'messages' is .*reasoning.*same fields"):
        data.get_dataset(_mixture(named, _source(tmp_path / "reasoning", extra)))


def test_mixture_of_other_types_stops_the_training_command_before_the_model(tmp_path, tiny_model_dir):
    named = _source(tmp_path / "named", [{"id": f"q{i}", "messages": _conv(f"q {i}")} for i in range(4)])
    numbered = _source(tmp_path / "numbered", [{"id": i, "messages": _conv(f"n {i}")} for i in range(4)])
    recipe = load_recipe(
        {
            "model_name_or_path": str(tiny_model_dir),
            "dataset_mixture": {"datasets": [{"id": named}, {"id": numbered}]},
            "eos_token": "<|im_end|>",
            "run_name": "mixture",
            "use_cpu": True,
            "bf16": False,
            "report_to": "none",
            "accelerate_config": "cpu_1proc",
            "num_processes": 1,
            "output_dir": str(tmp_path / "checkpoints"),
        },
        check_files=False,
    )
    with pytest.raises(data.DatasetLoadError, match="column 'id'"):
        sft.train(recipe)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()


# ------------------------------------------------------------------------------------------------------------
# A token given as an argument: on the training command line (--hub_token) or to the runner (--set hub_token=).
# ------------------------------------------------------------------------------------------------------------


def _tiny_recipe(tmp_path: Path, name: str, **changes) -> Path:
    """The smoke profile, shortened to a few steps, written to ``tmp_path/recipe.yaml`` with its outputs there."""
    recipe = load_recipe(
        REPO_ROOT / "parameters/smoke.yaml",
        overrides={"run_name": name, "max_steps": 2, "save_steps": 1, "logging_steps": 1, **changes},
    ).resolved_for_run()
    recipe.training.output_dir = str(tmp_path / "checkpoints")
    return save_recipe(recipe, tmp_path / "recipe.yaml")


@pytest.mark.slow
def test_token_on_the_training_command_line_reaches_no_file_and_no_log(
    tiny_model_dir, smoke_data_dir, tmp_path, capsys, monkeypatch
):
    """TensorBoard's event files (with the arguments as text), the pickled arguments the Trainer saves into every
    checkpoint and the model (training_args.bin), train.log, the evaluation after training, the printed output."""
    recipe_path = _tiny_recipe(
        tmp_path,
        "token_arg",
        report_to=["tensorboard"],
        eval_limit=1,
        eval_n=1,
        eval_max_new_tokens=2,
        eval_backend="transformers",
    )
    env = {**launch.launch_env(cpu=True), "HF_TOKEN": ENV_TOKEN}
    result = launch.launch(
        recipe_path,
        "cpu_1proc",
        1,
        extra_args=["--hub_token", TOKEN],
        log_path=tmp_path / "train.log",
        env=env,
    )
    assert result.returncode == 0
    printed = capsys.readouterr().out
    log = (tmp_path / "train.log").read_text()
    assert "--hub_token ***" in log and "***" in printed  # the argument was there, hidden
    assert TOKEN not in log + printed and ENV_TOKEN not in log + printed
    assert list(tmp_path.glob("checkpoints/runs/*/events.out.tfevents.*")), "no TensorBoard output to check"
    assert (tmp_path / "model" / "training_args.bin").exists() and (tmp_path / "eval").is_dir()
    assert _files_holding(tmp_path, TOKEN, ENV_TOKEN) == []


def test_token_given_to_the_runner_goes_to_the_environment_only(tmp_path, monkeypatch, tiny_model_dir):
    """``--set hub_token=...``: notebook 01 receives the overrides as a parameter (kept in its executed copy), the
    notes are printed and written into recipe.yaml, and errors quote the overrides."""
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        "# Hardware: any CPU (a test profile)\n"
        f"model_name_or_path: {tiny_model_dir}\ndataset_name: org/data\neos_token: <|im_end|>\nrun_name: secret\n"
        "use_cpu: true\nbf16: false\nreport_to: none\naccelerate_config: cpu_1proc\nnum_processes: 1\n"
    )
    lines: list[str] = []
    pipeline.run_pipeline(
        profile, only=["01"], overrides=pipeline.parse_set([f"hub_token={TOKEN}"]), echo=lines.append
    )
    assert os.environ["HF_TOKEN"] == TOKEN  # where pushing reads it
    assert any("HF_TOKEN" in line for line in lines) and not any(TOKEN in line for line in lines)
    run = tmp_path / "runs" / "secret"
    assert (run / "notebooks" / "01_configuration.ipynb").exists()
    assert _files_holding(run, TOKEN) == []

    # A bad override beside it: the error quotes the overrides, never the token.
    with pytest.raises(Exception) as err:
        pipeline.run_pipeline(
            profile,
            only=["01"],
            overrides=pipeline.parse_set([f"push_to_hub_token={TOKEN}", "learning_rate=fast"]),
            echo=lines.append,
        )
    assert "learning_rate" in str(err.value) and TOKEN not in str(err.value)


def test_secret_arguments_are_found_in_every_spelling_and_vocabulary_tokens_are_not():
    args = [
        "--hub_token",
        TOKEN,
        "--eos_token",
        "<|im_end|>",
        "--pad-token=<pad>",
        "--wandb_api_key=abcdef12",
    ]
    assert launch.secret_arguments(args) == [TOKEN, "abcdef12"]
    assert launch.secret_arguments(["--set", f"hub_token={TOKEN}"]) == [TOKEN]
    assert launch.without_secret_arguments(args) == ["--eos_token", "<|im_end|>", "--pad-token=<pad>"]
    assert launch.redact(f"cmd --hub_token {TOKEN}", launch.secret_arguments(args)) == "cmd --hub_token ***"
