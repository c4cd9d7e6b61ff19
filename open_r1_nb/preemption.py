"""Stop training cleanly when the scheduler asks: save a checkpoint at the next step, then exit for a requeue.

``scripts/slurm/train.slurm`` has Slurm send its batch shell a signal some minutes before the time limit
(``--signal``; at preemption too, where the cluster sets ``preempt_send_user_signal``). A signal is a poor
messenger to the ranks: the launcher between them (torchrun) dies of a SIGUSR1, and kills its workers 30 seconds
after a SIGTERM, too soon to save a large model. So the batch shell creates a file instead, whose path every rank
finds in ``OPEN_R1_NB_STOP_FILE``. After each optimizer
step the ranks look for it and agree through a max all-reduce (a shared file system may show it to some ranks one
step later than to others), so all of them save the same checkpoint, marked complete as usual, and stop. The
training script then exits without the final save or evaluation, and the requeued job resumes from that
checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

STOP_FILE_ENV = "OPEN_R1_NB_STOP_FILE"


class StopRequested(SystemExit):
    """Training stopped on the scheduler's request after saving a checkpoint; the process exits with status 0."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(0)
        self.step = step
        self.checkpoint = checkpoint


def _agree(flag: bool) -> bool:
    """``flag`` if any rank raised it (max all-reduce), so every rank takes the same decision at the same step."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    from accelerate import PartialState

    value = torch.tensor([int(flag)], device=PartialState().device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class SaveAndStopOnRequest(TrainerCallback):
    """Save a checkpoint and stop training at the first step end after ``stop_file`` appears."""

    def __init__(self, stop_file: str | os.PathLike):
        self.stop_file = Path(stop_file)
        self.requested_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested_at is None and _agree(self.stop_file.exists()):
            self.requested_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                logger.warning(
                    "stop requested (%s exists): saving checkpoint-%d, then stopping for a requeue",
                    self.stop_file,
                    state.global_step,
                )
        return control

    def raise_if_stopped(self, output_dir: str | os.PathLike) -> None:
        """After ``trainer.train()``: end the process (status 0) if training stopped on request."""
        if self.requested_at is not None:
            checkpoint = Path(output_dir) / f"checkpoint-{self.requested_at}"
            logger.warning("stopped on request after saving %s; the next launch resumes from it", checkpoint)
            raise StopRequested(self.requested_at, checkpoint)


def stop_callback_from_env() -> SaveAndStopOnRequest | None:
    """The callback when the launch names a stop file (the Slurm script does), else None: no per-step check."""
    path = os.environ.get(STOP_FILE_ENV)
    return SaveAndStopOnRequest(path) if path else None
