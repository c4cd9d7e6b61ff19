"""The embedded default: a real small model and reasoning-trace datasets, built offline into the asset cache.

Being split into one module per asset; for now everything still lives in ``gsm_symbolic``.
"""

# Every public name of the former module is re-exported; __all__ (what `import *` takes) keeps the subset it had.
# ruff: noqa: F401

from open_r1_nb.assets.gsm_symbolic import (
    ARITHMETIC_FORMAT,
    ARITHMETIC_KINDS,
    ASSET_MARKER,
    ASSETS,
    END_OF_TURN,
    FORMAT_VERSION,
    GSM_INSTALL,
    GSM_PACKAGE,
    GSM_SLOW_TEMPLATES,
    GSM_VERSION,
    MATH_INSTRUCTION,
    SMOKE_KINDS,
    SMOLLM2_CHAT_TEMPLATE,
    SMOLLM2_GGUF,
    SMOLLM2_NAME,
    SMOLLM2_PACKAGE,
    SMOLLM2_VERSION,
    TINY_MODEL_NAME,
    TINY_SPECIAL_TOKENS,
    _cached_build,  # tests build a broken asset through it (temporary, until the split)
    addition_trace,
    arithmetic_problem,
    arithmetic_rows,
    build_arithmetic,
    build_gsm_symbolic,
    build_smoke_data,
    build_smollm2,
    build_tiny_model,
    format_trace,
    iter_asset_records,
    make_row,
    multiplication_trace,
    prepare,
    read_jsonl,
    read_marker,
    split_gsm_solution,
    strip_calculator_annotations,
    user_prompt,
)

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
