"""The live training plot of notebook 04: when it redraws."""

from __future__ import annotations

import time

from open_r1_nb import plots
from open_r1_nb.launch import TrainingLog

STEPS = [
    f"{{'loss': '{5.9 - i / 10:.2f}', 'grad_norm': '1.5', 'learning_rate': '0.001', 'epoch': '{i / 8}'}}"
    for i in range(1, 7)
]
SUMMARY = (
    "{'train_runtime': '0.41', 'train_samples_per_second': '58.5', 'train_loss': '5.8', 'epoch': '0.75'}"
)


def test_the_live_plot_draws_the_last_steps_when_training_ends(monkeypatch):
    # Six steps within a second, as the smoke profile trains: the throttle lets the first through, and the end
    # of training must draw the rest (before, the plot kept showing step 1 alone).
    drawn: list[list[int]] = []
    live = plots.LivePlot(TrainingLog(logging_steps=1), every_s=5.0)
    live._active = True  # as in a kernel

    def refresh():  # what refresh records, without a display to draw on
        drawn.append(list(live.log.to_frame()["step"]))
        live._last = time.monotonic()

    monkeypatch.setattr(live, "refresh", refresh)
    for line in ["[INFO] loading the model", *STEPS, "Writing model shards: 100%|", SUMMARY, "saved"]:
        live(line)
    assert drawn == [[1], [1, 2, 3, 4, 5, 6]]


def test_outside_a_kernel_the_live_plot_only_records(monkeypatch):
    live = plots.LivePlot(TrainingLog(logging_steps=1), every_s=0.0)
    monkeypatch.setattr(
        live, "refresh", lambda: (_ for _ in ()).throw(AssertionError("drew outside a kernel"))
    )
    for line in [*STEPS, SUMMARY]:
        live(line)
    assert len(live.log.records) == 6 and live.log.summary is not None
