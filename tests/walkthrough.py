"""The walkthrough's notebooks, in the order a person runs them: the one list the tests that run them check against
(``test_smoke_pipeline`` through the papermill runner, ``test_browser`` in JupyterLab). ``03b_under_the_hood``
looks inside a step and is not part of it."""

from __future__ import annotations

NOTEBOOKS = (
    "00_environment",
    "01_configuration",
    "02_dataset",
    "03_model_and_tokenizer",
    "04_sft_training",
    "05_save_and_publish",
    "06_evaluation",
)
