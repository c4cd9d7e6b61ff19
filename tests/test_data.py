"""open_r1_nb.data: loading local sources and mixtures, row validation, token-length statistics."""

from __future__ import annotations

import json
from types import SimpleNamespace

import datasets
import pytest

from open_r1_nb import data


def _conv(question: str, answer: str = "<think>\nsteps\n</think>\n\nThe answer is \\boxed{1}.") -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def two_sources(tmp_path):
    a = [{"id": f"a{i}", "messages": _conv(f"a question {i}"), "extra": i} for i in range(40)]
    b = [{"id": f"b{i}", "messages": _conv(f"b question {i}"), "other": "x"} for i in range(10)]
    _write_jsonl(tmp_path / "a" / "train.jsonl", a)
    _write_jsonl(tmp_path / "a" / "test.jsonl", a[:3])
    _write_jsonl(tmp_path / "b" / "train.jsonl", b)
    return tmp_path / "a", tmp_path / "b"


def _mixture(entries, seed=0, test_split_size=None):
    return SimpleNamespace(
        dataset_mixture=SimpleNamespace(
            datasets=[
                SimpleNamespace(id=str(i), config=None, split="train", columns=c, weight=w)
                for i, c, w in entries
            ],
            seed=seed,
            test_split_size=test_split_size,
        )
    )


def test_local_folder_loads_train_and_test(two_sources):
    a, _ = two_sources
    ds = data.get_dataset(SimpleNamespace(dataset_name=str(a), dataset_config=None, dataset_mixture=None))
    assert set(ds) == {"train", "test"}
    assert len(ds["train"]) == 40 and len(ds["test"]) == 3


def test_mixture_weights_columns_and_seed(two_sources):
    a, b = two_sources
    args = _mixture([(a, ["messages"], 0.5), (b, ["messages"], 1.0)], seed=7)
    ds = data.get_dataset(args)
    assert list(ds) == ["train"]
    assert len(ds["train"]) == 20 + 10
    assert ds["train"].column_names == ["messages"]
    again = data.get_dataset(args)
    assert ds["train"]["messages"] == again["train"]["messages"]  # same seed, same order
    other = data.get_dataset(_mixture([(a, ["messages"], 0.5), (b, ["messages"], 1.0)], seed=8))
    assert ds["train"]["messages"] != other["train"]["messages"]


def test_mixture_test_split(two_sources):
    a, b = two_sources
    ds = data.get_dataset(_mixture([(a, ["messages"], 1.0), (b, ["messages"], 1.0)], test_split_size=0.2))
    assert len(ds["train"]) == 40 and len(ds["test"]) == 10


def test_mixture_missing_column_is_named(two_sources):
    a, _ = two_sources
    with pytest.raises(data.DatasetLoadError, match="no column"):
        data.get_dataset(_mixture([(a, ["conversation"], 1.0)]))


def test_missing_split_file_names_the_fix(tmp_path):
    _write_jsonl(tmp_path / "d" / "train.jsonl", [{"messages": _conv("q")}])
    with pytest.raises(data.DatasetLoadError, match="prepare_assets"):
        data.load_source(str(tmp_path / "d"), split="validation")


def test_hub_id_offline_gives_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.DatasetLoadError, match="offline.*local"):
        data.load_source("open-r1/Mixture-of-Thoughts", "all")


@pytest.mark.parametrize(
    "messages, expected",
    [
        (None, "None"),
        ([], "empty"),
        ("text", "expected a list"),
        ([{"role": "user", "content": "q"}], "end with an assistant"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None}], "NoneType content"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}], "int content"),
        ([{"role": "assistant", "content": "a"}], "first non-system turn must be 'user'"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ],
            "two user turns",
        ),
        ([{"role": "robot", "content": "q"}], "role 'robot'"),
        (_conv("q", "<think>open but never closed"), "unbalanced think"),
        (_conv("q", "</think> then <think>"), "closes </think> before"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "system", "content": "s"},
            ],
            "system turn may only come first",
        ),
        (["not a dict"], "turn 0 is a str"),
    ],
)
def test_check_conversation_names_the_problem(messages, expected):
    reason = data.check_conversation(messages)
    assert reason is not None and expected in reason


def test_valid_conversations_pass():
    assert data.check_conversation(_conv("q")) is None
    with_system = [
        {"role": "system", "content": "s"},
        *_conv("q"),
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "ok"},
    ]
    assert data.check_conversation(with_system) is None


def test_validate_dataset_lists_offending_rows_by_index_and_id():
    rows = [
        {"id": "good", "messages": _conv("q")},
        {"id": "no-assistant", "messages": [{"role": "user", "content": "q"}]},
        {"id": "good2", "messages": _conv("q2")},
        {
            "id": "bad-content",
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}],
        },
    ]
    ds = datasets.Dataset.from_list(rows)
    with pytest.raises(data.DatasetValidationError) as info:
        data.validate_dataset(datasets.DatasetDict({"train": ds}))
    message = str(info.value)
    assert "2 of 4 rows are malformed" in message
    assert "row 1 (id no-assistant)" in message and "end with an assistant turn" in message
    assert "row 3 (id bad-content)" in message
    assert [p.row for p in info.value.problems] == [1, 3]


def test_validate_dataset_without_messages_column():
    ds = datasets.Dataset.from_list([{"text": "hello"}])
    with pytest.raises(data.DatasetValidationError, match="no 'messages' column"):
        data.validate_dataset(ds)


def test_validate_dataset_counts_rows():
    ds = datasets.Dataset.from_list([{"messages": _conv(f"q{i}")} for i in range(5)])
    assert data.validate_dataset(ds) == 5


def test_length_stats_against_max_length(tiny_model_dir, tmp_path):
    from types import SimpleNamespace as NS

    from open_r1_nb.model import get_tokenizer

    tok = get_tokenizer(NS(model_name_or_path=str(tiny_model_dir)), NS(eos_token=None, chat_template=None))
    short = _conv("1 + 1", "<think>\n1 + 1 = 2\n</think>\n\n\\boxed{2}")
    long = _conv("add " * 200, "<think>\n" + "step " * 200 + "\n</think>\n\n\\boxed{3}")
    ds = datasets.Dataset.from_list([{"messages": short}] * 3 + [{"messages": long}])
    stats = data.length_stats(ds, tok, max_length=64)
    assert stats.rows == 4 and stats.rows_over == 1
    assert stats.lengths[3] > 64 > stats.lengths[0]
    assert stats.tokens_over == int(stats.lengths[3] - 64)
    summary = stats.as_dict()
    assert summary["share_rows_over"] == 0.25
    assert 0 < summary["share_tokens_beyond"] < 1
    fig = data.plot_lengths(stats, tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 1000
    fig.clf()
