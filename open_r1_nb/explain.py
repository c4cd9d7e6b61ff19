"""What the notebooks say about the profile in use, and what the trainer makes of one row.

Markdown cells hold what is true of every profile. Where the words depend on the profile (how many processes
start, in which precision, which tokens the loss falls on), a notebook cell asks this module, which reads them from
the recipe, so the text cannot drift from what the run does.

The trainer views build TRL's own ``SFTTrainer`` on a few rows, the way ``open_r1_nb.sft`` feeds it (conversations
split into prompt and completion under ``completion_only_loss``), and read its tokenised rows and collated batch:
what notebooks 03 and 03b show is what training computes.
"""

from __future__ import annotations

import contextlib
import html
import tempfile
from typing import Any

from open_r1_nb import hardware
from open_r1_nb.config import read_accelerate_config

#: The label that tells the loss to skip a position (PyTorch's cross-entropy ``ignore_index``).
IGNORE_INDEX = -100
#: Above this many parameters the notebooks demonstrate the loss on a small random copy of the architecture.
SMALL_MODEL_PARAMETERS = 1_000_000_000

_GREY = "color:#777"
_GREEN = "background:#d9f2d6"


# ----------------------------------------------------------------------------------------------- the profile


def _precision(recipe) -> str:
    t = recipe.training
    if t.bf16:
        return (
            "bf16 autocast (weights, optimizer and loss stay float32)"
            if t.use_cpu
            else "bf16 mixed precision"
        )
    if t.fp16:
        return "fp16 mixed precision"
    if t.use_cpu and not hardware.cpu_supports_bf16():
        # The recipe loader turns a CPU recipe's bf16 off here, with a note: oneDNN would only emulate it.
        return "float32 (this CPU has no bf16 units, AVX512-BF16 or AMX, so bf16 autocast would only be emulated)"
    return "float32"


def _layout(recipe) -> str:
    n = recipe.num_processes
    name = recipe.pipeline.accelerate_config
    try:
        config = read_accelerate_config(name)
    except Exception:  # a missing config is reported by the recipe loader, not here
        config = {}
    kind = str(config.get("distributed_type", "NO"))
    if recipe.training.use_cpu:
        if n == 1:
            return f"**one training process** on the CPU, using every core (accelerate config `{name}`)"
        return f"**{n} training processes** on the CPU, gloo ranks of one thread each (accelerate config `{name}`)"
    if n == 1 and kind == "NO":
        return f"**one training process** on one GPU (accelerate config `{name}`)"
    engine = {
        "DEEPSPEED": f"DeepSpeed ZeRO-{config.get('deepspeed_config', {}).get('zero_stage', '?')}",
        "FSDP": "PyTorch FSDP",
    }.get(kind, "DDP")
    return f"**{n} training process{'es' if n > 1 else ''}**, one per GPU, with {engine} (accelerate config `{name}`)"


def devices_text(recipe) -> str:
    """Markdown: how this profile trains (processes, device, precision) and whether this machine can do it."""
    text = f"This profile (`{recipe.run_name}`) trains with {_layout(recipe)}, in {_precision(recipe)}."
    if not recipe.training.use_cpu:
        import torch

        if not torch.cuda.is_available():
            text += (
                " This machine has no CUDA GPU: the recipe validates here and trains on the hardware its header "
                "names."
            )
    return text


def ranks_text(recipe) -> str:
    """Markdown for notebook 04: what the start of the log shows for this profile's number of processes."""
    n = recipe.num_processes
    if n == 1:
        return (
            "This profile launches **one process**: the log shows a single `rank 0 of 1` line. A multi-process "
            "launch prints one such line per rank."
        )
    ranks = ", ".join(f"`rank {i} of {n}`" for i in range(min(n, 3))) + (", …" if n > 3 else "")
    return (
        f"This profile launches **{n} processes**: each prints its start-up line ({ranks}), which is how you see "
        f"that accelerate really started {n} ranks."
    )


def loss_text(recipe) -> str:
    """Markdown: which tokens of a row the loss falls on under this profile."""
    t = recipe.training
    if t.completion_only_loss:
        return (
            f"This profile trains on **the answer only** (`completion_only_loss: true`): the question is context, "
            f"its labels are {IGNORE_INDEX} (grey); the loss falls on the reasoning, the answer and the end-of-turn "
            "token (green)."
        )
    if getattr(t, "assistant_only_loss", False):
        return (
            "This profile trains on **the assistant turns only** (`assistant_only_loss: true`): the chat template's "
            f"generation marks say which tokens are the assistant's; every other label is {IGNORE_INDEX} (grey)."
        )
    return (
        "This profile trains on **the whole row** (no `completion_only_loss`, as open-r1's recipes): every token "
        "of the rendered conversation, the question included, is a target (green); only padding is "
        f"{IGNORE_INDEX}."
    )


# ------------------------------------------------------------------------------------ what the trainer sees


def approx_parameters(config) -> int:
    """Parameters of a decoder-only transformer from its config (embeddings, attention, MLP), within ~10%."""
    hidden = config.hidden_size
    layers = config.num_hidden_layers
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    embeddings = config.vocab_size * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return int(embeddings + layers * (4 * hidden * hidden + 3 * hidden * inner))


def demo_model(recipe, tokenizer, notes: list[str] | None = None):
    """The model the notebooks compute a loss with: the profile's own when it is small enough for a notebook
    kernel (the CPU profiles), else a two-layer random Llama over the same tokenizer (the loss's arithmetic does not
    depend on the weights). Always float32 on the CPU, in eval mode: no dropout, so two forwards agree."""
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from open_r1_nb.model import get_model, model_location

    config = AutoConfig.from_pretrained(model_location(recipe.model.model_name_or_path))
    if approx_parameters(config) <= SMALL_MODEL_PARAMETERS:
        model = get_model(recipe.model, recipe.training, tokenizer=tokenizer, notes=notes)
        return model.to(torch.float32).eval()
    if notes is not None:
        notes.append(
            f"{recipe.model.model_name_or_path} has ~{approx_parameters(config) / 1e9:.0f}B parameters: the loss is "
            "shown on a two-layer random model with the same tokenizer"
        )
    torch.manual_seed(0)
    small = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max(recipe.training.max_length, 512),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(small).eval()


@contextlib.contextmanager
def _quiet():
    """TRL's dataset progress bars and warnings say nothing a reader of these notebooks needs."""
    import datasets
    import transformers

    bars = datasets.utils.logging.is_progress_bar_enabled()
    level = transformers.logging.get_verbosity()
    datasets.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            datasets.utils.logging.enable_progress_bar()


def sft_trainer(recipe, tokenizer, model, rows: list[list[dict]], completion_only_loss: bool | None = None):
    """TRL's ``SFTTrainer`` over ``rows`` (conversations) with the recipe's length and EOS, and its loss mode:
    ``completion_only_loss`` (default: the recipe's) splits each conversation into prompt and completion, as the
    training entry point does. Nothing is trained; read ``train_dataset`` and ``data_collator``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from open_r1_nb.data import to_prompt_completion

    if completion_only_loss is None:
        completion_only_loss = bool(recipe.training.completion_only_loss)
    dataset = Dataset.from_list([{"messages": messages} for messages in rows])
    with _quiet():
        if completion_only_loss:
            dataset = to_prompt_completion(dataset)
        args = SFTConfig(
            output_dir=tempfile.mkdtemp(prefix="open_r1_nb_explain_"),
            use_cpu=True, bf16=False, fp16=False, report_to="none", gradient_checkpointing=False,
            per_device_train_batch_size=len(rows), max_length=recipe.training.max_length,
            eos_token=recipe.training.eos_token, completion_only_loss=completion_only_loss or None,
            assistant_only_loss=bool(getattr(recipe.training, "assistant_only_loss", False)),
            packing=False, padding_free=False, save_strategy="no", logging_strategy="no",
        )  # fmt: skip
        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def collate(trainer, n: int | None = None) -> dict[str, Any]:
    """The first ``n`` rows of the trainer's tokenised dataset through its own collator: one padded batch."""
    rows = trainer.train_dataset
    return trainer.data_collator([rows[i] for i in range(n or len(rows))])


def _piece(tokenizer, token_id: int) -> str:
    return tokenizer.convert_ids_to_tokens(int(token_id))


def label_table(tokenizer, input_ids, columns: dict[str, Any], start: int = 0, stop: int | None = None):
    """Positions ``start:stop`` of one row: the token, its id and, per column (e.g. each loss mode), its label."""
    import pandas as pd

    ids = [int(i) for i in input_ids]
    stop = len(ids) if stop is None else min(stop, len(ids))
    frame = pd.DataFrame(
        {
            "token": [_piece(tokenizer, i) for i in ids[start:stop]],
            "input_id": ids[start:stop],
            **{name: [int(v) for v in labels][start:stop] for name, labels in columns.items()},
        },
        index=pd.RangeIndex(start, stop, name="position"),
    )
    return frame


def labels_html(tokenizer, input_ids, labels, attention_mask=None) -> str:
    """One row as coloured text: grey where the label is -100 (no loss), green where the model is trained to
    write the token; padding is left out. The counts below say how many of each."""
    ids = [int(i) for i in input_ids]
    labels = [int(v) for v in labels]
    keep = [int(m) for m in attention_mask] if attention_mask is not None else [1] * len(ids)
    spans, learned, ignored = [], 0, 0
    for token_id, label, real in zip(ids, labels, keep, strict=True):
        if not real:
            continue
        text = html.escape(tokenizer.decode([token_id]))
        if label == IGNORE_INDEX:
            ignored += 1
            spans.append(f'<span style="{_GREY}">{text}</span>')
        else:
            learned += 1
            bold = ";font-weight:bold" if token_id == tokenizer.eos_token_id else ""
            spans.append(f'<span style="{_GREEN}{bold}" title="id {token_id}">{text}</span>')
    eos_learned = tokenizer.eos_token_id in [label for label, real in zip(labels, keep, strict=True) if real]
    eos = html.escape(str(tokenizer.eos_token))
    return (
        '<pre style="white-space:pre-wrap;font-size:12px">' + "".join(spans) + "</pre>"
        f"<p>{ignored} tokens with label {IGNORE_INDEX} (grey, no loss) · {learned} tokens the model learns to "
        f"write (green){f', the EOS {eos} among them (bold)' if eos_learned else f', none of them the EOS {eos}'}"
        "</p>"
    )


def plot_hard_target(tokenizer, logits, labels, position: int, k: int = 8, path=None):
    """Hard distillation at one position, as two bar charts: the student's next-token probabilities (its top ``k``
    and the trace's token) and the target the loss uses, all of its mass on the token the teacher wrote.

    ``logits`` and ``labels`` are one row's (unshifted); ``position`` is where the label is, so the prediction comes
    from ``position - 1``. Soft distillation would put the teacher's whole distribution on the right instead.
    """
    import matplotlib.pyplot as plt
    import torch

    probs = torch.softmax(logits[position - 1].float(), -1)
    target = int(labels[position])
    top = probs.topk(k).indices.tolist()
    shown = top if target in top else top[:-1] + [target]
    names = [repr(tokenizer.decode([i]))[1:-1] or repr(_piece(tokenizer, i)) for i in shown]
    colours = ["#2e7d32" if i == target else "#9e9e9e" for i in shown]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8))
    left.bar(range(len(shown)), [float(probs[i]) for i in shown], color=colours)
    left.set_title(f"student's p(next token), loss here = {-float(torch.log(probs[target])):.2f}", fontsize=9)
    right.bar(range(len(shown)), [1.0 if i == target else 0.0 for i in shown], color=colours)
    right.set_title("hard target: the token the teacher wrote", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(range(len(shown)), names, rotation=45, ha="right", fontsize=8)
    left.set_ylabel("probability")
    right.set_ylim(0, 1.05)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
