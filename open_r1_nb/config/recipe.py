"""The :class:`Recipe`: a validated recipe's four argument groups, where it came from and the loader's notes; its
flat dict (``to_dict``) and file (:func:`save_recipe`), which ``load_recipe`` reads back."""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig

from open_r1_nb import paths
from open_r1_nb.config.files import _is_template_path, accelerate_config_path, resolve_chat_template
from open_r1_nb.config.keys import _RUNTIME_FIELDS, _SECRET_FIELDS
from open_r1_nb.config.mixture import DatasetMixtureConfig, _mixture_to_dict
from open_r1_nb.config.schema import (
    _FIELDS,
    PipelineArguments,
    ScriptArguments,
    SFTConfig,
    _device_setup_deferred,
    _quiet,
)

if typing.TYPE_CHECKING:
    import pandas


def plain_value(value: Any) -> Any:
    """A YAML-friendly copy of a field value."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, DatasetMixtureConfig):
        return _mixture_to_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain_value(v) for v in value]
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
            out[name] = plain_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = plain_value(f.default_factory())
    return out


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
                given = {k: plain_value(getattr(obj, k)) for k in self.given_keys if k in _FIELDS[section]}
                with _device_setup_deferred(True), _quiet():
                    reference = SFTConfig(**given)
                defaults = {name: plain_value(getattr(reference, name)) for name in _FIELDS[section]}
            else:
                defaults = _defaults(section)
            for name in _FIELDS[section]:
                if name in _SECRET_FIELDS or name in out:
                    continue
                value = plain_value(getattr(obj, name))
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
        schedule = f"{t.learning_rate:g}, {plain_value(t.lr_scheduler_type)}"
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
