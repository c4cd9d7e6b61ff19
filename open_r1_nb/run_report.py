"""``runs/<run>/report.md``: the run on one page, written from what the run folder already holds.

What was trained on what (model, mixture, tokens, schedule), the loss curve, the before/after table with error bars,
three completions before and after, and the time per step and per notebook. Notebook 06 writes it and the runner
rewrites it once every notebook's wall time is known; anything missing (a run without evaluation, say) is left
out with a line that says so, never invented.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_FILE = "report.md"
_CUT = 700  # characters of a completion shown: the report stays one page


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _cut(text: str, limit: int = _CUT) -> str:
    text = text.strip()
    return (
        text if len(text) <= limit else text[:limit].rstrip() + f"\n… ({len(text) - limit} more characters)"
    )


def _what_was_trained(recipe, metrics: dict[str, Any], run_dir: Path) -> list[str]:
    t = recipe.training
    lengths = _read_json(run_dir / "data" / "length_stats.json")
    mixture = getattr(recipe.script, "dataset_mixture", None)
    sources = list(getattr(mixture, "datasets", None) or [])
    if sources:
        data = "; ".join(f"`{d.id}` × {d.weight if d.weight is not None else 1.0}" for d in sources)
    else:
        data = f"`{recipe.script.dataset_name}`"
    train = metrics.get("train", {})
    per_device = t.per_device_train_batch_size
    rows = [
        ["model", f"`{recipe.model.model_name_or_path}` ({recipe.model.dtype})"],
        ["data (id × share of its train split)", data],
        ["training rows / tokens", f"{lengths.get('rows', '–')} / {lengths.get('tokens', '–')}"],
        [
            "tokens per row (p50 / p90 / max_length)",
            f"{_fmt(lengths.get('p50'))} / {_fmt(lengths.get('p90'))} / {t.max_length}",
        ],
        ["epochs / optimizer steps", f"{_fmt(t.num_train_epochs)} / {_fmt(train.get('steps'))}"],
        [
            "global batch",
            f"{recipe.global_batch_size()} = {per_device} per device × {recipe.num_processes} "
            f"processes × {t.gradient_accumulation_steps} accumulation",
        ],
        [
            "learning rate",
            f"{t.learning_rate:g}, {getattr(t.lr_scheduler_type, 'value', t.lr_scheduler_type)}, "
            f"warmup {_fmt(t.warmup_steps)}",
        ],
        ["precision", "bf16 autocast" if t.bf16 else "fp16" if t.fp16 else "fp32"],
    ]
    return ["## What was trained on what", "", *_table(["", ""], rows)]


def _training(metrics: dict[str, Any], run_dir: Path) -> list[str]:
    train = metrics.get("train")
    if not train:
        return ["## Training", "", "No training summary in metrics.json (notebook 04 did not finish)."]
    steps, runtime = train.get("steps"), train.get("train_runtime_s")
    per_step = runtime / steps if steps and runtime else None
    lines = ["## Training", ""]
    if (run_dir / "training_curves.png").exists():
        lines += ["![loss and learning rate per step](training_curves.png)", ""]
    rows = [
        ["loss, first → last step", f"{_fmt(train.get('loss_first'))} → {_fmt(train.get('loss_last'))}"],
        ["time per optimizer step (s)", _fmt(per_step)],
        ["training time (s)", _fmt(runtime)],
        ["real tokens/s (padding excluded)", _fmt(train.get("tokens_per_second"))],
        ["padding share", _fmt(train.get("padding_fraction"))],
        ["processes", _fmt(train.get("num_processes"))],
        ["peak memory of a training process (MiB)", _fmt(train.get("peak_rss_mib"))],
    ]
    return lines + _table(["", ""], rows)


def _before_after(metrics: dict[str, Any], run_dir: Path) -> list[str]:
    results = metrics.get("eval")
    if not results:
        return [
            "## Before and after",
            "",
            "Not evaluated: the recipe lists no `benchmarks`, or notebook 06 has not run.",
        ]
    rows = []
    for bench, roles in results.items():
        for role, s in roles.items():
            rows.append(
                [
                    bench,
                    role,
                    f"{100 * s['pass@1']:.1f} ± {100 * s['pass@1_se']:.1f}",
                    f"{s['format']:.2f}",
                    f"{s['eos']:.2f}",
                    f"{s.get('problems')} × {s.get('n')}",
                ]
            )
    lines = [
        "## Before and after",
        "",
        "pass@1 ± one standard error over problems; `format`: share of completions with a closed think block and a "
        "boxed answer; `eos`: share that ended at EOS rather than at the length limit.",
        "",
        *_table(["held-out split", "model", "pass@1 (%)", "format", "eos", "problems × samples"], rows),
    ]
    gains = []
    for bench, roles in results.items():
        if "base" in roles and "trained" in roles:
            b, t = roles["base"], roles["trained"]
            two_se = 2 * (b["pass@1_se"] ** 2 + t["pass@1_se"] ** 2) ** 0.5
            gain = t["pass@1"] - b["pass@1"]
            verdict = "yes" if gain > two_se else "no"
            gains.append([bench, f"{100 * gain:+.1f}", f"{100 * two_se:.1f}", verdict])
    if gains:
        lines += [
            "",
            *_table(["held-out split", "trained − base (pp)", "2 × combined SE (pp)", "gain > 2 SE"], gains),
        ]
    if (run_dir / "eval_comparison.png").exists():
        lines += ["", "![before and after](eval_comparison.png)"]
    curve = metrics.get("learning_curve")
    if curve and curve.get("points"):
        lines += [
            "",
            f"Learning curve on `{curve['benchmark']}` (one sample per problem, every checkpoint):",
            "",
        ]
        if (run_dir / "learning_curve.png").exists():
            lines += ["![held-out accuracy against training tokens](learning_curve.png)", ""]
        lines += _table(
            ["step", "training tokens", "pass@1 (%)", "format"],
            [
                [
                    p["step"],
                    p["tokens"],
                    f"{100 * p['pass@1']:.1f} ± {100 * p['pass@1_se']:.1f}",
                    f"{p['format']:.2f}",
                ]
                for p in curve["points"]
            ],
        )
    return lines


def _completions(metrics: dict[str, Any], run_dir: Path, labels: dict[str, str], k: int) -> list[str]:
    from open_r1_nb.evaluate.runner import read_records

    benches = list(metrics.get("eval", {}))
    if not benches or len(labels) < 2:
        return []
    lines = ["## Completions before and after", ""]
    # One problem from each split in turn, so three completions cover three kinds of problem where there are three.
    picks: list[tuple[str, int]] = [(benches[i % len(benches)], i // len(benches)) for i in range(k)]
    for bench, nth in picks:
        try:
            by_role = {
                role: [r for r in read_records(run_dir / "eval", bench, label) if r["sample_index"] == 0]
                for role, label in labels.items()
            }
        except FileNotFoundError:
            continue
        first = next(iter(by_role.values()))
        if nth >= len(first):
            continue
        pid = first[nth]["problem_id"]
        question = first[nth].get("question")
        lines += [f"### {bench} · `{pid}`", ""]
        if question:
            lines += ["> " + _cut(question, 400).replace("\n", "\n> "), ""]
        for role, records in by_role.items():
            record = next((r for r in records if r["problem_id"] == pid), None)
            if record is None:
                continue
            verdict = "correct" if record["correct"] else "wrong"
            stop = "ended at EOS" if record["ended_at_eos"] else "cut at the length limit"
            lines += [
                f"**{role}**: {verdict} (answer {record['extracted']}, gold {record.get('gold')}), "
                f"{record['new_tokens']} tokens, {stop}",
                "",
                "```text",
                _cut(record["completion"]),
                "```",
                "",
            ]
    return lines


def _wall_times(metrics: dict[str, Any]) -> list[str]:
    times = metrics.get("wall_seconds")
    if not times:
        return []
    rows = [[name, f"{seconds:.0f}"] for name, seconds in times.items()]
    return ["## Wall time", "", *_table(["notebook", "seconds"], rows)]


def write_report(run_dir: str | Path, k: int = 3) -> Path:
    """Write ``<run_dir>/report.md`` from the run folder; return its path."""
    from open_r1_nb.config import load_recipe

    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml", check_files=False)
    metrics = _read_json(run_dir / "metrics.json")
    env = _read_json(run_dir / "environment.json")
    devices = env.get("devices", {})
    versions = env.get("versions", {})
    machine = ", ".join(f"{k} {v}" for k, v in devices.items() if v not in (None, False))
    stack = ", ".join(
        f"{k} {v}" for k, v in versions.items() if k in ("torch", "transformers", "trl", "accelerate")
    )
    lines = [
        f"# {recipe.run_name}: distillation report",
        "",
        f"Profile `{metrics.get('profile', recipe.run_name)}`; machine: {machine or 'not recorded'}"
        + (f"; {stack}." if stack else "."),
        "",
        *_what_was_trained(recipe, metrics, run_dir),
        "",
        *_training(metrics, run_dir),
        "",
        *_before_after(metrics, run_dir),
        "",
        *_completions(metrics, run_dir, {"base": "base", "trained": recipe.run_name}, k),
        *_wall_times(metrics),
        "",
    ]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines))
    return path
