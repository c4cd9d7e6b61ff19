"""vLLM's CPU build against CTranslate2 on the same prompts: start-up and generation timed apart.

    .venv/bin/python scripts/benchmark_vllm.py                       # SmolLM2, 64 prompts x 256 tokens, greedy
    .venv/bin/python scripts/benchmark_vllm.py --prompts 32 --engines vllm-eager ctranslate2

The vLLM engine is built with the backend's own arguments (``vllm_engine_args``: fp32, a 1 GiB KV cache, whole
prefills), so the figures are those of ``eval_backend: vllm`` on a CPU; CTranslate2 runs through ``generate``.
Prompts are held-out GSM-Symbolic problems through the model's chat template (the embedded default's assets).
"""

from __future__ import annotations

import argparse
import json
import time

ENGINES = ("vllm", "vllm-eager", "ctranslate2")


def time_vllm(model: str, prompt_ids: list[list[int]], config, eos_id: int, eager: bool) -> dict:
    from vllm import LLM

    from open_r1_nb.evaluate import generate as gen

    engine = gen.vllm_engine_args(model, config, cpu=True, **({"enforce_eager": True} if eager else {}))
    start = time.perf_counter()
    llm = LLM(**engine)
    started = time.perf_counter()
    params = [gen.vllm_sampling_params(config, i, eos_id) for i in range(len(prompt_ids))]
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
    done = time.perf_counter()
    gen._shutdown_vllm(llm)
    new = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"startup_s": started - start, "generate_s": done - started, "new_tokens": new}


def time_ctranslate2(model: str, prompts: list[list[dict]], config) -> dict:
    from open_r1_nb.evaluate.generate import ct2_model_dir, generate

    ct2_model_dir(model)  # the one-off conversion is not part of an evaluation's time
    start = time.perf_counter()
    results = generate(model, prompts, config, "ctranslate2", progress=False)
    seconds = time.perf_counter() - start
    return {"startup_s": None, "generate_s": seconds, "new_tokens": sum(r[0].new_tokens for r in results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=None, help="a model folder (default: the cached SmolLM2-135M-Instruct)"
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    args = parser.parse_args(argv)

    from open_r1_nb import assets
    from open_r1_nb.evaluate import generate as gen
    from open_r1_nb.evaluate.benchmarks import load_problems

    model = args.model or str(assets.build_smollm2())
    assets.build_gsm_symbolic()
    prompts = [p.messages for p in load_problems("gsm_symbolic_variant", limit=args.prompts, seed=0)]
    tokenizer = gen.load_tokenizer(model)
    prompt_ids = gen.render_prompts(tokenizer, prompts)
    config = gen.GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=64)
    print(f"{model}: {len(prompts)} prompts, greedy, up to {args.max_new_tokens} new tokens")
    print("| engine | start-up s | generation s | new tokens | new tokens/s |\n|---|---|---|---|---|")
    for name in args.engines:
        if name == "ctranslate2":
            row = time_ctranslate2(model, prompts, config)
        else:
            row = time_vllm(model, prompt_ids, config, tokenizer.eos_token_id, eager=name == "vllm-eager")
        startup = "—" if row["startup_s"] is None else f"{row['startup_s']:.1f}"
        rate = row["new_tokens"] / row["generate_s"]
        print(
            f"| {name} | {startup} | {row['generate_s']:.1f} | {row['new_tokens']} | {rate:.0f} |", flush=True
        )
        print(json.dumps({"engine": name, **row}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
