"""The schema: open-r1's argument dataclasses on top of trl's (``ScriptArguments``, ``SFTConfig``), this project's
``PipelineArguments``, and which dataclass owns which recipe key.

Building ``SFTConfig`` runs ``TrainingArguments.__post_init__``, which refuses bf16 on a machine without a bf16 GPU
and builds the process's device state (``PartialState``, which initialises torch.distributed under a launcher and
touches CUDA on a GPU node). Neither belongs in validation: the 7B GPU recipe must validate on a laptop, and a
notebook kernel must not hold a CUDA context while the launched trainer runs. So ``load_recipe`` defers both
by default (``setup_devices=False``); they run on the first use of the device state (``args.device``,
``args.world_size``, ...), or explicitly with ``setup_devices=True`` or :meth:`SFTConfig.setup_devices`, which the
training process should do before building its trainer.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

import trl
from transformers import TrainingArguments
from trl import ModelConfig

from open_r1_nb.config.errors import RecipeError, _older_gpu_hint, recipe_error
from open_r1_nb.config.mixture import DatasetMixtureConfig, _mixture_from_dict

#: Embedded assets a profile may list under ``assets`` (built offline by the assets step).
ASSET_NAMES = ("smollm2", "tiny_model", "gsm_symbolic", "arithmetic", "smoke_data")


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
            raise recipe_error(
                "dataset_name",
                None,
                "is missing and so is `dataset_mixture`",
                "give exactly one: dataset_name: <hub id or local folder>, or a dataset_mixture",
            )
        if self.dataset_name is not None and self.dataset_mixture is not None:
            raise recipe_error(
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


# Which dataclass owns which key.


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


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
