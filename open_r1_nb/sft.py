"""Step 4: supervised fine-tuning on reasoning traces, the entry point that ``accelerate launch`` runs.

    accelerate launch --config_file parameters/accelerate/cpu_2proc.yaml --num_processes 2 \\
        -m open_r1_nb.sft --config runs/smoke/recipe.yaml [--learning_rate 1e-4 ...]

The same command runs from notebook 04, a terminal or a Slurm job. It follows open-r1's ``sft.py``: seed,
logging, resume from the last checkpoint, dataset, tokenizer, model, ``SFTTrainer``, train, save, model card,
optional push. What it adds: only *complete* checkpoints are resumed from, the trainer logs real (non-padding)
tokens per second and the padding share, and the saved generation config stops at the tokenizer's EOS.

The trainer itself is ``open_r1_nb.trainer.ThroughputSFTTrainer``; which checkpoints are complete, and whether the
next one fits on the disk, is ``open_r1_nb.checkpoints``. Both names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch

# A name imported as itself (``X as X``) moved out of this module and is re-exported: sft.X keeps working.
from open_r1_nb.checkpoints import COMPLETE_MARKER as COMPLETE_MARKER
from open_r1_nb.checkpoints import (
    CheckpointCompleteCallback,
    DiskFullError,
    free_bytes,
    gib,
    is_disk_full,
    last_complete_checkpoint,
)
from open_r1_nb.checkpoints import checkpoint_is_complete as checkpoint_is_complete
from open_r1_nb.checkpoints import find_checkpoints as find_checkpoints
from open_r1_nb.trainer import ThroughputSFTTrainer

logger = logging.getLogger("open_r1_nb.sft")

# Sampling defaults written into the saved generation config: the DeepSeek-R1 evaluation protocol.
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}


# ---------------------------------------------------------------------------------------------- saving


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
    from open_r1_nb.run_files import merge_metrics

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
            f"{gib(sum(p.numel() * p.element_size() for p in trainer.model.parameters()))} and the disk has "
            f"{gib(free_bytes(Path(model_dir)))} free. The checkpoints in {training_args.output_dir} are intact: "
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
    from open_r1_nb.evaluate.benchmarks import check_benchmark_names

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
    # Evaluation runs after training, so an unknown benchmark name must stop the run now, not hours later.
    check_benchmark_names(recipe.training.benchmarks, f"recipe {recipe.source}")
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
    from open_r1_nb.redaction import without_secret_arguments

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
