"""The walkthrough as a person runs it: JupyterLab in a real browser (headless Chromium), notebooks 00-06 opened
from the file browser in order, each in the kernel it names, run with Run -> Run All Cells on the smoke profile.

JupyterLab runs from this environment with its own config, data and runtime folders, runs and asset cache under
the test's folder (the user's runs/, cache/ and Jupyter settings are untouched), and the notebooks are copies, so
nothing it saves reaches notebooks/. The asset cache starts empty: notebook 00 builds the smoke assets, as on a
first run. A screenshot of each notebook at its end (and of notebook 04 while it trains) lands in
``<pytest basetemp>/jupyterlab0/screenshots/``; the path is printed at the end of the run, beside JupyterLab's log.

Needs the system's Chromium (``scripts/system_packages.sh`` installs it); without it the tests fail, naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from walkthrough import NOTEBOOKS

from open_r1_nb import progress
from open_r1_nb.paths import NOTEBOOKS_DIR, REPO_ROOT
from open_r1_nb.pipeline import HEADLESS_KERNEL

STDERR = "application/vnd.jupyter.stderr"  # how JupyterLab marks stderr and tracebacks: the pink boxes
NOTEBOOK_TIMEOUT_MS = 900_000  # 04 on 2 busy cores: minutes
CHROMIUM_HINT = "install it with `bash scripts/system_packages.sh` as root (or `apt-get install chromium`)"


def _makefile_kernel() -> str:
    found = re.search(r"^KERNEL_NAME\s*=\s*(\S+)", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile names no KERNEL_NAME"
    return found.group(1)


KERNEL_NAME = _makefile_kernel()
KERNEL_DISPLAY = f"Python ({KERNEL_NAME})"


def test_the_notebooks_name_the_kernel_make_install_registers():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "ipykernel install --user --name $(KERNEL_NAME)" in makefile
    assert '--display-name "Python ($(KERNEL_NAME))"' in makefile
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        spec = nbformat.read(path, as_version=4).metadata.kernelspec
        assert (spec.name, spec.display_name) == (KERNEL_NAME, KERNEL_DISPLAY), path.name
    # Headless runs must not depend on that registration (CI, a fresh clone before `make install`).
    addopts = re.search(r'^addopts = "(.*)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert f"--nbmake-kernel={HEADLESS_KERNEL}" in addopts.split()


# ------------------------------------------------------------------------------------------------- JupyterLab
@dataclass
class Lab:
    url: str
    token: str
    root: Path
    shots: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, method: str = "GET") -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
        return response.read()


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("jupyterlab")
    shutil.copytree(NOTEBOOKS_DIR, root / "notebooks", ignore=shutil.ignore_patterns(".*"))
    env = {k: v for k, v in os.environ.items() if k not in (progress.ENV, progress.SERVER_MARK)}
    env.update(
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_DATA_DIR=str(root / "data"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
        IPYTHONDIR=str(root / "ipython"),
        OPEN_R1_NB_RUNS=str(root / "runs"),
        OPEN_R1_NB_CACHE=str(root / "cache"),
    )
    # A first start of JupyterLab asks, in a toast, whether to fetch Jupyter's news: answered "never" here.
    settings = root / "config/lab/user-settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # What `make install` does, into this JupyterLab's data folder.
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--user", "--name", KERNEL_NAME]
        + ["--display-name", KERNEL_DISPLAY],
        env=env,
        check=True,
        capture_output=True,
    )
    port, token = _free_port(), secrets.token_hex(16)
    log = root / "jupyterlab.log"
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1"]
    cmd += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
    cmd += [f"--ServerApp.root_dir={root}"]
    with log.open("w") as out:
        server = subprocess.Popen(
            cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode} while starting:\n{_tail(log)}")
        try:
            _get(f"{url}/api/status?token={token}")
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not answer on {url} within 180 s:\n{_tail(log)}")
            time.sleep(0.5)
    shots = root / "screenshots"
    shots.mkdir()
    yield Lab(url=url, token=token, root=root, shots=shots, log=log)
    # Kernels a failed test left running, then the server (which stops its kernels on SIGTERM).
    try:
        for kernel in json.loads(_get(f"{url}/api/kernels?token={token}")):
            _get(f"{url}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
    except OSError:
        pass
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    # Printed past pytest's output capture, so that it shows with -q and when every test passed.
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nJupyterLab screenshots: {shots} (its log: {log})")


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(f"Chromium is not installed: {CHROMIUM_HINT}")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except PlaywrightError as err:
            pytest.fail(f"Chromium ({chromium}) did not start: {err}\n{CHROMIUM_HINT}")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(f"{lab.url}/lab/tree/notebooks?token={lab.token}")
        page.locator(".jp-DirListing-item", has_text="00_environment.ipynb").wait_for()
        yield page
        browser.close()


# In-page helpers. JupyterLab 4 exposes no application object to scripts: everything is read from what it shows.
_JS_CELLS = """
() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')].map(cell => ({
  source: cell.querySelector('.jp-InputArea-editor')?.textContent ?? '',
  prompt: cell.querySelector('.jp-InputArea-prompt')?.textContent ?? '',
  outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => ({
    mime: o.dataset.mimeType ?? null,
    text: o.textContent.slice(0, 3000),
    images: o.querySelectorAll('img').length,
    tables: o.querySelectorAll('table').length,
    progress: o.querySelectorAll('.widget-hprogress').length,
    headers: [...o.querySelectorAll('th')].map(th => th.textContent.trim()),
    rows: o.querySelectorAll('tr').length,
    pre: o.querySelectorAll('td pre').length,
  })),
}))
"""
_JS_STARTED = """
() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')]
  .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))
"""
# Done: no cell queued or running ([*]) and the kernel idle (the toolbar's execution indicator).
_JS_DONE = """
() => {
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')];
  const status = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator')?.dataset.status;
  return prompts.length > 0 && !prompts.some(p => p.textContent.includes('*')) && status === 'idle';
}
"""
_JS_KERNEL_READY = """
display => {
  const panel = document.querySelector('.jp-NotebookPanel');
  const status = panel?.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
  const name = panel?.querySelector('.jp-KernelName')?.textContent.trim();
  const bar = [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /\\| Idle$/.test(e.textContent));
  return (status === 'idle' && name === display && bar) || document.querySelector('.jp-Dialog') !== null;
}
"""
# Every picture the live-plot cell shows while it runs: a MutationObserver sees each one, however briefly shown.
_JS_WATCH_LIVE_PLOT = """
() => {
  const cell = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')]
    .find(c => c.querySelector('.jp-InputArea-editor')?.textContent.includes('LivePlot'));
  if (!cell) return false;
  window.__livePlots = [];
  const seen = new Set();
  const note = img => {
    if (!img.src?.startsWith('data:image') || seen.has(img.src)) return;
    seen.add(img.src);
    const running = cell.querySelector('.jp-InputArea-prompt').textContent.includes('*');
    window.__livePlots.push({ running, length: img.src.length });
  };
  new MutationObserver(records => {
    for (const r of records) {
      if (r.type === 'attributes' && r.target.tagName === 'IMG') note(r.target);
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1) continue;
        if (n.tagName === 'IMG') note(n);
        n.querySelectorAll('img').forEach(note);
      }
    }
  }).observe(cell, { subtree: true, childList: true, attributes: true, attributeFilter: ['src'] });
  return true;
}
"""

_JS_LIVE_PLOT_REDRAWN = f"""
() => {{
  if (window.__livePlots.filter(p => p.running).length >= 2) return 'redrawn';
  return ({_JS_DONE.strip()})() ? 'done' : false;
}}
"""


def _menu(page, menu: str, command: str) -> None:
    """Open a menu of the menu bar and click one of its items, as a person does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
    page.locator(f"li.lm-Menu-item[data-command='{command}']").click()


def _close_notebook(page) -> None:
    """File -> Save, then File -> Close and Shut Down Notebook (its kernel stops), confirming the dialog."""
    _menu(page, "File", "docmanager:save")
    _menu(page, "File", "filemenu:close-and-cleanup")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.locator(".jp-NotebookPanel").wait_for(state="detached")


def _cell(cells: list[dict], needle: str) -> dict:
    found = [c for c in cells if needle in c["source"]]
    assert found, f"no code cell contains {needle!r}"
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(name, lab, page):
    shot = lab.shots / f"{name}.png"
    where = f"(screenshot: {shot}; JupyterLab's log: {lab.log})"
    page.locator(".jp-DirListing-item", has_text=f"{name}.ipynb").dblclick()
    try:
        # Opened in the kernel the notebook names, without asking: `make install` registered it.
        page.wait_for_function(_JS_KERNEL_READY, arg=KERNEL_DISPLAY, timeout=180_000)
        dialog = page.locator(".jp-Dialog")
        assert dialog.count() == 0, f"JupyterLab asked: {dialog.inner_text()} {where}"
        cells = page.evaluate(_JS_CELLS)
        assert 'profile = "parameters/smoke.yaml"' in cells[0]["source"], (
            "the parameters cell is not the smoke's"
        )

        watching = name == "04_sft_training" and page.evaluate(_JS_WATCH_LIVE_PLOT)
        _menu(page, "Run", "runmenu:run-all")
        page.wait_for_function(_JS_STARTED)
        if watching:
            # The live plot redrawn while the cell still runs (the smoke profile's steps take a second; the
            # evaluation after training keeps the cell running): the picture of 04 at work. Stops waiting when
            # the cell ends without it; the assertions below say what was drawn.
            page.wait_for_function(_JS_LIVE_PLOT_REDRAWN, timeout=NOTEBOOK_TIMEOUT_MS, polling=100)
            if page.evaluate(_JS_LIVE_PLOT_REDRAWN) != "done":
                page.locator(
                    ".jp-CodeCell:has-text('LivePlot') .jp-OutputArea-output img"
                ).last.scroll_into_view_if_needed()
                page.screenshot(path=str(lab.shots / f"{name}_live_plot.png"))
        page.wait_for_function(_JS_DONE, timeout=NOTEBOOK_TIMEOUT_MS, polling=250)
        cells = page.evaluate(_JS_CELLS)
    finally:
        page.screenshot(path=str(shot))
        # Also after a failure, so that the next notebook opens alone; a close that fails shows up there.
        with contextlib.suppress(Exception):
            _close_notebook(page)

    outputs = [o for c in cells for o in c["outputs"]]
    pink = [o["text"] for o in outputs if o["mime"] == STDERR]
    assert not pink, (
        f"{name} shows stderr (errors, warnings or text progress bars) {where}:\n" + "\n---\n".join(pink)
    )
    not_run = [c["source"][:80] for c in cells if not re.search(r"\[\d+\]", c["prompt"])]
    assert not not_run, f"{name}: cells that did not run {where}: {not_run}"

    # Warnings shown are the project's own, written for the reader (the run's estimate, W&B, ...), not a library's
    # (e.g. transformers doubting the filesystem's mtimes when checkpoints are a second apart).
    foreign = [
        line
        for o in outputs
        for line in o["text"].splitlines()
        if re.search(r"\bWARNING\b|Warning:", line) and "open_r1_nb" not in line
    ]
    assert not foreign, f"{name} shows warnings with nothing to act on {where}: {foreign}"
    if name != "04_sft_training":  # 04 prints the training processes' own bar lines (stdout) on purpose
        text_bars = [o["text"][:200] for o in outputs if "%|" in o["text"]]
        assert not text_bars, f"{name}: progress bars drawn as text {where}: {text_bars}"
    if name == "00_environment":
        # Building the smoke assets saves a model: its progress bar is a widget.
        assert sum(o["progress"] for o in outputs) >= 1, f"no progress-bar widget in {name} {where}"
    if name == "04_sft_training":
        plots = page.evaluate("() => window.__livePlots")
        drawn_while_running = [p for p in plots if p["running"]]
        assert len(drawn_while_running) >= 2, f"the live plot drew {plots} while training ran {where}"
        assert _cell(cells, "plot_training(")["outputs"][0]["images"] == 1, f"no training curves {where}"
        assert _cell(cells, "training_summary(")["outputs"][0]["tables"] == 1, f"no summary table {where}"
    if name == "05_save_and_publish":
        assert _cell(cells, "check_saved_model(")["outputs"][0]["tables"] == 1, f"no checks table {where}"
        assert _cell(cells, "upload_plan(")["outputs"][-1]["tables"] == 1, f"no upload table {where}"
    if name == "06_evaluation":
        assert _cell(cells, "comparison_table(")["outputs"][0]["tables"] == 1, f"no comparison table {where}"
        assert _cell(cells, "plot_comparison(")["outputs"][0]["images"] == 1, f"no comparison plot {where}"
        side = [o for o in _cell(cells, "side_by_side(")["outputs"] if o["mime"] == "text/html"]
        assert side, f"no side-by-side completions {where}"
        for shown in side:
            assert shown["headers"][:3] == ["problem", "base", "smoke"], shown["headers"]
            assert shown["rows"] >= 2 and shown["pre"] >= 2, f"empty side-by-side table {where}"
