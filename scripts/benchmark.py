"""Training step time of this project's entry point against TRL's own `trl sft`, and CPU generation speed.

    python scripts/benchmark.py                                  # cpu_demo's model, data and settings, 10 steps
    python scripts/benchmark.py parameters/cpu_demo.yaml --steps 20 --repeats 2
    python scripts/benchmark.py --skip-trl --skip-generation     # only the project's own figures
    python scripts/benchmark.py --skip-trl --skip-generation --set bf16=false \
        --set accelerate_config=cpu_2proc --set num_processes=2 --set per_device_train_batch_size=4   # a layout

Both trainers get the same model, the same training rows (the profile's mixture, written once as JSONL; under
`completion_only_loss` also as prompt-completion rows for `trl sft`), the same SFTConfig values and the same accelerate launch (config file, number of processes,
environment); nothing is saved and nothing is evaluated, so the comparison is the training loop alone. The
project's entry point (`python -m open_r1_nb.sft`) adds real-token and padding logging and the checkpoint
marker; the ratio says what that costs (goal: at most 1.05).

Per trainer it prints the seconds per optimizer step (train_runtime / steps, as the Trainer measures it; the first
step's warm-up is in both), real tokens per second (tokens that are not padding), and the peak resident memory of
the largest process. Then CPU generation tokens/s on held-out prompts, per backend, greedy and sampled. A timing taken while
something else used the CPU is noise: the `others` column says how many cores everything else used meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark_generation import CpuWatch  # noqa: E402  (scripts/ is on sys.path when run)

from open_r1_nb import launch  # noqa: E402
from open_r1_nb.config import load_recipe, local_model_depth, parse_overrides, save_recipe  # noqa: E402
from open_r1_nb.estimate import training_token_cost  # noqa: E402
from open_r1_nb.hardware import (  # noqa: E402
    CPU_ISA_ENV,
    apply_cpu_isa_from_env,
    cpu_class,
    emulate_cpu_isa,
)
from open_r1_nb.launch import parse_log_line  # noqa: E402
from open_r1_nb.paths import REPO_ROOT  # noqa: E402

# Runs the command and prints the largest resident size among its descendants (ru_maxrss of waited-for
# children, KiB on Linux), so each trainer's peak memory is measured on its own.
_PEAK_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print('BENCHMARK_PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
    "sys.exit(rc)\n"
)
# The settings that decide what a training step computes and how fast: both trainers get the recipe's values.
# (Saving, logging, the Hub and evaluation are set by the benchmark itself, the same for both.)
_SHARED_SETTINGS = (
    "model_name_or_path", "dtype", "attn_implementation", "max_length", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "max_grad_norm", "optim", "bf16", "fp16", "use_cpu", "gradient_checkpointing", "ddp_find_unused_parameters",
    "seed", "eos_token", "packing", "padding_free", "assistant_only_loss", "completion_only_loss", "loss_type",
    "use_liger_kernel", "dataloader_num_workers", "train_sampling_strategy",
)  # fmt: skip


def training_rows(recipe, folder: Path) -> tuple[int, Path]:
    """Write the profile's training mixture, as notebook 02 builds it, to ``folder/messages/train.jsonl``; return
    the number of rows and the folder `trl sft` reads.

    With ``completion_only_loss`` the same rows also go to ``folder/prompt_completion/`` for `trl sft`, which
    masks the prompt only on prompt-completion rows; the project's entry point reads the conversations and splits
    them itself, so both trainers put the loss on the same tokens.
    """
    from open_r1_nb import data

    dataset = data.get_dataset(recipe.script)["train"].select_columns(["messages"])
    variants = {"messages": dataset}
    trl_reads = "messages"
    if recipe.training.completion_only_loss:
        trl_reads = "prompt_completion"
        variants[trl_reads] = data.to_prompt_completion(dataset)
    for name, rows in variants.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        with (folder / name / "train.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return len(dataset), folder / trl_reads


def trl_flags(recipe) -> list[str]:
    """The recipe's values of ``_SHARED_SETTINGS`` as `trl sft` flags (unset ones keep TRL's defaults)."""
    flags: list[str] = []
    for name in _SHARED_SETTINGS:
        source = recipe.model if hasattr(recipe.model, name) else recipe.training
        value = getattr(source, name, None)
        if value is None:
            continue
        value = getattr(value, "value", value)  # enums such as lr_scheduler_type
        flags += [f"--{name}", str(value)]
    return flags


def run_trainer(name: str, cmd: list[str], env: dict, log: Path) -> dict:
    """Run one training command; parse its train_runtime, tokens and the wrapper's peak memory."""
    wrapped = [sys.executable, "-c", _PEAK_WRAPPER, *cmd]
    with CpuWatch() as watch, log.open("w") as handle:
        proc = subprocess.run(wrapped, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    text = log.read_text()
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-25:])
        raise SystemExit(f"{name} failed (exit {proc.returncode}); the last lines of {log}:\n{tail}")
    runtime = steps = real_tokens = padding = num_tokens = None
    for line in text.splitlines():
        record = parse_log_line(line)
        if not record:
            continue
        runtime = record.get("train_runtime", runtime)
        if "loss" in record:
            steps = (steps or 0) + 1
            real_tokens = record.get("real_tokens", real_tokens)
            padding = record.get("padding_fraction", padding)
            num_tokens = record.get("num_tokens", num_tokens)
    peak = re.search(r"BENCHMARK_PEAK_RSS_KIB (\d+)", text)
    tokens = real_tokens or num_tokens
    return {
        "trainer": name,
        "steps": steps,
        "s/step": round(runtime / steps, 2) if runtime and steps else None,
        "real tokens/s": round(tokens / runtime, 1) if tokens and runtime else None,
        "padding share": padding,
        "peak MiB": round(int(peak.group(1)) / 1024) if peak else None,
        "others (cores)": round(watch.other_cores, 2),
        "log": str(log.relative_to(REPO_ROOT) if log.is_relative_to(REPO_ROOT) else log),
    }


def generation_rows(
    recipe, prompts: int, max_new_tokens: int, backends: list[str], samplings: list[str]
) -> list[dict]:
    """Generation tokens/s of the base model on held-out prompts, per backend and sampling.

    A sampling is ``greedy`` or ``T/top_p/top_k`` (``0.6/0.95/0``: the protocol's; ``0.6/0.95/64``: with a cut).
    """
    from open_r1_nb.evaluate.benchmarks import load_problems
    from open_r1_nb.evaluate.generate import GenerationConfig, ct2_model_dir, generate
    from open_r1_nb.paths import resolve_local

    model = str(resolve_local(recipe.model.model_name_or_path))
    bench = (recipe.training.benchmarks or ["arithmetic"])[0]
    messages = [p.messages for p in load_problems(bench, limit=prompts, seed=0)]
    rows = []
    for backend, sampling in [(b, m) for b in backends for m in samplings]:
        if sampling == "greedy":
            config = GenerationConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=64)
        else:
            t, p, k = sampling.split("/")
            config = GenerationConfig(
                n=1, temperature=float(t), top_p=float(p), top_k=int(k), max_new_tokens=max_new_tokens,
                batch_size=recipe.pipeline.eval_batch_size,  # as the profile's evaluation decodes
            )  # fmt: skip
        if backend == "ctranslate2":
            ct2_model_dir(model)  # the one-off conversion is not timed
        with CpuWatch() as watch:
            t0 = time.perf_counter()
            outputs = generate(model, messages, config, backend=backend, progress=False)
            seconds = time.perf_counter() - t0
        tokens = sum(s.new_tokens for samples in outputs for s in samples)
        rows.append(
            {
                "backend": backend,
                "sampling": sampling,
                "prompts": len(messages),
                "new tokens": tokens,
                "seconds": round(seconds, 1),
                "tokens/s": round(tokens / seconds, 1),
                "others (cores)": round(watch.other_cores, 2),
            }
        )
    return rows


def parameter_count(model: str) -> int:
    """Parameters of a local model folder, read from its safetensors headers (nothing is loaded)."""
    from safetensors import safe_open

    from open_r1_nb.paths import resolve_local

    folder = resolve_local(model)
    files = sorted(Path(folder).glob("*.safetensors")) if folder else []
    if not files:
        raise SystemExit(f"No safetensors weights in {model!r}: the benchmark needs a local model folder.")
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118  (a safetensors handle is not iterable)
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def _print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r.get(k))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r.get(k)).ljust(widths[k]) for k in keys))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", nargs="?", default="parameters/cpu_demo.yaml")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per trainer")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per trainer, alternating (min is reported)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for both trainers"
    )
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--backends", default="ctranslate2,transformers")
    parser.add_argument(
        "--samplings",
        default="greedy,0.6/0.95/0,0.6/0.95/64",
        help="greedy or T/top_p/top_k, comma-separated",
    )
    parser.add_argument(
        "--out", default="", help="folder for the logs and the JSON (default: a temporary one)"
    )
    parser.add_argument(
        "--cpu-isa",
        default=None,
        choices=["avx2"],
        help="measure as an AVX2-only CPU (no AVX-512, no bf16 units) would run, on a newer x86 CPU "
        "(open_r1_nb.hardware.emulate_cpu_isa); also OPEN_R1_NB_CPU_ISA=avx2",
    )
    args = parser.parse_args(argv)
    if args.cpu_isa and os.environ.get(CPU_ISA_ENV) != args.cpu_isa:
        # torch and CTranslate2 choose their kernels when they load, and this process has loaded torch: start
        # again with the cap in the environment, so this process and the trainers it launches all run under it.
        env = dict(os.environ)
        emulate_cpu_isa(args.cpu_isa, env)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    apply_cpu_isa_from_env()
    cpu = cpu_class()

    overrides = parse_overrides([f"--{item}" for item in args.set])
    recipe = load_recipe(args.profile, overrides=overrides)
    processes = recipe.num_processes
    parameters = parameter_count(recipe.model.model_name_or_path)
    out = Path(args.out or tempfile.mkdtemp(prefix="open_r1_nb_benchmark_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows_dir = out / "data"
    n_rows, trl_rows_dir = training_rows(recipe, rows_dir)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; profile {args.profile}; "
        f"{n_rows} training rows -> {rows_dir}; {args.steps} steps; {processes} processes; output {out}"
    )
    bf16 = bool(recipe.training.bf16)
    peak = cpu.peak_flops(bf16=bf16)
    print(
        f"CPU class: {cpu.describe()}; training in {'bf16 autocast' if bf16 else 'fp32'}; peak "
        + (f"{peak / 1e9:.0f} GFLOP/s ({'bf16' if bf16 and cpu.bf16 else 'fp32'})" if peak else "unknown")
        + f"; model {parameters / 1e6:.1f}M parameters"
    )

    # The project's entry point on a recipe that reads the same rows and saves nothing.
    ours_recipe = load_recipe(
        args.profile,
        overrides={
            **overrides,
            "dataset_name": str(rows_dir / "messages"),
            "dataset_mixture": None,
            "max_steps": args.steps,
            "save_strategy": "no",
            "report_to": ["none"],
            "logging_steps": 1,
            "benchmarks": [],
            "decontaminate": False,
            "output_dir": str(out / "ours"),
        },
    )
    recipe_path = out / "ours.yaml"
    save_recipe(ours_recipe, recipe_path)
    config = recipe.accelerate_config_file()
    env = launch.launch_env()
    env["WANDB_DISABLED"] = "true"
    ours_cmd = launch.build_command(recipe_path, config, processes, main_process_port=launch.free_port())
    trl_cmd = [
        str(Path(sys.executable).parent / "trl"), "sft",
        "--accelerate_config", str(launch.accelerate_config_path(config)),
        "--num_processes", str(processes),
        "--main_process_port", str(launch.free_port()),
        "--dataset_name", str(trl_rows_dir),
        "--output_dir", str(out / "trl"),
        "--max_steps", str(args.steps),
        "--save_strategy", "no",
        "--logging_steps", "1",
        "--report_to", "none",
        *trl_flags(recipe),
    ]  # fmt: skip
    print("ours:", launch.format_command(ours_cmd))
    if not args.skip_trl:
        print("trl: ", launch.format_command(trl_cmd))

    results: dict[str, list[dict]] = {"ours": [], "trl sft": []}
    for k in range(args.repeats):
        results["ours"].append(run_trainer("open_r1_nb.sft", ours_cmd, env, out / f"ours_{k}.log"))
        if not args.skip_trl:
            results["trl sft"].append(run_trainer("trl sft", trl_cmd, env, out / f"trl_{k}.log"))
    rows = [min(runs, key=lambda r: r["s/step"] or float("inf")) for runs in results.values() if runs]
    # With frozen bottom layers (freeze_layers) backward covers only the layers that train; `trl sft` trains all.
    frozen_cost = training_token_cost(
        recipe.training.freeze_layers, local_model_depth(recipe.model.model_name_or_path)
    )
    for row in rows:
        # Training FLOPs: 6 x parameters x tokens (forward 2, backward 4), over the CPU's theoretical peak.
        cost = frozen_cost if row["trainer"] == "open_r1_nb.sft" else 1.0
        achieved = 6 * parameters * cost * row["real tokens/s"] if row["real tokens/s"] else None
        row["GFLOP/s"] = round(achieved / 1e9, 1) if achieved else None
        row["share of peak"] = round(achieved / peak, 3) if achieved and peak else None
    print("\ntraining (best of", args.repeats, "run(s) each)")
    _print_table(rows)
    summary: dict = {
        "profile": args.profile,
        "steps": args.steps,
        "processes": processes,
        "cpu": cpu.as_dict(),
        "bf16": bf16,
        "parameters": parameters,
        "training": rows,
    }
    if len(rows) == 2 and rows[0]["s/step"] and rows[1]["s/step"]:
        ratio = rows[0]["s/step"] / rows[1]["s/step"]
        summary["step_time_ratio"] = round(ratio, 3)
        print(f"\nstep-time ratio open_r1_nb.sft / trl sft: {ratio:.3f} (goal: at most 1.05)")

    if not args.skip_generation:
        gen = generation_rows(
            recipe, args.prompts, args.max_new_tokens, args.backends.split(","), args.samplings.split(",")
        )
        print(f"\ngeneration, {args.prompts} held-out prompts, up to {args.max_new_tokens} new tokens")
        _print_table(gen)
        summary["generation"] = gen
    (out / "benchmark.json").write_text(json.dumps(summary, indent=2))
    print(f"\nfigures: {out / 'benchmark.json'}")


if __name__ == "__main__":
    main()
