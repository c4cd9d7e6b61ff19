"""Tests of open_r1_nb.config: the profiles validate, every validation error names the key and the fix,
upstream key names map with a note, and recipes round-trip through to_dict / save_recipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from profiles import DROP, recipe_dict

from open_r1_nb import paths
from open_r1_nb.config import (
    ACCELERATE_DIR,
    DatasetMixtureConfig,
    RecipeError,
    SFTConfig,
    accelerate_config_path,
    available_accelerate_configs,
    load_recipe,
    local_path,
    parse_overrides,
    save_recipe,
)

PROFILES = ["smoke", "cpu_demo", "openr1_distill_7b"]


# Recipes build device state lazily: every test here starts and ends without an Accelerator or PartialState.
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def assert_names(exc: pytest.ExceptionInfo, key: str, *fragments: str) -> str:
    """The message names the key and says what to do (and whatever else is asked)."""
    message = str(exc.value)
    assert key in message, message
    assert "Fix:" in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------------------------- the profiles


def test_7b_recipe_validates_on_cpu_without_touching_devices():
    recipe = load_recipe(
        "openr1_distill_7b"
    )  # check_files: the chat template must exist; Hub ids are not checked
    assert recipe.global_batch_size() == 128
    assert recipe.global_batch_size(8) == 128
    assert recipe.global_batch_size(4) == 64
    assert recipe.pipeline.accelerate_config == "zero3"
    assert recipe.pipeline.num_processes == 8
    assert recipe.pipeline.assets == []
    assert recipe.model.dtype == "bfloat16"
    assert recipe.training.warmup_steps == 0.03
    assert recipe.training.bf16 is True and recipe.training.use_liger_kernel is True
    assert recipe.training.report_to == ["wandb"]
    assert recipe.training.output_dir == "data/OpenR1-Distill-7B"  # kept as upstream wrote it
    assert recipe.training.devices_deferred
    assert not torch.distributed.is_initialized()
    assert not torch.cuda.is_initialized()
    notes = "\n".join(recipe.notes)
    for old in ("torch_dtype", "warmup_ratio", "overwrite_output_dir"):
        assert old in notes


def test_7b_chat_template_file_renders_chatml_with_the_open_r1_system_prompt():
    import jinja2

    recipe = load_recipe("openr1_distill_7b", check_files=False)
    text = recipe.chat_template_text()
    assert recipe.training.chat_template == "parameters/chat_templates/openr1_qwen.jinja"
    messages = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>2</think> \\boxed{2}"},
    ]
    rendered = (
        jinja2.Environment()
        .from_string(text)
        .render(messages=messages, tools=None, add_generation_prompt=False)
    )
    assert rendered.startswith(
        "<|im_start|>system\nYou are Open-R1, a language model trained by Hugging Face"
    )
    assert rendered.endswith(
        "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n<think>2</think> \\boxed{2}<|im_end|>\n"
    )


_CPU_ASSETS = ["smollm2", "gsm_symbolic", "arithmetic"]


@pytest.mark.parametrize(
    ("profile", "global_batch", "assets", "layout", "bf16"),
    [
        ("smoke", 4, ["tiny_model", "smoke_data"], ("cpu_2proc", 2), False),  # CI keeps two ranks exercised
        ("cpu_demo", 8, _CPU_ASSETS, ("cpu_1proc", 1), True),
        ("cpu_long", 8, _CPU_ASSETS, ("cpu_1proc", 1), True),
    ],
)
def test_cpu_profiles_validate(profile, global_batch, assets, layout, bf16, monkeypatch):
    from open_r1_nb import hardware

    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    recipe = load_recipe(profile, check_files=False)
    assert recipe.run_name == profile
    assert recipe.global_batch_size() == global_batch
    assert (recipe.pipeline.accelerate_config, recipe.pipeline.num_processes) == layout
    assert recipe.pipeline.assets == assets
    assert recipe.training.use_cpu and recipe.training.bf16 is bf16
    assert recipe.training.eos_token == "<|im_end|>"
    # Modern key names, nothing to say, but where `device: auto` landed (the CPU here: no GPU).
    assert [n for n in recipe.notes if not n.startswith("device auto -> cpu")] == []


def test_smoke_saves_a_checkpoint_mid_run():
    t = load_recipe("smoke", check_files=False).training
    assert t.max_steps == 6 and t.save_steps == 3 and t.logging_steps == 1 and t.max_length == 256


def test_cpu_demo_is_a_weighted_mixture_of_messages():
    script = load_recipe("cpu_demo", check_files=False).script
    assert script.dataset_name is None
    mixture = script.dataset_mixture
    assert isinstance(mixture, DatasetMixtureConfig)
    assert [d.id for d in mixture.datasets] == ["cache/data/gsm_symbolic", "cache/data/arithmetic"]
    assert all(0 < d.weight <= 1 for d in mixture.datasets)  # both sources really mixed, each subsampled
    assert all(d.columns == ["messages"] for d in mixture.datasets)


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_open_with_a_hardware_comment(profile):
    first = (paths.PARAMETERS_DIR / f"{profile}.yaml").read_text().splitlines()[0]
    assert first.startswith("# Hardware:"), first


def test_missing_assets_are_reported_with_the_asset_names(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)  # the real repository may hold built assets
    monkeypatch.setenv("OPEN_R1_NB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RecipeError) as exc:
        load_recipe(paths.PARAMETERS_DIR / "smoke.yaml")
    assert_names(exc, "dataset_name", "cache/data/smoke", "tiny_model, smoke_data")


# --------------------------------------------------------------------------------------------- upstream names


@pytest.mark.parametrize(
    ("old", "value", "new", "expected"),
    [
        ("warmup_ratio", 0.03, "warmup_steps", 0.03),
        ("max_seq_length", 4096, "max_length", 4096),
        ("torch_dtype", "bfloat16", "dtype", "bfloat16"),
        ("evaluation_strategy", "no", "eval_strategy", "no"),
        ("use_liger", False, "use_liger_kernel", False),
    ],
)
def test_renamed_keys_are_mapped_with_a_note(old, value, new, expected):
    recipe = load_recipe(recipe_dict(**{old: value}))
    section = recipe.model if new == "dtype" else recipe.training
    got = getattr(section, new)
    assert getattr(got, "value", got) == expected
    assert any(old in note and new in note for note in recipe.notes), recipe.notes
    assert new in recipe.to_dict() and old not in recipe.to_dict()


def test_dropped_keys_leave_a_note_and_nothing_else():
    recipe = load_recipe(recipe_dict(overwrite_output_dir=True, logging_dir="logs"))
    notes = "\n".join(recipe.notes)
    assert "overwrite_output_dir" in notes and "logging_dir" in notes
    assert "overwrite_output_dir" not in recipe.to_dict()


def test_old_and_new_name_together_is_an_error():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(warmup_ratio=0.1, warmup_steps=10))
    assert_names(exc, "warmup_ratio", "warmup_steps")


def test_warmup_ratio_must_be_a_fraction():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(warmup_ratio=3))
    assert_names(exc, "warmup_ratio", "warmup_steps")


# --------------------------------------------------------------------------------------------- validation errors


def test_unknown_key_suggests_the_closest():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(learnig_rate=1e-5))
    assert_names(exc, "learnig_rate", "did you mean `learning_rate`")


def test_wrong_type_names_the_key_the_value_and_the_fix():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(learning_rate="fast"))
    assert_names(exc, "learning_rate", "'fast'", "number")


@pytest.mark.parametrize("text", ["4e-5", "4.0e-05", "4E-5"])
def test_numeric_strings_are_numbers(text):
    assert load_recipe(recipe_dict(learning_rate=text)).training.learning_rate == pytest.approx(4e-5)


def test_yaml_exponent_without_dot_is_coerced(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe_dict()) + "learning_rate: 4e-5\n")
    assert yaml.safe_load(path.read_text())["learning_rate"] == "4e-5"  # what YAML 1.1 makes of it
    assert load_recipe(path).training.learning_rate == pytest.approx(4e-5)


def test_invalid_choice_suggests_a_valid_one():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(lr_scheduler_type="cosine_min_lr"))
    assert_names(exc, "lr_scheduler_type", "cosine_with_min_lr")


def test_eval_math_rule_reaches_the_evaluation_settings():
    assert load_recipe(recipe_dict()).pipeline.eval_settings()["math_rule"] == "auto"
    recipe = load_recipe(recipe_dict(eval_math_rule="lighteval"))
    assert recipe.pipeline.eval_settings()["math_rule"] == "lighteval"
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(eval_math_rule="lightevel"))
    assert_names(exc, "eval_math_rule", "lighteval", "stated")


def test_missing_model():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(model_name_or_path=DROP))
    assert_names(exc, "model_name_or_path", "add model_name_or_path")


def test_missing_run_name():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(run_name=DROP))
    assert_names(exc, "run_name", "runs/<run_name>")


@pytest.mark.parametrize("key", ["per_device_train_batch_size", "gradient_accumulation_steps"])
def test_batch_and_accumulation_at_least_one(key):
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(**{key: 0}))
    assert_names(exc, key, "1 or more")


def mixture(*entries, **extra) -> dict:
    return {"datasets": list(entries), **extra}


@pytest.mark.parametrize("weight", [0, -0.5, 1.5])
def test_mixture_weight_must_be_in_zero_one(weight):
    data = recipe_dict(dataset_name=DROP, dataset_mixture=mixture({"id": "a/b", "weight": weight}))
    with pytest.raises(RecipeError) as exc:
        load_recipe(data)
    assert_names(exc, "dataset_mixture.datasets[0].weight", "(0, 1]")


def test_mixture_weight_null_keeps_the_whole_dataset(tmp_path):
    # open-r1's own tests build mixtures with weight=None: no subsampling.
    data = recipe_dict(
        dataset_name=DROP, dataset_mixture=mixture({"id": "a/b", "weight": None}, {"id": "c/d"})
    )
    recipe = load_recipe(data)
    assert [d.weight for d in recipe.script.dataset_mixture.datasets] == [None, 1.0]
    assert recipe.summary().loc["data", "value"] == "mixture: a/b (all) + c/d (all)"
    again = load_recipe(save_recipe(recipe, tmp_path / "recipe.yaml"))
    assert [d.weight for d in again.script.dataset_mixture.datasets] == [None, 1.0]


@pytest.mark.parametrize(
    ("split", "key"),
    [("train[:10", "dataset_mixture.datasets[0].split"), ("train[a:b]", "dataset_mixture.datasets[0].split")],
)
def test_mixture_split_must_be_a_split_expression(split, key):
    data = recipe_dict(dataset_name=DROP, dataset_mixture=mixture({"id": "a/b", "split": split}))
    with pytest.raises(RecipeError) as exc:
        load_recipe(data)
    assert_names(exc, key, "train[:100]", "train+test")


def test_dataset_train_split_must_be_a_split_expression():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(dataset_train_split="train[::2]"))
    assert_names(exc, "dataset_train_split", "split expression")
    assert (
        load_recipe(recipe_dict(dataset_train_split="train[:10%]")).script.dataset_train_split
        == "train[:10%]"
    )


@pytest.mark.parametrize(("size", "ok"), [(0.1, True), (100, True), (1.0, False), (1.5, False), (0, False)])
def test_test_split_size_is_a_fraction_or_a_row_count(size, ok):
    data = recipe_dict(dataset_name=DROP, dataset_mixture=mixture({"id": "a/b"}, test_split_size=size))
    if ok:
        assert load_recipe(data).script.dataset_mixture.test_split_size == size
        return
    with pytest.raises(RecipeError) as exc:
        load_recipe(data)
    assert_names(exc, "dataset_mixture.test_split_size", "fraction", "rows")


def test_mixture_columns_must_match():
    data = recipe_dict(
        dataset_name=DROP,
        dataset_mixture=mixture({"id": "a/b", "columns": ["messages"]}, {"id": "c/d", "columns": ["prompt"]}),
    )
    with pytest.raises(RecipeError) as exc:
        load_recipe(data)
    assert_names(exc, "dataset_mixture.datasets[1].columns", "same columns")


def test_mixture_defaults_follow_open_r1():
    data = recipe_dict(
        dataset_name=DROP, dataset_mixture=mixture({"id": "a/b"}, {"id": "c/d", "weight": "0.25"})
    )
    m = load_recipe(data).script.dataset_mixture
    assert [(d.split, d.weight, d.config) for d in m.datasets] == [
        ("train", 1.0, None),
        ("train", 0.25, None),
    ]
    assert m.seed == 0 and m.test_split_size is None


def test_mixture_entry_with_unknown_key():
    data = recipe_dict(dataset_name=DROP, dataset_mixture=mixture({"id": "a/b", "wieght": 0.5}))
    with pytest.raises(RecipeError) as exc:
        load_recipe(data)
    assert_names(exc, "wieght", "weight")


def test_neither_dataset_name_nor_mixture():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(dataset_name=DROP))
    assert_names(exc, "dataset_name", "dataset_mixture", "exactly one")


def test_both_dataset_name_and_mixture():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(dataset_mixture=mixture({"id": "a/b"})))
    assert_names(exc, "dataset_mixture", "dataset_name", "exactly one")


def test_accelerate_config_not_found_lists_the_names():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(accelerate_config="zero4"))
    assert_names(exc, "accelerate_config", "'zero4'", "zero3", "cpu_2proc")


@pytest.mark.parametrize(
    ("gpus", "changes", "expected"),
    [
        (0, {}, ("cpu_1proc", 1)),
        (0, {"num_processes": 2}, ("cpu_2proc", 2)),
        (1, {"use_cpu": DROP, "bf16": True}, ("single_gpu", 1)),
        (8, {"use_cpu": DROP, "bf16": True}, ("zero3", 8)),
        (4, {"use_cpu": DROP, "bf16": True}, ("zero3", 4)),  # one process per GPU, not zero3.yaml's 8
    ],
)
def test_accelerate_config_defaults_to_the_hardware(gpus, changes, expected):
    recipe = load_recipe(recipe_dict(accelerate_config=DROP, **changes), gpu_count=gpus)
    assert (recipe.pipeline.accelerate_config, recipe.pipeline.num_processes) == expected
    assert any(n.startswith(f"`accelerate_config` not set: {expected[0]!r}") for n in recipe.notes)


def test_accelerate_config_default_asks_the_machine(monkeypatch):
    from open_r1_nb.config import defaults

    monkeypatch.setattr(defaults, "gpu_count", lambda: 2)
    recipe = load_recipe(recipe_dict(accelerate_config=DROP, use_cpu=DROP, bf16=True))
    assert (recipe.pipeline.accelerate_config, recipe.pipeline.num_processes) == ("zero3", 2)
    # A recipe that names its accelerate config keeps it, whatever the machine.
    assert load_recipe(recipe_dict()).pipeline.accelerate_config == "cpu_2proc"


def test_single_cpu_process_without_use_cpu_is_a_note():
    recipe = load_recipe(recipe_dict(accelerate_config="cpu_1proc", use_cpu=DROP))
    assert any("cpu_1proc" in n and "use_cpu: true" in n for n in recipe.notes)


@pytest.mark.parametrize(
    ("changes", "expected", "origin"),
    [
        ({"hub_model_id": "open-r1/OlympicCoder-7B"}, "OlympicCoder-7B", "hub_model_id"),
        ({"output_dir": "data/Qwen2.5-1.5B-Open-R1-Distill/"}, "Qwen2.5-1.5B-Open-R1-Distill", "output_dir"),
        ({"hub_model_id": "me/my model", "output_dir": "data/x"}, "my_model", "hub_model_id"),
    ],
)
def test_run_name_defaults_from_the_recipe(changes, expected, origin):
    recipe = load_recipe(recipe_dict(run_name=DROP, **changes))
    assert recipe.run_name == expected
    assert any(n.startswith(f"`run_name` not set: {expected!r}, from {origin}") for n in recipe.notes)


def test_run_name_defaults_to_the_file_name(tmp_path):
    path = tmp_path / "my_recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(run_name=DROP)))
    recipe = load_recipe(path)
    assert recipe.run_name == "my_recipe"
    assert any("from the file name 'my_recipe.yaml'" in n for n in recipe.notes)
    # A recipe that names its run keeps that name, without a note.
    assert not any("run_name" in n for n in load_recipe(recipe_dict(hub_model_id="a/b")).notes)


# --------------------------------------------------------------------------------------------- open-r1's recipes

OPEN_R1_RECIPES = Path(__file__).parent / "fixtures" / "open_r1"

# recipe file -> (run_name, per-device batch x accumulation, max_length); open-r1 launches all three with 8 GPUs
# per node and ZeRO-3 (the 32B one with FSDP on 16 nodes: 8 per node here, 128 there).
OPEN_R1_EXPECTED = {
    "OpenR1-Distill-7B/sft/config_distill.yaml": ("OpenR1-Distill-7B", 2 * 8, 32768),
    "OlympicCoder-7B/sft/config_v00.00.yaml": ("OlympicCoder-7B", 2 * 8, 32768),
    "OlympicCoder-32B/sft/config_v00.00.yaml": ("OlympicCoder-32B", 1 * 1, 22528),
}


def test_every_open_r1_sft_recipe_has_a_fixture():
    found = {str(p.relative_to(OPEN_R1_RECIPES)) for p in OPEN_R1_RECIPES.rglob("*.yaml")}
    assert found == set(OPEN_R1_EXPECTED)


@pytest.mark.parametrize("gpus", [8, 1, 0])
@pytest.mark.parametrize("relative", sorted(OPEN_R1_EXPECTED))
def test_open_r1_recipes_load_as_they_are(relative, gpus):
    path = OPEN_R1_RECIPES / relative
    raw = yaml.safe_load(path.read_text())
    assert "run_name" not in raw and "accelerate_config" not in raw  # what open-r1's recipes leave out
    run_name, per_process, max_length = OPEN_R1_EXPECTED[relative]
    recipe = load_recipe(path, gpu_count=gpus)  # check_files: Hub ids are not checked offline
    layout = {8: ("zero3", 8), 1: ("single_gpu", 1), 0: ("cpu_1proc", 1)}[gpus]
    assert recipe.run_name == run_name
    assert (recipe.pipeline.accelerate_config, recipe.pipeline.num_processes) == layout
    assert recipe.global_batch_size() == layout[1] * per_process
    # Renamed and removed upstream fields, mapped with a note each.
    assert recipe.model.dtype == "bfloat16"
    assert recipe.training.warmup_steps == 0.03
    assert recipe.training.max_length == max_length
    assert recipe.training.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    notes = "\n".join(recipe.notes)
    for fragment in (
        "`torch_dtype` read as `dtype`",
        "warmup_ratio",
        "overwrite_output_dir",
        "`run_name` not set",
    ):
        assert fragment in notes
    assert "`accelerate_config` not set" in notes
    assert recipe.training.devices_deferred and not torch.cuda.is_initialized()


def test_open_r1_recipe_saved_for_a_run_reloads_the_same(tmp_path):
    recipe = load_recipe(OPEN_R1_RECIPES / "OlympicCoder-7B/sft/config_v00.00.yaml", gpu_count=8)
    again = load_recipe(save_recipe(recipe, tmp_path / "recipe.yaml"), gpu_count=0)
    assert again.run_name == "OlympicCoder-7B"
    assert (again.pipeline.accelerate_config, again.global_batch_size()) == ("zero3", 128)
    assert not any("not set" in n for n in again.notes)  # the run's recipe names both keys


def test_open_r1_inline_chat_template_is_the_template_file():
    inline = yaml.safe_load((OPEN_R1_RECIPES / "OpenR1-Distill-7B/sft/config_distill.yaml").read_text())
    text = (paths.PARAMETERS_DIR / "chat_templates" / "openr1_qwen.jinja").read_text()
    comment, _, body = text.partition("-#}\n")
    assert comment.startswith("{#-") and body == inline["chat_template"]


def test_cpu_accelerate_config_needs_use_cpu():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(use_cpu=DROP))
    assert_names(exc, "use_cpu", "use_cpu: true")


def test_multi_process_config_with_one_process():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(num_processes=1))
    assert_names(exc, "num_processes", "cpu_1proc")


def test_num_processes_defaults_to_the_accelerate_config():
    assert load_recipe(recipe_dict()).pipeline.num_processes == 2
    recipe = load_recipe(recipe_dict(accelerate_config="zero3", use_cpu=DROP, bf16=True, num_processes=4))
    assert recipe.global_batch_size() == 4 * 8 * 1
    assert any("num_processes: 4 overrides" in note for note in recipe.notes)


def test_unknown_asset():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(assets=["smollm"]))
    assert_names(exc, "assets", "smollm2")


def test_fp16_and_bf16_together():
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(bf16=True, fp16=True))
    assert_names(exc, "fp16", "bf16")


def test_missing_recipe_file_lists_profiles():
    with pytest.raises(RecipeError) as exc:
        load_recipe("no_such_profile")
    assert_names(exc, "config", "no_such_profile", "smoke")


# --------------------------------------------------------------------------------------------- files on disk


def make_tokenizer(folder: Path, eos: str = "<|im_end|>") -> Path:
    """A word-level tokenizer with ChatML tokens, saved like a model folder (a config.json too)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        tok: i for i, tok in enumerate(["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hi"])
    }
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token=eos)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }} {{ m.content }}<|im_end|>{% endfor %}"
    )
    tokenizer.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def make_dataset(folder: Path, splits=("train", "test")) -> Path:
    folder.mkdir(parents=True)
    for split in splits:
        row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}]}
        (folder / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    return folder


@pytest.fixture
def local_files(tmp_path):
    model = make_tokenizer(tmp_path / "model")
    data = make_dataset(tmp_path / "data")
    return recipe_dict(
        model_name_or_path=str(model), dataset_name=str(data), eos_token="<|im_end|>"
    ), tmp_path


def test_local_model_and_data_validate(local_files):
    data, _ = local_files
    recipe = load_recipe(data)
    assert recipe.training.eos_token == "<|im_end|>"
    assert not any("eos_token" in note for note in recipe.notes)


def test_eos_token_must_be_in_the_vocabulary(local_files):
    data, _ = local_files
    with pytest.raises(RecipeError) as exc:
        load_recipe({**data, "eos_token": "<|endoftext|>"})
    assert_names(exc, "eos_token", "<|endoftext|>", "<|im_end|>")
    load_recipe({**data, "eos_token": "<|endoftext|>"}, check_files=False)  # not checked without check_files


def test_eos_token_missing_from_the_chat_template_is_noted(local_files):
    data, _ = local_files
    recipe = load_recipe({**data, "eos_token": "<|im_start|>"})
    assert any("does not appear after the assistant turn" in note for note in recipe.notes), recipe.notes


def test_local_model_folder_must_exist(local_files):
    data, tmp_path = local_files
    with pytest.raises(RecipeError) as exc:
        load_recipe({**data, "model_name_or_path": str(tmp_path / "nothing")})
    assert_names(exc, "model_name_or_path", "does not exist")


def test_local_model_folder_needs_a_loadable_tokenizer(local_files):
    data, tmp_path = local_files
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(RecipeError) as exc:
        load_recipe({**data, "model_name_or_path": str(broken)})
    assert_names(exc, "model_name_or_path", "tokenizer")


def test_local_dataset_folder_must_exist(local_files):
    data, tmp_path = local_files
    with pytest.raises(RecipeError) as exc:
        load_recipe({**data, "dataset_name": str(tmp_path / "missing")})
    assert_names(exc, "dataset_name", "does not exist")


def test_local_dataset_folder_needs_the_train_split(local_files):
    data, tmp_path = local_files
    folder = make_dataset(tmp_path / "only_test", splits=("test",))
    with pytest.raises(RecipeError) as exc:
        load_recipe({**data, "dataset_name": str(folder)})
    assert_names(exc, "dataset_name", "train.jsonl")


def test_local_mixture_entries_must_exist(local_files):
    data, tmp_path = local_files
    entries = [{"id": data["dataset_name"]}, {"id": str(tmp_path / "gone")}]
    with pytest.raises(RecipeError) as exc:
        load_recipe(
            {**{k: v for k, v in data.items() if k != "dataset_name"}, "dataset_mixture": mixture(*entries)}
        )
    assert_names(exc, "dataset_mixture.datasets[1].id", "does not exist")


def test_local_split_expressions_name_each_split(local_files):
    data, tmp_path = local_files
    rest = {k: v for k, v in data.items() if k != "dataset_name"}
    folder = data["dataset_name"]
    ok = load_recipe({**rest, "dataset_mixture": mixture({"id": folder, "split": "train[:1]+test[50%:]"})})
    assert ok.script.dataset_mixture.datasets[0].split == "train[:1]+test[50%:]"
    with pytest.raises(RecipeError) as exc:
        load_recipe({**rest, "dataset_mixture": mixture({"id": folder, "split": "train+validation[:10]"})})
    assert_names(exc, "dataset_mixture.datasets[0].id", "`validation` split", "validation.jsonl")
    single = tmp_path / "rows.jsonl"
    single.write_text((tmp_path / "data" / "train.jsonl").read_text())
    load_recipe({**rest, "dataset_mixture": mixture({"id": str(single), "split": "train[:1]"})})
    with pytest.raises(RecipeError) as exc:
        load_recipe({**rest, "dataset_mixture": mixture({"id": str(single), "split": "test"})})
    assert_names(exc, "dataset_mixture.datasets[0].id", "single file", "`train`")


def test_chat_template_path_must_exist(local_files):
    data, _ = local_files
    with pytest.raises(RecipeError) as exc:
        load_recipe({**data, "chat_template": "parameters/chat_templates/nope.jinja"})
    assert_names(exc, "chat_template", "nope.jinja")


def test_chat_template_file_is_read(local_files):
    data, tmp_path = local_files
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}")
    recipe = load_recipe({**data, "chat_template": str(template)})
    assert recipe.chat_template_text() == template.read_text()


def test_cache_paths_follow_the_cache_env(monkeypatch, tmp_path):
    make_dataset(tmp_path / "elsewhere" / "data" / "smoke")
    monkeypatch.setenv("OPEN_R1_NB_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)  # the real repository may hold a built cache/
    assert local_path("cache/data/smoke") == tmp_path / "elsewhere" / "data" / "smoke"


# --------------------------------------------------------------------------------------------- round trips, overrides


@pytest.mark.parametrize("profile", PROFILES)
def test_to_dict_round_trips(profile):
    recipe = load_recipe(profile, check_files=False)
    data = recipe.to_dict()
    yaml.safe_dump(data)  # YAML-serialisable
    assert load_recipe(data, check_files=False).to_dict() == data


def test_to_dict_reads_like_a_recipe():
    data = load_recipe("smoke", check_files=False).to_dict()
    assert list(data)[0] == "model_name_or_path"
    assert "logging_first_step" not in data and "disable_tqdm" not in data  # defaults stay out
    assert data["run_name"] == "smoke" and data["accelerate_config"] == "cpu_2proc"


@pytest.mark.parametrize("profile", PROFILES)
def test_save_and_load_round_trip(profile, tmp_path, monkeypatch):
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path / "runs"))
    recipe = load_recipe(profile, check_files=False).resolved_for_run()
    path = save_recipe(recipe, recipe.run_dir / "recipe.yaml")
    text = path.read_text()
    assert text.startswith("# Hardware:")
    saved = yaml.safe_load(text)
    assert "warmup_ratio" not in saved and "torch_dtype" not in saved  # saved under current names
    again = load_recipe(path, check_files=False)
    assert again.to_dict() == recipe.to_dict()
    assert again.training.output_dir == str(tmp_path / "runs" / profile / "checkpoints")
    assert again.global_batch_size() == recipe.global_batch_size()
    save_recipe(again, path)  # saving twice does not pile up notes
    assert path.read_text().count("# Resolved and validated") == 1


def test_resolved_for_run_moves_output_dir_and_keeps_the_original(tmp_path, monkeypatch):
    monkeypatch.setenv("OPEN_R1_NB_RUNS", str(tmp_path))
    recipe = load_recipe("openr1_distill_7b", check_files=False)
    resolved = recipe.resolved_for_run()
    assert resolved.training.output_dir == str(tmp_path / "openr1_distill_7b" / "checkpoints")
    assert recipe.training.output_dir == "data/OpenR1-Distill-7B"
    assert resolved.run_dir == tmp_path / "openr1_distill_7b"
    assert any("output_dir" in note for note in resolved.notes)


def test_parse_overrides_forms():
    argv = ["--config", "x.yaml", "--learning_rate", "1e-4", "--report_to=none", "--bf16", "--max-length", "512",
            "--benchmarks", "[aime24, math_500]", "--use_cpu", "false"]  # fmt: skip
    assert parse_overrides(argv) == {
        "config": "x.yaml",
        "learning_rate": "1e-4",
        "report_to": "none",
        "bf16": True,
        "max_length": 512,
        "benchmarks": ["aime24", "math_500"],
        "use_cpu": False,
    }
    with pytest.raises(RecipeError) as exc:
        parse_overrides(["learning_rate", "1e-4"])
    assert_names(exc, "learning_rate", "--key value")


def test_overrides_apply_and_are_noted():
    overrides = parse_overrides(["--learning_rate", "1e-4", "--report_to", "none", "--warmup_ratio", "0.1"])
    recipe = load_recipe("openr1_distill_7b", overrides=overrides, check_files=False)
    assert recipe.training.learning_rate == pytest.approx(1e-4)
    assert recipe.training.report_to == []
    assert recipe.training.warmup_steps == 0.1
    assert any("override `learning_rate`: 4e-05 -> 0.0001" in note for note in recipe.notes), recipe.notes


def test_bad_override_is_reported_like_a_recipe_key():
    with pytest.raises(RecipeError) as exc:
        load_recipe("smoke", overrides={"per_device_train_batch_size": 0}, check_files=False)
    assert_names(exc, "per_device_train_batch_size")


def test_summary_table():
    table = load_recipe("openr1_distill_7b", check_files=False).summary()
    assert table.loc["global batch (sequences/step)", "value"] == 128
    assert table.loc["accelerate config", "value"] == "zero3"
    assert table.loc["model", "value"] == "open-r1/Qwen2.5-Math-7B-RoPE-300k"


# --------------------------------------------------------------------------------------------- SFTConfig, devices


def test_sft_config_has_open_r1_extras():
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(SFTConfig)}
    for name in ("benchmarks", "callbacks", "chat_template", "system_prompt", "hub_model_revision",
                 "overwrite_hub_revision", "push_to_hub_revision", "wandb_entity", "wandb_project",
                 "wandb_run_group", "eos_token", "chat_template_path"):  # fmt: skip
        assert name in fields
    t = load_recipe(recipe_dict(), check_files=False).training
    assert t.benchmarks == [] and t.hub_model_revision == "main" and t.push_to_hub_revision is False


def test_deferred_config_sets_devices_up_on_first_use():
    t = load_recipe("smoke", check_files=False).training
    assert t.devices_deferred
    assert t.process_index == 0 and t.world_size == 1  # what open_r1_nb.sft reads first
    assert not t.devices_deferred and t.device.type == "cpu"


def test_deferred_config_given_to_a_trainer_says_what_to_do():
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer

    t = load_recipe("smoke", check_files=False).resolved_for_run().training
    tiny = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
    )
    with pytest.raises(RuntimeError, match="setup_devices"):
        Trainer(model=LlamaForCausalLM(tiny), args=t)  # builds its Accelerator before touching args' devices


def test_setup_devices_on_a_cpu_recipe():
    t = load_recipe("smoke", check_files=False, setup_devices=True).training
    assert not t.devices_deferred
    assert t.device.type == "cpu" and t.world_size == 1
    assert not torch.distributed.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a bf16 GPU")
def test_setup_devices_refuses_bf16_without_a_gpu():
    t = load_recipe("openr1_distill_7b", check_files=False).training
    with pytest.raises(RecipeError) as exc:
        t.setup_devices()
    assert_names(exc, "bf16", "use_cpu")
    assert t.devices_deferred
    with pytest.raises(RecipeError):
        _ = t.world_size


# --------------------------------------------------------------------------------------------- accelerate configs


def test_accelerate_config_path_by_name_and_by_path():
    assert accelerate_config_path("zero3") == ACCELERATE_DIR / "zero3.yaml"
    assert accelerate_config_path("parameters/accelerate/ddp.yaml").name == "ddp.yaml"
    with pytest.raises(RecipeError) as exc:
        accelerate_config_path("nope")
    assert_names(exc, "accelerate_config", "cpu_2proc", "zero3")


@pytest.mark.parametrize("name", ["cpu_2proc", "single_gpu", "ddp", "zero2", "zero3", "fsdp"])
def test_accelerate_configs_exist_load_and_name_the_hardware(name):
    from accelerate.commands.config.config_args import load_config_from_file

    assert name in available_accelerate_configs()
    path = accelerate_config_path(name)
    assert path.read_text().startswith("# Hardware:")
    config = load_config_from_file(str(path))
    expected = {"cpu_2proc": 2, "single_gpu": 1}.get(name, 8)
    assert config.num_processes == expected


@pytest.mark.slow
def test_cpu_2proc_launches_two_gloo_ranks(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(
        "from open_r1_nb.config import load_recipe\n"
        "t = load_recipe('smoke', check_files=False, setup_devices=True).training\n"
        "print(f'RANK {t.process_index}/{t.world_size} {t.distributed_state.distributed_type} '\n"
        "      f'{t.distributed_state.backend}', flush=True)\n"
    )
    import socket

    with socket.socket() as s:  # a free port, so that a concurrent launch on 29500 does not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    config = str(ACCELERATE_DIR / "cpu_2proc.yaml")
    result = subprocess.run(
        [str(accelerate), "launch", "--config_file", config, "--main_process_port", str(port), str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    # Two ranks print at once; their lines may interleave, so match the records rather than whole lines.
    ranks = sorted(re.findall(r"RANK \d/\d DistributedType\.\w+ \w+?(?= ?RANK|\n|$)", result.stdout))
    assert ranks == ["RANK 0/2 DistributedType.MULTI_CPU gloo", "RANK 1/2 DistributedType.MULTI_CPU gloo"], (
        result.stdout + result.stderr
    )


def test_freeze_layers_is_checked_before_training(tiny_model_dir):
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(freeze_layers=-1))
    assert_names(exc, "freeze_layers", "negative")
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(freeze_layers=4, use_peft=True))
    assert_names(exc, "freeze_layers", "use_peft", "LoRA")
    # A local model: its depth is known before anything loads (the tiny model has 2 decoder layers).
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_dict(model_name_or_path=str(tiny_model_dir), freeze_layers=2))
    assert_names(exc, "freeze_layers", "every one of the model's 2 decoder layers", "below 2")
    assert (
        load_recipe(
            recipe_dict(model_name_or_path=str(tiny_model_dir), freeze_layers=1)
        ).training.freeze_layers
        == 1
    )


def test_benchmark_names_are_checked_where_the_benchmarks_are_known():
    """The recipe loader does not know the evaluation's registry (configuration imports no step above it); the
    runner and the training entry point check the names with the loader's kind of message before anything runs."""
    from open_r1_nb.evaluate.benchmarks import check_benchmark_names

    recipe = load_recipe(recipe_dict(benchmarks=["aime25", "math_500"]))
    with pytest.raises(RecipeError) as exc:
        check_benchmark_names(recipe.training.benchmarks, "recipe x.yaml")
    assert exc.value.key == "benchmarks" and exc.value.value == "aime25"
    assert_names(exc, "benchmarks", "recipe x.yaml: ", "did you mean `aime24`", "math_500")
    check_benchmark_names(["aime24", "smoke"])  # known names pass
