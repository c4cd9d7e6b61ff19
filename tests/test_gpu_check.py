"""scripts/gpu_check.py, the prepared GPU check, on tiny shapes on the CPU: the same code, the same table."""

from __future__ import annotations

import json
import subprocess
import sys

from open_r1_nb.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"


def test_cpu_smoke_measures_every_cell_and_needs_no_trl(tmp_path):
    out = tmp_path / "gpu_check.json"
    # Run as the GPU machine will run it (its own interpreter), recording whether anything imported trl.
    code = (
        "import runpy, sys; sys.argv = ['gpu_check.py', '--cpu-smoke', '--json', sys.argv[1]]; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["trl_imported"] is False
    assert report["environment"]["device"] == "cpu"

    sdpa = [r for r in report["train"] if r["attention"] == "sdpa"]
    assert {(r["model"], r["seq_len"]) for r in sdpa} == {
        (m, n) for m in ("tiny-a", "tiny-b") for n in (64, 128)
    }
    for row in sdpa:
        assert row["tokens_per_s"] > 0 and row["step_s"] > 0 and row["params"] > 0
        assert row["mfu"] is None  # no bf16 peak to divide by on a CPU
    flash = [r for r in report["train"] if r["attention"] == "flash_attention_2"]
    assert len(flash) == 4 and all(r["note"] and r["tokens_per_s"] is None for r in flash)
    assert [g["new_tokens_per_s"] > 0 for g in report["generate"]] == [True, True]

    table = result.stdout
    assert (
        "| model | params | tokens/step | attention | s/step | tokens/s | MFU (6·N) | peak GiB | note |"
        in table
    )
    assert table.count("| tiny-a |") == 5 and table.count("| tiny-b |") == 5  # 4 training rows + 1 generation


def test_mfu_is_six_n_tokens_over_the_bf16_peak():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    # 6 x 1.54B parameters x 30k tokens/s = 278 TFLOP/s of an H100/H200's 989.
    assert gpu_check.mfu(1_543_714_304, 30_000.0) == 0.281
    row = gpu_check.TrainRow("1.5B", 1_543_714_304, 8192, "sdpa", tokens_per_s=30_000.0, mfu=0.281)
    env = {"device": "cuda", "gpu": "H200", "torch": "2.13", "transformers": "5.17", "flash_attn": None}
    table = gpu_check.markdown(gpu_check.Report(env, train=[row]))
    assert "| 1.5B | 1.54B | 8192 | sdpa | — | 30,000 | 28.1% |" in table
