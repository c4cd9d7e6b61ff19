"""Shared test set-up: never reach the Hub; skip GPU tests without CUDA; small assets built once per session."""

from __future__ import annotations

import os
import tempfile

# Set before transformers/datasets/huggingface_hub are imported anywhere in the test session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
# Runs made by tests (including `pytest --nbmake notebooks`) go to a scratch folder, never the user's runs/.
os.environ.setdefault("OPEN_R1_NB_RUNS", tempfile.mkdtemp(prefix="open_r1_nb_runs_"))

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def fresh_accelerate_state():
    """Start and leave the test without an Accelerator or PartialState (recipes build device state lazily)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """An asset cache private to the test session, so tests never touch the user's ``cache/``."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("OPEN_R1_NB_CACHE")
    os.environ["OPEN_R1_NB_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("OPEN_R1_NB_CACHE", None)
    else:
        os.environ["OPEN_R1_NB_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(session_cache):
    """The smoke profile's tiny random Llama and its own tokenizer (no chat template, no pad), built in seconds."""
    from open_r1_nb import assets

    return assets.build_tiny_model()


@pytest.fixture(scope="session")
def smoke_data_dir(session_cache):
    from open_r1_nb import assets

    return assets.build_smoke_data()
