"""A time budget for training: measure this machine, then size the run (and the model) to fit.

Machines differ by three orders of magnitude (an AVX2 laptop CPU in fp32, an AMX server CPU in bf16, a GPU),
so a fixed ``max_steps`` cannot keep a promise like "about 15 minutes". Instead:

1. `measure_seconds_per_step` runs a few real ``Trainer`` steps (same model, batch, precision and optimizer as
   the run) on a throwaway copy of the model and times them;
2. `choose_model_size` (only when no size was given) turns the measured speed into training FLOP/s and picks
   the largest rung of `SIZE_LADDER` that can see the tokens it is worth within the budget: Chinchilla's
   20 per non-embedding parameter, but on a small corpus no more than 4 epochs of it (data-constrained
   scaling), in at least `MIN_STEPS_TO_GROW` optimizer steps, bounded by the smallest and largest rung;
3. `max_steps_for_budget` turns the seconds left into the planned steps; the run's schedule then follows the
   clock to the deadline (`hf_scratchgpt.train.schedule`), so a machine slower than measured still finishes its
   decay. A budget that buys fewer than `MIN_USEFUL_STEPS` steps is flagged, with the budget that would do.

FLOPs per token follow the usual estimate (Kaplan et al. 2020, as nanoGPT's ``estimate_mfu``): 6 per weight
that multiplies an activation (the output head included, even when tied) plus ``12 * layers * width * context``
for the attention scores.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from .arguments import InvalidArgumentsError, ValidatedArguments

logger = logging.getLogger(__name__)

# Tokens per non-embedding parameter of a compute-optimal run (Hoffmann et al. 2022, "Chinchilla").
CHINCHILLA_TOKENS_PER_PARAMETER = 20.0


@dataclass
class BudgetArguments(ValidatedArguments):
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

    def __post_init__(self) -> None:
        super().__post_init__()  # --budget_probe_steps: 2 or more (VALUE_RULES)
        # A budget of zero or less would silently mean "no budget" (or the minimum of steps): refuse it. Not
        # a rule of VALUE_RULES: the main job's --time_budget 0 means "no budget".
        if self.time_budget is not None and not self.time_budget > 0:
            raise InvalidArgumentsError(
                f"--time_budget {self.time_budget:g}: must be a positive number of minutes (e.g. --time_budget "
                "15); leave it out to train --max_steps steps without a budget."
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


# Data-constrained scaling (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"): up to about
# 4 epochs, repeated tokens are worth almost as much as new ones; beyond, their value decays (by ~16 epochs
# more passes buy next to nothing). So a budget need not buy a rung more than this many epochs of the corpus,
# and spends the rest on a larger rung. Measured with benchmarks/main_job.py's corpus (0.17M training tokens,
# 5 minutes, this machine, bits per byte): pico 32 epochs 1.552, nano 20 epochs 1.570, micro 14 epochs 1.504,
# tiny 10 epochs 1.465 (the rung this rule picks there).
EPOCHS_WORTH_REPEATING = 4.0
# Past this many epochs a run stops (fully decayed), even before its deadline. The paper's models, compute-optimal,
# still gain a little up to ~16 epochs (R_D* = 15.4); ours, on a small corpus, hold far more parameters than
# tokens and start to memorise sooner. benchmarks/main_job.py (5 minutes, Xeon with AMX, 2 threads, dropout 0.1):
# `tiny` allowed 16 epochs took 676 steps (15.7 epochs, 261 s) and ended at 1.514 bits per byte, its validation
# loss rising from epoch ~9.5 (4.09 -> 4.15 -> 4.22 on the curve subset); stopped at 8 epochs, 338 steps in 139 s,
# 1.471.
MOST_EPOCHS = 8.0


# A larger rung is chosen only when the budget buys it at least this many optimizer steps. Chinchilla's tokens per
# parameter say nothing about how few steps a run can make do with, and a run of a hundred-odd steps is still in
# its first descent whatever its size. Measured with benchmarks/main_job.py (5 minutes, Xeon with AMX, bf16): the
# rule without this floor chose `small` (10.65M non-embedding parameters, 126 steps), 1.638 bits per byte; one
# rung down, `tiny` (3.16M, ~300 steps) reached 1.465. Not higher: in the 15-minute main job (offline corpus,
# benchmarks/speedrun_budget.py) `small` with 382 steps reached validation loss 4.865, `tiny` with 764 only 5.18.
MIN_STEPS_TO_GROW = 250


def tokens_worth_buying(n: int, corpus_tokens: float | None, tokens_per_parameter: float) -> float:
    """What a model of ``n`` non-embedding parameters should see: Chinchilla's ``tokens_per_parameter x n``,
    but no more than `EPOCHS_WORTH_REPEATING` passes over a corpus of ``corpus_tokens`` (None: unlimited)."""
    chinchilla = tokens_per_parameter * n
    return chinchilla if corpus_tokens is None else min(chinchilla, EPOCHS_WORTH_REPEATING * corpus_tokens)


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
    corpus_tokens: float | None = None,
    sequences_per_step: float | None = None,
) -> SizeChoice:
    """The largest rung that can see the tokens it is worth training on within the budget.

    ``config_for(size)`` builds the config of a rung (sized to the tokenizer). With ``flops_per_second`` the
    machine's measured training speed, a rung can see ``flops_per_second * budget / flops_per_token`` tokens.
    It is worth ``tokens_per_parameter`` x N tokens (Chinchilla), capped at `EPOCHS_WORTH_REPEATING` epochs of
    a corpus of ``corpus_tokens`` (data-constrained scaling): on a small corpus the budget buys a larger model
    rather than a tenth epoch (never one whose context is longer than the corpus). With ``sequences_per_step``
    (training sequences, each a context long, per optimizer step), a rung above the smallest must also get
    `MIN_STEPS_TO_GROW` steps. When even the smallest rung cannot see what it is worth, it is chosen anyway;
    the largest rung caps the other end.
    """
    chosen, held_back = None, None
    for size in ladder:
        config = config_for(size)
        if chosen and corpus_tokens is not None and config.max_position_embeddings > corpus_tokens:
            break  # a context longer than the whole corpus: not one training block
        n = non_embedding_parameters(config)
        affordable = (
            flops_per_second
            * budget_seconds
            / training_flops_per_token(config, config.max_position_embeddings)
        )
        steps = (
            affordable / (sequences_per_step * config.max_position_embeddings) if sequences_per_step else None
        )
        if chosen is None:
            chosen = (size, n, affordable)
        elif affordable >= tokens_worth_buying(n, corpus_tokens, tokens_per_parameter):
            if steps is not None and steps < MIN_STEPS_TO_GROW:
                held_back = held_back or (size, steps)
            else:
                chosen = (size, n, affordable)
    size, n, affordable = chosen
    optimal = tokens_worth_buying(n, corpus_tokens, tokens_per_parameter)
    capped = corpus_tokens is not None and optimal < tokens_per_parameter * n
    epochs = f", {affordable / corpus_tokens:.1f} epochs of the corpus" if corpus_tokens else ""
    if affordable >= optimal:
        bound = " (the largest rung)" if size == ladder[-1] else ""
        chinchilla = f"{tokens_per_parameter:g} tokens per non-embedding parameter (Chinchilla)"
        target = (
            f"{chinchilla}, but at most {EPOCHS_WORTH_REPEATING:g} epochs of the corpus's {corpus_tokens / 1e6:.2f}M "
            f"training tokens (data-constrained scaling, Muennighoff et al. 2023)"
            if capped
            else chinchilla
        )
        rule = (
            f"the largest model that can see {target}, within the budget{bound}: {size.name}, "
            f"{n / 1e6:.2f}M non-embedding parameters, {affordable / 1e6:.1f}M tokens affordable vs "
            f"{optimal / 1e6:.1f}M worth training on{epochs}"
        )
        if held_back:  # steps only shrink up the ladder: the held-back rung is above the chosen one
            rule += (
                f"; not {held_back[0].name}, which the budget buys only {held_back[1]:.0f} optimizer steps "
                f"(fewer than {MIN_STEPS_TO_GROW})"
            )
    else:
        rule = (
            f"bounded below: even the smallest rung ({size.name}, {n / 1e6:.2f}M non-embedding parameters) can "
            f"only see {affordable / 1e6:.2f}M tokens in the budget, {affordable / n:.1f} per parameter instead "
            f"of {optimal / n:.1f}{epochs}"
        )
    return SizeChoice(size, rule, n, affordable, optimal)


# Optimizer steps a run needs to learn more than how often each token occurs (the first thing any model learns,
# barely better than chance). Measured with training/configs/tiny.yaml's schedule (warmup a tenth of the run,
# cosine decay) on the offline corpus, 4096-token BPE, the smallest rung: validation loss 7.83 after 10 steps,
# 7.39 after 20 and 6.73 after 50, where chance is ln 4096 = 8.32 and the token frequencies alone give 6.71.
MIN_USEFUL_STEPS = 50


# How far below chance (ln of the vocabulary size, the loss of a uniform guess) a validation loss must be to
# count as a model that learned something: a tenth of a nat, about 10% in perplexity.
CHANCE_MARGIN = 0.1


def better_than_chance(loss: float, vocab_size: int) -> bool:
    """True when ``loss`` (nats per token) is clearly below a uniform guess over ``vocab_size`` tokens."""
    return loss < math.log(vocab_size) - CHANCE_MARGIN


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
    # Seconds more the budget needs before it buys MIN_USEFUL_STEPS steps (0: enough), at the measured speed.
    seconds_short: float = 0.0

    @property
    def tokens(self) -> int:
        return self.max_steps * self.tokens_per_step

    @property
    def too_small(self) -> bool:
        """True when the budget buys too few steps for a model better than chance."""
        return self.seconds_short > 0


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
    corpus_tokens: float | None = None,
) -> BudgetPlan:
    """Measure, choose the size (when ``size_open``), and set ``max_steps`` so training fits the time left.

    ``probe(size)`` trains a few steps of the model of that rung (``None``: the configured model) and returns
    ``(config, tokens_per_step, seconds_per_step)``; ``seconds_left()`` is the budget minus the time spent so
    far, probes included; ``evaluation_seconds(seconds_per_step)`` estimates what the run's evaluations cost
    at that speed. With ``precisions`` (e.g. bf16 and fp32 on a CPU whose bf16 instructions may not pay off
    for small matrices), the first probe runs in each, ``probe(size, precision)``, and the fastest is kept
    for the rest. ``corpus_tokens`` (the training split's size) lets the size rule count repeated epochs.
    Tested with a fake probe: the logic does not depend on how fast this machine is.
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
        choice = choose_model_size(
            speed,
            training_seconds(step_seconds),
            config_for,
            ladder,
            corpus_tokens=corpus_tokens,
            sequences_per_step=step_tokens / config.max_position_embeddings,
        )
        if choice.size != size:
            config, step_tokens, step_seconds = (
                probe(choice.size, precision) if precision else probe(choice.size)
            )
        size, rule = choice.size, choice.rule
    seconds = training_seconds(step_seconds)
    max_steps = max_steps_for_budget(seconds, step_seconds)
    short = max(0.0, MIN_USEFUL_STEPS * step_seconds - seconds) / TRAINING_SHARE
    return BudgetPlan(max_steps, step_seconds, speed, step_tokens, size, rule, precision, timings, short)


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
    trainer_kwargs: dict[str, Any] | None = None,
) -> float:
    """Seconds per optimizer step of a real ``Trainer`` run, on a copy of ``model`` (left untouched).

    The first step (allocations, kernel selection) is not counted, and the time is the median of the
    following ``steps - 1`` intervals, so one slow step (another process taking the CPU, a first-time kernel
    for a new shape) does not skew the plan. Same batch size, accumulation, precision and optimizer as ``args``
    (``trainer_kwargs``: e.g. the run's ``optimizer_cls_and_kwargs``).
    """
    if steps < 2:
        raise ValueError("measure_seconds_per_step needs at least 2 steps (the first one is not timed).")
    timer = _StepTimer()
    with tempfile.TemporaryDirectory(prefix="scratchgpt-probe-") as scratch:
        probe_args = copy.deepcopy(args)
        for name, value in dict(
            output_dir=scratch,
            max_steps=steps,
            eval_strategy="no",
            save_strategy="no",
            report_to=[],
            logging_strategy="no",
            warmup_steps=0,
            disable_tqdm=True,
        ).items():
            object.__setattr__(probe_args, name, value)
        trainer = trainer_class(
            model=copy.deepcopy(model),
            args=probe_args,
            train_dataset=train_dataset,
            data_collator=data_collator,
            callbacks=[timer],
            **(trainer_kwargs or {}),
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
    "EPOCHS_WORTH_REPEATING",
    "MOST_EPOCHS",
    "MIN_STEPS_TO_GROW",
    "MIN_USEFUL_STEPS",
    "SIZE_LADDER",
    "ModelSize",
    "SizeChoice",
    "TimeBudgetCallback",
    "better_than_chance",
    "choose_model_size",
    "flops_per_second",
    "max_steps_for_budget",
    "measure_seconds_per_step",
    "non_embedding_parameters",
    "plan_to_budget",
    "tokens_per_step",
    "tokens_worth_buying",
    "training_flops_per_token",
]
