"""Plots the notebooks show: training curves (live while the launch runs, and final)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CURVES = (("loss", "training loss"), ("learning_rate", "learning rate"), ("grad_norm", "grad norm"))


def plot_training(frame, path: str | Path | None = None, title: str = ""):
    """Loss, learning rate and grad-norm against the step, one panel each."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, (column, label) in zip(axes, CURVES, strict=True):
        if frame is not None and column in getattr(frame, "columns", []) and frame[column].notna().any():
            data = frame[["step", column]].dropna()
            ax.plot(data["step"], data[column], marker="o" if len(data) < 30 else None, ms=3)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


class LivePlot:
    """Redraws the training curves in place as log records arrive (at most every ``every_s`` seconds, and once
    more when training ends).

    Outside a notebook (a terminal launch) it does nothing, so the launcher can always pass it.
    """

    def __init__(self, training_log, every_s: float = 5.0):
        self.log = training_log
        self.every_s = every_s
        self._last = 0.0
        self._handle = None
        try:
            from IPython import get_ipython

            self._active = get_ipython() is not None
        except ImportError:
            self._active = False

    def __call__(self, line: str) -> Any:
        record = self.log.add_line(line)
        if record is None or not self._active:
            return record
        # The Trainer's closing summary (train_runtime, ...) ends training: draw now, or the steps logged in the
        # last ``every_s`` seconds would never reach the plot (all but the first, when training is that short).
        if "train_runtime" in record or time.monotonic() - self._last >= self.every_s:
            self.refresh()
        return record

    def refresh(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = plot_training(self.log.to_frame(), title="training (live)")
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
        self._last = time.monotonic()
