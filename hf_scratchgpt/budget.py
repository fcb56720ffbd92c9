"""A time budget for training: measure this machine, then size the run (and the model) to fit.

Machines differ by three orders of magnitude (an AVX2 laptop CPU in fp32, an AMX server CPU in bf16, a GPU),
so a fixed ``max_steps`` cannot keep a promise like "about 15 minutes". Instead:

1. `measure_seconds_per_step` runs a few real ``Trainer`` steps (same model, batch, precision and optimizer as
   the run) on a throwaway copy of the model and times them;
2. `choose_model_size` (only when no size was given) turns the measured speed into training FLOP/s and picks
   the largest rung of `SIZE_LADDER` whose Chinchilla-optimal run (tokens ~ 20 x non-embedding parameters)
   fits the budget, bounded by the smallest and largest rung;
3. `max_steps_for_budget` turns the seconds left into ``max_steps``, which also sets the warmup/decay schedule.

FLOPs per token follow the usual estimate (Kaplan et al. 2020, as nanoGPT's ``estimate_mfu``): 6 per weight
that multiplies an activation (the output head included, even when tied) plus ``12 * layers * width * context``
for the attention scores.
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

logger = logging.getLogger(__name__)

# Tokens per non-embedding parameter of a compute-optimal run (Hoffmann et al. 2022, "Chinchilla").
CHINCHILLA_TOKENS_PER_PARAMETER = 20.0


@dataclass
class BudgetArguments:
    """How long a training script may take; it then sizes ``max_steps`` (and the model, if unset) to fit."""

    time_budget: float | None = field(
        default=None,
        metadata={
            "help": "Minutes for this whole script (loading, training, evaluation, saving). Sets --max_steps "
            "from this machine's measured speed and, when no --preset/--model_config is given, the model size."
        },
    )
    budget_probe_steps: int = field(
        default=6,
        metadata={"help": "Optimizer steps timed to measure this machine's speed (first not counted)."},
    )


@dataclass(frozen=True)
class ModelSize:
    """One rung of the size ladder: a preset plus shape overrides and a learning rate that suits it."""

    name: str
    preset: str
    overrides: dict[str, Any]
    learning_rate: float


# From a model a slow laptop CPU can train in minutes to GPT-2 small. All GPT-2 recipe (learned positions),
# head width 64 or less, so each rung is a plain scaling of the one below.
SIZE_LADDER: tuple[ModelSize, ...] = (
    ModelSize("pico", "tiny", {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2}, 3e-3),
    ModelSize("nano", "tiny", {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2}, 3e-3),
    ModelSize("micro", "tiny", {"num_hidden_layers": 3, "hidden_size": 192, "num_attention_heads": 3}, 2e-3),
    ModelSize("tiny", "tiny", {}, 2e-3),
    ModelSize(
        "small",
        "tiny",
        {
            "num_hidden_layers": 6,
            "hidden_size": 384,
            "num_attention_heads": 6,
            "max_position_embeddings": 512,
        },
        1e-3,
    ),
    ModelSize(
        "medium",
        "tiny",
        {
            "num_hidden_layers": 8,
            "hidden_size": 512,
            "num_attention_heads": 8,
            "max_position_embeddings": 512,
        },
        8e-4,
    ),
    ModelSize("gpt2", "gpt2", {}, 6e-4),
)


def non_embedding_parameters(config: Any) -> int:
    """Weights of the blocks (attention, MLP, norms), without token/position embeddings or the head.

    This is the "N" of the scaling laws. Counted from the config, so no model needs to be built.
    """
    d, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * config.head_dim
    attention = d * d * 2 + d * kv * 2  # q, o and k, v projections
    mlp = d * config.intermediate_size * (3 if config.mlp_type == "swiglu" else 2)
    biases = (2 * d + 2 * kv + config.intermediate_size + d) if config.bias else 0
    norm = d * (1 if config.norm_type == "rmsnorm" else 2)  # gain (and LayerNorm's bias)
    qk_norm = 2 * config.head_dim if config.qk_norm else 0
    return layers * (attention + mlp + biases + 2 * norm + qk_norm) + norm  # + the final norm


def training_flops_per_token(config: Any, context: int) -> float:
    """Forward + backward FLOPs to train on one token at the given context length."""
    matmul_weights = non_embedding_parameters(config) + config.hidden_size * config.vocab_size  # + head
    attention_scores = 12 * config.num_hidden_layers * config.hidden_size * context
    return 6.0 * matmul_weights + attention_scores


@dataclass(frozen=True)
class SizeChoice:
    """The rung `choose_model_size` picked, and the numbers behind it (for metrics and the report)."""

    size: ModelSize
    rule: str
    non_embedding_parameters: int
    affordable_tokens: float
    optimal_tokens: float


def choose_model_size(
    flops_per_second: float,
    budget_seconds: float,
    config_for: Any,
    ladder: tuple[ModelSize, ...] = SIZE_LADDER,
    tokens_per_parameter: float = CHINCHILLA_TOKENS_PER_PARAMETER,
) -> SizeChoice:
    """The largest rung whose compute-optimal run (``tokens_per_parameter`` x N tokens) fits the budget.

    ``config_for(size)`` builds the config of a rung (sized to the tokenizer). With ``flops_per_second`` the
    machine's measured training speed, a rung can see ``flops_per_second * budget / flops_per_token`` tokens.
    When even the smallest rung cannot reach its optimum, it is chosen anyway (it gets the most tokens per
    parameter); the largest rung caps the other end.
    """
    chosen = None
    for size in ladder:
        config = config_for(size)
        n = non_embedding_parameters(config)
        affordable = (
            flops_per_second
            * budget_seconds
            / training_flops_per_token(config, config.max_position_embeddings)
        )
        if chosen is None or affordable >= tokens_per_parameter * n:
            chosen = (size, n, affordable)
    size, n, affordable = chosen
    optimal = tokens_per_parameter * n
    if affordable >= optimal:
        bound = " (the largest rung)" if size == ladder[-1] else ""
        rule = (
            f"Chinchilla: the largest model whose {tokens_per_parameter:g} tokens per non-embedding parameter "
            f"fit the budget{bound}: {size.name}, {n / 1e6:.2f}M non-embedding parameters, "
            f"{affordable / 1e6:.1f}M tokens affordable vs {optimal / 1e6:.1f}M optimal"
        )
    else:
        rule = (
            f"Chinchilla, bounded below: even the smallest rung ({size.name}, {n / 1e6:.2f}M non-embedding "
            f"parameters) can only see {affordable / 1e6:.2f}M tokens in the budget, "
            f"{affordable / n:.1f} per parameter instead of {tokens_per_parameter:g}"
        )
    return SizeChoice(size, rule, n, affordable, optimal)


@dataclass(frozen=True)
class BudgetPlan:
    """How a run fits its budget: the size chosen (if it was open), the measured speed and ``max_steps``."""

    max_steps: int
    seconds_per_step: float
    flops_per_second: float
    tokens_per_step: int
    size: ModelSize | None = None
    size_rule: str | None = None
    precision: str | None = None  # set when several were measured: the fastest
    precision_seconds_per_step: dict[str, float] | None = None

    @property
    def tokens(self) -> int:
        return self.max_steps * self.tokens_per_step


# Share of the seconds left (after measuring and after the evaluations are paid for) that goes to optimizer
# steps; the rest is a margin for logging, sample generations, checkpoints and the final save.
TRAINING_SHARE = 0.85
DEFAULT_SIZE = "tiny"


def plan_to_budget(
    seconds_left: Callable[[], float],
    probe: Callable[[ModelSize | None], tuple[Any, int, float]],
    config_for: Callable[[ModelSize], Any],
    size_open: bool,
    evaluation_seconds: Callable[[float], float] = lambda seconds_per_step: 0.0,
    ladder: tuple[ModelSize, ...] = SIZE_LADDER,
    precisions: tuple[str, ...] = (),
) -> BudgetPlan:
    """Measure, choose the size (when ``size_open``), and set ``max_steps`` so training fits the time left.

    ``probe(size)`` trains a few steps of the model of that rung (``None``: the configured model) and returns
    ``(config, tokens_per_step, seconds_per_step)``; ``seconds_left()`` is the budget minus the time spent so
    far, probes included; ``evaluation_seconds(seconds_per_step)`` estimates what the run's evaluations cost
    at that speed. With ``precisions`` (e.g. bf16 and fp32 on a CPU whose bf16 instructions may not pay off
    for small matrices), the first probe runs in each, ``probe(size, precision)``, and the fastest is kept
    for the rest. Tested with a fake probe: the logic does not depend on how fast this machine is.
    """

    def training_seconds(step_seconds: float) -> float:
        return max(0.0, seconds_left() - evaluation_seconds(step_seconds)) * TRAINING_SHARE

    size = next(rung for rung in ladder if rung.name == DEFAULT_SIZE) if size_open else None
    precision, timings = None, None
    if precisions:
        measured = {candidate: probe(size, candidate) for candidate in precisions}
        timings = {candidate: result[2] for candidate, result in measured.items()}
        precision = min(timings, key=timings.get)
        config, step_tokens, step_seconds = measured[precision]
    else:
        config, step_tokens, step_seconds = probe(size)
    speed = flops_per_second(config, config.max_position_embeddings, step_tokens, step_seconds)
    rule = None
    if size_open:
        choice = choose_model_size(speed, training_seconds(step_seconds), config_for, ladder)
        if choice.size != size:
            config, step_tokens, step_seconds = (
                probe(choice.size, precision) if precision else probe(choice.size)
            )
        size, rule = choice.size, choice.rule
    max_steps = max_steps_for_budget(training_seconds(step_seconds), step_seconds)
    return BudgetPlan(max_steps, step_seconds, speed, step_tokens, size, rule, precision, timings)


def max_steps_for_budget(seconds: float, seconds_per_step: float, min_steps: int = 10) -> int:
    """How many optimizer steps fit in ``seconds`` at the measured speed (at least ``min_steps``)."""
    if seconds_per_step <= 0:
        raise ValueError(f"seconds_per_step must be positive, got {seconds_per_step}.")
    return max(min_steps, int(seconds // seconds_per_step))


class _StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.step_ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.step_ends.append(time.perf_counter())


def measure_seconds_per_step(
    model: Any,
    train_dataset: Any,
    args: TrainingArguments,
    data_collator: Any,
    steps: int = 6,
    trainer_class: type[Trainer] = Trainer,
) -> float:
    """Seconds per optimizer step of a real ``Trainer`` run, on a copy of ``model`` (left untouched).

    The first step (allocations, kernel selection) is not counted, and the time is the median of the
    following ``steps - 1`` intervals, so one slow step (another process taking the CPU, a first-time kernel
    for a new shape) does not skew the plan. Same batch size, accumulation, precision and optimizer as ``args``.
    """
    if steps < 2:
        raise ValueError("measure_seconds_per_step needs at least 2 steps (the first one is not timed).")
    timer = _StepTimer()
    with tempfile.TemporaryDirectory(prefix="scratchgpt-probe-") as scratch:
        probe_args = copy.deepcopy(args)
        for name, value in dict(
            output_dir=scratch, max_steps=steps, eval_strategy="no", save_strategy="no", report_to=[],
            logging_strategy="no", warmup_steps=0, disable_tqdm=True,
        ).items():  # fmt: skip
            object.__setattr__(probe_args, name, value)
        trainer = trainer_class(
            model=copy.deepcopy(model),
            args=probe_args,
            train_dataset=train_dataset,
            data_collator=data_collator,
            callbacks=[timer],
        )
        for quiet in (PrinterCallback, ProgressCallback):  # a probe, not a run: print nothing
            trainer.remove_callback(quiet)
        trainer.train()
    intervals = [b - a for a, b in zip(timer.step_ends, timer.step_ends[1:], strict=False)]
    return statistics.median(intervals)


class TimeBudgetCallback(TrainerCallback):
    """Stop training when the stage's time is up, for stages that cannot size ``max_steps`` in advance.

    Fine-tuning stages (classifier, SFT, DPO) use it: their steps cost very different amounts depending on
    the data, so instead of a measured ``max_steps`` they train until ``deadline`` (a ``time.perf_counter()``
    value) and then stop cleanly, with the learning-rate schedule cut where it stood.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.stopped_at_step: int | None = None

    @classmethod
    def for_stage(cls, time_budget_minutes: float, started: float, share: float = 0.7) -> TimeBudgetCallback:
        """Training may use ``share`` of the stage's budget; the rest is for evaluating and saving."""
        return cls(started + time_budget_minutes * 60 * share)

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if time.perf_counter() >= self.deadline and not control.should_training_stop:
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
            logger.warning(
                "time budget reached: training stops at step %d of %d", state.global_step, state.max_steps
            )


def tokens_per_step(args: TrainingArguments, block_size: int) -> int:
    """Tokens one optimizer step trains on, over all processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size * block_size


def flops_per_second(config: Any, block_size: int, step_tokens: int, seconds_per_step: float) -> float:
    """Training FLOP/s achieved by a measured step."""
    return training_flops_per_token(config, block_size) * step_tokens / seconds_per_step


__all__ = [
    "BudgetArguments",
    "BudgetPlan",
    "CHINCHILLA_TOKENS_PER_PARAMETER",
    "SIZE_LADDER",
    "ModelSize",
    "SizeChoice",
    "TimeBudgetCallback",
    "choose_model_size",
    "flops_per_second",
    "max_steps_for_budget",
    "measure_seconds_per_step",
    "non_embedding_parameters",
    "plan_to_budget",
    "tokens_per_step",
    "training_flops_per_token",
]
