"""Checkpoints of a training run: which are complete (only those are resumed from), and whether the next one fits
on the disk.

A checkpoint counts as complete once every rank has written it and rank 0 has left ``COMPLETE_MARKER`` in it
(``CheckpointCompleteCallback``); one interrupted while saving is skipped, and moved aside, when training resumes
(``last_complete_checkpoint``). Before a checkpoint is written its size is checked against the free space
(``check_space_for_checkpoint``), so a full disk fails with ``DiskFullError`` saying how much is needed, not halfway
through a save. ``open_r1_nb.sft`` re-exports these names.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "open_r1_nb_complete"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


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


# ------------------------------------------------------------------------------------------ disk space


class DiskFullError(OSError):
    """A checkpoint or the model does not fit on the disk; the message says how much space it needs."""


# How a full disk shows: OSError ENOSPC from Python, safetensors' Rust error, torch's zip writer.
_DISK_FULL = re.compile(r"No space left on device|os error 28|StorageFull|ENOSPC", re.IGNORECASE)


def is_disk_full(err: BaseException) -> bool:
    return getattr(err, "errno", None) == errno.ENOSPC or bool(_DISK_FULL.search(str(err)))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def gib(n: float) -> str:
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


def free_bytes(path: Path) -> int:
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free


def disk_full_message(folder: Path, model, args, err: BaseException | None = None) -> str:
    needed, how = checkpoint_bytes(folder.parent, model, args)
    free = free_bytes(folder.parent)
    complete, _ = find_checkpoints(folder.parent)
    last = (
        f"The last complete checkpoint, {complete[-1]}, is intact: training resumes from it when launched again."
        if complete
        else "No complete checkpoint was saved yet."
    )
    written = (
        f" The incomplete {folder.name} ({gib(_size(folder))} written) is skipped on resume; delete it to free "
        "its space."
        if folder.is_dir()
        else ""
    )
    cause = f" ({type(err).__name__}: {err})" if err is not None else ""
    room = (
        f"free at least {gib((needed * 1.1) - free)} there"
        if free < needed * 1.1
        else "make sure it stays free (something else filled the disk while this was saved)"
    )
    return (
        f"Not enough disk space for {folder.name}{cause}: it needs about {gib(needed)} ({how}) and the disk "
        f"holding {folder.parent} has {gib(free)} free. {last}{written} Fix: {room}, keep fewer checkpoints "
        "(save_total_limit), or give the run a bigger disk."
    )


def check_space_for_checkpoint(folder: Path, model, args) -> None:
    """Raise DiskFullError before ``folder`` is written when its disk lacks the space (with 10% to spare).

    Every rank decides as rank 0 does (its answer is broadcast): ranks that disagreed would leave one of them
    waiting in the save's collectives for one that has stopped.
    """
    needed, _ = checkpoint_bytes(folder.parent, model, args)
    short = free_bytes(folder.parent) < needed * 1.1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        decision = [short]
        torch.distributed.broadcast_object_list(decision, src=0)
        short = decision[0]
    if short:
        raise DiskFullError(disk_full_message(folder, model, args))
