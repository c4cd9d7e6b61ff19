"""Step 5: check the saved model, show its card, and publish it to the Hub (or list what would be uploaded).

A push happens only when the recipe sets ``push_to_hub`` *and* a Hub token is configured; otherwise
``upload_plan`` is a dry run that lists each file, its size and where it would go. Tokens are never printed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

# Files a checkpoint has that a published model does not need.
SKIP_PATTERNS = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin")


@dataclass
class UploadPlan:
    repo_id: str
    revision: str
    files: list[tuple[str, int]]  # (path inside the repo, bytes)
    will_push: bool
    reason: str

    def table(self) -> Any:
        import pandas as pd

        rows = [
            {"file": f, "MiB": round(n / 2**20, 3), "destination": f"{self.repo_id}@{self.revision}/{f}"}
            for f, n in self.files
        ]
        return pd.DataFrame(rows)

    @property
    def total_bytes(self) -> int:
        return sum(n for _, n in self.files)


def hub_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # an unreadable token file counts as no token
        return None


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name, p) for p in patterns)


def repo_id_for(training_args, default_name: str) -> str:
    return getattr(training_args, "hub_model_id", None) or default_name


def upload_plan(
    model_dir: str | Path, repo_id: str, revision: str = "main", push_to_hub: bool = False
) -> UploadPlan:
    """What a push would upload, and whether it will really happen (recipe asks for it and a token exists)."""
    root = Path(model_dir)
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and not _matches(p.name, SKIP_PATTERNS)
    )
    if not push_to_hub:
        return UploadPlan(repo_id, revision, files, False, "dry run: the recipe has push_to_hub: false")
    if hub_token() is None:
        return UploadPlan(
            repo_id, revision, files, False, "dry run: no Hub token (run `hf auth login` or set HF_TOKEN)"
        )
    return UploadPlan(
        repo_id, revision, files, True, "push: push_to_hub is set and a Hub token is configured"
    )


def push_model(model_dir: str | Path, training_args, revision: str | None = None) -> UploadPlan:
    """Upload ``model_dir`` to the Hub repo of the recipe (``hub_model_id``), at ``hub_model_revision``."""
    revision = revision or getattr(training_args, "hub_model_revision", None) or "main"
    plan = upload_plan(
        model_dir, repo_id_for(training_args, Path(model_dir).name), revision, training_args.push_to_hub
    )
    if not plan.will_push:
        logger.info(
            "%s; would upload %d files (%.1f MiB) to %s@%s",
            plan.reason,
            len(plan.files),
            plan.total_bytes / 2**20,
            plan.repo_id,
            plan.revision,
        )
        return plan
    from huggingface_hub import HfApi

    api = HfApi()
    repo = api.create_repo(
        plan.repo_id, private=bool(getattr(training_args, "hub_private_repo", False)), exist_ok=True
    )
    if revision != "main":
        api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
    api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(model_dir),
        revision=revision,
        ignore_patterns=list(SKIP_PATTERNS),
        commit_message="open_r1_nb: upload the distilled model",
    )
    logger.info("pushed %s to %s@%s", model_dir, repo.repo_id, revision)
    return plan


class PushToHubRevisionCallback(TrainerCallback):
    """Push each saved checkpoint to its own Hub revision ``<hub_model_revision>-step-<N>`` (open-r1's callback).

    Each revision can then be evaluated on its own, while training goes on.
    """

    def __init__(self, model_args=None):
        self.model_args = model_args

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        base = getattr(args, "hub_model_revision", None) or "main"
        revision = f"{base}-step-{state.global_step:09d}"
        plan = push_model(checkpoint, args, revision=revision)
        logger.info("checkpoint %s -> %s@%s (%s)", checkpoint.name, plan.repo_id, revision, plan.reason)
        return control


# ----------------------------------------------------------------------------------------- model checks


def check_saved_model(model_dir: str | Path) -> dict[str, Any]:
    """What notebook 05 verifies: weights, tokenizer, card, and a generation config that stops at EOS."""
    from transformers import AutoTokenizer, GenerationConfig

    root = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(root)
    gen = GenerationConfig.from_pretrained(root)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    return {
        "safetensors weights": any(root.glob("*.safetensors")),
        "tokenizer": (root / "tokenizer_config.json").exists(),
        "model card": (root / "README.md").exists(),
        "tokenizer eos": tokenizer.eos_token,
        "generation eos ids": eos,
        "eos aligned": tokenizer.eos_token_id in eos,
        "pad differs from eos": tokenizer.pad_token_id is not None
        and tokenizer.pad_token_id != tokenizer.eos_token_id,
        "sampling": {k: getattr(gen, k) for k in ("do_sample", "temperature", "top_p")},
    }


def sample_generation(
    model_dir: str | Path, messages: list[dict], max_new_tokens: int = 128
) -> dict[str, Any]:
    """Greedy completion of the last user turn; reports whether it ended at EOS or ran into the limit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
    return {
        "completion": tokenizer.decode(new, skip_special_tokens=False),
        "new tokens": len(new),
        "ended at EOS": bool(new) and new[-1] in eos_ids,
    }


def read_card(model_dir: str | Path) -> str:
    card = Path(model_dir) / "README.md"
    return card.read_text() if card.exists() else "(no model card)"


def training_metrics(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "training_metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}
