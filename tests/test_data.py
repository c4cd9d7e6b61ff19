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


# ------------------------------------------------------------------------------- open-r1's get_dataset cases
# open-r1's tests/utils/test_data.py builds ScriptArguments from DatasetConfig / DatasetMixtureConfig (weight None
# meaning "all of it") against a Hub dataset with a train and a test split; the same cases here against local
# folders, through this project's ScriptArguments and get_dataset.


def _zen_rows(split: str, n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"{split} question {i}"}],
            "chosen": [{"role": "assistant", "content": f"{split} good answer {i}"}],
            "rejected": [{"role": "assistant", "content": f"{split} bad answer {i}"}],
        }
        for i in range(n)
    ]


@pytest.fixture
def zen(tmp_path):
    """A local stand-in for the Hub dataset open-r1's tests use: 40 train and 10 test rows."""
    folder = tmp_path / "zen"
    _write_jsonl(folder / "train.jsonl", _zen_rows("train", 40))
    _write_jsonl(folder / "test.jsonl", _zen_rows("test", 10))
    return str(folder)


def _open_r1_args(*entries, **mixture):
    from dataclasses import asdict

    from open_r1_nb.config import DatasetConfig, DatasetMixtureConfig, ScriptArguments

    return ScriptArguments(
        dataset_mixture=asdict(
            DatasetMixtureConfig(datasets=[DatasetConfig(**e) for e in entries], **mixture)
        )
    )


def test_open_r1_dataset_name(zen):
    from open_r1_nb.config import ScriptArguments

    dataset = data.get_dataset(ScriptArguments(dataset_name=zen))
    assert isinstance(dataset, datasets.DatasetDict)
    assert len(dataset["train"]) == 40 and len(dataset["test"]) == 10


def test_open_r1_unweighted_mixture(zen):
    args = _open_r1_args(
        {"id": zen, "split": "train", "weight": None}, {"id": zen, "split": "test", "weight": None}
    )
    assert [d.weight for d in args.dataset_mixture.datasets] == [None, None]
    assert len(data.get_dataset(args)["train"]) == 40 + 10


def test_open_r1_weighted_mixture(zen):
    args = _open_r1_args(
        {"id": zen, "split": "train", "weight": 0.25}, {"id": zen, "split": "test", "weight": 0.5}
    )
    assert len(data.get_dataset(args)["train"]) == 40 // 4 + 10 // 2


def test_open_r1_mixture_and_test_split(zen):
    args = _open_r1_args({"id": zen, "split": "train[:10]", "weight": None}, test_split_size=0.2)
    dataset = data.get_dataset(args)
    assert set(dataset) == {"train", "test"}
    assert len(dataset["train"]) == 8 and len(dataset["test"]) == 2
    # Rows come from the first ten only.
    seen = {turns[0]["content"] for split in dataset.values() for turns in split["prompt"]}
    assert seen == {f"train question {i}" for i in range(10)}


def test_open_r1_mixture_column_selection(zen):
    args = _open_r1_args({"id": zen, "split": "train", "columns": ["prompt", "chosen"], "weight": None})
    assert data.get_dataset(args)["train"].column_names == ["prompt", "chosen"]


def test_open_r1_mixture_with_mismatched_columns(zen):
    with pytest.raises(ValueError, match="columns") as info:
        _open_r1_args(
            {"id": zen, "split": "train", "columns": ["prompt"], "weight": None},
            {"id": zen, "split": "train", "columns": ["chosen"], "weight": None},
        )
    assert "Fix:" in str(info.value)


def test_open_r1_no_dataset_name_or_mixture():
    from open_r1_nb.config import ScriptArguments

    with pytest.raises(ValueError, match="dataset_name.*dataset_mixture"):
        ScriptArguments(dataset_name=None, dataset_mixture=None)


def test_weight_null_and_weight_one_both_keep_everything(zen):
    none = data.get_dataset(_open_r1_args({"id": zen, "weight": None}))["train"]
    one = data.get_dataset(_open_r1_args({"id": zen, "weight": 1.0}))["train"]
    from open_r1_nb.config import ScriptArguments

    omitted = ScriptArguments(dataset_mixture={"datasets": [{"id": zen}]})
    assert omitted.dataset_mixture.datasets[0].weight == 1.0  # open-r1 reads a missing weight as 1.0
    assert len(none) == len(one) == len(data.get_dataset(omitted)["train"]) == 40
    assert sorted(r[0]["content"] for r in none["prompt"]) == sorted(r[0]["content"] for r in one["prompt"])


def test_test_split_size_as_a_number_of_rows(zen):
    dataset = data.get_dataset(_open_r1_args({"id": zen, "weight": None}, test_split_size=5))
    assert (len(dataset["train"]), len(dataset["test"])) == (35, 5)
    with pytest.raises(data.DatasetLoadError, match="test_split_size 40 .*Fix"):
        data.get_dataset(_open_r1_args({"id": zen, "weight": None}, test_split_size=40))


def test_mixture_entries_without_columns_must_agree(zen, two_sources):
    a, _ = two_sources  # messages/id/extra columns; zen has prompt/chosen/rejected
    with pytest.raises(data.DatasetLoadError, match="same columns.*Fix: give every entry the same `columns`"):
        data.get_dataset(_open_r1_args({"id": zen}, {"id": str(a)}))


# ----------------------------------------------------------------------------- split expressions on local data

SPLIT_EXPRESSIONS = [
    "train",
    "train[:10]",
    "train[10%:]",
    "train[:33%]",
    "train+test",
    "test[-3:]+train[5:7]",
]


def _local_forms(tmp_path) -> dict[str, str]:
    """The same 40 + 10 rows as a folder of JSON lines, a folder of Parquet files and a save_to_disk folder."""
    rows = {"train": _zen_rows("train", 40), "test": _zen_rows("test", 10)}
    jsonl = tmp_path / "jsonl"
    for name, split_rows in rows.items():
        _write_jsonl(jsonl / f"{name}.jsonl", split_rows)
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    saved = datasets.DatasetDict({n: datasets.Dataset.from_list(r) for n, r in rows.items()})
    for name, ds in saved.items():
        ds.to_parquet(str(parquet / f"{name}.parquet"))
    saved.save_to_disk(str(tmp_path / "saved"))
    return {"jsonl": str(jsonl), "parquet": str(parquet), "saved": str(tmp_path / "saved")}


@pytest.mark.parametrize("split", SPLIT_EXPRESSIONS)
def test_split_expressions_select_what_datasets_selects(tmp_path, split):
    forms = _local_forms(tmp_path)
    files = {n: str(tmp_path / "jsonl" / f"{n}.jsonl") for n in ("train", "test")}
    # What the datasets library reads for that expression (the Hub path goes through the same reader).
    reference = datasets.load_dataset("json", data_files=files, split=split)
    for form, folder in forms.items():
        got = data.load_source(folder, None, split)
        assert got["prompt"] == reference["prompt"], form


def test_split_expression_on_a_single_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    _write_jsonl(path, _zen_rows("train", 20))
    assert len(data.load_source(str(path), None, "train[:10]")) == 10
    assert len(data.load_source(str(path), None, "train[50%:]")) == 10
    with pytest.raises(data.DatasetLoadError, match="single file.*`train`.*'test'.*Fix"):
        data.load_source(str(path), None, "test")


def test_split_expression_errors_name_the_fix(zen):
    with pytest.raises(data.DatasetLoadError, match=r"'train\[:10' is not a split expression.*Fix"):
        data.load_source(zen, None, "train[:10")
    with pytest.raises(data.DatasetLoadError, match="no file for split 'validation'"):
        data.load_source(zen, None, "train+validation[:5]")
