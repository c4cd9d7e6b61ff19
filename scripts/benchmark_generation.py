"""CPU generation throughput of each backend, and whether its greedy outputs match the transformers reference.

    python scripts/benchmark_generation.py                       # SmolLM2-135M, 32 held-out prompts, 128 tokens
    python scripts/benchmark_generation.py --prompts 152 --backends transformers ctranslate2:batch_size=64 \\
        ctranslate2:batch_size=64,inter_threads=1 ctranslate2:compute_type=int8_float32

A backend is written ``name[:key=value,...]``: ``batch_size`` sets GenerationConfig.batch_size, any other key is a
backend option (ctranslate2: compute_type, max_batch_tokens, threads, inter_threads). The first transformers entry
is the reference that the others are compared with, completion by completion; without one, nothing is compared.
Timings include loading the model but not the one-off CTranslate2 conversion (done before timing). The last
column says how many cores this process used and how many everything else did meanwhile: on a shared machine,
only rows with ~0 for the others are clean measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from open_r1_nb.evaluate.generate import GenerationConfig, Sample, ct2_model_dir, generate  # noqa: E402
from open_r1_nb.hardware import usable_cores  # noqa: E402
from open_r1_nb.paths import cache_dir, resolve_local  # noqa: E402

# CTranslate2 as it runs by default (greedy: two batches side by side, one thread each) and as one batch on all
# cores, so the table shows what the default layout buys. Batch size matters only with more prompts than that.
DEFAULT_BACKENDS = ["transformers", "ctranslate2:batch_size=32", "ctranslate2:batch_size=32,inter_threads=1"]


class CpuWatch:
    """Cores used by this process and by everything else during a block (Linux /proc), to judge a timing.

    On a shared 2-core machine another job halves the figures; a run where ``others`` is well above 0 is noise.
    """

    def __enter__(self) -> CpuWatch:
        self.start, self.busy, self.mine = time.perf_counter(), _busy_ticks(), _own_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        own = _own_ticks() - self.mine
        self.own_cores = own / hz / self.seconds if self.seconds else 0.0
        self.other_cores = (
            max(0.0, (_busy_ticks() - self.busy - own) / hz / self.seconds) if self.seconds else 0.0
        )


def _busy_ticks() -> int:
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0
    return sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait


def _own_ticks() -> int:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(x) for x in fields[11:15])  # utime, stime and those of waited-for children


def parse_backend(spec: str) -> tuple[str, int, dict]:
    """``ctranslate2:batch_size=64,compute_type=int8`` -> ("ctranslate2", 64, {"compute_type": "int8"})."""
    name, _, rest = spec.partition(":")
    options: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key] = int(value) if value.isdigit() else value
    return name, int(options.pop("batch_size", 32)), options


def load_prompts(path: Path, count: int) -> list[list[dict]]:
    """The first ``count`` rows' conversations without their final (teacher) assistant turn."""
    prompts = []
    with path.open() as f:
        for line in f:
            prompts.append(json.loads(line)["messages"][:-1])
            if len(prompts) == count:
                break
    return prompts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--data", default=str(cache_dir() / "data" / "gsm_symbolic" / "test_variant.jsonl"))
    parser.add_argument("--prompts", type=int, default=32, help="number of held-out prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--backends", nargs="+", default=DEFAULT_BACKENDS, metavar="NAME[:K=V,...]")
    parser.add_argument("--show", type=int, default=0, help="print the first N completions of each backend")
    args = parser.parse_args(argv)

    model = resolve_local(args.model) or Path(args.model)
    prompts = load_prompts(Path(args.data), args.prompts)
    threads = usable_cores()
    print(
        f"model {model}\n{len(prompts)} prompts from {args.data}, greedy, max_new_tokens={args.max_new_tokens}\n"
        f"{platform.processor() or platform.machine()}, {threads} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    specs = [parse_backend(spec) for spec in args.backends]
    if any(name == "ctranslate2" for name, _, _ in specs):
        start = time.perf_counter()
        path = ct2_model_dir(model)
        print(f"CTranslate2 model: {path} (ready in {time.perf_counter() - start:.1f} s)\n")

    reference: list[Sample] | None = None
    header = f"{'backend':<44} {'new tok':>8} {'s':>7} {'tok/s':>7} {'at EOS':>7} {'same as ref':>11} {'cores us/others':>16}"
    print(header)
    for spec, (name, batch_size, options) in zip(args.backends, specs, strict=True):
        config = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        with CpuWatch() as watch:
            samples = [s[0] for s in generate(model, prompts, config, name, progress=False, **options)]
        seconds = watch.seconds
        tokens = sum(s.new_tokens for s in samples)
        ended = sum(s.ended_at_eos for s in samples)
        if reference is None and name == "transformers":
            reference, same = samples, "reference"
        elif reference is None:
            same = "-"
        else:
            same = f"{sum(a == b for a, b in zip(samples, reference, strict=True))}/{len(samples)}"
        label = spec if ":" in spec else f"{spec} (batch {batch_size})"
        cores = f"{watch.own_cores:.1f}/{watch.other_cores:.1f}"
        print(
            f"{label:<44} {tokens:>8} {seconds:>7.1f} {tokens / seconds:>7.1f} {ended:>7} {same:>11} {cores:>16}",
            flush=True,
        )
        for s in samples[: args.show]:
            print(f"    [{s.new_tokens} tokens, {'eos' if s.ended_at_eos else 'cut'}] {s.text[:200]!r}")


if __name__ == "__main__":
    main()
