"""Progress bars as the reader sees them: widgets in JupyterLab, plain text everywhere else.

tqdm's own choice (``tqdm.auto``) is made once, when it is first imported, and only asks whether the code runs in
an IPython kernel: it cannot tell JupyterLab, which renders widgets, from papermill or nbmake, which record them as
``HBox(...)`` placeholders in the executed notebook. transformers' bars follow ``tqdm.auto`` at each bar, but
huggingface_hub's and datasets' bar classes subclass whatever ``tqdm.auto`` gave when they were imported. So the
choice is made here, before those libraries are imported (``import open_r1_nb`` calls :func:`setup`), and classes
that were created earlier are moved onto it.

The rule: widgets when a Jupyter server (JupyterLab, Notebook 7) started the kernel, which it marks with
``JPY_SESSION_NAME``, and ipywidgets is installed; plain text otherwise (papermill, nbmake, terminals, the
training processes, logs). ``OPEN_R1_NB_PROGRESS=widgets`` or ``=text`` decides instead (e.g. widgets in a
front end that starts kernels itself, such as VS Code).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings

ENV = "OPEN_R1_NB_PROGRESS"
STYLES = ("widgets", "text")
#: What a Jupyter server sets in the environment of each kernel it starts (the notebook's path).
SERVER_MARK = "JPY_SESSION_NAME"


def in_kernel() -> bool:
    """True inside an IPython kernel (JupyterLab, papermill, nbmake), False in a terminal or a subprocess."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


def style() -> str:
    """``"widgets"`` or ``"text"``: how this process should draw progress bars."""
    forced = os.environ.get(ENV, "").strip().lower()
    has_widgets = importlib.util.find_spec("ipywidgets") is not None
    if forced:
        if forced not in STYLES:
            raise ValueError(
                f"{ENV}={os.environ[ENV]!r} is not a progress-bar style. Fix: set it to 'widgets' or 'text', "
                "or unset it (widgets in JupyterLab, text elsewhere)."
            )
        if forced == "widgets" and not has_widgets:
            raise ValueError(
                f"{ENV}=widgets needs ipywidgets, which this environment lacks. Fix: pip install ipywidgets "
                f"(and jupyterlab_widgets where JupyterLab runs), or set {ENV}=text."
            )
        return forced
    if in_kernel() and os.environ.get(SERVER_MARK) and has_widgets:
        return "widgets"
    return "text"


@functools.cache
def _bar_class(kind: str) -> type:
    """The class ``tqdm.auto.tqdm`` is for each style (built once, so repeated calls compare by identity)."""
    from tqdm.asyncio import tqdm as text_bar

    if kind == "text":
        return text_bar
    from tqdm.notebook import tqdm as notebook_bar

    # What tqdm.auto builds in a notebook: the widget bar with asyncio's iteration on top.
    class tqdm(notebook_bar, text_bar):  # noqa: N801 - tqdm's own name, as tqdm.auto names it
        pass

    return tqdm


def setup() -> str | None:
    """Make every progress bar of this kernel use :func:`style`; return the style, or None outside a kernel.

    Nothing changes outside a kernel: tqdm draws text there already. Calling it again is cheap and changes
    nothing unless ``OPEN_R1_NB_PROGRESS`` changed.
    """
    if not in_kernel():
        return None
    kind = style()
    from tqdm.std import TqdmWarning

    with warnings.catch_warnings():
        # Without ipywidgets tqdm.auto warns "IProgress not found" into the notebook; the choice is made here.
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.auto as auto
        import tqdm.autonotebook as autonotebook
    target, old = _bar_class(kind), auto.tqdm
    if old is target:
        return kind
    auto.tqdm = autonotebook.tqdm = target  # tqdm.auto.trange reads tqdm.auto.tqdm at each call
    autonotebook.trange = auto.trange
    # Libraries imported before this point hold the old class: as a module attribute (datasets' py_utils) or as
    # the base of their own bar class (huggingface_hub's and datasets' ``tqdm``, which add their disable flags).
    for module in list(sys.modules.values()):
        # vars(), not getattr(): transformers' lazy modules import on attribute access.
        names = getattr(module, "__dict__", {})
        if names.get("tqdm") is old and not names.get("__name__", "").startswith("tqdm"):
            module.tqdm = target
    for sub in old.__subclasses__():
        if sub is not target and not sub.__module__.startswith("tqdm"):
            sub.__bases__ = tuple(target if base is old else base for base in sub.__bases__)
    return kind
