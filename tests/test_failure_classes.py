"""Failures that used to go unnoticed or unexplained, each caused for real (or as close to it as a test can) and
each ending in a clear message: a hung rank, a full disk while saving, a pipeline killed mid-notebook, a token
given as an argument, a rendezvous port lost between choice and bind, a mixture whose sources differ in schema.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from trainers import smoke_rows, tiny_trainer

from open_r1_nb import data, launch, pipeline, sft
from open_r1_nb.config import load_recipe, save_recipe
from open_r1_nb.paths import REPO_ROOT

TOKEN = "hf_dummyARGUMENTtoken0123456789"
ENV_TOKEN = "hf_dummyENVIRONMENTtoken9876543"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """The in-process trainers here create an Accelerator; start and leave each test without one (a recipe loaded
    for validation refuses to set up devices beside one)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


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


# ------------------------------------------------------------------------------------------------------------
# Launches for real (accelerate, torchrun, two gloo ranks) of a small module instead of the training: a rank that
# hangs, and a rendezvous port taken between its choice and its bind.
# ------------------------------------------------------------------------------------------------------------

PROBE = """
import os, sys, time
from accelerate import PartialState
from open_r1_nb.watchdog import HEARTBEAT_DIR_ENV, Heartbeat

state = PartialState(cpu=True)
print(f"probe rank {state.process_index} of {state.num_processes} pid {os.getpid()}", flush=True)
if os.environ.get("PROBE_HANG"):
    beat = Heartbeat(os.environ[HEARTBEAT_DIR_ENV])
    beat.beat("step 1", force=True)
    if state.process_index == 1:
        time.sleep(600)  # alive and silent: hung
    for step in range(2, 3000):  # rank 0 goes on responding (its own work, between collectives)
        time.sleep(0.2)
        beat.beat(f"step {step}", force=True)
state.wait_for_everyone()
"""


@pytest.fixture
def probe(tmp_path):
    """A module the launcher starts on every rank, a recipe that says use_cpu, and the environment to find it."""
    (tmp_path / "probe_module").mkdir()
    (tmp_path / "probe_module" / "rank_probe.py").write_text(PROBE)
    (tmp_path / "recipe.yaml").write_text("use_cpu: true\n")
    env = launch.launch_env(cpu=True)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "probe_module"), env["PYTHONPATH"]])
    return tmp_path / "recipe.yaml", env


def _probe_pids(text: str) -> list[int]:
    # Anywhere in a line: two ranks printing at once can share one.
    return [int(pid) for pid in re.findall(r"probe rank \d of \d pid (\d+)", text)]


def test_a_hung_rank_fails_the_launch_in_time_naming_the_rank(probe, tmp_path, monkeypatch):
    import psutil

    recipe, env = probe
    env = {**env, "PROBE_HANG": "1", "OPEN_R1_NB_RANK_TIMEOUT": "3"}
    start = time.monotonic()
    with pytest.raises(launch.LaunchError) as err:
        launch.launch(recipe, "cpu_2proc", 2, env=env, module="rank_probe", log_path=tmp_path / "train.log")
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert err.value.kind == "hung"
    assert message.startswith("rank 1 (pid ") and "stopped responding" in message
    assert "since 'step 1', past the limit of 3 s (OPEN_R1_NB_RANK_TIMEOUT)" in message
    assert elapsed < 90, f"took {elapsed:.0f} s to notice"
    log = (tmp_path / "train.log").read_text()
    assert "# rank 1 (pid" in log
    pids = _probe_pids(log)
    assert len(pids) == 2
    time.sleep(0.5)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_rank_timeout_must_be_a_positive_number(probe, tmp_path):
    recipe, env = probe
    with pytest.raises(
        ValueError, match="OPEN_R1_NB_RANK_TIMEOUT='soon' is not a positive number of seconds"
    ):
        launch.run(["true"], tmp_path / "log", env={**env, "OPEN_R1_NB_RANK_TIMEOUT": "soon"})


def test_the_heartbeat_callback_beats_while_training_only(tmp_path, monkeypatch):
    from open_r1_nb import watchdog

    monkeypatch.setenv(watchdog.HEARTBEAT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "3")
    callback = watchdog.heartbeat_callback_from_env()
    state = NS(global_step=4)
    callback.on_train_begin(None, state, None)
    [silent] = watchdog.silences(tmp_path)
    assert (silent.rank, silent.pid, silent.what) == (3, os.getpid(), "training started")
    callback.on_step_begin(None, state, None)  # within a second of the last: not written again
    assert watchdog.silences(tmp_path)[0].what == "training started"
    callback.on_save(None, state, None)
    assert watchdog.silences(tmp_path)[0].what == "saved checkpoint-4"
    callback.on_train_end(None, state, None)  # saving and evaluating after training are not watched
    assert watchdog.silences(tmp_path) == []
    monkeypatch.delenv(watchdog.HEARTBEAT_DIR_ENV)
    assert watchdog.heartbeat_callback_from_env() is None


def test_a_port_taken_before_the_rendezvous_binds_it_is_retried(probe, tmp_path, monkeypatch, capsys):
    """accelerate checks the port too, by connecting; a port that something has bound without listening yet
    passes that check and still cannot be bound by torchrun's store: the race as it happens."""
    recipe, env = probe
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    port = taken.getsockname()[1]
    real_free_port = launch.free_port
    chosen: list[int] = []

    def free_port_then_lost(preferred=launch.DEFAULT_PORT):
        chosen.append(port if not chosen else real_free_port(preferred))
        return chosen[-1]

    monkeypatch.setattr(launch, "free_port", free_port_then_lost)
    try:
        result = launch.launch(
            recipe, "cpu_2proc", 2, env=env, module="rank_probe", log_path=tmp_path / "t.log"
        )
    finally:
        taken.close()
    assert result.returncode == 0 and len(chosen) == 2 and chosen[1] != port
    out = capsys.readouterr().out
    assert f"port {port} was taken between choosing it and the rendezvous binding it" in out
    assert "attempt 2 of 3" in out
    log = (tmp_path / "t.log").read_text()
    assert "EADDRINUSE" in log and log.count("# $ ") == 2
    assert "probe rank 0 of 2" in log and "probe rank 1 of 2" in log


# ------------------------------------------------------------------------------------------------------------
# A full disk while saving a checkpoint: the last complete checkpoint stays usable (training resumes from it), and
# the message says how much space the new one needs and how much there is.
# ------------------------------------------------------------------------------------------------------------


def _trainer(tiny_model_dir, smoke_data_dir, output_dir: Path, max_steps: int):
    trainer, _ = tiny_trainer(
        tiny_model_dir, smoke_rows(smoke_data_dir, 8), output_dir, callbacks=[sft.CheckpointCompleteCallback()],
        per_device_train_batch_size=2, max_steps=max_steps, save_steps=1, logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    return trainer


def _resumes_from(tiny_model_dir, smoke_data_dir, output_dir: Path, step: int) -> None:
    """The last complete checkpoint is ``checkpoint-<step>``, and training resumes from it to the end."""
    last = sft.last_complete_checkpoint(output_dir, quarantine=True)
    assert last == output_dir / f"checkpoint-{step}"
    trainer = _trainer(tiny_model_dir, smoke_data_dir, output_dir, max_steps=step + 1)
    trainer.train(resume_from_checkpoint=str(last))
    assert trainer.state.global_step == step + 1
    assert sft.checkpoint_is_complete(output_dir / f"checkpoint-{step + 1}")


def test_too_little_space_stops_before_the_checkpoint_is_written(
    tiny_model_dir, smoke_data_dir, tmp_path, monkeypatch
):
    import shutil

    output_dir = tmp_path / "checkpoints"
    trainer = _trainer(tiny_model_dir, smoke_data_dir, output_dir, max_steps=3)
    real_usage = shutil.disk_usage

    def nearly_full(path):  # the real disk until checkpoint-1 exists, then 1 MiB free
        usage = real_usage(path)
        if not sft.checkpoint_is_complete(output_dir / "checkpoint-1"):
            return usage
        return usage._replace(free=2**20)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    with pytest.raises(sft.DiskFullError) as err:
        trainer.train()
    message = str(err.value)
    size = sum(p.stat().st_size for p in (output_dir / "checkpoint-1").rglob("*") if p.is_file())
    assert f"Not enough disk space for checkpoint-2: it needs about {size / 2**20:.1f} MiB" in message
    assert "(the size of checkpoint-1)" in message and "has 1.0 MiB free" in message
    assert f"The last complete checkpoint, {output_dir / 'checkpoint-1'}, is intact" in message
    assert "save_total_limit" in message
    assert not (output_dir / "checkpoint-2").exists()  # nothing half-written
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    _resumes_from(tiny_model_dir, smoke_data_dir, output_dir, 1)


def test_a_disk_that_fills_during_a_save_leaves_the_last_checkpoint_usable(
    tiny_model_dir, smoke_data_dir, tmp_path, monkeypatch
):
    """The write itself fails (ENOSPC), half-way through checkpoint-2: the free-space check passed (another
    program filled the disk meanwhile)."""
    import transformers.modeling_utils as modeling_utils

    output_dir = tmp_path / "checkpoints"
    trainer = _trainer(tiny_model_dir, smoke_data_dir, output_dir, max_steps=3)
    real_save = modeling_utils.safe_save_file

    def save_until_full(tensors, filename, metadata=None):
        if "checkpoint-2" not in str(filename):
            return real_save(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 4096)  # what got written before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(modeling_utils, "safe_save_file", save_until_full)
    with pytest.raises(sft.DiskFullError) as err:
        trainer.train()
    message = str(err.value)
    assert message.startswith("Not enough disk space for checkpoint-2 (OSError: [Errno 28] No space left")
    assert "it needs about" in message and "(the size of checkpoint-1)" in message and "free" in message
    assert "The incomplete checkpoint-2 (" in message and "skipped on resume" in message
    assert not sft.checkpoint_is_complete(output_dir / "checkpoint-2")
    monkeypatch.setattr(modeling_utils, "safe_save_file", real_save)
    _resumes_from(tiny_model_dir, smoke_data_dir, output_dir, 1)
    assert any(p.name.startswith("checkpoint-2.partial") for p in output_dir.iterdir())  # kept aside, unused


# ------------------------------------------------------------------------------------------------------------
# A pipeline killed mid-notebook: nothing it started goes on alone, and running it again finishes with whole
# results. Before, the notebook's kernel exited with its runner but the training it launched went on, writing
# into the run folder while the re-run trained there too.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pipeline_killed_while_training_reruns_cleanly(tiny_model_dir, smoke_data_dir, tmp_path):
    import psutil

    runs = tmp_path / "runs"
    env = {**os.environ, "OPEN_R1_NB_RUNS": str(runs)}
    # 40 steps (a checkpoint every 4): long enough for the kill to land while the ranks train.
    command = [sys.executable, str(REPO_ROOT / "scripts" / "run_pipeline.py"), "parameters/smoke.yaml"]
    command += ["--set", "max_steps=40", "--set", "save_steps=4"]
    with (tmp_path / "first.log").open("w") as out:
        runner = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    run = runs / "smoke"
    marker = run / "checkpoints" / "checkpoint-4" / sft.COMPLETE_MARKER
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert runner.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 600 s"
        time.sleep(0.1)
    started = psutil.Process(runner.pid).children(recursive=True)
    assert any("open_r1_nb.sft" in " ".join(p.cmdline()) for p in started), "killed outside training"
    runner.kill()  # SIGKILL, the runner only: no handler runs, as when its terminal or its machine goes
    runner.wait()
    gone, alive = psutil.wait_procs(started, timeout=45)
    assert not alive, (
        f"still running after the runner was killed: {[' '.join(p.cmdline())[:120] for p in alive]}"
    )

    again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for name in ("04_sft_training", "05_save_and_publish", "06_evaluation"):
        assert any(line.strip().startswith(name) and " ok " in line for line in again.stdout.splitlines()), (
            name
        )
    # Whole results: a finished model, every step, both models' evaluations with every sample, the report.
    state = json.loads((run / "checkpoints" / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["global_step"] == 40 and (run / "model" / "model.safetensors").exists()
    assert "resuming from the last complete checkpoint" in (run / "train.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 40 and set(metrics["eval"]["smoke"]) == {"base", "trained"}
    for label in ("base", "smoke"):
        summary = json.loads((run / "eval" / "smoke" / f"{label}.json").read_text())
        samples = (run / "eval" / "smoke" / f"{label}.jsonl").read_text().splitlines()
        assert summary["problems"] == 4 and len(samples) == 4 * 2
    assert (run / "report.md").exists()
    # The killed run's executed notebooks were kept, not overwritten.
    assert list((run / "notebooks" / "previous").glob("*/04_sft_training.ipynb"))


def test_a_training_left_running_is_not_launched_beside(probe, tmp_path):
    recipe, env = probe
    left = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-m", "open_r1_nb.sft", "--config", str(recipe)]
    )
    try:
        start = time.monotonic()
        with pytest.raises(launch.AlreadyRunningError) as err:
            launch.check_not_running(recipe, wait_s=1)
        assert time.monotonic() - start < 10
        assert f"pids {left.pid}" in str(err.value) and f"kill {left.pid}" in str(err.value)
    finally:
        left.kill()
        left.wait()
    launch.check_not_running(recipe, wait_s=1)  # gone: nothing to wait for


def test_the_training_summary_counts_every_step_when_the_log_was_cut_short(tmp_path, monkeypatch):
    """A notebook stopped near the end of training: the training finished (trainer_state.json holds all 6 logs),
    train.log has the first one only."""
    from open_r1_nb import training

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "train.log").write_text(
        "# $ accelerate launch ...\n{'loss': '6.1', 'learning_rate': '0.001', 'real_tokens_per_second': '900'}\n"
    )
    history = [
        {"loss": 6.1 - i / 2, "learning_rate": 1e-3, "real_tokens_per_second": 900.0, "step": i}
        for i in range(1, 7)
    ]
    history.append({"train_runtime": 3.0, "train_loss": 4.8, "step": 6})
    (run / "checkpoints" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    recipe = NS(run_dir=run, training=NS(output_dir=str(run / "checkpoints"), logging_steps=1))
    frame = training.training_frame(recipe)
    assert list(frame["step"]) == [1, 2, 3, 4, 5, 6] and frame["loss"].iloc[-1] == pytest.approx(3.1)
    # A log that reaches as far is kept (it is what the live plot showed).
    (run / "train.log").write_text(
        "# $ accelerate launch ...\n"
        + "".join(f"{{'loss': '{6.1 - i / 2:.2f}', 'learning_rate': '0.001'}}\n" for i in range(1, 7))
    )
    assert list(training.training_frame(recipe)["step"]) == [1, 2, 3, 4, 5, 6]


def test_the_training_summary_counts_the_trainers_steps_not_the_logged_ones(tmp_path):
    """143 steps logged every 5: the log's last step is 140, the trainer's (trainer_state.json) 143. The learning
    curve places the final model at this count, so a wrong one plots the last checkpoint twice."""
    from open_r1_nb import training

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    history = [{"loss": 2.0 - i / 100, "step": i} for i in range(5, 141, 5)]
    (run / "checkpoints" / "trainer_state.json").write_text(
        json.dumps({"global_step": 143, "log_history": history + [{"train_runtime": 9.0, "step": 143}]})
    )
    recipe = NS(
        run_dir=run, num_processes=1, global_batch_size=lambda: 8,
        training=NS(output_dir=str(run / "checkpoints"), logging_steps=5),
    )  # fmt: skip
    frame = training.training_frame(recipe)
    assert frame["step"].max() == 140
    assert training.training_summary(recipe, frame)["steps"] == 143
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 143


def test_what_trackers_and_notes_are_given_holds_no_token(tiny_model_dir):
    """W&B's callback logs ``args.to_dict()`` as the run's config, TensorBoard's ``args.to_json_string()`` and
    ``to_sanitized_dict()`` (wandb is not installed here, so its config is checked as the callback builds it); the
    recipe's notes are printed and written into recipe.yaml's header."""
    recipe = load_recipe(
        {
            "model_name_or_path": str(tiny_model_dir),
            "dataset_name": "org/data",
            "run_name": "trackers",
            "use_cpu": True,
            "bf16": False,
            "report_to": ["tensorboard"],
            "accelerate_config": "cpu_1proc",
            "num_processes": 1,
        },
        overrides={"hub_token": TOKEN, "wandb_project": "p"},
        check_files=False,
    )
    args = recipe.training
    assert args.hub_token == TOKEN  # in memory, for the push
    for given in (args.to_json_string(), json.dumps(args.to_sanitized_dict()), json.dumps(args.to_dict())):
        assert TOKEN not in given
    assert any("override `hub_token`" in note for note in recipe.notes)
    assert TOKEN not in "\n".join(recipe.notes) and TOKEN not in json.dumps(recipe.to_dict())
