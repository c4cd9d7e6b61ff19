"""``ThroughputSFTTrainer``: TRL's ``SFTTrainer`` as training runs it here, with the throughput it logs, a faster
loss on the CPU, resuming several CPU ranks, a free-space check before each checkpoint, and no token in what it saves.

``open_r1_nb.sft`` builds it in ``train`` and re-exports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import torch
from trl import SFTTrainer

from open_r1_nb.checkpoints import DiskFullError, check_space_for_checkpoint, disk_full_message, is_disk_full

logger = logging.getLogger(__name__)


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
