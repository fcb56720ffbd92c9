"""Fitting a pretraining run to ``--time_budget``: measure this machine, plan the run, apply the plan.

`plan_budget` probes a few real steps (of each candidate size and precision) and asks
``hf_scratchgpt.train.budget`` for the size and steps that fit; the result is the plan ``budget.json``
records. `fit_to_budget` is what ``training/pretrain.py`` calls: it plans (or, when a run resumes, reads
the plan back), sets the precision and learning rate the plan chose, compiles a run that trains for minutes,
and returns the `BudgetedRun` whose `DeadlineSchedule` ends warmup and decay at the deadline. A run of fixed
steps calls `compile_if_it_pays` instead, which applies the same compilation rule to its steps.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .budget import (
    DEFAULT_SIZE,
    MIN_USEFUL_STEPS,
    MOST_EPOCHS,
    SIZE_LADDER,
    BudgetArguments,
    ModelSize,
    measure_seconds_per_step,
    plan_to_budget,
    tokens_per_step,
)
from .checkpoints import resume_requested
from .hardware import can_compile, uses_gpu
from .pretraining import (
    ModelArguments,
    PretrainingCorpus,
    build_model,
    context_length,
    model_config,
    size_is_open,
)
from .schedule import DeadlineSchedule, fit_steps_to_schedule
from .trainer import ScratchGPTTrainer

BUDGET_FILE = "budget.json"
# What a budgeted run keeps back after training for the final evaluation, save and metrics: this share of
# the budget, at least MIN_FINAL_SECONDS, plus the final evaluation's estimated cost.
FINAL_SHARE, MIN_FINAL_SECONDS = 0.05, 10.0
# A run that trains at least this long compiles its model (see `compile_pays_off`). Compiled bf16 steps were ~1.5x
# eager ones at the `micro` size (Xeon with AMX) for ~25 s of compilation, but 1.2-1.3x at `small` for ~60 s with
# the evaluations' own compilations: a 5-minute main job (~260 s of training) compiled ended 1% behind an eager
# plain loop.
COMPILE_MIN_TRAINING_SECONDS = 300.0


def compile_pays_off(training_seconds: float, precision: str, use_cpu: bool) -> bool:
    """Whether a run that trains for ``training_seconds`` gains from ``torch.compile``: on a GPU, and on a CPU in
    bf16 (1.3-1.5x); a CPU's fp32 steps ran no faster compiled (benchmarks/train_throughput.py: 1,316 vs 1,317
    tokens/s; a 15-minute main job in fp32 took 0.71 s a step compiled against its 0.64 s eager probe). Only where
    inductor can build kernels (`can_compile`)."""
    worth_it = uses_gpu(use_cpu) or precision != "fp32"
    return worth_it and training_seconds >= COMPILE_MIN_TRAINING_SECONDS and can_compile(use_cpu)


# A run without a budget decides whether to compile from this many eager steps timed (the first not counted), and
# only when it has at least COMPILE_MIN_STEPS steps: below that, even 1.3x faster steps barely repay a compilation
# that takes about a minute at the sizes where a step takes seconds.
COMPILE_PROBE_STEPS, COMPILE_MIN_STEPS = 3, 100


def compile_if_it_pays(
    model_args: ModelArguments, corpus: PretrainingCorpus, trainer_kwargs: dict[str, Any]
) -> bool:
    """For a run without ``--time_budget``: with ``--torch_compile`` unset, compile when `compile_pays_off` for
    the run's steps at the speed of a few eager steps timed on this machine (a throwaway model, as the budget's
    probes). An explicit ``--torch_compile true|false`` is kept. Returns whether the run compiles."""
    args = corpus.training_args
    if args.torch_compile is not None:
        return args.torch_compile
    args.torch_compile = False
    # Only time steps where compiling could pay at all (a GPU, or bf16 on a CPU, with a compiler), for runs that
    # may be long enough (a run of --num_train_epochs is counted once its blocks are built).
    if not compile_pays_off(math.inf, args.precision, args.use_cpu) or 0 < args.max_steps < COMPILE_MIN_STEPS:
        return False
    model = build_model(model_args, corpus.tokenizer)
    train = corpus.blocks(model.config.max_position_embeddings, "train")
    steps = args.max_steps
    if steps <= 0:  # --num_train_epochs instead; tokens_per_step of 1-token blocks: sequences a step
        steps = math.ceil(args.num_train_epochs * len(train) / tokens_per_step(args, 1))
    if steps < COMPILE_MIN_STEPS:
        return False
    seconds = measure_seconds_per_step(
        model, train, args, corpus.collator, COMPILE_PROBE_STEPS, ScratchGPTTrainer, trainer_kwargs
    )
    decision = [compile_pays_off(seconds * steps, args.precision, args.use_cpu)]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(decision, src=0)  # every rank the same
    if decision[0]:
        args.enable_compile()
    if args.process_index == 0:
        verdict = "compiled (torch.compile)" if decision[0] else "too short to pay for a compilation"
        print(
            f"{steps} steps at {seconds:.3f} s/step (eager, timed): ~{steps * seconds / 60:.1f} min, {verdict}"
        )
    return decision[0]


def plan_budget(
    budget_args: BudgetArguments,
    model_args: ModelArguments,
    corpus: PretrainingCorpus,
    started: float,
    trainer_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Measure this machine and fit the run to ``--time_budget``: the plan that budget.json records.

    ``started`` is the script's start (``time.perf_counter()``), so loading and probing are paid from the
    budget; the probes train with `ScratchGPTTrainer` and ``trainer_kwargs`` (e.g. the optimizer), as the run. The plan holds the size (when none was given), the precision (bf16 and fp32 both measured where a
    CPU's bf16 is a guess), the planned steps and, when the budget cannot buy `MIN_USEFUL_STEPS` steps, the
    budget that would.
    """
    training_args, tokenizer = corpus.training_args, corpus.tokenizer

    def probe(rung: ModelSize | None, precision: str | None = None) -> tuple[Any, int, float]:
        model = build_model(model_args, tokenizer, rung)
        train = corpus.blocks(model.config.max_position_embeddings, "train")
        args = training_args
        if precision:
            args = copy.deepcopy(training_args)
            args.switch_precision(precision)
        seconds = measure_seconds_per_step(
            model,
            train,
            args,
            corpus.collator,
            budget_args.budget_probe_steps,
            ScratchGPTTrainer,
            trainer_kwargs,
        )
        return model.config, tokens_per_step(training_args, len(train[0]["input_ids"])), seconds

    cpu_bf16_is_a_guess = (
        training_args.precision_requested == "auto"
        and training_args.precision == "bf16"
        and training_args.use_cpu
    )
    validation_text = list(corpus.splits["validation"]["text"])
    validation_tokens = sum(map(len, tokenizer(validation_text, verbose=False)["input_ids"]))
    validation_blocks = validation_tokens / 256  # in blocks of 256 tokens (the cost is per token)
    first_rung = (
        next(rung for rung in SIZE_LADDER if rung.name == DEFAULT_SIZE) if size_is_open(model_args) else None
    )
    context = (
        context_length(model_args) or model_config(model_args, tokenizer, first_rung).max_position_embeddings
    )
    train_blocks = corpus.blocks(context, "train")
    corpus_tokens = len(train_blocks) * len(train_blocks[0]["input_ids"])

    def per_block(seconds_per_step: float) -> float:
        return seconds_per_step / (3 * training_args.per_device_train_batch_size)  # a forward: ~1/3 of a step

    def evaluation_seconds(seconds_per_step: float) -> float:
        # The evaluations during training (every fifth of the run, on the curve subset) and the final one.
        curve = min(validation_blocks, corpus.data_args.max_eval_blocks or validation_blocks)
        return per_block(seconds_per_step) * (6 * curve + validation_blocks)

    budget_seconds = budget_args.time_budget * 60
    fitted = plan_to_budget(
        seconds_left=lambda: budget_seconds - (time.perf_counter() - started),
        probe=probe,
        config_for=lambda rung: model_config(model_args, tokenizer, rung),
        size_open=size_is_open(model_args),
        evaluation_seconds=evaluation_seconds,
        # A CPU's bf16 instructions do not pay off at every size (small matrices, casts): under
        # --precision auto, measure fp32 too and keep the faster.
        precisions=("bf16", "fp32") if cpu_bf16_is_a_guess else (),
        corpus_tokens=corpus_tokens,
    )
    plan = {
        "time_budget_minutes": budget_args.time_budget,
        "planned_steps": fitted.max_steps,
        "seconds_per_step": fitted.seconds_per_step,
        "flops_per_second": fitted.flops_per_second,
        "planned_tokens": fitted.tokens,
        "corpus_tokens": corpus_tokens,
        "size": asdict(fitted.size) if fitted.size else None,
        "size_rule": fitted.size_rule or "fixed by --preset / --model_config / --model_name_or_path",
        "precision": fitted.precision or training_args.precision,
        "precision_seconds_per_step": fitted.precision_seconds_per_step,
        "final_reserve_seconds": max(MIN_FINAL_SECONDS, FINAL_SHARE * budget_seconds)
        + per_block(fitted.seconds_per_step) * validation_blocks,
        "too_small": fitted.too_small,
        "sufficient_budget_minutes": (
            math.ceil((budget_seconds + fitted.seconds_short) / 6) / 10 if fitted.too_small else None
        ),
    }
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shared = [plan]  # every rank must train the same size for the same number of steps
        torch.distributed.broadcast_object_list(shared, src=0)
        plan = shared[0]
    return plan


def budget_warning(plan: dict[str, Any], vocab_size: int) -> str | None:
    """What to tell the user before training when the budget cannot buy a model better than chance."""
    if not plan.get("too_small"):
        return None
    return (
        f"--time_budget {plan['time_budget_minutes']:g} min is too small on this machine: it buys about "
        f"{plan['planned_steps']} optimizer steps at {plan['seconds_per_step']:.3f} s/step, and a model needs at "
        f"least {MIN_USEFUL_STEPS} to learn more than how often each token occurs (below that it is at or barely "
        f"better than chance, a validation loss of ln({vocab_size}) = {math.log(vocab_size):.2f}). A budget of "
        f"about {plan['sufficient_budget_minutes']:g} min would buy them. Training anyway; the report marks the run."
    )


@dataclass
class BudgetedRun:
    """A run fitted to its budget: the plan (budget.json) and the schedule that ends at the deadline."""

    plan: dict[str, Any]
    schedule: DeadlineSchedule

    @property
    def size(self) -> ModelSize | None:
        """The size the budget chose, or None when the arguments fixed it."""
        return ModelSize(**self.plan["size"]) if self.plan["size"] else None


def fit_to_budget(
    budget_args: BudgetArguments,
    model_args: ModelArguments,
    corpus: PretrainingCorpus,
    started: float,
    trainer_kwargs: dict[str, Any],
) -> BudgetedRun | None:
    """Fit the run to ``--time_budget`` (None without one): `plan_budget`, or the plan in budget.json when
    the run resumes (it keeps its size and schedule); then set the training arguments' precision, learning
    rate and step bound to the plan, write budget.json and say the plan (and `budget_warning`) on rank 0."""
    if not budget_args.time_budget:
        return None
    training_args = corpus.training_args
    budget_file = Path(training_args.output_dir) / BUDGET_FILE
    if resume_requested(training_args.resume_from_checkpoint) and budget_file.is_file():
        plan = json.loads(budget_file.read_text())
    else:
        plan = plan_budget(budget_args, model_args, corpus, started, trainer_kwargs)
    if plan["precision"] != training_args.precision or plan["precision_seconds_per_step"]:
        # Before any Trainer reads it; probes in another precision also left Accelerate's state behind.
        training_args.switch_precision(plan["precision"])
    if plan["size"]:
        training_args.learning_rate = plan["size"]["learning_rate"]
    # Warmup and decay follow the clock to the deadline, which keeps back the final evaluation and save.
    steps_per_epoch = plan["corpus_tokens"] * plan["planned_steps"] / plan["planned_tokens"]
    most_steps = int(MOST_EPOCHS * steps_per_epoch)
    warmup = fit_steps_to_schedule(training_args, plan["planned_steps"], most_steps=most_steps)
    deadline = started + budget_args.time_budget * 60 - plan["final_reserve_seconds"]
    # The probes ran eagerly, so the plan's size is what eager steps buy; the schedule follows the clock, so a
    # compiled run simply takes more steps. A resumed run keeps its plan's choice.
    plan.setdefault(
        "torch_compile",
        training_args.torch_compile
        if training_args.torch_compile is not None
        else compile_pays_off(deadline - time.perf_counter(), plan["precision"], training_args.use_cpu),
    )
    if plan["torch_compile"] and not training_args.torch_compile:
        training_args.enable_compile()
    if training_args.process_index == 0:
        budget_file.parent.mkdir(parents=True, exist_ok=True)
        budget_file.write_text(json.dumps(plan, indent=2) + "\n")
        print(
            f"time budget {budget_args.time_budget:g} min: {plan['size_rule']}; about {plan['planned_steps']} "
            f"steps at {plan['seconds_per_step']:.3f} s/step (eager), the schedule ending at the deadline"
            + ("; compiled (torch.compile), which buys more steps" if plan["torch_compile"] else "")
            + (
                f"; but at most {most_steps} steps, {MOST_EPOCHS:g} epochs of the corpus (more would only "
                "memorise it), so it ends before the deadline"
                if most_steps < plan["planned_steps"]
                else ""
            )
        )
        if warning := budget_warning(plan, len(corpus.tokenizer)):
            print(f"WARNING: {warning}", flush=True)  # next to the plan, before training starts
    return BudgetedRun(plan, DeadlineSchedule(deadline, warmup))


__all__ = [
    "BUDGET_FILE",
    "BudgetedRun",
    "budget_warning",
    "compile_if_it_pays",
    "compile_pays_off",
    "fit_to_budget",
    "plan_budget",
]
