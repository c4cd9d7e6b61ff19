"""Step 1, configuration: read a profile (one flat YAML recipe), validate it and turn it into typed arguments.

A profile ``parameters/<profile>.yaml`` is an open-r1 recipe: the same keys as open-r1's ``recipes/*/sft/*.yaml``
(model arguments, script arguments, SFT config) plus a few pipeline keys (``accelerate_config``,
``num_processes``, ``assets``). :func:`load_recipe` splits it into four dataclasses and checks everything that can
be checked before anything heavy starts, raising :class:`RecipeError` with a message that names the key, the value
and the fix. Keys that trl 1.16 / transformers 5 renamed or removed are mapped (or dropped) with a note in
``recipe.notes``, so upstream recipes still load.

Building ``SFTConfig`` runs ``TrainingArguments.__post_init__``, which refuses bf16 on a machine without a bf16 GPU
and builds the process's device state (``PartialState``, which initialises torch.distributed under a launcher and
touches CUDA on a GPU node). Neither belongs in validation: the 7B GPU recipe must validate on a laptop, and a
notebook kernel must not hold a CUDA context while the launched trainer runs. So :func:`load_recipe` defers both
by default (``setup_devices=False``); they run on the first use of the device state (``args.device``,
``args.world_size``, ...), or explicitly with ``setup_devices=True`` or :meth:`SFTConfig.setup_devices`, which the
training process should do before building its trainer.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import difflib
import enum
import functools
import importlib.util
import json
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trl
import yaml
from transformers import TrainingArguments
from trl import ModelConfig

from open_r1_nb import paths

if typing.TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

__all__ = [
    "ACCELERATE_DIR",
    "ASSET_NAMES",
    "DROPPED_KEYS",
    "RENAMED_KEYS",
    "DatasetConfig",
    "DatasetMixtureConfig",
    "ModelConfig",
    "PipelineArguments",
    "Recipe",
    "RecipeError",
    "SFTConfig",
    "ScriptArguments",
    "accelerate_config_path",
    "available_accelerate_configs",
    "available_profiles",
    "default_accelerate_config",
    "gpu_count",
    "load_recipe",
    "local_path",
    "parse_overrides",
    "read_accelerate_config",
    "resolve_chat_template",
    "save_recipe",
]

ACCELERATE_DIR = paths.PARAMETERS_DIR / "accelerate"

#: Embedded assets a profile may list under ``assets`` (built offline by the assets step).
ASSET_NAMES = ("smollm2", "tiny_model", "gsm_symbolic", "arithmetic", "smoke_data")


class RecipeError(ValueError):
    """A recipe that cannot run. The message names the key, the value and the fix."""

    def __init__(self, message: str, key: str | None = None, value: Any = None, fix: str | None = None):
        super().__init__(message)
        self.key, self.value, self.fix = key, value, fix


def _error(key: str, value: Any, problem: str, fix: str, where: str = "") -> RecipeError:
    # A token is never shown: errors are printed, logged and kept in executed notebooks.
    secret = key in _SECRET_FIELDS or RENAMED_KEYS.get(key) in _SECRET_FIELDS
    shown = "(hidden)" if secret else _short(value)
    prefix = f"{where}: " if where else ""
    return RecipeError(f"{prefix}`{key}: {shown}` {problem}. Fix: {fix}", key=key, value=value, fix=fix)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text)} chars)"


# ---------------------------------------------------------------------------------------------------------------
# The dataclasses: open-r1's configs on top of trl's
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    """One dataset of a mixture (open-r1's ``DatasetConfig``). ``id`` is a Hub id or a local folder of
    ``<split>.jsonl`` files; ``weight`` keeps that fraction of it (after a seeded shuffle)."""

    id: str
    config: str | None = None
    split: str = "train"
    columns: list[str] | None = None
    weight: float | None = None


@dataclass
class DatasetMixtureConfig:
    """A weighted mixture of datasets (open-r1's ``DatasetMixtureConfig``), concatenated then shuffled."""

    datasets: list[DatasetConfig]
    seed: int = 0
    test_split_size: float | None = None


_MIXTURE_KEYS = ("datasets", "seed", "test_split_size")
_MIXTURE_ENTRY_KEYS = tuple(f.name for f in dataclasses.fields(DatasetConfig))


def _check_split(key: str, split: str, where: str = "") -> None:
    """A split is a name or an expression the datasets library reads (``train[:10]``, ``train[10%:]``,
    ``train+test``), on the Hub and on local sources alike."""
    from open_r1_nb.data import DatasetLoadError, split_names

    try:
        split_names(split)
    except DatasetLoadError:
        raise _error(
            key, split, "is not a split expression",
            "write a split name such as train, a slice such as train[:100] or train[10%:], or several joined with "
            "+, e.g. train+test", where,
        ) from None  # fmt: skip


def _mixture_from_dict(raw: Any, where: str = "") -> DatasetMixtureConfig:
    """Build a :class:`DatasetMixtureConfig` from the YAML mapping, with open-r1's semantics and our checks."""
    example = "dataset_mixture: {datasets: [{id: <dataset>, columns: [messages], weight: 0.5}], seed: 0}"
    if isinstance(raw, DatasetMixtureConfig):
        raw = _mixture_to_dict(raw)
    if not isinstance(raw, dict) or "datasets" not in raw:
        raise _error(
            "dataset_mixture", raw, "must be a mapping with a `datasets` list", f"write {example}", where
        )
    for key in raw:
        if key not in _MIXTURE_KEYS:
            raise _error(
                f"dataset_mixture.{key}",
                raw[key],
                "is not a mixture key",
                f"use only {', '.join(_MIXTURE_KEYS)}{_did_you_mean(key, _MIXTURE_KEYS)}",
                where,
            )
    entries = raw["datasets"]
    if not isinstance(entries, list) or not entries:
        raise _error(
            "dataset_mixture.datasets",
            entries,
            "must be a non-empty list of datasets",
            f"write {example}",
            where,
        )
    datasets = []
    for i, entry in enumerate(entries):
        name = f"dataset_mixture.datasets[{i}]"
        if isinstance(entry, DatasetConfig):
            entry = dataclasses.asdict(entry)
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise _error(
                name, entry, "needs an `id` (a Hub dataset id or a local folder)", f"write {example}", where
            )
        for key in entry:
            if key not in _MIXTURE_ENTRY_KEYS:
                raise _error(
                    f"{name}.{key}",
                    entry[key],
                    "is not a key of a mixture entry",
                    f"use only {', '.join(_MIXTURE_ENTRY_KEYS)}{_did_you_mean(key, _MIXTURE_ENTRY_KEYS)}",
                    where,
                )
        columns = entry.get("columns")
        if columns is not None and (
            not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not columns
        ):
            raise _error(
                f"{name}.columns",
                columns,
                "must be a list of column names",
                "write columns: [messages]",
                where,
            )
        # open-r1 reads a missing weight as 1.0 and an explicit null as "no subsampling": both keep the whole dataset
        # (null also skips the per-dataset shuffle; the mixture is shuffled after concatenation either way).
        weight = _coerce_number(entry.get("weight", 1.0))
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1
        ):
            raise _error(
                f"{name}.weight",
                entry.get("weight"),
                "must be a fraction in (0, 1]: the share of that dataset kept in the mixture",
                "write a number such as 0.5 (half of it), or 1.0 or null (all of it); drop the entry to leave it out",
                where,
            )
        for key in ("config", "split"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise _error(
                    f"{name}.{key}", entry[key], "must be a string", f"quote it: {key}: '{entry[key]}'", where
                )
        if entry.get("split"):
            _check_split(f"{name}.split", entry["split"], where)
        datasets.append(
            DatasetConfig(
                id=entry["id"],
                config=entry.get("config"),
                split=entry.get("split") or "train",
                columns=list(columns) if columns is not None else None,
                weight=None if weight is None else float(weight),
            )
        )
    # open-r1 concatenates the datasets, which needs the same columns everywhere.
    given = [(i, d.columns) for i, d in enumerate(datasets) if d.columns is not None]
    for i, cols in given[1:]:
        if set(cols) != set(given[0][1]):
            raise _error(
                f"dataset_mixture.datasets[{i}].columns",
                cols,
                f"differs from dataset_mixture.datasets[{given[0][0]}].columns {given[0][1]!r}; the mixture "
                "concatenates its datasets, so every entry must keep the same columns",
                f"give every entry the same columns, e.g. columns: {given[0][1]}",
                where,
            )
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _error("dataset_mixture.seed", seed, "must be an integer", "write seed: 0", where)
    test_split_size = _coerce_number(raw.get("test_split_size"))
    # datasets' train_test_split: a float is a fraction of the rows, an integer a number of rows.
    if test_split_size is not None and (
        isinstance(test_split_size, bool)
        or not isinstance(test_split_size, (int, float))
        or test_split_size <= 0
        or (isinstance(test_split_size, float) and test_split_size >= 1)
    ):
        raise _error(
            "dataset_mixture.test_split_size",
            raw.get("test_split_size"),
            "must be a fraction in (0, 1) or a whole number of rows",
            "write test_split_size: 0.1 (a tenth) or 100 (rows), or remove it to keep everything for training",
            where,
        )
    return DatasetMixtureConfig(datasets=datasets, seed=seed, test_split_size=test_split_size)


def _mixture_to_dict(mixture: DatasetMixtureConfig) -> dict[str, Any]:
    entries = []
    for d in mixture.datasets:
        entry: dict[str, Any] = {"id": d.id}
        if d.config is not None:
            entry["config"] = d.config
        if d.split != "train":
            entry["split"] = d.split
        if d.columns is not None:
            entry["columns"] = list(d.columns)
        entry["weight"] = d.weight  # null is not 1.0 (it skips the per-dataset shuffle): write it as it is
        entries.append(entry)
    out: dict[str, Any] = {"datasets": entries}
    if mixture.seed != 0:
        out["seed"] = mixture.seed
    if mixture.test_split_size is not None:
        out["test_split_size"] = mixture.test_split_size
    return out


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """trl's script arguments plus open-r1's ``dataset_mixture``; exactly one of ``dataset_name`` and
    ``dataset_mixture`` is required. ``dataset_name`` may be a Hub id or a local folder of ``<split>.jsonl``."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Dataset name (Hub id or local folder). Omit it when using dataset_mixture."},
    )
    dataset_mixture: dict[str, Any] | DatasetMixtureConfig | None = field(
        default=None,
        metadata={
            "help": "A mixture of datasets: {datasets: [{id, config, split, columns, weight}], seed, test_split_size}."
        },
    )

    def __post_init__(self):
        if self.dataset_name is None and self.dataset_mixture is None:
            raise _error(
                "dataset_name",
                None,
                "is missing and so is `dataset_mixture`",
                "give exactly one: dataset_name: <hub id or local folder>, or a dataset_mixture",
            )
        if self.dataset_name is not None and self.dataset_mixture is not None:
            raise _error(
                "dataset_mixture",
                "...",
                f"is given together with `dataset_name: {self.dataset_name!r}`",
                "keep exactly one of the two (a single dataset is a mixture of one)",
            )
        if self.dataset_mixture is not None:
            self.dataset_mixture = _mixture_from_dict(self.dataset_mixture)


# Set by load_recipe while it builds an SFTConfig for validation (see the module docstring and SFTConfig).
_DEFER_DEVICE_SETUP: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "defer_device_setup", default=False
)


@contextlib.contextmanager
def _device_setup_deferred(deferred: bool = True):
    token = _DEFER_DEVICE_SETUP.set(deferred)
    try:
        yield
    finally:
        _DEFER_DEVICE_SETUP.reset(token)


_DEFERRED_MESSAGE = (
    "This SFTConfig was built for validation only (hardware checks and device setup deferred, so that a GPU "
    "recipe validates anywhere), and an Accelerator already exists, so its devices can no longer be set up "
    "safely. Fix: load it with load_recipe(..., setup_devices=True) in the training process, or call "
    "`.setup_devices()` on it before creating the trainer."
)


@dataclass
class SFTConfig(trl.SFTConfig):
    """trl's ``SFTConfig`` plus open-r1's extras (callbacks, benchmarks, chat template, Hub revisions, W&B).

    ``eos_token``, ``pad_token`` and ``chat_template_path`` already exist in trl 1.16 and are not repeated.
    ``chat_template`` is open-r1's: an inline Jinja string, or (our extension) a path ending in ``.jinja``;
    :func:`resolve_chat_template` returns the text. trl's trainer does not read it: the model step applies it.

    Built inside :func:`load_recipe` (the default ``setup_devices=False``), ``TrainingArguments.__post_init__`` runs
    with three GPU-only parts deferred: the bf16/tf32 hardware checks, DeepSpeed's config processing and the device
    setup (``PartialState``). Every other check and normalisation runs as usual. :meth:`setup_devices` completes
    it, and so does the first use of the device state (``.device``, ``.world_size``, ``.process_index``, ...),
    unless an ``Accelerator`` already exists (a trainer given an incomplete config): then a clear error says so.
    """

    benchmarks: list[str] = field(
        default_factory=list, metadata={"help": "The benchmarks to run after training."}
    )
    callbacks: list[str] = field(
        default_factory=list, metadata={"help": "The callbacks to run during training."}
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "The chat template to use: inline Jinja, or a path to a .jinja file."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "The optional system prompt to use for benchmarking."}
    )
    hub_model_revision: str | None = field(
        default="main", metadata={"help": "The Hub model branch to push the model to."}
    )
    overwrite_hub_revision: bool = field(
        default=False, metadata={"help": "Whether to overwrite the Hub revision."}
    )
    push_to_hub_revision: bool = field(
        default=False, metadata={"help": "Whether to push to a Hub revision/branch."}
    )
    freeze_layers: int = field(
        default=0,
        metadata={
            "help": "Train the top of the network only: the input embeddings (and the LM head, where the model ties "
            "it to them) and the first N decoder layers keep their weights. The backward pass stops above them and "
            "the optimizer keeps no state for them. 0: every weight trains (open-r1's recipes)."
        },
    )
    wandb_entity: str | None = field(default=None, metadata={"help": "The entity to store runs under."})
    wandb_project: str | None = field(default=None, metadata={"help": "The project to store runs under."})
    wandb_run_group: str | None = field(default=None, metadata={"help": "The group to store runs under."})

    # Fields whose hardware-dependent processing is deferred; restored unchanged after __post_init__.
    _DEFERRED_FIELDS: typing.ClassVar[tuple[str, ...]] = ("tf32", "deepspeed", "pad_to_multiple_of")

    def __post_init__(self):
        deferred = _DEFER_DEVICE_SETUP.get()
        self.__dict__["_setup_deferred"] = deferred
        hidden = {}
        if deferred:
            # tf32=True raises "requires Ampere" on a CPU; a `deepspeed` JSON imports deepspeed; trl resolves
            # pad_to_multiple_of="auto" from self.device. Hide them from __post_init__ and restore them after.
            hidden = {name: getattr(self, name) for name in self._DEFERRED_FIELDS}
            self.tf32, self.deepspeed = None, None
            if self.pad_to_multiple_of == "auto":
                self.pad_to_multiple_of = None
        self.__dict__["_in_post_init"] = True
        try:
            super().__post_init__()
        finally:
            self.__dict__["_in_post_init"] = False
            for name, value in hidden.items():
                setattr(self, name, value)

    def _validate_args(self):
        if not self.__dict__.get("_setup_deferred"):
            return super()._validate_args()
        # transformers refuses bf16 unless the machine has a bf16 GPU (or use_cpu is set), and asks CUDA to find
        # out. That is a fact about the machine, not the recipe: skip it here, setup_devices() runs it.
        saved = self.bf16, self.bf16_full_eval
        if self.fp16 and self.bf16:
            raise ValueError("At most one of fp16 and bf16 can be True, but not both")
        self.bf16 = self.bf16_full_eval = False
        try:
            super()._validate_args()
        finally:
            self.bf16, self.bf16_full_eval = saved

    @property
    def device(self):
        if self.__dict__.get("_setup_deferred") and self.__dict__.get("_in_post_init"):
            # TrainingArguments.__post_init__ touches self.device only to build the device state eagerly.
            return None
        return super().device

    @functools.cached_property
    def _setup_devices(self):
        if self.__dict__.get("_setup_deferred"):
            # First use of the device state (args.device, .world_size, .process_index, ...): complete the config
            # now. Not once an Accelerator exists, though: TrainingArguments' device setup resets the accelerator
            # state, which is why the Trainer expects arguments whose devices are already set up.
            from accelerate.state import is_initialized

            if is_initialized():
                raise RuntimeError(_DEFERRED_MESSAGE)
            self.setup_devices()
            return self.__dict__["_setup_devices"]
        return TrainingArguments._setup_devices.func(self)

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: `distributed_state` and `_n_gpu` exist once devices are set up.
        if name in ("distributed_state", "_n_gpu") and self.__dict__.get("_setup_deferred"):
            _ = self._setup_devices
            return object.__getattribute__(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def devices_deferred(self) -> bool:
        """True while the hardware checks and device setup are still to run (see :meth:`setup_devices`)."""
        return bool(self.__dict__.get("_setup_deferred"))

    def setup_devices(self) -> SFTConfig:
        """Run what validation deferred: ``TrainingArguments.__post_init__`` in full (hardware checks, DeepSpeed,
        device and distributed setup). Call it in the training process, before building the trainer."""
        if self.__dict__.get("_setup_deferred"):
            self.__dict__["_setup_deferred"] = False
            self.__dict__.pop("_setup_devices", None)
            try:
                with _device_setup_deferred(False):
                    self.__post_init__()  # idempotent on already normalised values
            except ValueError as exc:
                self.__dict__["_setup_deferred"] = True
                raise RecipeError(
                    f"These training arguments cannot run on this machine: {exc} Fix: run the recipe on the "
                    "hardware its header names, or for a CPU run set use_cpu: true and bf16: false."
                    + _older_gpu_hint(str(exc)),
                    key="bf16" if "bf16" in str(exc) else None,
                    value=self.bf16,
                    fix="use the hardware the recipe is sized for",
                ) from exc
        return self


@dataclass
class PipelineArguments:
    """The keys this project adds to an open-r1 recipe."""

    accelerate_config: str | None = field(
        default=None,
        metadata={
            "help": "Name of a file in parameters/accelerate/ (without .yaml), or a path to an accelerate config."
        },
    )
    num_processes: int | None = field(
        default=None,
        metadata={"help": "Training processes to launch; defaults to the accelerate config's num_processes."},
    )
    device: str = field(
        default="given",
        metadata={
            "help": "Where to train and evaluate: `given` (the recipe's own use_cpu, bf16 and accelerate_config), or "
            "`auto`: a CUDA GPU when there is one (bf16, else fp16; one process; vLLM when installed), else Apple's "
            "MPS, else the CPU as the recipe says (open_r1_nb.hardware.select_device).",
            "choices": ("given", "auto"),
        },
    )
    cpu_fp32_overrides: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Recipe keys that change where the recipe asks for bf16 on a CPU without bf16 units: training "
            "falls back to fp32 there, about 2.4x slower a step, and these keys (e.g. freeze_layers) keep the "
            "profile's time. Applied before anything else is checked, with a note."
        },
    )
    time_budget_minutes: float | None = field(
        default=None,
        metadata={
            "help": "What the whole run should take on the hardware the header names (set-up excluded). After the "
            "first training steps the run prints its expected time and warns, naming the likely reason, when the "
            "estimate passes this budget. None: estimate only."
        },
    )
    assets: list[str] = field(
        default_factory=list,
        metadata={"help": f"Embedded assets this profile needs, among {', '.join(ASSET_NAMES)}."},
    )
    overlong_policy: str = field(
        default="truncate",
        metadata={
            "help": "Rows longer than max_length tokens: `truncate` keeps them (the trainer cuts them at max_length, "
            "so a trace loses its answer and EOS) or `drop` removes them. Counted and reported either way.",
            "choices": ("truncate", "drop"),
        },
    )
    decontaminate: bool = field(
        default=False,
        metadata={
            "help": "Remove the training rows whose prompts share a word n-gram with an evaluation problem of "
            "decontamination_against (open-r1's decontamination). Without it the overlap is only reported."
        },
    )
    decontamination_ngram: int = field(
        default=8,
        metadata={
            "help": "Words per n-gram of the contamination check (open-r1 uses 8); 0 matches whole evaluation "
            "problems only (for evaluation splits that share templates with the training data by design)."
        },
    )
    decontamination_against: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Evaluation data to check the training rows against: local files or folders of problems (e.g. "
            "cache/data/gsm_symbolic/test_template.jsonl), or Hub dataset ids written org/name[:split]. GSM-Symbolic's "
            "test_variant.jsonl shares its templates' wording with the training rows by design: 8-grams flag most of "
            "them; check it with decontamination_ngram: 0 (whole problems)."
        },
    )
    # Evaluation (notebook 06, scripts/evaluate.py, and the `benchmarks` run after training).
    eval_n: int = field(
        default=0, metadata={"help": "Samples per problem; 0 = the benchmark's protocol value."}
    )
    eval_limit: int = field(
        default=0, metadata={"help": "Problems per benchmark (a fixed seeded subset); 0 = all of them."}
    )
    eval_max_new_tokens: int = field(
        default=0, metadata={"help": "Generation limit per sample; 0 = the benchmark's protocol value."}
    )
    eval_temperature: float = field(
        default=0.6, metadata={"help": "Sampling temperature (R1 protocol: 0.6)."}
    )
    eval_top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling (R1 protocol: 0.95)."})
    eval_top_k: int = field(
        default=0,
        metadata={
            "help": "Sample among the k likeliest tokens before top-p; 0 = no cut (the R1 protocol). A CPU saving: "
            "sorting the whole vocabulary for top-p is a quarter of a CPU decoding step."
        },
    )
    eval_batch_size: int = field(
        default=32,
        metadata={
            "help": "Sequences (problems x samples) decoded together. On a 2-core CPU, CTranslate2 decoding a "
            "small model costs about as much per step for 60 sequences as for 30: one batch of 64 took 80 s where "
            "two of 32 took 98-110 s (docs/performance.md)."
        },
    )
    eval_backend: str = field(
        default="auto",
        metadata={
            "help": "Generation engine: auto (vLLM on GPU, else CTranslate2, else transformers) or one by name.",
            "choices": ("auto", "vllm", "ctranslate2", "transformers"),
        },
    )
    eval_math_rule: str = field(
        default="auto",
        metadata={
            "help": "How a maths answer is read: auto (each benchmark's own: the number stated for the embedded "
            "splits, the stated answer for the Hub ones), stated (a box, else an explicit final statement; an "
            "expression copied from the question does not count), number, or lighteval (LightEval's reading, "
            "which also evaluates the last expression anywhere in the answer).",
            "choices": ("auto", "stated", "number", "lighteval"),
        },
    )
    learning_curve: int = field(
        default=0,
        metadata={
            "help": "Evaluate every saved checkpoint on this many problems of the first benchmark (one sample "
            "each), for a plot of held-out accuracy against training tokens; 0 = off. Keep the checkpoints: "
            "save_total_limit null."
        },
    )
    # vLLM's engine for evaluation (notebook 06, scripts/evaluate.py, the evaluation after training): trl's names.
    vllm_gpu_memory_utilization: float | None = field(
        default=None,
        metadata={
            "help": "Share of each GPU's memory vLLM takes (weights and KV cache); it refuses to start when less is "
            "free. None: vLLM's default (0.92). vLLM's CPU build reads it as a share of the machine's memory; "
            "unset there, the KV cache gets 1 GiB."
        },
    )
    vllm_max_model_length: int | None = field(
        default=None,
        metadata={
            "help": "Context window of the engine (prompt plus generated tokens). None: the model's own "
            "(max_position_embeddings). A smaller window fits the KV cache on a smaller GPU."
        },
    )
    vllm_tensor_parallel_size: int = field(
        default=1,
        metadata={"help": "GPUs that hold one copy of the model (1 suits a 7B model on an 80 GB GPU)."},
    )
    vllm_data_parallel_size: int | None = field(
        default=None,
        metadata={
            "help": "Copies of the model, one process each over disjoint prompts. None: as many as the visible "
            "GPUs hold (visible GPUs / vllm_tensor_parallel_size); on a CPU, one."
        },
    )

    def eval_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``open_r1_nb.evaluate.runner.EvalSettings``."""
        return {
            "n": self.eval_n,
            "limit": self.eval_limit,
            "max_new_tokens": self.eval_max_new_tokens,
            "temperature": self.eval_temperature,
            "top_p": self.eval_top_p,
            "top_k": self.eval_top_k,
            "backend": self.eval_backend,
            "batch_size": self.eval_batch_size,
            "vllm_gpu_memory_utilization": self.vllm_gpu_memory_utilization,
            "vllm_max_model_length": self.vllm_max_model_length,
            "vllm_tensor_parallel_size": self.vllm_tensor_parallel_size,
            "vllm_data_parallel_size": self.vllm_data_parallel_size,
            "math_rule": self.eval_math_rule,
        }


# ---------------------------------------------------------------------------------------------------------------
# Keys: which dataclass owns which, and what upstream recipes call by an older name
# ---------------------------------------------------------------------------------------------------------------

_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "script": ScriptArguments,
    "training": SFTConfig,
    "pipeline": PipelineArguments,
}
_FIELDS: dict[str, dict[str, dataclasses.Field]] = {
    section: {f.name: f for f in dataclasses.fields(cls) if f.init} for section, cls in _SECTIONS.items()
}
_KNOWN_KEYS: frozenset[str] = frozenset().union(*(set(f) for f in _FIELDS.values()))

#: old name -> current name (trl 1.16 / transformers 5.17). The value is kept.
RENAMED_KEYS: dict[str, str] = {
    "warmup_ratio": "warmup_steps",  # transformers 5: warmup_steps < 1 is a fraction of the training steps
    "max_seq_length": "max_length",  # trl 0.20
    "torch_dtype": "dtype",  # transformers 5 / trl ModelConfig
    "evaluation_strategy": "eval_strategy",  # transformers 4.46
    "use_liger": "use_liger_kernel",  # trl 0.15 (open-r1 #545)
    "no_cuda": "use_cpu",  # transformers 4.34
    "per_gpu_train_batch_size": "per_device_train_batch_size",
    "per_gpu_eval_batch_size": "per_device_eval_batch_size",
    "push_to_hub_token": "hub_token",
}

#: keys removed upstream with nothing to map them to -> why dropping them changes nothing.
DROPPED_KEYS: dict[str, str] = {
    "overwrite_output_dir": (
        "transformers 5 removed it, and the Trainer never read it (only the old example scripts did); the "
        "pipeline writes to runs/<run_name>/checkpoints and resumes from the last checkpoint there, so delete "
        "that folder (or pick a new run_name) to start over"
    ),
    "logging_dir": (
        "transformers 5 removed it; TensorBoard logs go under output_dir/runs/ (the environment variable "
        "TENSORBOARD_LOGGING_DIR moves them)"
    ),
    "save_safetensors": "transformers 5 removed it: checkpoints are always safetensors",
}

# Filled in by __post_init__ from the environment, so not a property of the recipe unless the file sets them.
_RUNTIME_FIELDS = frozenset({"disable_tqdm"})
# Never written back to a file.
_SECRET_FIELDS = frozenset({"hub_token"})


def _did_you_mean(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


# ---------------------------------------------------------------------------------------------------------------
# Types: check and coerce each value against its field's annotation
# ---------------------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce_number(value: Any) -> Any:
    """'4e-5' -> 4e-05: YAML 1.1 reads exponents without a dot as strings."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if re.match(r"^[+-]?\d+$", value.strip()) else number
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` where that is unambiguous, or raise _Mismatch."""
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str) and str in args:
            # `SchedulerType | str` means "a SchedulerType, possibly spelled as a string".
            for e in enums:
                with contextlib.suppress(ValueError):
                    return e(value).value
            raise _Mismatch
        # Try the strict arms first so that "4e-5" becomes a float where a float is allowed.
        order = sorted((a for a in args if a is not type(None)), key=lambda a: a is str)
        for arm in order:
            with contextlib.suppress(_Mismatch):
                return _coerce(value, arm)
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        value = _coerce_number(value)
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        value = _coerce_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value.value
        try:
            return tp(value).value
        except ValueError:
            raise _Mismatch from None
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is list or tp is list:
        (item,) = typing.get_args(tp) or (Any,)
        items = value if isinstance(value, (list, tuple)) else [value]  # `--benchmarks aime24` -> [aime24]
        if isinstance(value, dict):
            raise _Mismatch
        return [_coerce(v, item) for v in items]
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value


def _check_value(section: str, key: str, value: Any, where: str) -> Any:
    f = _FIELDS[section][key]
    tp = _type_hints(_SECTIONS[section])[key]
    try:
        value = _coerce(value, tp)
    except _Mismatch:
        expected = _describe(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and any(
            isinstance(a, type) and issubclass(a, enum.Enum) for a in typing.get_args(tp)
        ):
            choices = [
                m.value
                for a in typing.get_args(tp)
                if isinstance(a, type) and issubclass(a, enum.Enum)
                for m in a
            ]
            hint = _did_you_mean(str(value), choices)
            raise _error(
                key, value, f"is not a valid value{hint}", f"use one of: {', '.join(choices)}", where
            ) from None
        example = {"a number": "a number such as 4.0e-05", "an integer": "a whole number such as 8"}.get(
            expected, expected
        )
        raise _error(
            key, value, f"has the wrong type: `{key}` takes {expected}", f"write {example}", where
        ) from None
    choices = f.metadata.get("choices")
    if choices is not None and value is not None:
        allowed = list(choices)
        if value not in allowed:
            raise _error(
                key,
                value,
                f"is not a valid value{_did_you_mean(str(value), allowed)}",
                f"use one of: {', '.join(map(str, allowed))}",
                where,
            )
    return value


# ---------------------------------------------------------------------------------------------------------------
# Files: accelerate configs, profiles, local paths, chat templates
# ---------------------------------------------------------------------------------------------------------------


def available_accelerate_configs() -> list[str]:
    """Names of the accelerate configs shipped in ``parameters/accelerate/``."""
    return sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml"))


def available_profiles() -> list[str]:
    """Names of the profiles in ``parameters/`` (``smoke``, ``cpu_demo``, ...)."""
    return sorted(p.stem for p in paths.PARAMETERS_DIR.glob("*.yaml"))


def accelerate_config_path(name_or_path: str) -> Path:
    """The accelerate config file a recipe's ``accelerate_config`` names: a name in ``parameters/accelerate/``
    (``zero3``) or a path to a YAML file. Raises :class:`RecipeError` listing the names when it is missing."""
    value = str(name_or_path)
    is_path = "/" in value or os.sep in value or value.endswith((".yaml", ".yml"))
    found = paths.resolve_local(value) if is_path else ACCELERATE_DIR / f"{value}.yaml"
    if found is None or not Path(found).is_file():
        raise _error(
            "accelerate_config",
            value,
            "names no accelerate config file"
            + ("" if is_path else f" ({ACCELERATE_DIR}/{value}.yaml is absent)"),
            f"use one of {', '.join(available_accelerate_configs())} (files in parameters/accelerate/), "
            "or a path to an accelerate config YAML",
        )
    return Path(found)


def read_accelerate_config(name_or_path: str) -> dict[str, Any]:
    """The accelerate config as a dict."""
    path = accelerate_config_path(name_or_path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise _error(
            "accelerate_config",
            str(name_or_path),
            f"points to {path}, which is not a YAML mapping",
            "use a config written by `accelerate config` or one of parameters/accelerate/",
        )
    return data


def _looks_local(value: str) -> bool:
    """A path rather than a Hub id (``org/name``): absolute, relative with ./ or ~, or two or more levels deep."""
    return value.startswith((".", "/", "~")) or value.count("/") >= 2 or "\\" in value


def local_path(value: str | os.PathLike) -> Path | None:
    """Where a recipe path points on disk, or None (then it is a Hub id); see :func:`paths.resolve_local`."""
    return paths.resolve_local(value)


def _is_template_path(value: str) -> bool:
    return "\n" not in value and value.strip().endswith((".jinja", ".j2"))


def resolve_chat_template(value: str | None) -> str | None:
    """The Jinja text of a recipe's ``chat_template``: read from the file when it is a ``.jinja`` path."""
    if value is None or not _is_template_path(value):
        return value
    found = local_path(value.strip())
    if found is None or not found.is_file():
        raise _error(
            "chat_template",
            value,
            "is a template path that does not exist (looked in the working directory and the repository root)",
            "point to an existing file such as parameters/chat_templates/openr1_qwen.jinja, or inline the template",
        )
    return found.read_text()


# ---------------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A YAML-friendly copy of a field value."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, DatasetMixtureConfig):
        return _mixture_to_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@functools.cache
def _defaults(section: str) -> dict[str, Any]:
    """Each field's default value (model, script and pipeline arguments)."""
    out = {}
    for name, f in _FIELDS[section].items():
        if f.default is not dataclasses.MISSING:
            out[name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = _plain(f.default_factory())
    return out


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@dataclass
class Recipe:
    """A validated recipe: open-r1's three argument groups plus ours, where it came from, and what the loader
    changed or wants you to know (``notes``)."""

    script: ScriptArguments
    training: SFTConfig
    model: ModelConfig
    pipeline: PipelineArguments
    source: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: keys the recipe (file, dict or overrides) set, under their current names; to_dict always writes them.
    given_keys: list[str] = field(default_factory=list)
    #: the comment block that opened the file (the hardware it is sized for); save_recipe writes it back.
    header: str = ""

    @property
    def run_name(self) -> str:
        return self.training.run_name

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.run_name)

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def num_processes(self) -> int:
        return self.pipeline.num_processes or 1

    def global_batch_size(self, num_processes: int | None = None) -> int:
        """Sequences per optimizer step: processes x per_device_train_batch_size x gradient_accumulation_steps."""
        n = num_processes if num_processes is not None else self.num_processes
        return n * self.training.per_device_train_batch_size * self.training.gradient_accumulation_steps

    def chat_template_text(self) -> str | None:
        """The recipe's chat template as Jinja text (read from its .jinja file), or None to keep the tokenizer's."""
        return resolve_chat_template(self.training.chat_template)

    def accelerate_config_file(self) -> Path:
        return accelerate_config_path(self.pipeline.accelerate_config)

    def resolved_for_run(self) -> Recipe:
        """A copy whose ``output_dir`` is ``runs/<run_name>/checkpoints``: the pipeline keeps everything a run
        makes under its run folder, whatever the upstream recipe's output_dir said."""
        target = str(self.checkpoints_dir)
        out = copy.copy(self)
        out.training = copy.copy(self.training)
        out.notes = list(self.notes)
        out.given_keys = list(self.given_keys)
        if self.training.output_dir != target and "output_dir" in self.given_keys:
            out.notes.append(
                f"output_dir: {self.training.output_dir!r} -> {target!r} (the pipeline writes every run under "
                "runs/<run_name>/)"
            )
        if self.training.output_dir != target:
            out.training.output_dir = target
            if "output_dir" not in out.given_keys:
                out.given_keys.append("output_dir")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The recipe as one flat mapping, as a recipe file would say it: the keys it was given plus any that
        differ from the defaults, under current names, model keys first. ``load_recipe`` reads it back."""
        out: dict[str, Any] = {}
        for section in ("model", "script", "training", "pipeline"):
            obj = getattr(self, section)
            if section == "training":
                # What __post_init__ derives from the given keys alone (bf16 from fp16, dataloader_pin_memory from
                # use_cpu, ...) is derived again on load, so compare with that, not with the bare defaults.
                given = {k: _plain(getattr(obj, k)) for k in self.given_keys if k in _FIELDS[section]}
                with _device_setup_deferred(True), _quiet():
                    reference = SFTConfig(**given)
                defaults = {name: _plain(getattr(reference, name)) for name in _FIELDS[section]}
            else:
                defaults = _defaults(section)
            for name in _FIELDS[section]:
                if name in _SECRET_FIELDS or name in out:
                    continue
                value = _plain(getattr(obj, name))
                given = name in self.given_keys
                if given or (
                    name not in _RUNTIME_FIELDS and (name not in defaults or value != defaults[name])
                ):
                    out[name] = value
        return out

    def summary(self) -> pandas.DataFrame:
        """The key facts of the run as a table (model, data, lengths, batch, schedule, precision, launch)."""
        import pandas as pd

        t, m, s, p = self.training, self.model, self.script, self.pipeline
        if s.dataset_mixture is not None:
            parts = [
                f"{d.id} ({'all' if d.weight in (None, 1.0) else f'{d.weight:g}'})"
                for d in s.dataset_mixture.datasets
            ]
            data = "mixture: " + " + ".join(parts)
        else:
            data = s.dataset_name + (f" [{s.dataset_config}]" if s.dataset_config else "")
        template = t.chat_template
        if template is None:
            template = t.chat_template_path or "the tokenizer's own"
        elif not _is_template_path(template):
            template = f"inline ({len(template)} chars)"
        if t.bf16:
            precision = "bf16 mixed precision"
        elif t.fp16:
            precision = "fp16 mixed precision"
        else:
            precision = "fp32"
        precision += f", weights loaded as {m.dtype}" + (", on CPU" if t.use_cpu else "")
        warmup = t.warmup_steps
        warmup_text = f"{warmup:g} of the steps" if 0 < warmup < 1 else f"{int(warmup)} steps"
        schedule = f"{t.learning_rate:g}, {_plain(t.lr_scheduler_type)}"
        if t.lr_scheduler_kwargs:
            schedule += f" {t.lr_scheduler_kwargs}"
        schedule += f", warmup {warmup_text}"
        length = f"epochs: {t.num_train_epochs:g}" if t.max_steps <= 0 else f"max_steps: {t.max_steps}"
        rows = [
            ("model", m.model_name_or_path, "model_name_or_path"),
            ("data", data, "dataset_name / dataset_mixture"),
            ("chat template", template, "chat_template"),
            ("end-of-turn (EOS) token", t.eos_token or "the tokenizer's own", "eos_token"),
            ("max length (tokens)", t.max_length, "max_length"),
            ("packing", bool(t.packing), "packing"),
            ("per-device batch", t.per_device_train_batch_size, "per_device_train_batch_size"),
            ("gradient accumulation", t.gradient_accumulation_steps, "gradient_accumulation_steps"),
            ("processes", self.num_processes, "num_processes"),
            ("global batch (sequences/step)", self.global_batch_size(), "processes x batch x accumulation"),
            ("learning rate, schedule", schedule, "learning_rate, lr_scheduler_type, warmup_steps"),
            ("length of training", length, "num_train_epochs / max_steps"),
            ("precision", precision, "bf16 / fp16, dtype, use_cpu"),
            ("attention", m.attn_implementation or "transformers' default", "attn_implementation"),
            ("gradient checkpointing", bool(t.gradient_checkpointing), "gradient_checkpointing"),
            ("rows over max_length", p.overlong_policy, "overlong_policy"),
            (
                "decontamination",
                (
                    f"{'remove' if p.decontaminate else 'report'} "
                    + (
                        f"{p.decontamination_ngram}-gram overlap"
                        if p.decontamination_ngram
                        else "whole problems"
                    )
                    + " found in "
                    + ", ".join(p.decontamination_against)
                )
                if p.decontamination_against
                else "not checked",
                "decontaminate, decontamination_against",
            ),
            ("accelerate config", p.accelerate_config, "accelerate_config"),
            ("run folder", str(self.run_dir), "run_name"),
            (
                "trainer output",
                t.output_dir
                if t.output_dir == str(self.checkpoints_dir)
                else f"{self.checkpoints_dir} (the recipe's output_dir {t.output_dir!r} applies outside the pipeline)",
                "output_dir",
            ),
            ("reporting", ", ".join(t.report_to) or "none", "report_to"),
        ]
        return pd.DataFrame(rows, columns=["what", "value", "recipe key"]).set_index("what")


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``["--learning_rate", "1e-4", "--report_to=none", "--bf16"]`` -> ``{"learning_rate": "1e-4", ...}``.

    Values are read as YAML scalars (``1e-4`` stays a string until the loader coerces it for a float field;
    ``[a, b]`` is a list); a flag followed by another flag, or last, is ``true``. Dashes in names become
    underscores. ``--config`` is returned like any other key: the caller pops it.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) < 3:
            raise RecipeError(
                f"Command-line override {token!r} is not a `--key value` pair. Fix: write --key value or "
                "--key=value, e.g. --learning_rate 1e-4",
                key=token,
                value=token,
                fix="--key value",
            )
        name, eq, raw = token[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                raw = argv[i + 1]
                i += 1
            else:
                raw = "true"
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out[name.replace("-", "_")] = value
        i += 1
    return out


def _read_source(source: str | os.PathLike | dict) -> tuple[dict[str, Any], Path | None, str]:
    if isinstance(source, dict):
        return copy.deepcopy(source), None, ""
    text_source = str(source)
    path = None
    if not text_source.endswith((".yaml", ".yml")) and "/" not in text_source and os.sep not in text_source:
        candidate = paths.PARAMETERS_DIR / f"{text_source}.yaml"
        path = candidate if candidate.is_file() else None
    if path is None:
        path = local_path(text_source)
    if path is None or not path.is_file():
        raise _error(
            "config",
            text_source,
            "is not a recipe file (looked in the working directory and the repository root)",
            f"pass a path to a YAML recipe, or a profile name: {', '.join(available_profiles())}",
        )
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(
            "config", str(path), f"is not valid YAML ({exc})", "fix the YAML syntax at the line shown"
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _error(
            "config", str(path), "is not a YAML mapping of `key: value` lines", "write one key per line"
        )
    header = []
    for line in text.splitlines():
        if line.startswith(("# Resolved and validated", "# note:")):
            continue  # written by save_recipe; it writes them again
        if line.startswith("#"):
            header.append(line)
        elif line.strip() or header:
            break
    return raw, path.resolve(), "\n".join(header)


def _rename(raw: dict[str, Any], notes: list[str], where: str, origin: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise _error(str(key), value, "is not a key name", "write keys as plain names", where)
        if key in DROPPED_KEYS:
            notes.append(f"{origin}`{key}: {_short(value)}` dropped: {DROPPED_KEYS[key]}.")
            continue
        if key in RENAMED_KEYS:
            new = RENAMED_KEYS[key]
            if new in raw:
                raise _error(
                    key,
                    value,
                    f"is the old name of `{new}`, which is also given "
                    f"({'(hidden)' if new in _SECRET_FIELDS else repr(raw[new])})",
                    f"keep only `{new}`",
                    where,
                )
            if key == "warmup_ratio":
                ratio = _coerce_number(value)
                if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
                    raise _error(
                        key,
                        value,
                        "must be a fraction in [0, 1) of the training steps",
                        "write warmup_ratio: 0.03, or warmup_steps: <number of steps>",
                        where,
                    )
                value = ratio
                notes.append(
                    f"{origin}`warmup_ratio: {value}` read as `warmup_steps: {value}` (transformers 5 removed "
                    "warmup_ratio; a warmup_steps below 1 is a fraction of the training steps)."
                )
            else:
                notes.append(f"{origin}`{key}` read as `{new}` (renamed upstream, same meaning).")
            out[new] = value
            continue
        out[key] = value
    return out


def _resolve_sections(raw: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    kwargs: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for key, value in raw.items():
        owners = [section for section in _SECTIONS if key in _FIELDS[section]]
        if not owners:
            raise _error(
                key,
                value,
                f"is not a recipe key{_did_you_mean(key, _KNOWN_KEYS)}",
                "use a field of trl's ModelConfig, ScriptArguments, SFTConfig (with open-r1's extras) or the "
                f"pipeline keys {', '.join(_FIELDS['pipeline'])}; remove the line if it is not needed",
                where,
            )
        for section in owners:
            kwargs[section][key] = _check_value(section, key, value, where)
    return kwargs


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_required(kwargs: dict[str, dict[str, Any]], where: str) -> None:
    model, script, training, pipeline = (kwargs[s] for s in ("model", "script", "training", "pipeline"))
    if not model.get("model_name_or_path"):
        raise _error(
            "model_name_or_path",
            model.get("model_name_or_path"),
            "is missing: the recipe names no model to train",
            "add model_name_or_path: <Hub id or local model folder>, e.g. cache/models/SmolLM2-135M-Instruct",
            where,
        )
    run_name = training.get("run_name")
    if not run_name or not _RUN_NAME.match(run_name):
        raise _error(
            "run_name",
            run_name,
            "is missing or not a folder name: it names the run folder runs/<run_name>/",
            "add run_name: <letters, digits, . _ ->, e.g. run_name: my_first_run (without it the loader takes "
            "the basename of hub_model_id or output_dir, else the recipe's file name)",
            where,
        )
    has_name, has_mixture = script.get("dataset_name") is not None, script.get("dataset_mixture") is not None
    if has_name == has_mixture:
        raise _error(
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
            raise _error(key, value, "must be at least 1", f"write {key}: 1 or more", where)
    if training.get("learning_rate", 1.0) <= 0:
        raise _error(
            "learning_rate", training["learning_rate"], "must be positive", "write e.g. 4.0e-05", where
        )
    max_length = training.get("max_length", 1)
    if max_length is not None and max_length < 1:
        raise _error(
            "max_length",
            max_length,
            "must be a positive number of tokens",
            "write e.g. max_length: 4096",
            where,
        )
    if training.get("fp16") and training.get("bf16"):
        raise _error(
            "fp16", True, "is set together with `bf16: true`", "keep one of them (bf16 on recent GPUs)", where
        )
    if training.get("chat_template") is not None and training.get("chat_template_path") is not None:
        raise _error(
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
        raise _error(
            "num_processes",
            pipeline["num_processes"],
            "must be at least 1",
            "write num_processes: 1 or more",
            where,
        )
    for asset in pipeline.get("assets", []):
        if asset not in ASSET_NAMES:
            raise _error(
                "assets",
                asset,
                f"is not an embedded asset{_did_you_mean(asset, ASSET_NAMES)}",
                f"use names among {', '.join(ASSET_NAMES)}",
                where,
            )
    _check_data_preparation(pipeline, where)


def _check_data_preparation(pipeline: dict[str, Any], where: str) -> None:
    """The pipeline's data keys: n-gram size, and something to decontaminate against when asked to."""
    ngram = pipeline.get("decontamination_ngram", 8)
    if ngram < 0:
        raise _error(
            "decontamination_ngram",
            ngram,
            "must be a number of words",
            "write decontamination_ngram: 8 (open-r1's n-gram size), or 0 to match whole evaluation problems only",
            where,
        )
    if pipeline.get("decontaminate") and not pipeline.get("decontamination_against"):
        raise _error(
            "decontamination_against",
            pipeline.get("decontamination_against", []),
            "is empty while `decontaminate: true`: there are no evaluation problems to check the training rows "
            "against",
            "list the evaluation files or folders, e.g. decontamination_against: "
            "[cache/data/gsm_symbolic/test_template.jsonl], or set decontaminate: false",
            where,
        )


def gpu_count() -> int:
    """CUDA devices this process sees (0 without CUDA); what :func:`default_accelerate_config` reads."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_accelerate_config(gpus: int, num_processes: int | None = None) -> tuple[str, str]:
    """The accelerate config (a name in ``parameters/accelerate/``) that ``gpus`` GPUs imply, and why, in words.

    open-r1 launches its SFT recipes with ZeRO-3 on a node of several GPUs; one GPU needs no sharding; without a GPU
    the CPU configs apply, one process (``cpu_1proc``) unless the recipe asks for more (``cpu_2proc``).
    """
    if gpus >= 2:
        return "zero3", f"{gpus} GPUs here: DeepSpeed ZeRO-3, as open-r1 launches its SFT recipes"
    if gpus == 1:
        return "single_gpu", "one GPU here: one process, no sharding"
    if num_processes is not None and num_processes >= 2:
        return "cpu_2proc", f"no GPU here and num_processes: {num_processes}: CPU ranks (gloo)"
    return "cpu_1proc", "no GPU here: one CPU process using every core"


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _default_run_name(data: dict[str, Any], path: Path | None) -> tuple[str, str] | None:
    """open-r1 recipes have no run_name: take the basename of hub_model_id, else of output_dir, else the file
    name, as a folder name. None when the recipe offers none of them (a dict without either key)."""
    for key in ("hub_model_id", "output_dir"):
        value = data.get(key)
        if isinstance(value, str) and value.strip().strip("/"):
            base = value.strip().rstrip("/").rsplit("/", 1)[-1]
            name = _UNSAFE_NAME_CHARS.sub("_", base).lstrip("._-")
            if name:
                return name, f"from {key} {value!r}"
    if path is not None:
        name = _UNSAFE_NAME_CHARS.sub("_", path.stem).lstrip("._-")
        if name:
            return name, f"from the file name {path.name!r}"
    return None


def _resolve_device(data: dict[str, Any], notes: list[str], choice: Any = None) -> None:
    """``device: auto``: train where the hardware is best, with a note saying what changed and why. On the CPU the
    recipe stays as written (its header names CPU settings); on a GPU the CPU-only keys give way."""
    if str(data.get("device", "given")).lower() != "auto":
        return
    from open_r1_nb.hardware import select_device

    choice = choice or select_device()
    if choice.device == "cpu":
        # The precision note, if any, comes from the CPU's own check (bf16 units or not).
        notes.append(
            "device auto -> cpu (no CUDA GPU or Apple MPS here): the recipe's CPU settings as written."
        )
        return
    changes = {
        "use_cpu": False,
        "bf16": choice.bf16,
        "fp16": choice.fp16,
        "accelerate_config": choice.accelerate_config,
        "num_processes": 1,
        "eval_backend": choice.eval_backend,
    }
    if data.get("freeze_layers"):
        # Frozen layers size a CPU run; a GPU trains every weight in the same time.
        changes["freeze_layers"] = 0
    changed = {k: v for k, v in changes.items() if data.get(k) != v}
    data.update(changes)
    listed = ", ".join(f"{k}: {v}" for k, v in changed.items()) or "nothing to change"
    notes.append(f"device auto -> {choice.device} ({choice.reason}): {listed}.")


def _apply_cpu_fp32_overrides(data: dict[str, Any], notes: list[str], where: str) -> None:
    """``cpu_fp32_overrides``: where a CPU recipe asks for bf16 and this CPU has no bf16 units (so it will train
    in fp32), the listed keys replace the recipe's, and a note says which."""
    overrides = data.get("cpu_fp32_overrides")
    if overrides is None:
        return
    if not isinstance(overrides, dict) or "cpu_fp32_overrides" in overrides:
        raise _error(
            "cpu_fp32_overrides",
            overrides,
            "is not a mapping of recipe keys to values",
            "write it as a mapping, e.g. cpu_fp32_overrides: {freeze_layers: 15}",
            where,
        )
    # Only real booleans count, as when the keys are checked (a string "true" is refused there).
    if not (data.get("bf16") is True and data.get("use_cpu") is True) or cpu_supports_bf16():
        return
    renamed = _rename(dict(overrides), notes, where, "cpu_fp32_overrides ")
    changed = {k: v for k, v in renamed.items() if data.get(k) != v}
    data.update(renamed)
    listed = ", ".join(f"{k}: {v}" for k, v in changed.items()) or "nothing to change"
    notes.append(f"no bf16 units on this CPU, so training runs in fp32: cpu_fp32_overrides apply ({listed}).")


def _fill_launch_defaults(
    data: dict[str, Any], path: Path | None, notes: list[str], gpus: int | None
) -> None:
    """Give ``run_name`` and ``accelerate_config`` their defaults when the recipe leaves them out, with a note
    each, so that open-r1's recipes (which have neither) load as they are."""
    if data.get("run_name") in (None, ""):
        found = _default_run_name(data, path)
        if found is not None:
            data["run_name"], origin = found
            notes.append(
                f"`run_name` not set: {data['run_name']!r}, {origin} (it names the run folder "
                f"runs/{data['run_name']}/)."
            )
    if data.get("accelerate_config") in (None, ""):
        gpus = gpu_count() if gpus is None else gpus
        processes = _coerce_number(data.get("num_processes"))
        name, why = default_accelerate_config(gpus, processes if isinstance(processes, int) else None)
        data["accelerate_config"] = name
        notes.append(
            f"`accelerate_config` not set: {name!r} ({why}); set accelerate_config to choose another "
            f"({', '.join(available_accelerate_configs())})."
        )
        if (
            name == "zero3"
            and processes is None
            and gpus != int(read_accelerate_config(name)["num_processes"])
        ):
            # zero3.yaml is sized for 8 GPUs; a node with another number launches one process per GPU.
            data["num_processes"] = gpus
            notes.append(f"`num_processes` not set: {gpus}, one process per GPU.")


def _check_launch(kwargs: dict[str, dict[str, Any]], notes: list[str], where: str) -> None:
    pipeline, training = kwargs["pipeline"], kwargs["training"]
    name = pipeline.get("accelerate_config")
    if not name:
        raise _error(
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
        raise _error(
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
        raise _error(
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
            raise _error(
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
            raise _error(
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
            raise _error(
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
        raise _error(
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
        raise _error(
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
            raise _error(
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
        raise _error(
            "freeze_layers", n, "is negative", "use 0 (train every weight) or a number of layers", where
        )
    if getattr(recipe.model, "use_peft", False):
        raise _error(
            "freeze_layers",
            n,
            "is set together with use_peft: LoRA already keeps every base weight frozen",
            "remove freeze_layers, or set use_peft: false",
            where,
        )
    layers = local_model_depth(recipe.model.model_name_or_path)  # None for a Hub id: checked when it loads
    if layers is not None and n >= layers:
        raise _error(
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
        from open_r1_nb.model import CHATML_TEMPLATE

        template = CHATML_TEMPLATE  # what prepare_tokenizer gives a tokenizer without a template
    if template is not None:
        tokenizer.chat_template = template
    if not _has_generation_markers(tokenizer.chat_template):
        try:
            patched = get_training_chat_template(tokenizer)
        except ValueError:
            raise _error(
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
            raise _error(
                key,
                value,
                "looks like a local dataset folder but does not exist (looked in the working directory, the "
                "repository root and the asset cache)",
                _asset_fix(recipe, "smoke_data"),
                where,
            )
        return  # a Hub id
    from open_r1_nb.data import split_names

    names = split_names(split)  # the expression was checked when the recipe was read
    if found.is_file():
        if names != ["train"]:
            raise _error(
                key, value, f"is a single file, which holds one split, `train`; the recipe reads {split!r}",
                "read it as train (or a slice, e.g. train[:100]), or use a folder of <split>.jsonl files", where,
            )  # fmt: skip
        return
    if (found / "dataset_dict.json").is_file() or (found / "dataset_info.json").is_file():
        return  # written by Dataset(Dict).save_to_disk
    for name in names:
        if not any(found.glob(f"{name}.*")) and not (found / name).is_dir():
            present = sorted(p.name for p in found.iterdir())[:10]
            raise _error(
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
    if t.bf16 and t.use_cpu and not cpu_supports_bf16():
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


def _older_gpu_hint(message: str) -> str:
    """What to do on a GPU that transformers refuses bf16 on: fp16 mixed precision, which those GPUs have."""
    if "support bf16" not in message:
        return ""
    return (
        " On a GPU without bf16 (older than Ampere: V100, T4), train in fp16 instead: bf16: false and fp16: true "
        "(scripts/run_pipeline.py … --set bf16=false --set fp16=true)."
    )


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX512-BF16 or AMX on x86; bf16 on Arm). False
    while an AVX2-only CPU is emulated (``OPEN_R1_NB_CPU_ISA=avx2``), whatever the CPU underneath has."""
    import torch

    from open_r1_nb.hardware import CPU_ISA_ENV

    if os.environ.get(CPU_ISA_ENV, "").strip().lower() == "avx2":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_recipe(
    source: str | os.PathLike | dict,
    overrides: dict[str, Any] | None = None,
    check_files: bool = True,
    *,
    setup_devices: bool = False,
    gpu_count: int | None = None,
    device_choice: Any = None,
) -> Recipe:
    """Read, map, check and build a recipe.

    ``source`` is a YAML path, a profile name (``"smoke"`` -> ``parameters/smoke.yaml``) or a dict; ``overrides``
    (e.g. from :func:`parse_overrides`) replace keys after the file is read. With ``check_files`` a local model
    folder must exist and its tokenizer load and contain ``eos_token``; local chat templates and dataset folders
    must exist. Hub ids are not checked. ``setup_devices=True`` (the training process) runs
    ``TrainingArguments``' hardware checks and device setup; the default defers them (see the module docstring).

    open-r1's recipes name neither a run nor a launcher: a missing ``run_name`` is taken from ``hub_model_id``,
    ``output_dir`` or the file name, and a missing ``accelerate_config`` from the hardware
    (:func:`default_accelerate_config`; ``gpu_count`` stands in for the GPUs this machine has), each with a note.
    ``device: auto`` picks CUDA, MPS or the CPU (``device_choice``, an ``open_r1_nb.hardware.DeviceChoice``, stands
    in for the detection).
    """
    raw, path, header = _read_source(source)
    where = f"recipe {path}" if path else "recipe"
    notes: list[str] = []
    data = _rename(raw, notes, where, "")
    before: dict[str, Any] = {}
    if overrides:
        changed = _rename(dict(overrides), notes, where, "override ")
        for key, value in changed.items():
            before[key] = data.get(key, "(not set)")
            data[key] = value
    _resolve_device(data, notes, device_choice)
    _apply_cpu_fp32_overrides(data, notes, where)
    _fill_launch_defaults(data, path, notes, gpu_count)
    kwargs = _resolve_sections(data, where)
    for key, old in before.items():
        new = next(kw[key] for kw in kwargs.values() if key in kw)
        if key in _SECRET_FIELDS:  # notes are printed and written into recipe.yaml's header
            old, new = ("(hidden)" if v not in (None, "(not set)") else v for v in (old, new))
        if old != new:
            notes.append(f"override `{key}`: {_short(old)} -> {_short(new)}.")
    _check_required(kwargs, where)
    _check_launch(kwargs, notes, where)

    try:
        model = ModelConfig(**kwargs["model"])
        script = ScriptArguments(**kwargs["script"])
        pipeline = PipelineArguments(**kwargs["pipeline"])
        with _device_setup_deferred(not setup_devices), _quiet():
            training = SFTConfig(**kwargs["training"])
    except RecipeError as exc:
        raise RecipeError(f"{where}: {exc}", exc.key, exc.value, exc.fix) from None
    except (ValueError, TypeError) as exc:
        message = str(exc)
        key = next((k for k in sorted(data, key=len, reverse=True) if k in message), None)
        raise RecipeError(
            f"{where}: transformers/trl refused the recipe{f' (key `{key}`)' if key else ''}: {message}. Fix: change "
            "the key the message names"
            + (" (the hardware checks ran because setup_devices=True)" if setup_devices else "")
            + ("." + _older_gpu_hint(message) if _older_gpu_hint(message) else ""),
            key=key,
            value=data.get(key) if key else None,
            fix="change the key the message names",
        ) from exc

    recipe = Recipe(
        script=script,
        training=training,
        model=model,
        pipeline=pipeline,
        source=path,
        notes=notes,
        given_keys=list(data),
        header=header,
    )
    _check_benchmarks(recipe, where)
    if check_files:
        _check_files(recipe, notes, where)
    _runtime_notes(recipe, notes)
    for note in notes:
        logger.info("recipe: %s", note)
    return recipe


def _check_benchmarks(recipe: Recipe, where: str) -> None:
    from open_r1_nb.evaluate.benchmarks import BENCHMARKS

    for name in recipe.training.benchmarks or []:
        if name not in BENCHMARKS:
            raise _error(
                "benchmarks",
                name,
                f"is not a known benchmark{_did_you_mean(name, BENCHMARKS)}",
                f"use names among {sorted(BENCHMARKS)}",
                where,
            )
    for key in ("eval_n", "eval_limit", "eval_max_new_tokens", "eval_top_k", "learning_curve"):
        if getattr(recipe.pipeline, key) < 0:
            raise _error(
                key, getattr(recipe.pipeline, key), "is negative", "use 0 (the default) or more", where
            )
    _check_vllm(recipe.pipeline, where)
    if recipe.pipeline.eval_batch_size < 1:
        raise _error(
            "eval_batch_size",
            recipe.pipeline.eval_batch_size,
            "is not positive",
            "use 1 or more (default 32)",
            where,
        )
    if recipe.pipeline.learning_curve:
        t = recipe.training
        if not t.benchmarks:
            raise _error(
                "learning_curve", recipe.pipeline.learning_curve, "needs a benchmark to evaluate the checkpoints on",
                "list one under `benchmarks` (the first is used)", where,
            )  # fmt: skip
        if str(getattr(t.save_strategy, "value", t.save_strategy)) == "no" or t.save_total_limit:
            raise _error(
                "learning_curve", recipe.pipeline.learning_curve,
                "needs every checkpoint kept, but the recipe saves none or deletes old ones "
                f"(save_strategy {getattr(t.save_strategy, 'value', t.save_strategy)}, "
                f"save_total_limit {t.save_total_limit})",
                "set save_strategy: steps, save_steps, and save_total_limit: null", where,
            )  # fmt: skip


def _check_vllm(p: PipelineArguments, where: str) -> None:
    util = p.vllm_gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        raise _error(
            "vllm_gpu_memory_utilization", util, "is not a share in (0, 1]", "use e.g. 0.8, or null", where
        )
    for key in ("vllm_tensor_parallel_size", "vllm_data_parallel_size", "vllm_max_model_length"):
        value = getattr(p, key)
        if value is not None and value < 1:
            raise _error(key, value, "is not positive", "use 1 or more, or null for vLLM's default", where)
    length = p.vllm_max_model_length
    if length is not None and p.eval_max_new_tokens and length <= p.eval_max_new_tokens:
        raise _error(
            "vllm_max_model_length", length,
            f"leaves no room for a prompt before eval_max_new_tokens ({p.eval_max_new_tokens}) generated tokens",
            "make it the longest prompt plus eval_max_new_tokens, or more", where,
        )  # fmt: skip


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Write the recipe as one flat YAML file (current key names) that :func:`load_recipe` reads back.

    The file opens with the source's header comment (the hardware it is sized for) and the loader's notes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = recipe.to_dict()
    lines = []
    if recipe.header:
        lines.append(recipe.header)
    lines.append(f"# Resolved and validated by open_r1_nb.config from {recipe.source or 'a dict'}.")
    lines.extend(f"# note: {note}" for note in recipe.notes)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110, default_flow_style=None)
    path.write_text("\n".join(lines) + "\n" + body)
    return path
