"""Benchmark: does the main job keep its time budget on this machine?

    python benchmarks/speedrun_budget.py [--time_budget 15] [any training/speedrun.py option]

Runs ``training/speedrun.py`` from scratch in a fresh run folder (outputs/benchmark_speedrun) and records the
whole job's wall time against the budget it was given (ratio <= 1.0 keeps the promise), with what the budget
bought on this machine: the precision, the model size and the rule that chose it, the tokens seen and the
validation loss. Results are merged into benchmarks/results.json under "speedrun_budget", one entry per
machine (processor or GPU name, precision), so runs on different machines sit side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUN_DIR = REPO / "outputs" / "benchmark_speedrun"


def main(argv: list[str]) -> dict:
    budget = float(argv[argv.index("--time_budget") + 1]) if "--time_budget" in argv else 15.0
    if "--time_budget" not in argv:
        argv = [*argv, "--time_budget", str(budget)]
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(REPO / "training" / "speedrun.py"),
            "--run_dir",
            str(RUN_DIR),
            "--overwrite",
            *argv,
        ],
        check=True,
    )
    wall = time.perf_counter() - start
    metrics = json.loads((RUN_DIR / "metrics.json").read_text())
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
        "model_size": (pretrain["budget"] or {}).get("size", {}).get("name"),
        "size_rule": (pretrain["budget"] or {}).get("size_rule"),
        "num_parameters": pretrain["num_parameters"],
        "non_embedding_parameters": pretrain["non_embedding_parameters"],
        "max_steps": pretrain["max_steps"],
        "tokens_seen": pretrain["tokens_seen"],
        "val_loss": round(pretrain["eval_loss"], 4),
        "val_bits_per_byte": round(pretrain["eval_bits_per_byte"], 4),
        "corpus": pretrain["corpus"],
        "options": argv,
        "date": time.strftime("%Y-%m-%d"),
    }
    results_file = HERE / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.setdefault("speedrun_budget", {})[f"{name} / {pretrain['precision']}"] = result
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
