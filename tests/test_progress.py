"""Progress bars in a real kernel: text lines under papermill (the runner), widgets when a Jupyter server started the
kernel, for tqdm.auto and for transformers', huggingface_hub's and datasets' own bar classes."""

from __future__ import annotations

import nbformat
import pytest

from open_r1_nb import progress
from open_r1_nb.pipeline import HEADLESS_KERNEL, kernel_config, run_notebook

WIDGET = "application/vnd.jupyter.widget-view+json"
BARS = ("bar-auto", "bar-transformers", "bar-hub", "bar-datasets")
# One bar from each source; huggingface_hub is imported first, as a notebook that starts with it would, so its
# bar class already exists when open_r1_nb makes the choice.
CELL = """
import huggingface_hub.utils
import open_r1_nb
import datasets.utils
import transformers.utils.logging
from tqdm.auto import tqdm

for bar in (
    tqdm(total=3, desc="bar-auto"),
    transformers.utils.logging.tqdm(total=3, desc="bar-transformers"),
    huggingface_hub.utils.tqdm(total=3, desc="bar-hub"),
    datasets.utils.tqdm(total=3, desc="bar-datasets"),
):
    bar.update(3)
    bar.close()
"""


def _notebook(tmp_path):
    path = tmp_path / "bars.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nbformat.write(nb, path)
    return path


def _outputs(path):
    return nbformat.read(path, as_version=4).cells[0].outputs


def test_bars_are_text_lines_and_nothing_warns_under_the_runner(tmp_path, monkeypatch):
    # Even when the runner itself runs inside a JupyterLab kernel, which passes its mark on.
    monkeypatch.setenv(progress.SERVER_MARK, "somewhere.ipynb")
    monkeypatch.delenv(progress.ENV, raising=False)
    out = tmp_path / "out.ipynb"
    run_notebook(_notebook(tmp_path), out, {})
    outputs = _outputs(out)
    assert not [o for o in outputs if WIDGET in o.get("data", {})], "widgets recorded under papermill"
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    for desc in BARS:
        assert f"{desc}: 100%|" in stderr, f"{desc} is not a text bar:\n{stderr}"
    # e.g. tqdm's "IProgress not found. Please update jupyter and ipywidgets" in every notebook
    assert "Warning" not in stderr, stderr


def test_bars_are_widgets_in_a_kernel_a_jupyter_server_started(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv(progress.SERVER_MARK, "bars.ipynb")
    monkeypatch.delenv(progress.ENV, raising=False)
    out = tmp_path / "out.ipynb"
    config = kernel_config()  # as the runner's kernels: no TCP warning
    pm.execute_notebook(
        str(_notebook(tmp_path)),
        str(out),
        kernel_name=HEADLESS_KERNEL,
        progress_bar=False,
        **({"config": config} if config is not None else {}),
    )
    outputs = _outputs(out)
    widgets = [o for o in outputs if WIDGET in o.get("data", {})]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert len(widgets) == len(BARS), f"{len(widgets)} widgets; stderr:\n{stderr}"
    assert "%|" not in stderr and "Warning" not in stderr, stderr


def test_a_misspelt_style_is_named_with_the_fix(monkeypatch):
    monkeypatch.setenv(progress.ENV, "widget")
    with pytest.raises(ValueError, match=r"OPEN_R1_NB_PROGRESS='widget'.*'widgets' or 'text'"):
        progress.style()


def test_outside_a_kernel_nothing_changes(monkeypatch):
    monkeypatch.setenv(progress.SERVER_MARK, "x.ipynb")
    assert progress.setup() is None and progress.style() == "text"
