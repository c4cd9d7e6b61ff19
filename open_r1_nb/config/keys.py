"""Key names: what upstream recipes call by an older name (renamed or dropped in trl 1.16 / transformers 5), and the
fields that are never written back or that come from the environment."""

from __future__ import annotations

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
