"""Step 3: the tokenizer and the model, with the special-token checks that SFT on reasoning traces needs.

Two mistakes make a distilled model useless while the loss looks fine: an EOS that is not the chat template's
end-of-turn token (the model learns to end turns with a token generation never stops on), and a pad token equal
to EOS (collators that mask padding by token id then mask every EOS out of the loss, and the model never learns to
stop; open-r1 issues #492 and #603). ``get_tokenizer`` derives the EOS from the template and gives padding a token
of its own, and says when the template prompts differently from how it writes a training row.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
from typing import Any

from open_r1_nb.config import CHATML_TEMPLATE, resolve_chat_template
from open_r1_nb.paths import resolve_local

logger = logging.getLogger(__name__)

# Tried in order when the tokenizer's pad token is missing or equals EOS; a new token is added only if none exists.
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "<|endoftext|>", "<unk>")
NEW_PAD_TOKEN = "<|pad|>"
_SENTINEL = "\u2063OPENR1NB\u2063"


class ModelLoadError(RuntimeError):
    """The model or tokenizer could not be loaded; the message says what to do instead."""


def model_location(name_or_path: str) -> str:
    """The local folder for a local model, else the Hub id unchanged."""
    local = resolve_local(name_or_path)
    return str(local) if local is not None else name_or_path


def _load(loader, name_or_path: str, **kwargs):
    location = model_location(name_or_path)
    if resolve_local(name_or_path) is None:
        from open_r1_nb.data import hub_unreachable_reason

        # Fail at once with one message rather than after a minute of retries.
        reason = hub_unreachable_reason()
        if reason:
            raise ModelLoadError(
                f"Could not load {name_or_path!r}: it is not a local folder, and {reason}. Download the model "
                f"where the Hub is reachable (`huggingface-cli download {name_or_path} --local-dir <folder>`) and "
                "set model_name_or_path to that folder."
            )
    try:
        return loader(location, **kwargs)
    except OSError as err:
        if resolve_local(name_or_path) is None:
            raise ModelLoadError(
                f"Could not load {name_or_path!r}: it is not a local folder and the Hub did not provide it "
                f"({err}). If this machine is offline (HF_HUB_OFFLINE=1), download the model where the Hub is "
                f"reachable (`huggingface-cli download {name_or_path} --local-dir <folder>`) and set "
                "model_name_or_path to that folder."
            ) from err
        raise


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant turn (its end-of-turn token)."""
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except Exception:  # a template that refuses this shape has no answer to give here
        return None
    after = text.split(_SENTINEL, 1)[1].lstrip(" ") if _SENTINEL in text else ""
    specials = sorted(
        set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()},
        key=len,
        reverse=True,
    )
    for token in specials:
        if token and after.startswith(token):
            return token
    return None


def generation_prompt_mismatch(tokenizer) -> str | None:
    """Why prompting with the chat template would not start the way a training row does, or None when it would.

    Evaluation renders the question with ``add_generation_prompt=True`` and lets the model write the rest, so that
    prompt must be the start of the row the model was trained on. Templates that prefill the answer (DeepSeek-R1's
    distilled models open it with ``<think>``) or open the assistant's turn differently break this silently.
    """
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        row = tokenizer.apply_chat_template(turns, tokenize=False)
        prompt = tokenizer.apply_chat_template(turns[:1], tokenize=False, add_generation_prompt=True)
    except Exception:  # a template that refuses this shape has no answer to give here
        return None
    if _SENTINEL not in row or row.startswith(prompt):
        return None
    shared = len(os.path.commonprefix([row, prompt]))
    return (
        f"warning: the chat template opens the assistant's turn as {prompt[shared:]!r} when prompting but as "
        f"{row[shared : row.index(_SENTINEL)]!r} in a training row, so evaluation prompts do not start like the rows "
        "the model is trained on; use a chat_template that renders both the same way"
    )


def prepare_tokenizer(tokenizer, chat_template: str | None = None, eos_token: str | None = None) -> list[str]:
    """Fix the chat template, EOS and pad of ``tokenizer`` in place; return one note per change, in words."""
    notes: list[str] = []
    if chat_template:
        tokenizer.chat_template = resolve_chat_template(chat_template)
        notes.append("chat template: replaced by the recipe's chat_template")
    elif not tokenizer.chat_template:
        missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        tokenizer.chat_template = CHATML_TEMPLATE
        notes.append("chat template: the tokenizer has none, so ChatML was applied (as open-r1 does)")
    if mismatch := generation_prompt_mismatch(tokenizer):
        notes.append(mismatch)

    template_eos = end_of_turn_token(tokenizer)
    wanted = eos_token or template_eos
    if eos_token and template_eos and eos_token != template_eos:
        notes.append(
            f"warning: the recipe's eos_token {eos_token!r} differs from the chat template's end-of-turn token "
            f"{template_eos!r}; generation will not stop at the end of a turn unless they agree"
        )
    if wanted and wanted not in tokenizer.get_vocab():
        raise ValueError(
            f"eos_token {wanted!r} is not in the tokenizer's vocabulary; set eos_token in the recipe to the chat "
            f"template's end-of-turn token (found: {template_eos!r})"
        )
    if wanted and tokenizer.eos_token != wanted:
        notes.append(f"eos: {tokenizer.eos_token!r} -> {wanted!r} (the chat template ends each turn with it)")
        tokenizer.eos_token = wanted

    pad = tokenizer.pad_token
    if pad is None or pad == tokenizer.eos_token:
        vocab = tokenizer.get_vocab()
        choice = next((t for t in PAD_CANDIDATES if t in vocab and t != tokenizer.eos_token), None)
        if choice is None:
            tokenizer.add_special_tokens({"pad_token": NEW_PAD_TOKEN})
            choice = NEW_PAD_TOKEN
            notes.append(
                f"pad: added a new token {NEW_PAD_TOKEN!r} (the model's embeddings are resized to match)"
            )
        else:
            tokenizer.pad_token = choice
        why = (
            "was unset" if pad is None else "was the EOS, so padding masks would hide every EOS from the loss"
        )
        notes.append(f"pad: {pad!r} -> {choice!r} ({why})")
    return notes


def trusts_remote_code(model_args, training_args) -> bool:
    """Remote code runs only when the recipe says so explicitly (``trust_remote_code: true``)."""
    return bool(
        getattr(training_args, "trust_remote_code", False) or getattr(model_args, "trust_remote_code", False)
    )


def _kbit_device_map() -> dict[str, int]:
    # Quantised weights must sit on this rank's own GPU; a device map pins them there.
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def get_tokenizer(model_args, training_args, notes: list[str] | None = None):
    """Load the tokenizer and apply the recipe's template, EOS and pad rules (see ``prepare_tokenizer``)."""
    from transformers import AutoTokenizer

    tokenizer = _load(
        AutoTokenizer.from_pretrained,
        model_args.model_name_or_path,
        revision=getattr(model_args, "model_revision", None) or "main",
        trust_remote_code=trusts_remote_code(model_args, training_args),
    )
    template = getattr(training_args, "chat_template", None) or getattr(
        training_args, "chat_template_path", None
    )
    changes = prepare_tokenizer(tokenizer, template, getattr(training_args, "eos_token", None))
    for change in changes:
        logger.info("tokenizer %s", change)
    if notes is not None:
        notes.extend(changes)
    return tokenizer


def special_tokens_table(tokenizer) -> Any:
    """bos/eos/pad/unk with their ids, and the template's end-of-turn token, as a table."""
    import pandas as pd

    rows = []
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        token = getattr(tokenizer, name, None)
        rows.append(
            {"role": name, "token": token, "id": tokenizer.convert_tokens_to_ids(token) if token else None}
        )
    eot = end_of_turn_token(tokenizer)
    rows.append(
        {
            "role": "template end-of-turn",
            "token": eot,
            "id": tokenizer.convert_tokens_to_ids(eot) if eot else None,
        }
    )
    return pd.DataFrame(rows)


# The package each flash-attention implementation imports. Without it, transformers 5 loads the same kernel from the
# Hub through the `kernels` package (the `gpu` extra), so flash attention works without compiling flash-attn.
_FLASH_MODULES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def hub_flash_kernel(implementation: str | None) -> str | None:
    """The Hub kernel transformers loads for ``implementation`` when flash-attn itself is not installed."""
    from transformers.modeling_flash_attention_utils import FLASH_ATTN_KERNEL_FALLBACK

    return FLASH_ATTN_KERNEL_FALLBACK.get(implementation) if implementation else None


def _flash_from_hub_kernel(implementation: str | None) -> bool:
    """Whether transformers will serve ``implementation`` with its Hub kernel (flash-attn absent, kernels present)."""
    module = _FLASH_MODULES.get(implementation or "")
    return (
        module is not None
        and importlib.util.find_spec(module) is None
        and importlib.util.find_spec("kernels") is not None
        and hub_flash_kernel(implementation) is not None
    )


def resolve_attn_implementation(requested: str | None) -> tuple[str | None, str | None]:
    """Fall back from flash attention when it cannot run here; return (implementation, note or None).

    With CUDA but without flash-attn, the request is kept when the ``kernels`` package is installed: transformers
    then loads its Hub flash-attention kernel (``hub_flash_kernel``). Only without either does it become sdpa.
    """
    import torch

    if requested in _FLASH_MODULES:
        if not torch.cuda.is_available():
            return "sdpa", f"{requested} needs a CUDA GPU; using sdpa"
        module = _FLASH_MODULES[requested]
        if importlib.util.find_spec(module) is not None:
            return requested, None
        if _flash_from_hub_kernel(requested):
            return requested, (
                f"{requested}: {module} is not installed, so transformers loads the Hub kernel "
                f"{hub_flash_kernel(requested)} through the `kernels` package (fetched from the Hub once, then cached)"
            )
        return "sdpa", (
            f"{requested} requested but neither {module} nor the `kernels` package is installed; using sdpa. "
            "`pip install .[gpu]` brings `kernels` (transformers' Hub flash-attention kernel, nothing to compile); "
            "`pip install .[flash]` compiles flash-attn (PyPI ships it as source only)."
        )
    return requested, None


def torch_dtype(value: str | None):
    import torch

    if value in (None, "auto"):
        return value
    if isinstance(value, torch.dtype):
        return value
    return getattr(torch, value)


def get_model(model_args, training_args, tokenizer=None, notes: list[str] | None = None):
    """Load the model for training: dtype, attention (with fallback), ``use_cache`` off under checkpointing."""
    from transformers import AutoModelForCausalLM
    from trl import get_quantization_config

    attn, note = resolve_attn_implementation(getattr(model_args, "attn_implementation", None))
    if note:
        logger.warning(note)
        if notes is not None:
            notes.append(note)
    quantized = getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False)
    quantization_config = get_quantization_config(model_args) if quantized else None
    kwargs = dict(
        revision=getattr(model_args, "model_revision", None) or "main",
        trust_remote_code=trusts_remote_code(model_args, training_args),
        attn_implementation=attn,
        dtype=torch_dtype(getattr(model_args, "dtype", None)),
        # The KV cache is useless during training and conflicts with gradient checkpointing.
        use_cache=not getattr(training_args, "gradient_checkpointing", False),
        device_map=_kbit_device_map() if quantization_config is not None else None,
        quantization_config=quantization_config,
    )
    try:
        model = _load(AutoModelForCausalLM.from_pretrained, model_args.model_name_or_path, **kwargs)
    except ImportError as err:
        # transformers raises ImportError when the Hub kernel cannot be fetched (an offline node without it in its
        # cache); it does so while building the model, before any weight is read, so sdpa costs no second load.
        if not _flash_from_hub_kernel(attn):
            raise
        note = f"the Hub kernel {hub_flash_kernel(attn)} could not be loaded ({err}); using sdpa"
        logger.warning(note)
        if notes is not None:
            notes.append(note)
        kwargs["attn_implementation"] = "sdpa"
        model = _load(AutoModelForCausalLM.from_pretrained, model_args.model_name_or_path, **kwargs)
    if tokenizer is not None:
        align_model_with_tokenizer(model, tokenizer, notes)
    return model


def freeze_bottom(model, layers: int, gradient_checkpointing: bool = False) -> str:
    """Keep the input embeddings and the first ``layers`` decoder layers at their weights; return what trains.

    Nothing below the lowest trainable layer needs a gradient, so autograd ends the backward pass there: with half
    of the layers frozen a step costs about two thirds of full fine-tuning (forward 2N, backward 4N over the half
    that trains, against 2N + 4N). Where the LM head is tied to the embeddings (SmolLM2, Qwen2.5-0.5B) it is the
    same tensor and stays frozen too; an untied LM head trains.
    """
    decoder = model.get_decoder()
    blocks = getattr(decoder, "layers", None)
    if blocks is None:
        raise ValueError(
            f"freeze_layers: {type(model).__name__} keeps no `layers` list in its decoder, so its bottom layers "
            "cannot be told apart. Fix: set freeze_layers: 0."
        )
    if not 0 < layers < len(blocks):
        raise ValueError(
            f"freeze_layers: {layers} for a model of {len(blocks)} decoder layers. Fix: use 1 to {len(blocks) - 1}."
        )
    frozen = [model.get_input_embeddings(), *blocks[:layers]]
    for module in frozen:
        module.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if gradient_checkpointing:
        # Reentrant checkpointing only back-propagates into a block whose input needs a gradient.
        model.enable_input_require_grads()
    return (
        f"freeze_layers: the embeddings and decoder layers 0-{layers - 1} of {len(blocks)} stay frozen; "
        f"{trained / 1e6:.1f}M of {total / 1e6:.1f}M parameters train"
    )


def embedding_rows(model) -> int:
    """Rows of the input embedding matrix, also when DeepSpeed ZeRO-3 has partitioned it.

    Under ZeRO-3 (``zero3_init_flag``) every rank holds only a slice of each parameter, and ``weight`` itself is an
    empty tensor of shape ``[0]``; DeepSpeed keeps the full shape in ``ds_shape``. Reading ``weight.shape[0]`` there
    gives 0 rows, and growing the matrix to ``len(tokenizer)`` would then shrink it (Qwen2.5: 152,064 -> 151,665).
    """
    embeddings = model.get_input_embeddings()
    full_shape = getattr(embeddings.weight, "ds_shape", None)
    if full_shape is not None and len(full_shape) == 2:
        return int(full_shape[0])
    if embeddings.weight.numel() > 0:
        return int(embeddings.weight.shape[0])
    # An empty weight without its full shape recorded: the module and the config still know the vocabulary size.
    rows = getattr(embeddings, "num_embeddings", None)
    return int(rows if rows else model.config.get_text_config().vocab_size)


def align_model_with_tokenizer(model, tokenizer, notes: list[str] | None = None) -> None:
    """Grow the embeddings for added tokens (never shrink them); mirror EOS/pad ids onto the model and
    generation configs."""
    rows = embedding_rows(model)
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer))
        if notes is not None:
            notes.append(f"embeddings resized from {rows} to {len(tokenizer)} rows for the added tokens")
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def model_summary(model) -> dict[str, Any]:
    """Parameters, dtype, attention implementation and layer shape, for a table."""
    cfg = model.config
    return {
        "architecture": type(model).__name__,
        "parameters (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "attention": getattr(cfg, "_attn_implementation", None),
        "layers": getattr(cfg, "num_hidden_layers", None),
        "hidden size": getattr(cfg, "hidden_size", None),
        "vocab": getattr(cfg, "vocab_size", None),
        "max positions": getattr(cfg, "max_position_embeddings", None),
        "use_cache": getattr(cfg, "use_cache", None),
    }


def split_prompt_completion(tokenizer, messages: list[dict]) -> tuple[str, str]:
    """The rendered prompt (everything before the last assistant turn) and the assistant part SFT learns."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):  # templates that rewrite earlier turns (e.g. drop old reasoning)
        return "", full
    return prompt, full[len(prompt) :]


def render_sample_html(tokenizer, messages: list[dict]) -> str:
    """HTML of one conversation through the chat template, the assistant part highlighted, with token counts."""
    prompt, completion = split_prompt_completion(tokenizer, messages)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
    n_completion = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
    return (
        '<pre style="white-space:pre-wrap;font-size:12px">'
        f'<span style="color:#555">{html.escape(prompt)}</span>'
        f'<span style="background:#e3f2e1">{html.escape(completion)}</span></pre>'
        f"<p>prompt: {n_prompt} tokens (grey) · assistant: {n_completion} tokens (green, what the model learns "
        f"to write; it must end with {html.escape(str(tokenizer.eos_token))})</p>"
    )
