"""How long a run will take, said after its first optimizer steps, and why it may pass its time budget.

The training process measures its own steps (``EstimateCallback``): after a warm-up step and a few timed ones it
knows the seconds per step, the steps left and the real tokens per second, and from those it estimates the
evaluation that follows (tokens to generate over a generation speed tied to the measured training speed). The
pipeline runner puts its start time in the environment (``OPEN_R1_NB_PIPELINE_START``), so the estimate covers
the whole run, assets and the notebooks before training included. One line goes to the log, which notebook 04
streams and the runner echoes, and the figures go to ``metrics.json`` next to what the run then took.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("open_r1_nb.estimate")

#: Epoch seconds at which the pipeline runner started (before the assets), inherited by every process it starts.
PIPELINE_START_ENV = "OPEN_R1_NB_PIPELINE_START"
#: The log line that carries the estimate as JSON, for the runner and notebook 04 to find.
MARK = "open_r1_nb estimate:"

# Calibration of the evaluation estimate, from the cpu_demo runs in docs/performance.md (SmolLM2-135M, 2 cores,
# CTranslate2 in fp32, one batch of all held-out problems): sampled decoding produced about this many new tokens per
# second for each real token per second that the same machine trained on; generation runs in fp32 whatever the
# training precision, so the ratio is lower where training has bf16 units. A completion used about FILL of
# eval_max_new_tokens on average (base and trained model together; the base model often runs to the limit).
# AFTER_TRAINING_FIXED_S covers saving, two model conversions, notebook 05 and the notebooks' start-up.
GENERATION_PER_TRAINING_TOKEN = {"fp32": 0.8, "bf16": 0.6}
FILL = 0.52
AFTER_TRAINING_FIXED_S = 75.0
TIMED_STEPS = 3  # steps timed after the first (which warms up the allocator and the kernels)


@dataclass
class Estimate:
    """Expected times of a run, made after ``after_steps`` optimizer steps."""

    after_steps: int
    total_steps: int
    seconds_per_step: float
    real_tokens_per_second: float | None
    training_s: float  # all steps, from the measured step time
    evaluation_s: float  # the evaluation and everything after training (estimated, see the module docstring)
    elapsed_before_training_s: float  # since the runner started (0 when the notebook runs alone)
    total_s: float
    budget_s: float | None
    over_budget: bool
    reasons: list[str] = field(default_factory=list)
    made_at: str = ""

    def message(self) -> str:
        minutes = lambda s: f"{s / 60:.1f} min"  # noqa: E731
        text = (
            f"estimate after {self.after_steps} steps: {self.seconds_per_step:.2f} s/step x {self.total_steps} "
            f"steps = training ~{minutes(self.training_s)}; evaluation and the rest ~{minutes(self.evaluation_s)}; "
            f"whole run ~{minutes(self.total_s)}"
        )
        if self.budget_s:
            text += f" (budget {minutes(self.budget_s)})"
        if self.over_budget:
            text += ". WARNING: this run will pass its budget. Likely reason: " + (
                "; ".join(self.reasons) or "this machine is slower than the one the profile was sized on"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def training_token_cost(freeze_layers: int, layers: int | None) -> float:
    """The work of one training token relative to full fine-tuning: forward 2N, backward 4N over the share of the
    decoder that trains (``freeze_layers`` of ``layers`` keep their weights and see no backward pass)."""
    if not freeze_layers or not layers:
        return 1.0
    trained = max(0, layers - freeze_layers) / layers
    return (2 + 4 * trained) / 6


def evaluation_seconds(
    recipe, real_tokens_per_second: float | None, base_evaluated: bool = False, training_cost: float = 1.0
) -> float:
    """Expected seconds from the end of training to the end of the run: the trained model's evaluation (and the
    base model's, unless it is already done), at a generation speed tied to the measured training speed.

    The calibration is for full fine-tuning; ``training_cost`` (:func:`training_token_cost`) scales the measured
    training speed to it, since a model trained with frozen layers trains faster but generates no faster."""
    benchmarks = list(recipe.training.benchmarks or [])
    p = recipe.pipeline
    if not benchmarks or not real_tokens_per_second:
        return AFTER_TRAINING_FIXED_S if benchmarks else 0.0
    problems = (p.eval_limit or 100) * len(benchmarks) * max(p.eval_n or 1, 1)
    tokens = problems * (p.eval_max_new_tokens or 1024) * FILL * (1 if base_evaluated else 2)
    curve = p.learning_curve * (recipe.training.num_train_epochs or 1) if p.learning_curve else 0
    tokens += curve * (p.eval_max_new_tokens or 1024) * FILL
    ratio = GENERATION_PER_TRAINING_TOKEN["bf16" if recipe.training.bf16 else "fp32"]
    return AFTER_TRAINING_FIXED_S + tokens / (ratio * real_tokens_per_second * training_cost)


def likely_reasons(cpu, *, bf16: bool, others_cores: float | None, device: str = "cpu") -> list[str]:
    """Why a CPU run is slower than its profile expects, most likely first (``bf16``: training in bf16)."""
    if device != "cpu":
        return []
    reasons = []
    if not bf16 and not cpu.bf16:
        reasons.append(
            "no bf16 units on this CPU"
            + (" (an AVX2-only CPU is emulated)" if cpu.emulated else f" ({cpu.describe()})")
            + ": training runs in fp32, about 2-3x slower per step than with bf16 autocast"
        )
    if cpu.cores < 2:
        reasons.append(f"only {cpu.cores} core usable by this process (the profiles are sized for 2)")
    if others_cores is not None and others_cores >= 0.3:
        reasons.append(
            f"other processes used ~{others_cores:.1f} of {cpu.cores} cores during the timed steps: close them or "
            "wait for them"
        )
    return reasons


def make_estimate(
    recipe,
    *,
    after_steps: int,
    total_steps: int,
    seconds_per_step: float,
    training_elapsed_s: float | None = None,
    real_tokens_per_second: float | None = None,
    others_cores: float | None = None,
    pipeline_start: float | None = None,
    training_start: float | None = None,
    base_evaluated: bool = False,
    training_cost: float = 1.0,
    cpu=None,
    now: float | None = None,
) -> Estimate:
    """The estimate for a run whose steps take ``seconds_per_step`` once warm, made after ``after_steps`` of
    ``total_steps`` steps took ``training_elapsed_s`` (default: as many steps at that pace)."""
    from open_r1_nb.hardware import cpu_class

    now = time.time() if now is None else now
    cpu = cpu or cpu_class()
    if training_elapsed_s is None:
        training_elapsed_s = after_steps * seconds_per_step
    training_s = training_elapsed_s + max(0, total_steps - after_steps) * seconds_per_step
    evaluation_s = evaluation_seconds(recipe, real_tokens_per_second, base_evaluated, training_cost)
    before = max(0.0, (training_start or now) - pipeline_start) if pipeline_start else 0.0
    total_s = before + training_s + evaluation_s
    budget = recipe.pipeline.time_budget_minutes
    budget_s = budget * 60 if budget else None
    over = bool(budget_s and total_s > budget_s)
    reasons = []
    if over:
        reasons = likely_reasons(
            cpu,
            bf16=bool(recipe.training.bf16),
            others_cores=others_cores,
            device="cpu" if recipe.training.use_cpu else "gpu",
        )
    return Estimate(
        after_steps=after_steps,
        total_steps=total_steps,
        seconds_per_step=seconds_per_step,
        real_tokens_per_second=real_tokens_per_second,
        training_s=training_s,
        evaluation_s=evaluation_s,
        elapsed_before_training_s=before,
        total_s=total_s,
        budget_s=budget_s,
        over_budget=over,
        reasons=reasons,
        made_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
    )


def parse_estimate_line(line: str) -> dict[str, Any] | None:
    """The estimate carried by a log line, or None."""
    at = line.find(MARK)
    if at < 0:
        return None
    try:
        return json.loads(line[at + len(MARK) :].strip())
    except json.JSONDecodeError:
        return None


def pipeline_start_from_env() -> float | None:
    value = os.environ.get(PIPELINE_START_ENV)
    try:
        return float(value) if value else None
    except ValueError:
        return None


class _CpuShare:
    """Cores used by this training (the launcher and all its processes) and by everything else, over a window."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        # Under `accelerate launch` the launcher (and, with several ranks, torchrun and the other ranks) belong to
        # this training: count the whole tree from the launcher down.
        parent = psutil.Process().parent()
        launched = parent is not None and "accelerate" in " ".join(parent.cmdline())
        self._root = parent if launched else None
        self._start = self._read()

    def _tree_seconds(self) -> float:
        root = self._root or self._psutil.Process()
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except self._psutil.Error:
                pass
        return total

    def _read(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        return time.monotonic(), busy, self._tree_seconds()

    def others(self) -> float | None:
        end = self._read()
        wall = end[0] - self._start[0]
        if wall <= 0:
            return None
        return max(0.0, ((end[1] - self._start[1]) - (end[2] - self._start[2])) / wall)


def estimate_callback(recipe, token_count, on_estimate=None):
    """A ``TrainerCallback`` that times the first steps and logs, on the main process, the run's estimate;
    ``token_count()`` returns the real tokens this process has trained on so far, and ``on_estimate(estimate)``
    (if given) records it."""
    from transformers import TrainerCallback

    class EstimateCallback(TrainerCallback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.tokens0 = 0.0
            self.start_step = 0
            self.share: _CpuShare | None = None
            self.done = False
            self.training_start = time.time()

        def on_train_begin(self, args, state, control, **kwargs):
            self.training_start = time.time()
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if self.done or not state.is_world_process_zero:
                return control
            timed = min(TIMED_STEPS, max(1, state.max_steps - 2))
            if (
                self.t0 is None
            ):  # the first step here (a resumed run starts later) warms up: time from its end
                self.t0, self.tokens0, self.start_step = (
                    time.perf_counter(),
                    float(token_count()),
                    state.global_step,
                )
                try:
                    self.share = _CpuShare()
                except Exception:  # psutil missing or /proc unreadable: the estimate goes without it
                    self.share = None
                return control
            steps = state.global_step - self.start_step
            if steps < timed:
                return control
            self.done = True
            now = time.perf_counter()
            tokens = (float(token_count()) - self.tokens0) * max(args.world_size, 1)
            est = make_estimate(
                recipe,
                after_steps=state.global_step,
                total_steps=state.max_steps,
                seconds_per_step=(now - self.t0) / steps,
                training_elapsed_s=time.time() - self.training_start,
                real_tokens_per_second=tokens / (now - self.t0) if tokens else None,
                others_cores=self.share.others() if self.share else None,
                pipeline_start=pipeline_start_from_env(),
                training_start=self.training_start,
                base_evaluated=_base_evaluated(args.output_dir),
                training_cost=training_token_cost(
                    getattr(recipe.training, "freeze_layers", 0), _decoder_layers(kwargs.get("model"))
                ),
            )
            (logger.warning if est.over_budget else logger.info)(est.message())
            logger.info("%s %s", MARK, json.dumps(est.as_dict()))
            if on_estimate is not None:
                try:
                    on_estimate(est)
                except OSError as err:  # the estimate is advice: a read-only folder must not stop training
                    logger.warning("could not record the estimate: %s", err)
            return control

    return EstimateCallback()


def run_folder(output_dir: str | os.PathLike) -> Path:
    """The run folder of a trainer's output_dir (``runs/<run>/checkpoints`` -> ``runs/<run>``)."""
    out = Path(output_dir)
    return out.parent if out.name == "checkpoints" else out


def _base_evaluated(output_dir: str | os.PathLike) -> bool:
    return any((run_folder(output_dir) / "eval").glob("*/base.json"))


def _decoder_layers(model) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "num_hidden_layers", None)
