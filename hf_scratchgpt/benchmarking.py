"""What the speed benchmarks share: timing in interleaved rounds, ratios, the machine record and the results file.

The machines these benchmarks run on are shared, and their load changes from one minute to the next, so a time
measured now says little about one measured later. Every benchmark therefore runs the code it compares in one
process, in rounds: a round runs each contender once, back to back, so all of them see about the same load. A
contender's figure is its median over the rounds, and a ratio is the median of the per-round ratios (a load spike
that slows one round slows both sides of that round's ratio).

On a CPU with one torch thread the clock is the process's CPU time (``time.process_time``), not the wall clock:
the time this process's thread actually ran, which other processes' load changes far less than the time it
waited for a core. With more threads (idle threads spin, so CPU time overcounts) and on a GPU it is the wall
clock; `benchmark_clock` says which. The wall clock is recorded beside it all the same (`Timings`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from .model.configuration_scratchgpt import ScratchGPTConfig
from .model.modeling_scratchgpt import ScratchGPTForCausalLM
from .train.hardware import describe_machine, machine_summary

# What every benchmark passes to a training script it runs: a fresh output folder, no trackers, no progress bars.
QUIET_TRAINING_ARGS = ("--overwrite_output_dir", "true", "--report_to", "none", "--disable_tqdm", "true")


def benchmark_clock(device: str = "cpu") -> tuple[str, Callable[[], float]]:
    """The clock the benchmarks time with: CPU time on a CPU with one torch thread, else the wall clock."""
    if device == "cpu" and torch.get_num_threads() == 1:
        return "process CPU time", time.process_time
    return "wall clock", time.perf_counter


@dataclass
class Timings:
    """Seconds per call of each contender, one figure per round: by the benchmark's ``clock`` (`benchmark_clock`)
    in ``seconds``, and by the wall clock in ``wall_seconds`` (what a user waits, load included)."""

    clock: str
    seconds: dict[str, list[float]]
    wall_seconds: dict[str, list[float]]

    def per_second(self, name: str, units: float, wall: bool = False) -> float:
        """``units`` (tokens, say) per second of ``name``, from its median time."""
        return units / statistics.median((self.wall_seconds if wall else self.seconds)[name])

    def speedup(self, name: str, reference: str, wall: bool = False) -> float:
        """How many times faster ``name`` ran than ``reference``: the median over rounds of their time ratio."""
        seconds = self.wall_seconds if wall else self.seconds
        return median_ratio(seconds[reference], seconds[name])


def time_rounds(
    contenders: dict[str, Callable[[], Any]], rounds: int, calls: int = 1, device: str = "cpu"
) -> Timings:
    """Time every contender in ``rounds`` rounds; each round calls every contender ``calls`` times in a row, the
    contenders one after the other. On a GPU each figure waits for the device."""
    clock_name, clock = benchmark_clock(device)
    timings = Timings(clock_name, {name: [] for name in contenders}, {name: [] for name in contenders})
    for _ in range(rounds):
        for name, call in contenders.items():
            synchronize(device)
            start, wall_start = clock(), time.perf_counter()
            for _ in range(calls):
                call()
            synchronize(device)
            timings.seconds[name].append((clock() - start) / calls)
            timings.wall_seconds[name].append((time.perf_counter() - wall_start) / calls)
    return timings


def synchronize(device: str) -> None:
    """Wait for the queued GPU work (a no-op on the CPU), so a clock read afterwards includes it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of ``numerator[i] / denominator[i]`` (times measured in the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def machine_record(device: str = "cpu") -> dict[str, Any]:
    """What a result was measured on: processor (and GPU), its flags, threads, library versions, load, date."""
    info = describe_machine(use_cpu=not device.startswith("cuda"))
    return {
        "summary": machine_summary(info),
        **info,
        "clock": benchmark_clock(device)[0],
        "transformers": transformers.__version__,
        "load_average": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
    }


def seeded_gpt2_model(shapes: dict[str, int], seed: int = 0) -> ScratchGPTForCausalLM:
    """ScratchGPT in the GPT-2 recipe at a benchmark's ``shapes`` (``vocab``, ``width``, ``layers``, ``heads``,
    ``context``), from ``seed``: every contender of a comparison starts from these weights (converted)."""
    torch.manual_seed(seed)
    config = ScratchGPTConfig.from_preset(
        "tiny",
        vocab_size=shapes["vocab"],
        hidden_size=shapes["width"],
        num_hidden_layers=shapes["layers"],
        num_attention_heads=shapes["heads"],
        max_position_embeddings=shapes["context"],
    )
    return ScratchGPTForCausalLM(config)


def write_result(key: str, result: dict[str, Any], results_file: Path, merge: bool = False) -> None:
    """Store ``result`` under ``key`` in the JSON results file, keeping every other key; with ``merge``, add
    ``result``'s entries to those already under ``key`` (one per task or setting, measured at different times).

    The file is read right before it is written: other benchmarks, possibly running at the same time, own the
    other keys.
    """
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results[key] = {**results.get(key, {}), **result} if merge else result
    results_file.write_text(json.dumps(results, indent=2) + "\n")


__all__ = [
    "QUIET_TRAINING_ARGS",
    "benchmark_clock",
    "machine_record",
    "median_ratio",
    "seeded_gpt2_model",
    "synchronize",
    "time_rounds",
    "Timings",
    "write_result",
]
