"""Benchmark: does the main job keep its time budget on this machine?

    python benchmarks/speedrun_budget.py [--time_budget 15] [any training/speedrun.py option]

Runs ``training/speedrun.py`` from scratch in a fresh run folder (outputs/benchmark_speedrun) and records the
whole job's wall time against the budget it was given (ratio <= 1.0 keeps the promise), with what the budget
bought on this machine: the device and precision, the model size and the rule that chose it, the steps
planned and trained, the tokens and epochs seen and the validation loss. Results are merged into benchmarks/results.json under "speedrun_budget", one entry per
machine (processor or GPU name, precision), so runs on different machines sit side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hf_scratchgpt.benchmarking import write_result

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUN_DIR = REPO / "outputs" / "benchmark_speedrun"


def main(argv: list[str], results_file: Path = HERE / "results.json", run_dir: Path = RUN_DIR) -> dict:
    budget = float(argv[argv.index("--time_budget") + 1]) if "--time_budget" in argv else 15.0
    if "--time_budget" not in argv:
        argv = [*argv, "--time_budget", str(budget)]
    load_before, start = os.getloadavg()[0], time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(REPO / "training" / "speedrun.py"),
            "--run_dir",
            str(run_dir),
            "--overwrite",
            *argv,
        ],
        check=True,
    )
    wall = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    pretrain, run = metrics["pretrain"], metrics["run"]
    machine = pretrain["machine"]
    name = machine.get("gpu") or machine["cpu"]
    result = {
        "machine": machine,
        "precision": pretrain["precision"],
        "time_budget_minutes": budget,
        "wall_minutes": round(wall / 60, 2),
        "wall_to_budget_ratio": round(wall / (budget * 60), 3),
        "stage_seconds": {
            stage: round(entry.get("seconds", 0.0), 1) for stage, entry in run["stages"].items()
        },
        "device": pretrain["device"],
        "model_size": ((pretrain["budget"] or {}).get("size") or {}).get("name"),
        "size_rule": (pretrain["budget"] or {}).get("size_rule"),
        "num_parameters": pretrain["num_parameters"],
        "non_embedding_parameters": pretrain["non_embedding_parameters"],
        "planned_steps": (pretrain["budget"] or {}).get("planned_steps"),
        "train_steps": pretrain["train_steps"],
        "tokens_seen": pretrain["tokens_seen"],
        "epochs": round(pretrain["epoch"], 2),
        "budget_too_small": (pretrain["budget"] or {}).get("too_small"),
        "val_loss": round(pretrain["eval_loss"], 4),
        "val_bits_per_byte": round(pretrain["eval_bits_per_byte"], 4),
        "corpus": pretrain["corpus"],
        "options": argv,
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "date": time.strftime("%Y-%m-%d"),
    }
    write_result("speedrun_budget", {f"{name} / {pretrain['precision']}": result}, results_file, merge=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
