"""Benchmark: quality per compute on nanoGPT's CPU Shakespeare recipe, GPT-2 recipe vs the modern one.

    python benchmarks/shakespeare_char.py [--data PATH] [any pretrain.py option for both, e.g. --max_steps 500]

Trains, one after the other in this process, training/configs/shakespeare_char.yaml (nanoGPT's recipe: the
GPT-2 architecture, AdamW, cosine to 10%) and training/configs/shakespeare_char_modern.yaml (same shapes,
batch and steps: rotary positions, RMSNorm, SwiGLU, QK-norm, Muon + AdamW, linear decay to zero), both
through training/pretrain.py. Each run evaluates on the whole validation text every --eval_steps (100) and
times its optimizer steps without the evaluations, so the benchmark reports, per recipe, the validation loss
after the last step and the training seconds it took to first reach nanoGPT's 2000-step loss (1.88,
interpolated between evaluations), then the ratios modern / reference. Seconds are this process's CPU time
when torch runs one thread (hf_scratchgpt.benchmarking.benchmark_clock: another process's load changes it
least; wall seconds are recorded too). Absolute times do not carry across these shared machines; ratios
measured in one process mostly do. Results go to benchmarks/results.json under "shakespeare_char", with the
machine (CPU model, threads, load average) they were measured on.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from hf_scratchgpt.benchmarking import QUIET_TRAINING_ARGS, benchmark_clock, machine_record, write_result

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results.json"
RECIPES = {
    "gpt2_recipe": REPO / "training" / "configs" / "shakespeare_char.yaml",
    "modern_recipe": REPO / "training" / "configs" / "shakespeare_char_modern.yaml",
}
NANOGPT_VAL_LOSS = 1.88  # nanoGPT's own run of this recipe, 2000 steps (README "I only have a macbook")


class StepClock(TrainerCallback):
    """Seconds spent in optimizer steps (evaluations and sample generations left out) by `benchmark_clock`
    (this process's CPU time with one torch thread: what another process's load changes least), the wall
    seconds too, and the validation loss at each evaluation: ``curve`` = [[step, seconds, validation loss]]."""

    def __init__(self) -> None:
        self.clock = benchmark_clock("cuda" if torch.cuda.is_available() else "cpu")[1]
        self.seconds = self.wall_seconds = 0.0
        self.marks, self.curve = (0.0, 0.0), []

    def _mark(self) -> None:
        self.marks = (self.clock(), time.perf_counter())

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._mark()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.seconds += self.clock() - self.marks[0]
        self.wall_seconds += time.perf_counter() - self.marks[1]
        self._mark()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        self.curve.append([state.global_step, round(self.seconds, 2), round(metrics["eval_loss"], 4)])
        self._mark()  # the evaluation (and the samples before this callback) not counted


def seconds_to_reach(curve: list[list], target: float) -> float | None:
    """Training seconds at which the validation loss first reached ``target`` (linear between evaluations;
    None if it never did)."""
    previous = (0, 0.0, float("inf"))
    for point in curve:
        if point[2] <= target:
            if previous[2] == float("inf"):
                return point[1]
            share = (previous[2] - target) / (previous[2] - point[2])
            return previous[1] + share * (point[1] - previous[1])
        previous = point
    return None


def run_recipe(config: Path, output_dir: Path, argv: list[str]) -> dict[str, Any]:
    pretrain = runpy.run_path(str(REPO / "training" / "pretrain.py"))["main"]
    clock = StepClock()
    metrics = pretrain(
        [
            "--config",
            str(config),
            "--output_dir",
            str(output_dir),
            *QUIET_TRAINING_ARGS,
            "--save_strategy",
            "no",
            "--eval_steps",
            "100",
            "--sample_max_new_tokens",
            "1",
            *argv,
        ],
        callbacks=[clock],
    )
    reached = seconds_to_reach(clock.curve, NANOGPT_VAL_LOSS)
    return {
        "config": str(config.relative_to(REPO)),
        "steps": metrics["train_steps"],
        "val_loss": round(metrics["eval_loss"], 4),
        "train_seconds": round(clock.seconds, 1),
        "train_wall_seconds": round(clock.wall_seconds, 1),
        "seconds_per_step": round(clock.seconds / metrics["train_steps"], 4),
        f"seconds_to_val_{NANOGPT_VAL_LOSS}": None if reached is None else round(reached, 1),
        "num_parameters": metrics["num_parameters"],
        "curve": clock.curve,
    }


def main(argv: list[str], results_file: Path = RESULTS, work: Path = REPO / "outputs") -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    runs = {name: run_recipe(config, work / f"benchmark_{name}", argv) for name, config in RECIPES.items()}
    reference, modern = runs["gpt2_recipe"], runs["modern_recipe"]
    key = f"seconds_to_val_{NANOGPT_VAL_LOSS}"
    # A reference that never reached the target took at least its whole run: the ratio is then an upper bound.
    reference_seconds = reference[key] or reference["train_seconds"]
    result = {
        **runs,
        "nanogpt_val_loss": NANOGPT_VAL_LOSS,
        "val_loss_modern_to_reference": round(modern["val_loss"] / reference["val_loss"], 4),
        "seconds_per_step_modern_to_reference": round(
            modern["seconds_per_step"] / reference["seconds_per_step"], 3
        ),
        f"time_to_val_{NANOGPT_VAL_LOSS}_modern_to_reference": (
            None if modern[key] is None else round(modern[key] / reference_seconds, 3)
        ),
        "options": argv,
        "machine": machine_record("cuda" if torch.cuda.is_available() else "cpu"),
        "load_average_before": round(load_before, 2),
    }
    write_result("shakespeare_char", result, results_file)
    print(json.dumps({k: v for k, v in result.items() if k not in runs}, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
