"""Reading the Trainer's log from a launch's output: ``parse_log_line`` finds the dict a line carries, and
``TrainingLog`` collects them, with the step each belongs to, for the live loss plot and the summary of a run.

Checked with transformers 5.17: the Trainer prints its logs as Python dict reprs whose float values are strings
with 4 significant digits, ``{'loss': '4.864', 'grad_norm': '0.812', 'learning_rate': '0.001', 'epoch': '0.25'}``,
without the step. ``open_r1_nb.launch`` streams the lines (``run(..., on_line=TrainingLog())``) and re-exports
these names.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_log_line(line: str) -> dict[str, float] | None:
    """The Trainer's log dict in ``line`` with float values, or None.

    transformers 5.17 prints ``{'loss': '4.864', 'grad_norm': '0.812', 'learning_rate': '0.001', 'epoch':
    '0.25'}`` (values as strings with 4 significant digits; plain numbers are accepted too). Text before the
    first ``{`` (a rank prefix, a tqdm remnant) or after the dict is ignored; a dict with a non-numeric value is
    not a log line.
    """
    start = line.find("{")
    if start < 0:
        return None
    # Try each closing brace in turn: another rank's output can land between the dict and its newline
    # (print() and tqdm.write() write them separately), leaving text, braces included, after the dict.
    obj = None
    end = line.find("}", start)
    while end >= 0 and obj is None:
        try:
            obj = ast.literal_eval(line[start : end + 1])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            end = line.find("}", end + 1)
    if not isinstance(obj, dict) or not obj:
        return None
    out: dict[str, float] = {}
    for k, v in obj.items():
        f = _to_float(v)
        if not isinstance(k, str) or f is None:
            return None
        out[k] = f
    return out


class TrainingLog:
    """Accumulates the Trainer's log dicts from streamed lines; pass it as ``run(..., on_line=log)``.

    The Trainer's printed dicts carry no step, so the step is inferred: the k-th training log is at step
    ``k × logging_steps`` (step 1 first when ``logging_first_step``); a ``step`` key, when present, wins.
    Evaluation dicts (``eval_*`` keys) take the step of the last training log; the final summary
    (``train_runtime``, ``train_samples_per_second``, ``train_loss``, ...) is kept apart in ``summary``.
    """

    def __init__(self, logging_steps: int = 1, logging_first_step: bool = False):
        self.logging_steps = logging_steps
        self.logging_first_step = logging_first_step
        self.records: list[dict[str, float]] = []
        self.summary: dict[str, float] | None = None
        self._train_logs = 0

    def __call__(self, line: str) -> dict[str, float] | None:
        return self.add_line(line)

    def add_line(self, line: str) -> dict[str, float] | None:
        """Parse one output line; record and return its dict when it is a log line."""
        record = parse_log_line(line)
        if record is not None:
            self.add(record)
        return record

    def _next_step(self) -> int:
        k = self._train_logs
        if self.logging_first_step and self.logging_steps > 1:
            return 1 if k == 0 else k * self.logging_steps
        return (k + 1) * self.logging_steps

    def add(self, record: Mapping[str, float]) -> None:
        """Record one parsed dict."""
        record = dict(record)
        if "train_runtime" in record:
            self.summary = record
            return
        if any(k.startswith("eval_") for k in record):
            record.setdefault("step", self.records[-1]["step"] if self.records else 0.0)
        else:
            record.setdefault("step", float(self._next_step()))
            self._train_logs += 1
        self.records.append(record)

    @property
    def last(self) -> dict[str, float] | None:
        return self.records[-1] if self.records else None

    def to_frame(self) -> Any:
        """The records as a pandas DataFrame, one row per log, ``step`` first (integer)."""
        import pandas as pd

        df = pd.DataFrame(self.records)
        if df.empty:
            return pd.DataFrame(columns=["step", "epoch", "loss", "learning_rate", "grad_norm"])
        df["step"] = df["step"].astype(int)
        return df[["step", *[c for c in df.columns if c != "step"]]]

    @classmethod
    def from_file(cls, log_path: str | os.PathLike, **kwargs: Any) -> TrainingLog:
        """Re-read a run's log (e.g. ``runs/<run>/train.log``) when the notebook is re-run without training.

        Only the last launch in the file is read (``run`` appends, and starts each launch with ``# $``).
        """
        log = cls(**kwargs)
        lines = Path(log_path).read_text(encoding="utf-8").splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("# $ ")]
        for line in lines[starts[-1] if starts else 0 :]:
            log.add_line(line)
        return log
