"""Token counting under a distributed launch: the first process tokenizes the dataset, the others receive it.

Two real gloo ranks run ``data.handle_overlong`` (what ``prepare_for_training`` calls for every split) on the same
rows with a tokenizer that counts its calls; only the first may tokenize the whole dataset, and both must reach the
same report.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys
import torch.distributed as dist
from datasets import Dataset
from transformers import AutoTokenizer

from open_r1_nb import data
from open_r1_nb.model import prepare_tokenizer

model_dir, rows_file, out_file, max_lengths, fail = sys.argv[1:6]
dist.init_process_group("gloo")
tokenizer = AutoTokenizer.from_pretrained(model_dir)
prepare_tokenizer(tokenizer)
calls = {"n": 0}
original = tokenizer.apply_chat_template


def counting(*args, **kwargs):
    calls["n"] += 1
    if fail == "1" and dist.get_rank() == 0:
        raise ValueError("a row the template cannot render")
    return original(*args, **kwargs)


tokenizer.apply_chat_template = counting
rows = [json.loads(line) for line in open(rows_file)]
dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
result = {"rank": dist.get_rank(), "runs": []}
for max_length in map(int, max_lengths.split(",")):
    calls["n"] = 0
    run = {"max_length": max_length}
    try:
        run["report"] = data.handle_overlong(dataset, tokenizer, max_length, "truncate")[1]
    except Exception as err:
        run["error"] = f"{type(err).__name__}: {err}"
    run["calls"] = calls["n"]
    result["runs"].append(run)
dist.destroy_process_group()
json.dump(result, open(out_file, "w"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path: Path, model_dir: Path, rows_file: Path, max_lengths: str, fail: bool = False):
    """Run the worker on two gloo ranks; return each rank's list of runs (one per max_length)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        out = tmp_path / f"rank{rank}.json"
        cmd = [sys.executable, str(script), str(model_dir), str(rows_file), str(out), max_lengths]
        procs.append((subprocess.Popen([*cmd, "1" if fail else "0"], env=env), out))
    results = []
    for proc, out in procs:
        assert proc.wait(timeout=240) == 0
        results.append(json.loads(out.read_text())["runs"])
    return results


def test_only_the_first_rank_tokenizes_the_dataset(tiny_model_dir, smoke_data_dir, tmp_path):
    rows_file = smoke_data_dir / "train.jsonl"
    n_rows = len(rows_file.read_text().splitlines())
    first, second = _two_ranks(tmp_path, tiny_model_dir, rows_file, "100000,64")

    # Every row fits: one rendering per row on the first rank, none on the second, the same report on both.
    assert first[0]["calls"] == n_rows
    assert second[0]["calls"] == 0, f"the second rank tokenized {second[0]['calls']} rows itself"
    assert first[0]["report"] == second[0]["report"] and first[0]["report"]["tokens"] > 0

    # Some rows are too long: both ranks apply the shared lengths alike (same rows over, same report); the second
    # only looks into the long rows (where their EOS and answer fall), never the whole dataset.
    assert first[1]["report"]["rows_over"] > 0
    assert first[1]["report"] == second[1]["report"]
    assert second[1]["calls"] == first[1]["calls"] - n_rows


def test_a_counting_error_on_the_first_rank_reaches_every_rank(tiny_model_dir, smoke_data_dir, tmp_path):
    rows_file = smoke_data_dir / "train.jsonl"
    first, second = _two_ranks(tmp_path, tiny_model_dir, rows_file, "100000", fail=True)
    assert "a row the template cannot render" in first[0]["error"]
    assert "first process failed while counting tokens" in second[0]["error"]
    assert "a row the template cannot render" in second[0]["error"]
