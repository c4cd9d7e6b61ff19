"""Tests of the launcher: the command, batch and port arithmetic, streaming, failures, and a real 2-rank run."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from open_r1_nb import cuda_check, launch
from open_r1_nb.launch import (
    LaunchError,
    TrainingLog,
    adjust_accumulation,
    build_command,
    format_command,
    free_port,
    parse_log_line,
    redact,
    run,
)
from open_r1_nb.paths import REPO_ROOT

# Lines exactly as transformers 5.17's Trainer printed them under `accelerate launch` (2 CPU ranks, a pipe).
TRAINER_LINES = [
    "{'loss': '4.864', 'grad_norm': '0.812', 'learning_rate': '0.001', 'epoch': '0.25'}",
    "{'loss': '4.866', 'grad_norm': '0.793', 'learning_rate': '0.00075', 'epoch': '0.5'}",
    "{'loss': '4.874', 'grad_norm': '0.8152', 'learning_rate': '0.0005', 'epoch': '0.75'}",
    "{'loss': '4.856', 'grad_norm': '0.7814', 'learning_rate': '0.00025', 'epoch': '1'}",
    "{'train_runtime': '0.1645', 'train_samples_per_second': '194.6', 'train_steps_per_second': '24.32', "
    "'train_loss': '4.865', 'epoch': '1'}",
]


def _script(tmp_path: Path, body: str, name: str = "script.py") -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def _env() -> dict[str, str]:
    # cpu=True: no torch import (keeps these tests fast) and the same variables a CPU launch gets.
    return launch.launch_env(cpu=True)


# ------------------------------------------------------------------------------------------- build / format
def test_build_command_layout(tmp_path: Path) -> None:
    recipe, config = tmp_path / "recipe.yaml", tmp_path / "cpu.yaml"
    cmd = build_command(recipe, config, 2, main_process_port=29555, extra_args=["--learning_rate", "1e-4"])
    assert cmd == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "2",
        "--main_process_port",
        "29555",
        "-m",
        "open_r1_nb.sft",
        "--config",
        str(recipe),
        "--learning_rate",
        "1e-4",
    ]


def test_build_command_defaults_and_names(tmp_path: Path) -> None:
    cmd = build_command(
        tmp_path / "r.yaml", "cpu_2proc", 1, python="/opt/py", launcher_args=["--mixed_precision", "no"]
    )
    assert cmd[0] == "/opt/py"
    assert "--main_process_port" not in cmd  # None leaves it to the config / accelerate
    assert cmd[cmd.index("--config_file") + 1] == str(
        REPO_ROOT / "parameters" / "accelerate" / "cpu_2proc.yaml"
    )
    assert cmd.index("--mixed_precision") < cmd.index("-m", 3)  # launcher options go before the module
    with pytest.raises(ValueError):
        build_command("r.yaml", "cpu_2proc", 0)


def test_build_command_finds_relative_paths_from_repo_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # like a kernel running in notebooks/
    cmd = build_command("pyproject.toml", "parameters/accelerate/x.yaml", 2)
    assert cmd[-1] == str(REPO_ROOT / "pyproject.toml")


def test_format_command_is_relative_and_quoted(tmp_path: Path) -> None:
    cmd = build_command(
        REPO_ROOT / "runs" / "my run" / "recipe.yaml",
        "cpu_2proc",
        2,
        python=str(REPO_ROOT / ".venv/bin/python"),
    )
    line = format_command(cmd)
    assert line.startswith(
        ".venv/bin/python -m accelerate.commands.launch --config_file parameters/accelerate/cpu_2proc.yaml"
    )
    assert line.endswith("-m open_r1_nb.sft --config 'runs/my run/recipe.yaml'")
    assert shlex.split(line)[-1] == "runs/my run/recipe.yaml"
    outside = format_command(["python", str(tmp_path / "a.yaml")])
    assert str(tmp_path) in outside


# --------------------------------------------------------------------------------------------- batch / port
def test_adjust_accumulation_keeps_global_batch() -> None:
    assert adjust_accumulation(4, 2, 2, 2) == (2, None)
    new, msg = adjust_accumulation(2, 8, 8, 2)  # the 8-GPU recipe on 2 processes
    assert new == 32 and "32" in msg and "global batch at 128" in msg
    new, msg = adjust_accumulation(4, 1, 2, 1)
    assert new == 2 and msg


def test_adjust_accumulation_inexact_says_nearest() -> None:
    new, msg = adjust_accumulation(4, 3, 2, 8)  # global 24, steps of 32
    assert new == 1
    assert msg.startswith("WARNING") and "nearest global batch, 32" in msg
    assert "per_device_train_batch_size=3 with gradient_accumulation_steps=1" in msg
    new, msg = adjust_accumulation(2, 3, 3, 2)  # global 18, steps of 4: 16 and 20 tie, the larger wins
    assert new == 5 and "20" in msg
    with pytest.raises(ValueError):
        adjust_accumulation(0, 1, 1, 1)


def test_free_port_avoids_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = free_port(taken)
        assert other != taken and 0 < other < 65536
    assert free_port(other) == other  # free now (nothing listens on it)


def test_launch_replaces_a_busy_port_and_logs_next_to_the_recipe(tmp_path: Path, monkeypatch, capsys) -> None:
    recipe, config = tmp_path / "recipe.yaml", tmp_path / "cpu.yaml"
    recipe.write_text("{}")
    config.write_text("distributed_type: MULTI_GPU\nuse_cpu: true\n")
    calls = []
    monkeypatch.setattr(launch, "run", lambda cmd, log_path, **kw: calls.append((cmd, log_path)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        launch.launch(recipe, config, 2, port=port)
    cmd, log_path = calls[0]
    used = int(cmd[cmd.index("--main_process_port") + 1])
    assert used != port and log_path == tmp_path / "train.log"
    out = capsys.readouterr().out
    assert f"port {port} is busy" in out and "$ " in out
    with pytest.raises(FileNotFoundError):
        launch.launch(tmp_path / "missing.yaml", config, 2)


# ------------------------------------------------------------------------------------- a GPU recipe without CUDA
def _gpu_launch(tmp_path: Path, monkeypatch, *, recipe_text: str = "{}") -> tuple[list, Path, Path]:
    """A recipe and a ZeRO-3-style accelerate config (no use_cpu), with ``run`` replaced by a recorder."""
    recipe, config = tmp_path / "recipe.yaml", tmp_path / "zero3.yaml"
    recipe.write_text(recipe_text)
    config.write_text("distributed_type: DEEPSPEED\nuse_cpu: false\nnum_processes: 8\n")
    calls: list = []
    monkeypatch.setattr(launch, "run", lambda cmd, log_path, **kw: calls.append(cmd))
    return calls, recipe, config


def _no_cuda(monkeypatch, built: str | None, driver: str | None) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", built)
    monkeypatch.setattr(cuda_check, "nvidia_driver_version", lambda: driver)  # where cuda_problem looks it up


def test_gpu_launch_with_a_driver_too_old_for_torch_is_refused_before_anything_runs(tmp_path, monkeypatch):
    calls, recipe, config = _gpu_launch(tmp_path, monkeypatch)
    _no_cuda(monkeypatch, built="13.0", driver="550.54.15")
    with pytest.raises(launch.CudaUnavailableError) as err:
        launch.launch(recipe, config, 8)
    message = str(err.value)
    assert calls == [], "the launch ran: its ranks would have trained on the CPU"
    assert "CUDA 13.0" in message and "R580" in message and "550.54.15" in message
    assert "cu128" in message and "environment.yml" in message
    assert "zero3" in message and "use_cpu: true" in message


def test_gpu_launch_with_a_cpu_build_of_torch_says_so(tmp_path, monkeypatch):
    calls, recipe, config = _gpu_launch(tmp_path, monkeypatch)
    _no_cuda(monkeypatch, built=None, driver="580.65.06")
    with pytest.raises(launch.CudaUnavailableError, match="CPU-only build") as err:
        launch.launch(recipe, config, 8)
    assert "environment.yml" in str(err.value) and calls == []


def test_gpu_launch_on_a_machine_without_a_driver_says_so(tmp_path, monkeypatch):
    calls, recipe, config = _gpu_launch(tmp_path, monkeypatch)
    _no_cuda(monkeypatch, built="13.0", driver=None)
    with pytest.raises(launch.CudaUnavailableError, match="no NVIDIA driver") as err:
        launch.launch(recipe, config, 8)
    assert "--gres=gpu" in str(err.value) and calls == []


def test_cpu_recipe_with_a_gpu_config_still_launches(tmp_path, monkeypatch):
    calls, recipe, config = _gpu_launch(tmp_path, monkeypatch, recipe_text="use_cpu: true\n")
    _no_cuda(monkeypatch, built="13.0", driver=None)
    launch.launch(recipe, config, 1)
    assert len(calls) == 1


def test_driver_version_is_read_from_both_kernel_module_flavours():
    proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024"
    open_module = (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)"
    )
    assert launch._DRIVER_VERSION.search(proprietary).group(1) == "550.54.15"
    assert launch._DRIVER_VERSION.search(open_module).group(1) == "580.65.06"


# ------------------------------------------------------------------------------------------------- secrets
def test_redact() -> None:
    env = {
        "HF_TOKEN": "hf_abcdefghij",
        "WANDB_API_KEY": "0123456789abcdef",
        "MY_SECRET": "s3cr3t-value",
        "DB_PASSWORD_FILE": "hunter22",
        "PATH": "/usr/bin",
        "SHORT_KEY": "1",  # too short to replace everywhere
    }
    line = "token hf_abcdefghij key 0123456789abcdef s3cr3t-value hunter22 /usr/bin 1"
    assert redact(line, env) == "token *** key *** *** *** /usr/bin 1"


# --------------------------------------------------------------------------------------------- log parsing
def test_parse_log_line() -> None:
    assert parse_log_line(TRAINER_LINES[0]) == {
        "loss": 4.864,
        "grad_norm": 0.812,
        "learning_rate": 0.001,
        "epoch": 0.25,
    }
    assert parse_log_line("[rank0]: {'loss': 2.3, 'epoch': 1}") == {"loss": 2.3, "epoch": 1.0}
    assert parse_log_line("{'num_tokens': '2.9e+04', 'grad_norm': 'nan'}")["num_tokens"] == 29000.0
    assert parse_log_line("{'model': 'llama', 'loss': '1'}") is None  # a config dict, not a log
    interleaved = TRAINER_LINES[0] + "[rank1]:[W reducer.cpp] Warning: {x} (function operator())"
    assert parse_log_line(interleaved)["loss"] == 4.864
    assert parse_log_line("{}") is None
    assert parse_log_line("loss went {down") is None
    assert parse_log_line(" 25%|██▌       | 1/4 [00:00<00:00, 13.26it/s]") is None


def test_training_log_frame_and_summary(tmp_path: Path) -> None:
    log = TrainingLog()
    for line in ["noise", *TRAINER_LINES]:
        log(line)
    df = log.to_frame()
    assert list(df["step"]) == [1, 2, 3, 4]
    assert list(df.columns[:2]) == ["step", "loss"]
    assert df["learning_rate"].iloc[-1] == pytest.approx(0.00025)
    assert log.summary["train_samples_per_second"] == pytest.approx(194.6)

    every5 = TrainingLog(logging_steps=5, logging_first_step=True)
    for line in [
        TRAINER_LINES[0],
        TRAINER_LINES[1],
        "{'eval_loss': '3.1', 'epoch': '0.5'}",
        TRAINER_LINES[2],
    ]:
        every5(line)
    assert list(every5.to_frame()["step"]) == [1, 5, 5, 10]
    assert TrainingLog().to_frame().empty

    path = tmp_path / "train.log"
    path.write_text("# $ old\n" + TRAINER_LINES[0] + "\n# $ new\n" + "\n".join(TRAINER_LINES[1:3]) + "\n")
    assert len(TrainingLog.from_file(path).records) == 2  # only the last launch
    # Re-read with the recipe's logging_steps (notebook 04 does): the steps are optimizer steps, not log lines.
    assert list(TrainingLog.from_file(path, logging_steps=5).to_frame()["step"])[-1] >= 5


# ------------------------------------------------------------------------------------------------ running
def test_run_streams_and_raises_with_tail(tmp_path: Path, capsys) -> None:
    cmd = _script(
        tmp_path,
        """
        import sys
        for i in range(60):
            print(f"line {i}")
        print("to stderr", file=sys.stderr)
        sys.exit(3)
        """,
    )
    seen: list[str] = []
    log_path = tmp_path / "logs" / "train.log"
    with pytest.raises(LaunchError) as info:
        run(cmd, log_path, env=_env(), cwd=tmp_path, on_line=seen.append)
    err = info.value
    assert err.returncode == 3 and err.kind is None
    assert "exited with code 3" in str(err) and "script.py" in str(err)
    assert err.tail[-1] == "to stderr" and err.tail[0] == "line 21" and len(err.tail) == 40
    assert "line 59" in str(err) and "line 20\n" not in str(err)
    assert seen[0] == "line 0" and seen[-1] == "to stderr"
    assert "line 59" in capsys.readouterr().out
    text = log_path.read_text()
    assert "line 0\n" in text and "# exit code 3" in text and text.startswith("# ")


def test_run_success_redacts_and_throttles_progress(tmp_path: Path, capsys) -> None:
    cmd = _script(
        tmp_path,
        r"""
        import os, sys
        print("token is", os.environ["HF_TOKEN"])
        for i in range(1, 5):
            sys.stderr.write(f"\r {i * 25}%|##| {i}/4 [00:00<00:00]")
        sys.stderr.write("\r    \r")
        print("{'loss': '1.5', 'epoch': '1'}")
        """,
    )
    env = {**_env(), "HF_TOKEN": "hf_supersecretvalue"}
    lines: list[str] = []
    result = run(cmd, tmp_path / "t.log", env=env, on_line=lines.append, progress_every_s=3600)
    assert result.returncode == 0 and result.duration_s > 0
    out = capsys.readouterr().out
    assert "hf_supersecretvalue" not in out + "".join(lines) + (tmp_path / "t.log").read_text()
    assert "token is ***" in out
    assert " 25%" in out and " 50%" not in out and "100%" in out  # first and final bar only
    assert len([line for line in lines if "%|" in line]) == 4  # on_line gets every bar
    assert parse_log_line(lines[-1]) == {"loss": 1.5, "epoch": 1.0}


OOM_TRACEBACK = """
import sys
print("Traceback (most recent call last):", file=sys.stderr)
print('  File "sft.py", line 10, in <module>', file=sys.stderr)
print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
      "of 79.10 GiB of which 1.1 GiB is free.", file=sys.stderr)
for i in range(50):
    print(f"teardown {i}")  # pushes the traceback out of the 40-line tail
sys.exit(1)
"""


def test_run_recognises_cuda_oom(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as info:
        run(_script(tmp_path, OOM_TRACEBACK), tmp_path / "t.log", env=_env(), echo=False)
    msg = str(info.value)
    assert info.value.kind == "oom"
    for advice in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "gradient_checkpointing",
        "zero3",
        "max_length",
    ):
        assert advice in msg


@pytest.mark.parametrize(
    "body, kind",
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "oom"),
        ("print('RuntimeError: DefaultCPUAllocator: can\\'t allocate memory'); raise SystemExit(1)", "oom"),
        (
            "print('terminate called after throwing an instance of std::bad_alloc'); raise SystemExit(134)",
            "oom",
        ),
        ("print('  exitcode  : -9 (pid: 4552)  (SIGKILL)'); raise SystemExit(1)", "oom"),
        ("print('DistNetworkError: EADDRINUSE: address already in use'); raise SystemExit(1)", "port"),
        (
            f"print({TRAINER_LINES[-1]!r}); print('terminate called without an active exception'); raise SystemExit(1)",
            "after_training",
        ),
    ],
)
def test_run_classifies_failures(tmp_path: Path, body: str, kind: str) -> None:
    with pytest.raises(LaunchError) as info:
        run(_script(tmp_path, body), tmp_path / "t.log", env=_env(), echo=False)
    assert info.value.kind == kind


def test_interrupt_stops_the_whole_tree(tmp_path: Path) -> None:
    # Like torchrun: the child starts a worker in a session of its own (out of reach of a group signal), and
    # here neither forwards SIGTERM nor lets the worker die of it, so only the kill-by-pid fallback can work.
    cmd = _script(
        tmp_path,
        """
        import signal, subprocess, sys, time
        worker = subprocess.Popen(
            [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
            start_new_session=True,
        )
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        print("ready", worker.pid, flush=True)
        time.sleep(60)
        """,
    )
    pids: list[int] = []

    def on_line(line: str) -> None:
        if line.startswith("ready"):
            pids.append(int(line.split()[1]))
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(cmd, tmp_path / "t.log", env=_env(), on_line=on_line, echo=False, stop_grace_s=1.0)
    assert time.monotonic() - start < 10
    time.sleep(0.2)
    assert not _alive(pids[0])
    assert "interrupted" in (tmp_path / "t.log").read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but still answers to kill(0) until its parent reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


# ---------------------------------------------------------------------------------- real accelerate, 2 ranks
TINY_TRAIN = r"""
import argparse, json, os, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

parser = argparse.ArgumentParser()
parser.add_argument("--config")
settings = json.load(open(parser.parse_args().config))
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 128, (32, 16)).tolist()]
# No use_cpu here: the launcher's ACCELERATE_USE_CPU=true must be what turns the ranks into gloo ranks.
args = TrainingArguments(output_dir=settings["output_dir"], per_device_train_batch_size=2,
                         gradient_accumulation_steps=2, max_steps=4, logging_steps=1, learning_rate=1e-3,
                         report_to="none", save_strategy="no")
# One write per line: print() writes the text and the newline separately, and two ranks share one pipe.
sys.stdout.write(f"RANKINFO rank={os.environ['RANK']} local_rank={os.environ['LOCAL_RANK']} "
                 f"world_size={os.environ['WORLD_SIZE']} process_index={args.process_index} of={args.world_size}\n")
Trainer(model=model, args=args, train_dataset=data).train()
# Without this, a rank sometimes aborts at exit after training ("terminate called without an active exception").
torch.distributed.destroy_process_group()
"""


def _cpu_2proc_config(tmp_path: Path) -> Path:
    """The project's CPU config when it exists, else the minimal equivalent (see open_r1_nb.launch)."""
    project = REPO_ROOT / "parameters" / "accelerate" / "cpu_2proc.yaml"
    if project.is_file():
        return project
    config = tmp_path / "cpu_2proc.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\n"
        "num_processes: 2\nmixed_precision: 'no'\n"
    )
    return config


@pytest.mark.slow
def test_real_two_rank_trainer_run(tmp_path: Path) -> None:
    (tmp_path / "tiny_train.py").write_text(TINY_TRAIN)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"output_dir": str(tmp_path / "out")}))
    cmd = build_command(
        recipe, _cpu_2proc_config(tmp_path), 2, main_process_port=free_port(), module="tiny_train"
    )
    env = launch.launch_env(base={**os.environ, "PYTHONPATH": str(tmp_path)})  # auto-detects: no CUDA here
    log = TrainingLog()
    result = run(cmd, tmp_path / "train.log", env=env, cwd=tmp_path, on_line=log, echo=False)
    text = result.log_path.read_text()
    assert "RANKINFO rank=0 local_rank=0 world_size=2 process_index=0 of=2" in text
    assert "RANKINFO rank=1 local_rank=1 world_size=2 process_index=1 of=2" in text
    df = log.to_frame()
    assert list(df["step"]) == [1, 2, 3, 4]  # rank 0 logs alone: one dict per step
    assert {"loss", "grad_norm", "learning_rate", "epoch"} <= set(df.columns)
    assert log.summary is not None and log.summary["train_samples_per_second"] > 0


@pytest.mark.slow
def test_interrupting_a_real_launch_stops_the_ranks(tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text(
        "import os, sys, time\nsys.stdout.write(f'RANKPID {os.getpid()}\\n')\ntime.sleep(30)\n"
    )
    cmd = build_command(
        tmp_path / "unused.yaml",
        _cpu_2proc_config(tmp_path),
        2,
        main_process_port=free_port(),
        module="sleeper",
    )
    pids: list[int] = []

    def on_line(line: str) -> None:
        if line.startswith("RANKPID"):
            pids.append(int(line.split()[1]))
            if len(pids) == 2:
                raise KeyboardInterrupt

    env = launch.launch_env(cpu=True, base={**os.environ, "PYTHONPATH": str(tmp_path)})
    with pytest.raises(KeyboardInterrupt):
        run(cmd, tmp_path / "t.log", env=env, cwd=tmp_path, on_line=on_line, echo=False)
    time.sleep(0.5)
    assert len(pids) == 2 and not any(_alive(p) for p in pids)
