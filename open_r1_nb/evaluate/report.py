"""Tables and plots that compare models on the benchmarks (notebook 06 and the run's report)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from open_r1_nb.evaluate.runner import read_records, read_summary


def comparison_table(out_dir: str | Path, benchmarks: list[str], labels: list[str]) -> Any:
    """One row per (benchmark, model): pass@1 ± SE (in %), format, EOS share, mean length, n, problems."""
    import pandas as pd

    rows = []
    for bench in benchmarks:
        for label in labels:
            s = read_summary(out_dir, bench, label)
            if s is None:
                continue
            rows.append(
                {
                    "benchmark": bench,
                    "model": label,
                    "pass@1 (%)": round(100 * s["pass@1"], 1),
                    "± SE": round(100 * s["pass@1_se"], 1),
                    "format": round(s["format"], 3),
                    "eos": round(s["eos"], 3),
                    "mean new tokens": round(s["mean_new_tokens"], 1),
                    "n": s["n"],
                    "problems": s["problems"],
                    "tokens/s": s.get("new_tokens_per_second"),
                }
            )
    return pd.DataFrame(rows)


def reference_table(out_dir: str | Path, benchmarks: list[str], label: str) -> Any:
    """The user's pass@1 beside the published numbers (open-r1 README), for the Hub benchmarks."""
    import pandas as pd

    rows = []
    for bench in benchmarks:
        s = read_summary(out_dir, bench, label)
        if s is None or not s.get("reference"):
            continue
        row = {
            "benchmark": bench,
            f"{label} (yours)": f"{100 * s['pass@1']:.1f} ± {100 * s['pass@1_se']:.1f}",
        }
        row.update({name: value for name, value in s["reference"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(table, path: str | Path | None = None):
    """pass@1 with error bars, format adherence and EOS share, per benchmark and model."""
    import matplotlib.pyplot as plt
    import numpy as np

    benches = list(dict.fromkeys(table["benchmark"]))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(len(models), 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    panels = (
        ("pass@1 (%)", "± SE", "pass@1 (%) ± SE"),
        ("format", None, "format adherence"),
        ("eos", None, "ended at EOS"),
    )
    for ax, (column, err, title) in zip(axes, panels, strict=True):
        for i, model in enumerate(models):
            sub = table[table["model"] == model].set_index("benchmark").reindex(benches)
            x = np.arange(len(benches)) + i * width
            ax.bar(x, sub[column], width, yerr=sub[err] if err else None, capsize=3, label=model)
        ax.set_xticks(np.arange(len(benches)) + width * (len(models) - 1) / 2)
        ax.set_xticklabels(benches, rotation=15, fontsize=8)
        ax.set_title(title)
        if column != "pass@1 (%)":
            ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_lengths(out_dir: str | Path, benchmark: str, labels: list[str], path: str | Path | None = None):
    """Distribution of response lengths (new tokens) per model: truncated answers pile up at the limit."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    for label in labels:
        try:
            lengths = [r["new_tokens"] for r in read_records(out_dir, benchmark, label)]
        except FileNotFoundError:
            continue
        ax.hist(lengths, bins=30, alpha=0.6, label=label)
    ax.set_xlabel("new tokens per completion")
    ax.set_ylabel("completions")
    ax.set_title(f"{benchmark}: response lengths")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def side_by_side(out_dir: str | Path, benchmark: str, labels: list[str], k: int = 3) -> str:
    """HTML: the first sample of ``k`` problems, one column per model, with the verdict."""
    per_model = {
        label: {r["problem_id"]: r for r in read_records(out_dir, benchmark, label) if r["sample_index"] == 0}
        for label in labels
    }
    ids = list(next(iter(per_model.values())).keys())[:k] if per_model else []
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = []
    for pid in ids:
        cells = []
        for label in labels:
            r = per_model[label].get(pid)
            if r is None:
                cells.append("<td></td>")
                continue
            verdict = "✅" if r["correct"] else "❌"
            stop = "EOS" if r["ended_at_eos"] else "cut at limit"
            cells.append(
                f'<td style="vertical-align:top"><b>{verdict} answer {html.escape(str(r["extracted"]))} '
                f"(gold {html.escape(str(r.get('gold')))}) · {r['new_tokens']} tokens · {stop}</b>"
                f'<pre style="white-space:pre-wrap;font-size:11px">{html.escape(r["completion"])}</pre></td>'
            )
        body.append(f"<tr><td><code>{html.escape(pid)}</code></td>{''.join(cells)}</tr>")
    return f"<table><tr><th>problem</th>{head}</tr>{''.join(body)}</table>"


def eval_metrics(out_dir: str | Path, benchmarks: list[str], labels: dict[str, str]) -> dict[str, Any]:
    """The ``eval`` section of metrics.json: {benchmark: {role: {pass@1, pass@1_se, format, eos, n, problems}}}."""
    out: dict[str, Any] = {}
    for bench in benchmarks:
        for role, label in labels.items():
            s = read_summary(out_dir, bench, label)
            if s is None:
                continue
            keep = ("pass@1", "pass@1_se", "format", "eos", "n", "problems", "mean_new_tokens")
            out.setdefault(bench, {})[role] = {key: s[key] for key in keep if key in s}
    return out


def plot_learning_curve(rows: list[dict], benchmark: str, path: str | Path | None = None):
    """Held-out pass@1 (± SE) and format adherence against training tokens, one point per checkpoint."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("tokens") is not None]
    tokens = [r["tokens"] / 1000 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.errorbar(
        tokens,
        [100 * r["pass@1"] for r in rows],
        yerr=[100 * r["pass@1_se"] for r in rows],
        marker="o",
        capsize=3,
        label="pass@1 (%) ± SE",
    )
    ax.plot(tokens, [100 * r["format"] for r in rows], marker="s", linestyle="--", label="format (%)")
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(f"{benchmark}: held-out accuracy during training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
