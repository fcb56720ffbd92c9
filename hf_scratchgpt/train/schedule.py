"""A learning-rate schedule that follows the clock: warmup and decay end exactly at a run's deadline.

A time budget plans ``max_steps`` from a few measured steps, but a shared machine can turn slower mid-run
(another process on the CPU, thermal limits). A schedule in steps then gets cut by the deadline with the
learning rate still high, which wastes most of what the budget bought. Here the schedule's progress is the
share of the time to the deadline already spent, so a slower machine trains fewer steps but still warms up,
decays and stops at the deadline; a faster one ends at ``max_steps`` (the progress is the larger of the time
and step shares), fully decayed too.

* `DeadlineSchedule` is a ``TrainerCallback``: its scheduler reads the clock once per optimizer step (on a
  multi-process run, rank 0's reading is broadcast so every rank uses the same learning rate and stops at
  the same step); it stops training at the deadline and requests the evaluations and checkpoints at even
  shares of the time;
* `DeadlineSchedule.install(trainer)` gives the ``Trainer`` a `DeadlineLR` scheduler with the shape the
  arguments ask for (``--lr_scheduler_type``, ``--lr_scheduler_kwargs``, warmup), in progress instead of steps.
  Its state dict records the progress, so a run resumed from a checkpoint continues the schedule from there
  towards its new deadline.

The clock is injectable: tests drive a run with fake, slow steps and no real waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from transformers import Trainer, TrainerCallback, TrainingArguments, get_scheduler

# Steps of the reference schedule that the progress (0..1) is mapped onto: fine enough for any run length.
_RESOLUTION = 100_000


def schedule_shape(args: TrainingArguments, warmup_fraction: float) -> Callable[[float], float]:
    """The learning-rate multiplier as a function of progress (0..1), for ``args.lr_scheduler_type``.

    Built from transformers' own schedules (``get_scheduler``), laid over `_RESOLUTION` steps, so cosine,
    linear, ``cosine_with_min_lr``, ``warmup_stable_decay``... keep their meaning and arguments.
    """
    reference_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.learning_rate)
    reference = get_scheduler(
        args.lr_scheduler_type,
        optimizer=reference_optimizer,
        num_warmup_steps=round(warmup_fraction * _RESOLUTION),
        num_training_steps=_RESOLUTION,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    if not isinstance(reference, LambdaLR):
        raise ValueError(
            f"--lr_scheduler_type {args.lr_scheduler_type} does not follow a fixed shape, so it cannot follow "
            "a time budget: use cosine, cosine_with_min_lr, linear, warmup_stable_decay or constant."
        )
    multiplier = reference.lr_lambdas[0]
    return lambda progress: multiplier(min(_RESOLUTION, round(progress * _RESOLUTION)))


class DeadlineLR(LRScheduler):
    """Each group's base learning rate times ``shape(schedule.progress)``."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, schedule: DeadlineSchedule, shape: Callable[[float], float]
    ) -> None:
        self.schedule, self.shape = schedule, shape
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        # Called once per optimizer step, on every rank: the schedule reads (and shares) the clock here.
        factor = self.shape(self.schedule.measure(self.last_epoch))
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        unsaved = ("optimizer", "schedule", "shape")  # live objects; the progress is saved instead
        state = {key: value for key, value in self.__dict__.items() if key not in unsaved}
        state["progress"] = self.schedule.progress
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.schedule.resume_at(state.pop("progress"))
        self.__dict__.update(state)


class DeadlineSchedule(TrainerCallback):
    """Progress = the larger of (time spent / time to ``deadline``) and (steps / ``max_steps``), from 0 to 1.

    ``deadline`` is a ``clock()`` value (``time.perf_counter`` by default); ``warmup_fraction`` is the share of
    the progress spent warming up; ``evaluations`` in-training evaluations (and checkpoints) are requested at
    even shares of the progress, the last one at the end, when the arguments' strategies are not "no".
    """

    def __init__(
        self,
        deadline: float,
        warmup_fraction: float,
        evaluations: int = 5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.deadline, self.warmup_fraction, self.evaluations = deadline, warmup_fraction, evaluations
        self.clock = clock
        self.progress = self.reported = 0.0  # measured by the scheduler; as of the last on_step_end
        self.start_progress = 0.0  # where a resumed run's schedule picks up
        self.start_time: float | None = None
        self.max_steps = 1
        self.stopped_at_step: int | None = None

    def install(self, trainer: Trainer) -> DeadlineLR:
        """Create the trainer's optimizer (as it would) and give it this schedule; call before ``train()``."""
        trainer.create_optimizer()
        trainer.lr_scheduler = DeadlineLR(
            trainer.optimizer, self, schedule_shape(trainer.args, self.warmup_fraction)
        )
        return trainer.lr_scheduler

    def resume_at(self, progress: float) -> None:
        self.progress = self.start_progress = self.reported = float(progress)

    def measure(self, step: int) -> float:
        """The progress after ``step`` optimizer steps, now (0 before training starts)."""
        if self.start_time is None:
            return self.progress
        span = self.deadline - self.start_time
        spent = (self.clock() - self.start_time) / span if span > 0 else 1.0
        progress = self.start_progress + (1.0 - self.start_progress) * spent
        progress = min(1.0, max(progress, step / self.max_steps))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shared = [progress]  # every rank must use the same learning rate and stop at the same step
            torch.distributed.broadcast_object_list(shared, src=0)
            progress = shared[0]
        self.progress = progress
        return progress

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.start_time, self.max_steps = self.clock(), state.max_steps

    def on_step_end(self, args, state, control, **kwargs) -> None:
        # The scheduler measured the progress of this step just before (Trainer steps it after the optimizer).
        previous, self.reported = self.reported, self.progress
        # An evaluation and a checkpoint each time the progress crosses a multiple of 1/evaluations.
        if int(self.progress * self.evaluations) > int(previous * self.evaluations):
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = args.save_strategy != "no"
        if self.progress >= 1.0 and not control.should_training_stop:
            control.should_training_stop = True
            self.stopped_at_step = state.global_step


def fit_steps_to_schedule(
    args: TrainingArguments, planned_steps: int, headroom: float = 10.0, most_steps: int | None = None
) -> float:
    """Set ``args`` for a run whose schedule a `DeadlineSchedule` drives; returns the warmup fraction.

    ``max_steps`` becomes ``headroom`` x the planned steps (at most ``most_steps``, e.g. the steps of the most
    epochs worth training), only a bound: the deadline ends the run (a main job on a shared 2-core machine ran
    twice as fast as its probe had measured, and with a bound of 2x it stopped at the bound with a fifth of its
    time unused); a run that reaches the bound first ends there, fully decayed. The step-based evaluations and
    checkpoints are moved past it (the schedule requests them by time instead).
    """
    warmup = min(args.get_warmup_steps(planned_steps), max(1, planned_steps // 10)) / planned_steps
    args.max_steps = max(1, min(round(planned_steps * headroom), most_steps or float("inf")))
    args.eval_steps = args.save_steps = args.max_steps + 1
    return warmup


__all__ = ["DeadlineLR", "DeadlineSchedule", "fit_steps_to_schedule", "schedule_shape"]
