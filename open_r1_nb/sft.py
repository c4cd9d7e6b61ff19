"""Step 4: supervised fine-tuning on reasoning traces, the entry point that ``accelerate launch`` runs.

    accelerate launch --config_file parameters/accelerate/cpu_2proc.yaml --num_processes 2 \\
        -m open_r1_nb.sft --config runs/smoke/recipe.yaml [--learning_rate 1e-4 ...]

The same command runs from notebook 04, a terminal or a Slurm job. It follows open-r1's ``sft.py``: seed,
logging, resume from the last checkpoint, dataset, tokenizer, model, ``SFTTrainer``, train, save, model card,
optional push. What it adds: only *complete* checkpoints are resumed from, the trainer logs real (non-padding)
tokens per second and the padding share, and the saved generation config stops at the tokenizer's EOS.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

logger = logging.getLogger("open_r1_nb.sft")

COMPLETE_MARKER = "open_r1_nb_complete"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Sampling defaults written into the saved generation config: the DeepSeek-R1 evaluation protocol.
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint_is_complete(path: Path) -> bool:
    """A checkpoint is complete when our marker is there (written after every rank finished saving)."""
    return (path / COMPLETE_MARKER).exists()


def find_checkpoints(output_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """(complete, partial) checkpoints under ``output_dir``, each sorted by step."""
    root = Path(output_dir)
    if not root.is_dir():
        return [], []
    found = sorted(
        (p for p in root.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)),
        key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)),
    )
    complete = [p for p in found if checkpoint_is_complete(p)]
    partial = [p for p in found if not checkpoint_is_complete(p)]
    return complete, partial


def last_complete_checkpoint(output_dir: str | Path, quarantine: bool = False) -> Path | None:
    """The newest complete checkpoint; partial ones newer than it are reported and, if asked, moved aside.

    Moving them aside (renamed ``*.partial``) keeps the trainer's own checkpoint rotation from choosing them.
    """
    complete, partial = find_checkpoints(output_dir)
    last = complete[-1] if complete else None
    for p in partial:
        logger.warning("checkpoint %s is incomplete (interrupted while saving): it will not be used", p)
        if quarantine:
            target = p.with_name(f"{p.name}.partial-{int(time.time())}")
            p.rename(target)
    return last


class CheckpointCompleteCallback(TrainerCallback):
    """Marks a checkpoint complete once every process has finished writing it."""

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / COMPLETE_MARKER).write_text(json.dumps({"global_step": state.global_step}))
        return control


# -------------------------------------------------------------------------------------------- trainer


class ThroughputSFTTrainer(SFTTrainer):
    """``SFTTrainer`` that also logs real (non-padding) tokens per second and the share of padding.

    On a CPU it computes the loss with one LM-head matmul over the labelled positions instead of TRL's fused, tiled
    LM head, which exists to save GPU memory and has no CPU kernel: measured on 2 cores with SmolLM2-135M, a step
    took 1.5x as long with it (docs/performance.md). The loss is the same token-averaged cross-entropy, and the
    metrics TRL logs (entropy, mean_token_accuracy, num_tokens) are kept.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._token_counts = torch.zeros(2, dtype=torch.float64)  # real, padded-total; this process only
        self._train_start: float | None = None
        self._labelled_head_loss = self.args.device.type == "cpu"
        if self._labelled_head_loss:
            logger.info(
                "loss: one LM-head matmul over the labelled positions (CPU); TRL's fused LM head is for GPU memory"
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (self._labelled_head_loss and model.training and not return_outputs and "labels" in inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The model's own causal-LM loss (shifted labels, -100 ignored, summed and divided by num_items_in_batch,
        # the label count over gradient accumulation and ranks, in fp32), with the LM head applied only where a
        # label is: the question's and the padding's logits would be computed, kept for backward and discarded.
        # The hook cuts the LM head's input to the labelled positions; the forward still runs through the
        # (DDP-)wrapped model, so gradients are synchronised as usual.
        inputs = dict(inputs)
        labels = inputs.pop("labels")[:, 1:]
        mask = labels != -100
        targets = labels[mask]
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        hook = head.register_forward_pre_hook(lambda _module, args: (args[0][:, :-1][mask],))
        try:
            picked = model(**inputs, use_cache=False).logits  # (labelled positions, vocabulary)
        finally:
            hook.remove()
        loss = torch.nn.functional.cross_entropy(
            picked.float(), targets, reduction="sum" if num_items_in_batch is not None else "mean"
        )
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks, as in TRL
        with torch.no_grad():
            # Entropy over the whole vocabulary on a spread subsample of at most 256 positions: a full pass over
            # (labelled tokens x 49k) fp32 values costs ~5% of a CPU step for a logged statistic.
            every = max(1, picked.shape[0] // 256)
            log_probs = picked[::every].float().log_softmax(-1)
            sampled = log_probs.shape[0]
            stats = torch.stack(
                [
                    mask.sum().to(torch.float64),
                    -(log_probs.exp() * log_probs).sum().to(torch.float64) * (mask.sum() / max(sampled, 1)),
                    (picked.argmax(-1) == targets).sum().to(torch.float64),
                    inputs["attention_mask"].sum().to(torch.float64)
                    if "attention_mask" in inputs
                    else torch.tensor(float(inputs["input_ids"].numel()), dtype=torch.float64),
                ]
            )
            valid, entropy, correct, tokens = (
                self.accelerator.gather_for_metrics(stats.reshape(1, -1)).sum(0).tolist()
            )
        metrics = self._metrics["train"]
        metrics["entropy"].append(entropy / valid if valid else 0.0)
        metrics["mean_token_accuracy"].append(correct / valid if valid else 0.0)
        self._total_train_tokens += int(tokens)
        metrics["num_tokens"] = [self._total_train_tokens]
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._train_start is None:
            self._train_start = time.perf_counter()
        ids = inputs.get("input_ids")
        if ids is not None:
            mask = inputs.get("attention_mask")
            real = float(mask.sum()) if mask is not None else float(ids.numel())  # padding-free: no padding
            self._token_counts += torch.tensor([real, float(ids.numel())], dtype=torch.float64)
        return super().training_step(model, inputs, num_items_in_batch)

    def _load_optimizer_and_scheduler(self, checkpoint):
        # accelerate names a CPU rank's device "cpu:0", and the Trainer passes it to torch.load as map_location
        # when resuming with several processes; torch cannot restore storages to "cpu:0" (it raises "don't know
        # how to restore data location"). Plain "cpu" is the same memory.
        device = self.args.device
        if device.type != "cpu" or device.index is None:
            return super()._load_optimizer_and_scheduler(checkpoint)
        original = torch.load

        def load_on_cpu(*args, **kwargs):
            if kwargs.get("map_location") is not None:
                kwargs["map_location"] = "cpu"
            return original(*args, **kwargs)

        torch.load = load_on_cpu
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            torch.load = original

    def _save_checkpoint(self, model, trial):
        # A full disk must not cost the last complete checkpoint: the free space is checked before the new one is
        # written, and a write that fails for want of space says how much is needed (see ``DiskFullError``).
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        check_space_for_checkpoint(folder, self.model, self.args)
        try:
            return super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as err:
            if not is_disk_full(err):
                raise
            raise DiskFullError(disk_full_message(folder, self.model, self.args, err)) from err

    # Saving: the Trainer pickles its arguments into every checkpoint and the model folder (training_args.bin), and
    # a hub_token given on the command line would be written there in clear; it is lent to HF_TOKEN instead (where
    # huggingface_hub reads it for an upload) while a save or a checkpoint push runs.
    def _save(self, output_dir=None, state_dict=None):
        with _token_out_of_arguments(self.args):
            return super()._save(output_dir, state_dict)

    def _push_from_checkpoint(self, checkpoint_folder):
        with _token_out_of_arguments(self.args):
            return super()._push_from_checkpoint(checkpoint_folder)

    def log(self, logs, *args, **kwargs):
        if self._train_start is not None and "loss" in logs:
            counts = self.accelerator.reduce(
                self._token_counts.to(self.accelerator.device), reduction="sum"
            ).cpu()
            real, total = float(counts[0]), float(counts[1])
            elapsed = max(time.perf_counter() - self._train_start, 1e-9)
            logs["real_tokens"] = int(real)
            logs["real_tokens_per_second"] = round(real / elapsed, 2)
            logs["padding_fraction"] = round(1 - real / total, 4) if total else 0.0
        super().log(logs, *args, **kwargs)


# ---------------------------------------------------------------------------------------------- saving


class DiskFullError(OSError):
    """A checkpoint or the model does not fit on the disk; the message says how much space it needs."""


# How a full disk shows: OSError ENOSPC from Python, safetensors' Rust error, torch's zip writer.
_DISK_FULL = re.compile(r"No space left on device|os error 28|StorageFull|ENOSPC", re.IGNORECASE)


def is_disk_full(err: BaseException) -> bool:
    return getattr(err, "errno", None) == errno.ENOSPC or bool(_DISK_FULL.search(str(err)))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def checkpoint_bytes(output_dir: Path, model, args) -> tuple[int, str]:
    """The space the next checkpoint takes, and how that is known: the size of the last complete checkpoint,
    else the model's weights plus AdamW's two fp32 moments per parameter (unless save_only_model)."""
    complete, _ = find_checkpoints(output_dir)
    if complete:
        return _size(complete[-1]), f"the size of {complete[-1].name}"
    params = list(model.parameters()) if model is not None else []
    weights = sum(p.numel() * p.element_size() for p in params)
    optimizer = 0 if args.save_only_model else sum(2 * 4 * p.numel() for p in params if p.requires_grad)
    return weights + optimizer, "the model's weights and optimizer state"


def _free_bytes(path: Path) -> int:
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free


def disk_full_message(folder: Path, model, args, err: BaseException | None = None) -> str:
    needed, how = checkpoint_bytes(folder.parent, model, args)
    free = _free_bytes(folder.parent)
    complete, _ = find_checkpoints(folder.parent)
    last = (
        f"The last complete checkpoint, {complete[-1]}, is intact: training resumes from it when launched again."
        if complete
        else "No complete checkpoint was saved yet."
    )
    written = (
        f" The incomplete {folder.name} ({_gib(_size(folder))} written) is skipped on resume; delete it to free "
        "its space."
        if folder.is_dir()
        else ""
    )
    cause = f" ({type(err).__name__}: {err})" if err is not None else ""
    room = (
        f"free at least {_gib((needed * 1.1) - free)} there"
        if free < needed * 1.1
        else "make sure it stays free (something else filled the disk while this was saved)"
    )
    return (
        f"Not enough disk space for {folder.name}{cause}: it needs about {_gib(needed)} ({how}) and the disk "
        f"holding {folder.parent} has {_gib(free)} free. {last}{written} Fix: {room}, keep fewer checkpoints "
        "(save_total_limit), or give the run a bigger disk."
    )


def check_space_for_checkpoint(folder: Path, model, args) -> None:
    """Raise DiskFullError before ``folder`` is written when its disk lacks the space (with 10% to spare).

    Every rank decides as rank 0 does (its answer is broadcast): ranks that disagreed would leave one of them
    waiting in the save's collectives for one that has stopped.
    """
    needed, _ = checkpoint_bytes(folder.parent, model, args)
    short = _free_bytes(folder.parent) < needed * 1.1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        decision = [short]
        torch.distributed.broadcast_object_list(decision, src=0)
        short = decision[0]
    if short:
        raise DiskFullError(disk_full_message(folder, model, args))


@contextlib.contextmanager
def _token_out_of_arguments(args):
    """``args.hub_token`` set to None, and HF_TOKEN to the token, for the time of the block."""
    token = getattr(args, "hub_token", None)
    if not token:
        yield
        return
    saved = os.environ.get("HF_TOKEN")
    args.hub_token, os.environ["HF_TOKEN"] = None, token
    try:
        yield
    finally:
        args.hub_token = token
        if saved is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = saved


def final_model_dir(output_dir: str | Path) -> Path:
    """Pipeline runs write checkpoints to ``runs/<run>/checkpoints`` and the model to ``runs/<run>/model``;
    any other ``output_dir`` holds the final model itself, as upstream."""
    out = Path(output_dir)
    return out.parent / "model" if out.name == "checkpoints" else out


def finalize_generation_config(model, tokenizer) -> None:
    """EOS aligned with the tokenizer, pad set, the cache back on and R1's sampling defaults."""
    gen = model.generation_config
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    for key, value in SAMPLING_DEFAULTS.items():
        setattr(gen, key, value)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = True


def dataset_references(script_args) -> list[str]:
    mixture = getattr(script_args, "dataset_mixture", None)
    if mixture is not None:
        return [entry.id for entry in mixture.datasets]
    return [script_args.dataset_name] if script_args.dataset_name else []


# ------------------------------------------------------------------------------------------------ main


def setup_logging(training_args) -> None:
    import datasets
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    # The whole package logs at INFO in the training log (the estimate after the first steps among it), on every
    # rank unless the recipe asks for less.
    logging.getLogger("open_r1_nb").setLevel(
        max(level, logging.INFO) if level != logging.WARNING else logging.INFO
    )
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    # transformers lets its records reach the root logger too when CI is set in the environment; with its own
    # handler on, every line of the trainer would then be written twice (once in each format).
    transformers.utils.logging.disable_propagation()
    # Checkpoints saved within a second of each other (short runs) make transformers doubt the filesystem's mtimes
    # and order them by step instead, which is right: a warning with nothing to act on, in the notebook's log.
    logging.getLogger("transformers.trainer_utils").addFilter(
        lambda record: "mtime may not be reliable" not in record.getMessage()
    )


def train(recipe) -> Path:
    """Run SFT for a loaded recipe; return the folder of the final model."""
    from transformers import set_seed

    from open_r1_nb.data import get_dataset, prepare_for_training, to_prompt_completion, validate_dataset
    from open_r1_nb.estimate import estimate_callback, run_folder
    from open_r1_nb.model import freeze_bottom, get_model, get_tokenizer
    from open_r1_nb.pipeline import merge_metrics

    script_args, training_args, model_args = recipe.script, recipe.training, recipe.model
    setup_logging(training_args)
    set_seed(training_args.seed)
    rank = training_args.process_index
    logger.info("rank %d of %d on %s", rank, training_args.world_size, training_args.device)

    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None:
        checkpoint = last_complete_checkpoint(
            training_args.output_dir, quarantine=training_args.process_index == 0
        )
        if checkpoint is not None:
            logger.info("resuming from the last complete checkpoint %s", checkpoint)
    training_args.resume_from_checkpoint = str(checkpoint) if checkpoint else None

    apply_optional_integrations(training_args)

    dataset = get_dataset(script_args)
    validate_dataset(dataset)
    notes: list[str] = []
    tokenizer = get_tokenizer(model_args, training_args, notes=notes)
    # Over-length rows and contamination are counted, and handled as the recipe says, never silently.
    dataset, data_notes = prepare_for_training(dataset, tokenizer, recipe)
    train_split = script_args.dataset_train_split or "train"
    if training_args.completion_only_loss and "prompt" not in dataset[train_split].column_names:
        # Upstream TRL takes completion_only_loss from prompt-completion rows only; conversations are split here
        # so the loss falls on the assistant's answer (the question is context, not a target).
        dataset = to_prompt_completion(dataset)
        data_notes.append("loss on the completion only: each conversation split into prompt and completion")
    if training_args.process_index == 0:
        for note in data_notes:
            logger.info("data: %s", note)
    model = get_model(model_args, training_args, tokenizer=tokenizer, notes=notes)
    if training_args.freeze_layers:
        notes.append(freeze_bottom(model, training_args.freeze_layers, training_args.gradient_checkpointing))
    for note in notes:
        logger.info("model/tokenizer: %s", note)

    from trl import get_peft_config

    eval_split = script_args.dataset_test_split or "test"
    trainer = ThroughputSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset[train_split],
        eval_dataset=dataset[eval_split]
        if training_args.eval_strategy != "no" and eval_split in dataset
        else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[CheckpointCompleteCallback(), *extra_callbacks(training_args, model_args)],
    )
    # After the first steps: the expected training and total time, and a warning naming the likely reason when
    # the run will pass the profile's time_budget_minutes.
    trainer.add_callback(
        estimate_callback(
            recipe,
            lambda: float(trainer._token_counts[0]),
            lambda est: merge_metrics(run_folder(training_args.output_dir), {"estimate": est.as_dict()}),
        )
    )

    from open_r1_nb.watchdog import heartbeat_callback_from_env

    # A heartbeat while training, for the launcher to name this rank if it stops responding (open_r1_nb.watchdog).
    if (heartbeat := heartbeat_callback_from_env()) is not None:
        trainer.add_callback(heartbeat)

    logger.info("*** Train ***")
    from open_r1_nb.preemption import stop_callback_from_env

    # The Slurm script's stop file (OPEN_R1_NB_STOP_FILE): save a checkpoint and exit for the requeued job.
    stop_on_request = stop_callback_from_env()
    if stop_on_request is not None:
        trainer.add_callback(stop_on_request)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if stop_on_request is not None:
        stop_on_request.raise_if_stopped(training_args.output_dir)
    metrics = result.metrics
    metrics["train_samples"] = len(dataset[train_split])
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    return save_and_push(trainer, tokenizer, script_args, metrics)


def save_and_push(trainer, tokenizer, script_args, metrics: dict) -> Path:
    """Save the final model once, with its tokenizer, card and training metrics; push it once when asked.

    ``Trainer.save_model`` pushes by itself when ``push_to_hub`` is set: it saves the model a second time, into
    ``output_dir`` (under ZeRO-3 a second gather of every parameter, and ~15 GB more on disk for a 7B model), and
    uploads that folder; ``push_model`` then uploaded the final folder again. ``_internal_call=True`` is the Trainer's
    own way to save without that push, so the one upload is ``push_model``'s, of the folder with the card.
    """
    training_args = trainer.args
    logger.info("*** Save model ***")
    model_dir = final_model_dir(training_args.output_dir)
    finalize_generation_config(trainer.model, tokenizer)
    try:
        trainer.save_model(str(model_dir), _internal_call=True)
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err):
            raise
        raise DiskFullError(
            f"Not enough disk space for the final model in {model_dir} ({type(err).__name__}: {err}): it needs about "
            f"{_gib(sum(p.numel() * p.element_size() for p in trainer.model.parameters()))} and the disk has "
            f"{_gib(_free_bytes(Path(model_dir)))} free. The checkpoints in {training_args.output_dir} are intact: "
            "free the space and launch again, and the model is saved from the last one."
        ) from err
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(model_dir))
        trainer.create_model_card(
            model_name=Path(model_dir).name if not training_args.hub_model_id else training_args.hub_model_id,
            dataset_name=", ".join(dataset_references(script_args)) or None,
            tags=["open-r1", "open_r1_nb", "reasoning", "sft"],
        )
        readme = Path(training_args.output_dir) / "README.md"
        if readme.exists() and Path(model_dir) != Path(training_args.output_dir):
            (Path(model_dir) / "README.md").write_text(readme.read_text())
        (Path(model_dir) / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
        logger.info("model saved to %s", model_dir)
    trainer.accelerator.wait_for_everyone()

    if training_args.push_to_hub and trainer.accelerator.is_main_process:
        from open_r1_nb.publish import push_model

        push_model(model_dir, training_args)
    return Path(model_dir)


def apply_optional_integrations(training_args) -> None:
    """W&B only when configured (never a login prompt in a headless run); Liger only when installed."""
    import importlib.util

    from open_r1_nb.env import wandb_state

    report_to = list(training_args.report_to or [])
    if "wandb" in report_to:
        configured = "not configured" not in wandb_state() or os.environ.get("WANDB_MODE") in (
            "offline",
            "disabled",
        )
        if not configured or importlib.util.find_spec("wandb") is None:
            logger.warning(
                "report_to wandb, but W&B is not installed or configured: logging to TensorBoard instead"
            )
            report_to = [r for r in report_to if r != "wandb"]
            if "tensorboard" not in report_to and importlib.util.find_spec("tensorboard") is not None:
                report_to.append("tensorboard")
            training_args.report_to = report_to
        else:
            for key in ("wandb_entity", "wandb_project", "wandb_run_group"):
                value = getattr(training_args, key, None)
                if value:
                    os.environ[key.upper()] = value
    if training_args.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        logger.warning(
            "use_liger_kernel is set but liger-kernel is not installed (`pip install .[gpu]`): training without it"
        )
        training_args.use_liger_kernel = False


def extra_callbacks(training_args, model_args) -> list:
    """The recipe's ``callbacks`` by name (open-r1's ``push_to_hub_revision``)."""
    names = list(getattr(training_args, "callbacks", None) or [])
    callbacks = []
    for name in names:
        if name == "push_to_hub_revision":
            from open_r1_nb.publish import PushToHubRevisionCallback

            callbacks.append(PushToHubRevisionCallback(model_args))
        else:
            raise ValueError(
                f"Unknown callback {name!r} in the recipe's callbacks; known: ['push_to_hub_revision']"
            )
    return callbacks


def main(argv: list[str] | None = None) -> int:
    import argparse

    from open_r1_nb.config import load_recipe, parse_overrides

    parser = argparse.ArgumentParser(description="SFT on reasoning traces (open-r1 step 1).")
    parser.add_argument("--config", required=True, help="a recipe YAML, e.g. runs/<run>/recipe.yaml")
    parser.add_argument(
        "--evaluate_only",
        metavar="MODEL_DIR",
        help="skip training: run the recipe's benchmarks on this saved model (the evaluation after training)",
    )
    args, rest = parser.parse_known_args(argv)
    overrides = parse_overrides(rest)
    if args.evaluate_only:
        evaluate_saved_model(load_recipe(args.config, overrides=overrides), Path(args.evaluate_only))
        return 0
    recipe = load_recipe(args.config, overrides=overrides, check_files=True, setup_devices=True)
    try:
        model_dir = train(recipe)
    finally:
        # Without an explicit teardown the gloo/NCCL group is destroyed at interpreter exit, which sometimes
        # aborts a rank ("terminate called without an active exception") after a successful run.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if recipe.training.benchmarks and recipe.training.process_index == 0:
        evaluate_after_training(args.config, rest, model_dir)
    return 0


#: Set by torchrun / accelerate for the training ranks. The evaluation is no rank: inheriting them would make it
#: look like one to anything that reads them (vLLM's own distributed set-up among others).
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")  # fmt: skip


def evaluation_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the evaluation after training: the rank's, without what makes a process a rank.

    torchrun also sets ``OMP_NUM_THREADS=1`` for ranks that share a CPU; the evaluation runs alone, so on a CPU it
    gets every core back. vLLM logs at INFO there (trl turns it down to ERROR when imported).
    """
    env = dict(os.environ if base is None else base)
    launched = "TORCHELASTIC_RUN_ID" in env
    for key in list(env):
        if key in LAUNCHER_VARIABLES or key.startswith(("TORCHELASTIC_", "ACCELERATE_")):
            del env[key]
    if launched and env.get("OMP_NUM_THREADS") == "1":
        del env["OMP_NUM_THREADS"]
    # Importing trl sets VLLM_LOGGING_LEVEL=ERROR; the evaluation keeps vLLM's own account of its engine (arguments,
    # memory, KV cache), which is what a refused start needs.
    if env.get("VLLM_LOGGING_LEVEL", "ERROR") == "ERROR":
        env["VLLM_LOGGING_LEVEL"] = "INFO"
    return env


def evaluate_after_training(config: str | Path, overrides: list[str], model_dir: Path) -> None:
    """The recipe's ``benchmarks`` on the saved model, as open-r1's benchmark callback does, in a new process.

    Rank 0 calls it once training is over and the process group is gone. Its own process still holds what training
    left (on a GPU: a CUDA context and the allocator's cache, under ZeRO-3 more), and vLLM refuses to start when
    less than ``vllm_gpu_memory_utilization`` of a GPU is free; so rank 0 frees what it can and waits while a
    fresh process, ``python -m open_r1_nb.sft --config … --evaluate_only MODEL_DIR``, evaluates (the same
    command evaluates a saved model by hand). A failure there fails the run; the saved model is untouched.
    """
    import gc
    import shlex
    import subprocess

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        logger.info(
            "rank 0 holds %.2f GiB of GPU memory after training", torch.cuda.memory_reserved() / 2**30
        )
    command = [
        sys.executable,
        "-m",
        "open_r1_nb.sft",
        "--config",
        str(config),
        "--evaluate_only",
        str(model_dir),
    ]
    from open_r1_nb.launch import without_secret_arguments

    command += without_secret_arguments(overrides)  # logged below; the evaluation needs no token
    process = subprocess.Popen(command, env=evaluation_env())
    logger.info(
        "evaluating after training in a new process (pid %d; training ran in pid %d): %s",
        process.pid, os.getpid(), shlex.join(command),
    )  # fmt: skip
    returncode = process.wait()
    if returncode != 0:
        raise RuntimeError(
            f"the evaluation after training failed (exit code {returncode}); the model is saved in {model_dir}. "
            f"Run it again alone with: {shlex.join(command)}"
        )


def evaluate_saved_model(recipe, model_dir: Path) -> dict[str, dict]:
    """Evaluate ``model_dir`` on the recipe's benchmarks with the recipe's settings; write beside the model.

    Results go to ``runs/<run>/eval`` for a pipeline run's ``runs/<run>/model``, else ``<model_dir>/eval``.
    Notebook 06 reuses them and adds the base model beside them.
    """
    from open_r1_nb.evaluate.runner import EvalSettings, evaluate_many

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if not recipe.training.benchmarks:
        raise ValueError(f"{recipe.source}: the recipe lists no `benchmarks` to evaluate {model_dir} on")
    settings = EvalSettings(**recipe.pipeline.eval_settings())
    out_dir = Path(model_dir).parent / "eval" if Path(model_dir).name == "model" else Path(model_dir) / "eval"
    logger.info(
        "evaluation (pid %d): %s on %s", os.getpid(), model_dir, ", ".join(recipe.training.benchmarks)
    )
    summaries = evaluate_many(
        model_dir, list(recipe.training.benchmarks), out_dir, settings, label=recipe.run_name
    )
    for bench, summary in summaries.items():
        logger.info(
            "eval %s: pass@1 %.3f ± %.3f, format %.2f, eos %.2f",
            bench,
            summary["pass@1"],
            summary["pass@1_se"],
            summary["format"],
            summary["eos"],
        )
    return summaries


if __name__ == "__main__":
    sys.exit(main())
