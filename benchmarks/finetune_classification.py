"""Benchmark: fine-tune a pretrained base as a classifier on SMS spam and SST-2; test accuracy and time.

    python benchmarks/finetune_classification.py [--model_name_or_path outputs/speedrun/pretrain]
        [--data_dir ../shared/data/classification] [--max_steps N] [--tasks sms_spam,sst2]
        [-- any training/finetune_classifier.py override, e.g. --trainable_layers 1 --precision fp32]

* SMS spam (``sms_spam.tsv``, ``ham``/``spam``): balanced by undersampling, then split 70/10/20 with a
  fixed seed, as in "LLMs from scratch" chapter 6, whose pretrained GPT-2 small (124M) reaches 95.67%
  test accuracy there (all weights frozen but the last block, final norm and head; 5 epochs).
* SST-2 (``sst2_train.tsv``, ``sst2_dev.tsv`` as the test set, ``0``/``1``): 1/8 of train held out for
  validation.

Each task runs training/finetune_classifier.py in its own process with the recipe
training/configs/finetune_sms_spam.yaml (all weights trained, batch 16, lr 5e-4); its test accuracy, macro
F1, majority-class accuracy, steps and wall time, with the base model and the machine, replace that task's
record under the key "finetune_classification" of benchmarks/results.json (other tasks' records stay).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hf_scratchgpt.benchmarking import write_result
from hf_scratchgpt.train.hardware import describe_machine, machine_summary

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "training" / "finetune_classifier.py"
# The training settings of both tasks: batch 16 grouped by length, lr 5e-4, all weights, final evaluation only.
RECIPE = HERE.parent / "training" / "configs" / "finetune_sms_spam.yaml"
BOOK_SMS_TEST_ACCURACY = 0.9567  # "LLMs from scratch" ch. 6, GPT-2 small, balanced SMS spam, 70/10/20
TASKS = {
    "sms_spam": ["--train_file", "{data}/sms_spam.tsv"],
    "sst2": [
        "--train_file",
        "{data}/sst2_train.tsv",
        "--test_file",
        "{data}/sst2_dev.tsv",
        "--balance_classes",
        "none",
    ],
}
# Steps per task unless --max_steps says otherwise: about 6 epochs of balanced SMS spam (1046 texts), about
# 2.6 epochs of SST-2 (6055 texts) at batch 16.
DEFAULT_STEPS = {"sms_spam": 400, "sst2": 1000}
REPORTED = (
    "test_accuracy",
    "test_f1",
    "test_majority_class_accuracy",
    "eval_accuracy",
    "train_samples",
    "test_samples",
    "max_seq_length",
    "train_runtime",
    "train_steps_per_second",
    "finetuning",
)


def run_task(task: str, args: argparse.Namespace, overrides: list[str]) -> dict:
    output_dir = Path(args.output_root) / task
    steps = args.max_steps or DEFAULT_STEPS[task]
    command = [
        sys.executable,
        str(SCRIPT),
        "--model_name_or_path",
        args.model_name_or_path,
        "--config",
        str(RECIPE),
        *(part.format(data=args.data_dir) for part in TASKS[task]),
        "--max_steps",
        str(steps),
        "--output_dir",
        str(output_dir),
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall_seconds = time.perf_counter() - start
    metrics = json.loads((output_dir / "metrics.json").read_text())
    result = {key: metrics[key] for key in REPORTED if key in metrics}
    result.update(steps=steps, wall_seconds=round(wall_seconds, 1))
    if task == "sms_spam":
        result["book_gpt2_small_test_accuracy"] = BOOK_SMS_TEST_ACCURACY
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_name_or_path", default="outputs/speedrun/pretrain")
    parser.add_argument("--data_dir", default=str(HERE.parent.parent / "shared" / "data" / "classification"))
    parser.add_argument("--max_steps", type=int, default=None, help=f"default per task: {DEFAULT_STEPS}")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--output_root", default="outputs/benchmark_classification")
    args, overrides = parser.parse_known_args(argv)
    overrides = [part for part in overrides if part != "--"]
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"--data_dir {args.data_dir}: no such folder (it needs sms_spam.tsv, sst2_*.tsv).")

    machine = describe_machine()
    context = {
        "base_model": args.model_name_or_path,
        "overrides": overrides,
        "machine": machine_summary(machine),
        "machine_details": machine,
        "date": time.strftime("%Y-%m-%d"),
    }
    result = {task: {**run_task(task, args, overrides), **context} for task in args.tasks.split(",")}
    # Each task's record stands alone, so tasks run at different times (or step budgets) sit side by side.
    write_result("finetune_classification", result, HERE / "results.json", merge=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
