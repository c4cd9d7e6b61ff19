"""A five-minute check of one GPU for this project's training and generation: tokens/s, MFU and peak memory.

    python scripts/gpu_check.py                      # on a GPU node: a markdown table on stdout
    python scripts/gpu_check.py --json gpu.json      # the same figures as JSON too
    python scripts/gpu_check.py --cpu-smoke          # tiny shapes on the CPU: checks the script itself (tests)

It needs torch and transformers only (no trl, no network, no weights): models are built from Qwen2.5-0.5B- and
Qwen2.5-1.5B-shaped configs with random weights, which cost exactly what the real ones cost per token. For each
shape, sequence length (4k and 8k tokens) and attention kernel (sdpa, and flash-attention when flash_attn is
installed), it times bf16 training steps as the GPU recipes run them (one sequence per step, gradient
checkpointing, AdamW) and reports:

- tokens/s and MFU = 6 * N * tokens / time / peak, with N every parameter (the tied embedding counted once, as
  the LM head) and the dense bf16 peak of an H100/H200 (989 TFLOP/s); attention FLOPs and the recomputation of
  checkpointed activations are not counted, so the figure is conservative and comparable with published MFU;
- peak GPU memory (``torch.cuda.max_memory_allocated``);
- generation throughput of transformers' ``generate`` (greedy, bf16, a batch of prompts), the reference engine.

A time budget (``--budget-s``, default 270 s) skips what no longer fits and says so in the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

PEAK_BF16_FLOPS = 989e12  # dense bf16 tensor-core peak of an H100 SXM / H200 SXM

# Qwen2.5's published shapes (config.json of Qwen/Qwen2.5-0.5B-Instruct and -1.5B-Instruct); weights are random.
SHAPES: dict[str, dict[str, Any]] = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}  # fmt: skip
# --cpu-smoke: the same code on shapes a CPU runs in seconds.
SMOKE_SHAPES: dict[str, dict[str, Any]] = {
    "tiny-a": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, vocab_size=512, tie_word_embeddings=True),
    "tiny-b": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=3,
                   num_key_value_heads=1, vocab_size=512, tie_word_embeddings=True),
}  # fmt: skip


@dataclass
class TrainRow:
    model: str
    params: int
    seq_len: int
    attention: str
    step_s: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    peak_gib: float | None = None
    note: str = ""


@dataclass
class GenerateRow:
    model: str
    batch: int
    prompt_tokens: int
    new_tokens: int
    seconds: float | None = None
    new_tokens_per_s: float | None = None
    peak_gib: float | None = None
    note: str = ""


@dataclass
class Report:
    environment: dict[str, Any]
    train: list[TrainRow] = field(default_factory=list)
    generate: list[GenerateRow] = field(default_factory=list)
    seconds: float = 0.0


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "flash_attn": _version("flash_attn"),
    }
    if device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, gpus=torch.cuda.device_count())
    else:
        env.update(cpu=platform.processor() or platform.machine())
    return env


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.replace("_", "-"))
    except PackageNotFoundError:
        return "installed"


def build_model(shape: dict[str, Any], attention: str, device: str, dtype):
    """A Qwen2 model of this shape with random weights, built directly on the device in ``dtype``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape, max_position_embeddings=32768, use_cache=False)
    config._attn_implementation = attention
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    return model


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def train_steps(model, seq_len: int, device: str, warmup: int, steps: int) -> float:
    """Seconds per optimizer step: one sequence of ``seq_len`` tokens, checkpointed activations, AdamW."""
    import torch

    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    generator = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, seq_len), generator=generator).to(device)
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    del optimizer
    return seconds


def generate_throughput(model, batch: int, prompt_tokens: int, new_tokens: int, device: str) -> float:
    """Seconds for ``generate`` to add ``new_tokens`` to each of ``batch`` prompts (greedy, no early stop)."""
    import torch

    model.eval()
    model.config.use_cache = True
    generator = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_tokens), generator=generator).to(device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.generate(input_ids=ids[:, :8], max_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
        _sync(device)
        start = time.perf_counter()
        out = model.generate(input_ids=ids, **kwargs)
        _sync(device)
    assert out.shape[1] == prompt_tokens + new_tokens
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> Report:
    import torch

    begin = time.monotonic()
    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run on a GPU node, or pass --cpu-smoke to check the script")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shapes = SMOKE_SHAPES if args.cpu_smoke else SHAPES
    lengths = args.seq_lens or ([64, 128] if args.cpu_smoke else [4096, 8192])
    attentions = ["sdpa", "flash_attention_2"]
    report = Report(environment=environment(device))

    def over_budget() -> bool:
        return time.monotonic() - begin > args.budget_s

    for name, shape in shapes.items():
        for attention in attentions:
            rows = [TrainRow(name, 0, seq_len, attention) for seq_len in lengths]
            report.train += rows
            if attention == "flash_attention_2" and report.environment["flash_attn"] is None:
                for row in rows:
                    row.note = "flash_attn not installed"
                continue
            if attention == "flash_attention_2" and device != "cuda":
                for row in rows:
                    row.note = "flash-attention needs a GPU"
                continue
            model = None
            for row in rows:
                if over_budget():
                    row.note = "skipped: time budget"
                    continue
                try:
                    if model is None:
                        _reset_peak(device)
                        model = build_model(shape, attention, device, dtype)
                    row.params = sum(p.numel() for p in model.parameters())
                    _reset_peak(device)
                    seconds = train_steps(model, row.seq_len, device, args.warmup, args.steps)
                except torch.OutOfMemoryError:
                    row.note = "out of memory"
                    model = None
                    _reset_peak(device)
                    continue
                row.step_s = round(seconds, 4)
                row.tokens_per_s = round(row.seq_len / seconds, 1)
                if device == "cuda":
                    row.mfu = mfu(row.params, row.tokens_per_s)
                row.peak_gib = _peak_gib(device)
                print(_train_line(row), flush=True)
            del model
            _reset_peak(device)

    batch, prompt, new = (4, 16, 16) if args.cpu_smoke else (args.gen_batch, 128, args.gen_new_tokens)
    for name, shape in shapes.items():
        row = GenerateRow(name, batch, prompt, new)
        report.generate.append(row)
        if over_budget():
            row.note = "skipped: time budget"
            continue
        _reset_peak(device)
        model = build_model(shape, "sdpa", device, dtype)
        seconds = generate_throughput(model, batch, prompt, new, device)
        row.seconds = round(seconds, 2)
        row.new_tokens_per_s = round(batch * new / seconds, 1)
        row.peak_gib = _peak_gib(device)
        print(f"generate {name}: {row.new_tokens_per_s} new tokens/s", flush=True)
        del model
    report.seconds = round(time.monotonic() - begin, 1)
    report.environment["trl_imported"] = (
        "trl" in sys.modules
    )  # the GPU machine has no trl: nothing may need it
    return report


def mfu(params: int, tokens_per_s: float, peak: float = PEAK_BF16_FLOPS) -> float:
    """Model FLOPs utilisation: 6 FLOPs per parameter per token (forward and backward) over the bf16 peak."""
    return round(6 * params * tokens_per_s / peak, 4)


def _train_line(row: TrainRow) -> str:
    mfu = f", MFU {row.mfu:.1%}" if row.mfu is not None else ""
    return f"train {row.model} {row.attention} {row.seq_len} tokens: {row.tokens_per_s} tokens/s{mfu}"


def _params(count: int) -> str:
    if not count:
        return "—"
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M" if count >= 1e6 else f"{count:,}"


def _cell(value: Any, fmt: str = "{}") -> str:
    return "—" if value is None else fmt.format(value)


def markdown(report: Report) -> str:
    env = report.environment
    where = env.get("gpu") or env.get("cpu")
    lines = [
        f"GPU check on {where} ({env['device']}): torch {env['torch']}, transformers {env['transformers']}, "
        f"flash_attn {env['flash_attn'] or 'not installed'}; {report.seconds} s in all.",
        "",
        "| model | params | tokens/step | attention | s/step | tokens/s | MFU (6·N) | peak GiB | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.train:
        lines.append(
            f"| {r.model} | {_params(r.params)} | {r.seq_len} | {r.attention} | "
            f"{_cell(r.step_s, '{:.3f}')} | {_cell(r.tokens_per_s, '{:,.0f}')} | {_cell(r.mfu, '{:.1%}')} | "
            f"{_cell(r.peak_gib)} | {r.note} |"
        )
    lines += [
        "",
        "| model | batch | prompt tokens | new tokens each | seconds | new tokens/s | peak GiB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in report.generate:
        lines.append(
            f"| {g.model} | {g.batch} | {g.prompt_tokens} | {g.new_tokens} | {_cell(g.seconds)} | "
            f"{_cell(g.new_tokens_per_s, '{:,.0f}')} | {_cell(g.peak_gib)} | {g.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (checks the script)")
    parser.add_argument(
        "--seq-lens", type=int, nargs="+", help="tokens per training step (default 4096 8192)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--gen-batch", type=int, default=32, help="prompts generated together (default 32)")
    parser.add_argument("--gen-new-tokens", type=int, default=256, help="new tokens per prompt (default 256)")
    parser.add_argument(
        "--budget-s", type=float, default=270.0, help="stop starting new measurements after this"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    report = run(args)
    print()
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(asdict(report), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
