"""The checks ``load_recipe`` runs before anything heavy starts: required keys, launch, local files (model folder,
tokenizer, EOS in the template, datasets, assistant masks), evaluation keys, and notes on what this machine lacks."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import typing
from typing import Any

from open_r1_nb import hardware
from open_r1_nb.config.errors import RecipeError, did_you_mean, recipe_error
from open_r1_nb.config.files import (
    CHATML_TEMPLATE,
    _is_template_path,
    _looks_local,
    available_accelerate_configs,
    local_path,
    read_accelerate_config,
    resolve_chat_template,
)
from open_r1_nb.config.mixture import _check_split, _mixture_from_dict
from open_r1_nb.config.schema import _FIELDS, ASSET_NAMES, PipelineArguments

if typing.TYPE_CHECKING:
    from open_r1_nb.config.recipe import Recipe


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_required(kwargs: dict[str, dict[str, Any]], where: str) -> None:
    model, script, training, pipeline = (kwargs[s] for s in ("model", "script", "training", "pipeline"))
    if not model.get("model_name_or_path"):
        raise recipe_error(
            "model_name_or_path",
            model.get("model_name_or_path"),
            "is missing: the recipe names no model to train",
            "add model_name_or_path: <Hub id or local model folder>, e.g. cache/models/SmolLM2-135M-Instruct",
            where,
        )
    run_name = training.get("run_name")
    if not run_name or not _RUN_NAME.match(run_name):
        raise recipe_error(
            "run_name",
            run_name,
            "is missing or not a folder name: it names the run folder runs/<run_name>/",
            "add run_name: <letters, digits, . _ ->, e.g. run_name: my_first_run (without it the loader takes "
            "the basename of hub_model_id or output_dir, else the recipe's file name)",
            where,
        )
    has_name, has_mixture = script.get("dataset_name") is not None, script.get("dataset_mixture") is not None
    if has_name == has_mixture:
        raise recipe_error(
            "dataset_mixture" if has_mixture else "dataset_name",
            script.get("dataset_mixture") if has_mixture else None,
            "is given together with `dataset_name`"
            if has_mixture
            else "is missing and so is `dataset_mixture`",
            "give exactly one: dataset_name: <Hub id or local folder>, or a dataset_mixture of several",
            where,
        )
    if has_mixture:
        script["dataset_mixture"] = _mixture_from_dict(script["dataset_mixture"], where)
    for key in ("dataset_train_split", "dataset_test_split"):
        if script.get(key):
            _check_split(key, script[key], where)
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        value = training.get(key, _FIELDS["training"][key].default)
        if value < 1:
            raise recipe_error(key, value, "must be at least 1", f"write {key}: 1 or more", where)
    if training.get("learning_rate", 1.0) <= 0:
        raise recipe_error(
            "learning_rate", training["learning_rate"], "must be positive", "write e.g. 4.0e-05", where
        )
    max_length = training.get("max_length", 1)
    if max_length is not None and max_length < 1:
        raise recipe_error(
            "max_length",
            max_length,
            "must be a positive number of tokens",
            "write e.g. max_length: 4096",
            where,
        )
    if training.get("fp16") and training.get("bf16"):
        raise recipe_error(
            "fp16", True, "is set together with `bf16: true`", "keep one of them (bf16 on recent GPUs)", where
        )
    if training.get("chat_template") is not None and training.get("chat_template_path") is not None:
        raise recipe_error(
            "chat_template_path",
            training["chat_template_path"],
            "is given together with open-r1's `chat_template`",
            "keep one: chat_template (inline or a .jinja path) is what open-r1 recipes use",
            where,
        )
    if (
        "num_processes" in pipeline
        and pipeline["num_processes"] is not None
        and pipeline["num_processes"] < 1
    ):
        raise recipe_error(
            "num_processes",
            pipeline["num_processes"],
            "must be at least 1",
            "write num_processes: 1 or more",
            where,
        )
    for asset in pipeline.get("assets", []):
        if asset not in ASSET_NAMES:
            raise recipe_error(
                "assets",
                asset,
                f"is not an embedded asset{did_you_mean(asset, ASSET_NAMES)}",
                f"use names among {', '.join(ASSET_NAMES)}",
                where,
            )
    _check_data_preparation(pipeline, where)


def _check_data_preparation(pipeline: dict[str, Any], where: str) -> None:
    """The pipeline's data keys: n-gram size, and something to decontaminate against when asked to."""
    ngram = pipeline.get("decontamination_ngram", 8)
    if ngram < 0:
        raise recipe_error(
            "decontamination_ngram",
            ngram,
            "must be a number of words",
            "write decontamination_ngram: 8 (open-r1's n-gram size), or 0 to match whole evaluation problems only",
            where,
        )
    if pipeline.get("decontaminate") and not pipeline.get("decontamination_against"):
        raise recipe_error(
            "decontamination_against",
            pipeline.get("decontamination_against", []),
            "is empty while `decontaminate: true`: there are no evaluation problems to check the training rows "
            "against",
            "list the evaluation files or folders, e.g. decontamination_against: "
            "[cache/data/gsm_symbolic/test_template.jsonl], or set decontaminate: false",
            where,
        )


def _check_launch(kwargs: dict[str, dict[str, Any]], notes: list[str], where: str) -> None:
    pipeline, training = kwargs["pipeline"], kwargs["training"]
    name = pipeline.get("accelerate_config")
    if not name:
        raise recipe_error(
            "accelerate_config",
            name,
            "is missing: the recipe does not say how to launch its processes",
            f"add accelerate_config: <one of {', '.join(available_accelerate_configs())}>",
            where,
        )
    try:
        acc = read_accelerate_config(name)
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}" if where else str(exc), exc.key, exc.value, exc.fix) from None
    acc_processes = int(acc.get("num_processes") or 1)
    if pipeline.get("num_processes") is None:
        pipeline["num_processes"] = acc_processes
    elif pipeline["num_processes"] != acc_processes:
        notes.append(
            f"num_processes: {pipeline['num_processes']} overrides the {acc_processes} of accelerate config "
            f"{name!r} (the launcher passes --num_processes)."
        )
    n = pipeline["num_processes"]
    kind = str(acc.get("distributed_type", "NO")).upper()
    if kind == "MULTI_GPU" and n < 2:
        raise recipe_error(
            "num_processes",
            n,
            f"is below 2, and accelerate refuses a MULTI_GPU config ({name}) with fewer than 2 processes",
            "use num_processes: 2 or more, or a single-process config (single_gpu, cpu_1proc)",
            where,
        )
    if acc.get("use_cpu") and not training.get("use_cpu", False) and n == 1:
        # One process has no peers to disagree with: it trains on the device torch finds.
        notes.append(
            f"accelerate config {name!r} is a CPU config and the recipe does not set use_cpu: true: its one process "
            "trains on the device torch finds (a GPU where there is one). Add use_cpu: true to keep it on the CPU."
        )
    if acc.get("use_cpu") and not training.get("use_cpu", False) and n > 1:
        raise recipe_error(
            "use_cpu",
            training.get("use_cpu", False),
            f"is not true but accelerate config {name!r} is a CPU config; without it every launched process "
            "believes it is alone and trains its own copy",
            "add use_cpu: true",
            where,
        )


def _check_files(recipe: Recipe, notes: list[str], where: str) -> None:
    t, m, s = recipe.training, recipe.model, recipe.script
    template_text = None
    if t.chat_template is not None:
        try:
            template_text = resolve_chat_template(t.chat_template)
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}" if where else str(exc), exc.key, exc.value, exc.fix) from None
    if t.chat_template_path is not None and _is_template_path(t.chat_template_path):
        found = local_path(t.chat_template_path)
        if found is None:
            raise recipe_error(
                "chat_template_path",
                t.chat_template_path,
                "does not exist",
                "point to an existing .jinja file",
                where,
            )
        template_text = found.read_text()

    # Datasets: local folders must exist and hold the split the recipe trains on.
    if s.dataset_mixture is not None:
        entries = [
            (f"dataset_mixture.datasets[{i}].id", d.id, d.split)
            for i, d in enumerate(s.dataset_mixture.datasets)
        ]
    else:
        entries = [("dataset_name", s.dataset_name, s.dataset_train_split)]
    for key, value, split in entries:
        _check_local_dataset(key, value, split, recipe, where)
    for i, value in enumerate(recipe.pipeline.decontamination_against):
        if local_path(value) is None and (
            _looks_local(value) or value.endswith((".jsonl", ".json", ".parquet"))
        ):
            raise recipe_error(
                f"decontamination_against[{i}]",
                value,
                "looks like a local evaluation file or folder but does not exist (looked in the working "
                "directory, the repository root and the asset cache)",
                _asset_fix(recipe, "gsm_symbolic"),
                where,
            )

    _check_freeze_layers(recipe, where)
    # Model: a local folder must exist, its tokenizer load, and eos_token be one of its tokens.
    name = m.model_name_or_path
    found = local_path(name)
    if found is None:
        if _looks_local(name):
            raise recipe_error(
                "model_name_or_path",
                name,
                "looks like a local path but does not exist (looked in the working directory, the repository root "
                "and the asset cache)",
                _asset_fix(recipe, "tiny_model" if "tiny" in name else "smollm2"),
                where,
            )
        if t.assistant_only_loss and template_text is not None and not _has_generation_markers(template_text):
            notes.append(
                "assistant_only_loss: the recipe's chat template has no {% generation %} markers; training stops "
                "unless TRL knows a training version of it (parameters/chat_templates/chatml_training.jinja has them)."
            )
        return  # a Hub id: not checked offline
    if not (found / "config.json").is_file():
        raise recipe_error(
            "model_name_or_path",
            name,
            f"is a local path ({found}) without a config.json, so it is not a model folder",
            "point to a folder written by save_pretrained (config.json, weights, tokenizer files)",
            where,
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(found), revision=m.model_revision, trust_remote_code=t.trust_remote_code
        )
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        raise recipe_error(
            "model_name_or_path",
            name,
            f"is a local folder whose tokenizer does not load ({type(exc).__name__}: {exc})",
            "rebuild the folder with save_pretrained (it needs tokenizer.json / tokenizer_config.json)",
            where,
        ) from exc
    vocab = tokenizer.get_vocab()
    for key in ("eos_token", "pad_token"):
        token = getattr(t, key)
        if token is not None and token not in vocab:
            specials = [x for x in tokenizer.all_special_tokens if x in vocab] + [
                x for x in vocab if x.startswith("<|") and x.endswith("|>")
            ][:10]
            raise recipe_error(
                key,
                token,
                f"is not in the vocabulary of the tokenizer at {name}",
                f"use the token that ends a turn in the chat template; this tokenizer has e.g. "
                f"{', '.join(dict.fromkeys(specials)) or '(no special tokens)'}",
                where,
            )
    if template_text is not None:
        tokenizer.chat_template = template_text
    if t.eos_token and getattr(tokenizer, "chat_template", None):
        # The model learns to stop only on what the template writes after an assistant turn (open-r1 #604).
        marker = "ASSISTANT_TURN_ENDS_HERE"
        conversation = [{"role": "user", "content": "question"}, {"role": "assistant", "content": marker}]
        try:
            rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - a template that cannot render is reported, not fatal here
            notes.append(
                f"chat template could not render a user/assistant exchange ({type(exc).__name__}: {exc})."
            )
        else:
            if t.eos_token not in str(rendered).split(marker, 1)[-1]:
                notes.append(
                    f"eos_token {t.eos_token!r} does not appear after the assistant turn in the chat template: "
                    "the model would never learn to stop (open-r1 #604). Use the template's end-of-turn token."
                )
    if t.assistant_only_loss:
        _check_assistant_masks(tokenizer, template_text, notes, where)


def local_model_depth(name: str | os.PathLike) -> int | None:
    """``num_hidden_layers`` of a local model folder (its text model's, for a multimodal config), or None."""
    found = local_path(name)
    if found is None or not (found / "config.json").is_file():
        return None
    config = json.loads((found / "config.json").read_text())
    return config.get("num_hidden_layers") or config.get("text_config", {}).get("num_hidden_layers")


def _check_freeze_layers(recipe: Recipe, where: str) -> None:
    n = recipe.training.freeze_layers
    if not n:
        return
    if n < 0:
        raise recipe_error(
            "freeze_layers", n, "is negative", "use 0 (train every weight) or a number of layers", where
        )
    if getattr(recipe.model, "use_peft", False):
        raise recipe_error(
            "freeze_layers",
            n,
            "is set together with use_peft: LoRA already keeps every base weight frozen",
            "remove freeze_layers, or set use_peft: false",
            where,
        )
    layers = local_model_depth(recipe.model.model_name_or_path)  # None for a Hub id: checked when it loads
    if layers is not None and n >= layers:
        raise recipe_error(
            "freeze_layers",
            n,
            f"freezes every one of the model's {layers} decoder layers, so nothing would train",
            f"use a number below {layers}",
            where,
        )


def _has_generation_markers(template: str) -> bool:
    from trl.chat_template_utils import has_generation_markers

    return has_generation_markers(template)


def _check_assistant_masks(tokenizer, template: str | None, notes: list[str], where: str) -> None:
    """assistant_only_loss: TRL masks the loss with the chat template's ``{% generation %}`` markers, so the template
    training will use (the recipe's, the tokenizer's, else the model step's ChatML) must have them, or be one TRL
    can swap for a marked version; and its end-of-turn token must fall inside them, or the model never learns to stop.
    """
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_stop_token_trained

    if template is None and not tokenizer.chat_template:
        template = CHATML_TEMPLATE  # what prepare_tokenizer gives a tokenizer without a template
    if template is not None:
        tokenizer.chat_template = template
    if not _has_generation_markers(tokenizer.chat_template):
        try:
            patched = get_training_chat_template(tokenizer)
        except ValueError:
            raise recipe_error(
                "assistant_only_loss", True,
                "needs a chat template that marks the assistant's turns with {% generation %} ... "
                "{% endgeneration %} (TRL masks the loss with them); this model's template has none, and TRL has no "
                "training version of it",
                "set chat_template: parameters/chat_templates/chatml_training.jinja (ChatML with the markers), add "
                "the markers to your template, or put the loss on the answer with completion_only_loss: true", where,
            ) from None  # fmt: skip
        notes.append(
            "assistant_only_loss: the chat template has no {% generation %} markers; TRL swaps in its training "
            "version of it to mask the loss."
        )
        tokenizer.chat_template = patched or tokenizer.chat_template
    if not is_chat_template_stop_token_trained(tokenizer):
        notes.append(
            "assistant_only_loss: the chat template leaves the assistant's end-of-turn token outside its "
            "{% generation %} markers, so the model would not learn to stop. Move it inside them."
        )


def _asset_fix(recipe: Recipe, guess: str) -> str:
    assets = recipe.pipeline.assets
    if assets:
        return f"build this profile's assets ({', '.join(assets)}) first, or fix the path"
    return f"fix the path, or build the embedded asset that provides it (e.g. {guess})"


def _check_local_dataset(key: str, value: str | None, split: str, recipe: Recipe, where: str) -> None:
    if value is None:
        return
    found = local_path(value)
    if found is None:
        if _looks_local(value):
            raise recipe_error(
                key,
                value,
                "looks like a local dataset folder but does not exist (looked in the working directory, the "
                "repository root and the asset cache)",
                _asset_fix(recipe, "smoke_data"),
                where,
            )
        return  # a Hub id
    from open_r1_nb.sources import split_names

    names = split_names(split)  # the expression was checked when the recipe was read
    if found.is_file():
        if names != ["train"]:
            raise recipe_error(
                key, value, f"is a single file, which holds one split, `train`; the recipe reads {split!r}",
                "read it as train (or a slice, e.g. train[:100]), or use a folder of <split>.jsonl files", where,
            )  # fmt: skip
        return
    if (found / "dataset_dict.json").is_file() or (found / "dataset_info.json").is_file():
        return  # written by Dataset(Dict).save_to_disk
    for name in names:
        if not any(found.glob(f"{name}.*")) and not (found / name).is_dir():
            present = sorted(p.name for p in found.iterdir())[:10]
            raise recipe_error(
                key,
                value,
                f"is a local folder without a `{name}` split file ({name}.jsonl); it holds {present or 'nothing'}",
                f"write the split as {found / (name + '.jsonl')}, or set the split the recipe reads",
                where,
            )


def _runtime_notes(recipe: Recipe, notes: list[str]) -> None:
    t, m = recipe.training, recipe.model
    report_modules = {
        "wandb": "wandb",
        "tensorboard": "tensorboard",
        "mlflow": "mlflow",
        "comet_ml": "comet_ml",
        "trackio": "trackio",
    }
    for name in t.report_to:
        module = report_modules.get(name)
        if module and importlib.util.find_spec(module) is None:
            notes.append(
                f"report_to lists {name!r}, which is not installed here: the trainer would stop at start. Install "
                f"it where you train, or override report_to (e.g. --report_to none)."
            )
    if t.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        notes.append("use_liger_kernel: true needs liger-kernel (GPU only; pip install -e '.[gpu]').")
    if m.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        notes.append(
            "attn_implementation: flash_attention_2 needs the flash-attn package, which is not installed here "
            "(on a GPU the model step then uses transformers' Hub kernel if the `kernels` package is installed, "
            "else sdpa)."
        )
    if t.bf16 and t.use_cpu and not hardware.cpu_supports_bf16():
        # bf16 autocast halves the step time on a CPU with bf16 units (measured: docs/performance.md); without them
        # oneDNN emulates bf16, so the same recipe trains in fp32 there.
        t.bf16 = False
        notes.append(
            "bf16: true -> false: this CPU has no native bf16 (AVX512-BF16 / AMX), so bf16 autocast would be "
            "emulated; training runs in fp32."
        )
    if (t.bf16 or t.tf32) and not t.use_cpu:
        import torch

        if not torch.cuda.is_available():
            notes.append(
                "bf16/tf32 without use_cpu: this recipe is sized for bf16 GPUs; on this machine (no CUDA) the "
                "trainer would refuse it. It validates here; train it on the hardware its header names."
            )


def _check_evaluation(recipe: Recipe, where: str) -> None:
    """The evaluation keys. The benchmark names are checked where the benchmarks are known, before anything runs
    (``open_r1_nb.evaluate.benchmarks.check_benchmark_names``: the runner, the training entry point, notebook 06)."""
    for key in ("eval_n", "eval_limit", "eval_max_new_tokens", "eval_top_k", "learning_curve"):
        if getattr(recipe.pipeline, key) < 0:
            raise recipe_error(
                key, getattr(recipe.pipeline, key), "is negative", "use 0 (the default) or more", where
            )
    _check_vllm(recipe.pipeline, where)
    if recipe.pipeline.eval_batch_size < 1:
        raise recipe_error(
            "eval_batch_size",
            recipe.pipeline.eval_batch_size,
            "is not positive",
            "use 1 or more (default 32)",
            where,
        )
    if recipe.pipeline.learning_curve:
        t = recipe.training
        if not t.benchmarks:
            raise recipe_error(
                "learning_curve", recipe.pipeline.learning_curve, "needs a benchmark to evaluate the checkpoints on",
                "list one under `benchmarks` (the first is used)", where,
            )  # fmt: skip
        if str(getattr(t.save_strategy, "value", t.save_strategy)) == "no" or t.save_total_limit:
            raise recipe_error(
                "learning_curve", recipe.pipeline.learning_curve,
                "needs every checkpoint kept, but the recipe saves none or deletes old ones "
                f"(save_strategy {getattr(t.save_strategy, 'value', t.save_strategy)}, "
                f"save_total_limit {t.save_total_limit})",
                "set save_strategy: steps, save_steps, and save_total_limit: null", where,
            )  # fmt: skip


def _check_vllm(p: PipelineArguments, where: str) -> None:
    util = p.vllm_gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        raise recipe_error(
            "vllm_gpu_memory_utilization", util, "is not a share in (0, 1]", "use e.g. 0.8, or null", where
        )
    for key in ("vllm_tensor_parallel_size", "vllm_data_parallel_size", "vllm_max_model_length"):
        value = getattr(p, key)
        if value is not None and value < 1:
            raise recipe_error(
                key, value, "is not positive", "use 1 or more, or null for vLLM's default", where
            )
    length = p.vllm_max_model_length
    if length is not None and p.eval_max_new_tokens and length <= p.eval_max_new_tokens:
        raise recipe_error(
            "vllm_max_model_length", length,
            f"leaves no room for a prompt before eval_max_new_tokens ({p.eval_max_new_tokens}) generated tokens",
            "make it the longest prompt plus eval_max_new_tokens, or more", where,
        )  # fmt: skip
