"""Benchmark: what the main job's pretraining makes of a fixed time budget, against a plain PyTorch loop.

    python benchmarks/main_job.py [--time_budget 5] [--data PATH] [any pretrain.py option]

A fixed corpus (../shared/data/pretrain/tinystories_val_sample.txt, one document per line, the last 10% held
out) and one BPE tokenizer trained on its training part, outside any clock. Then, in this process:

* ours: training/pretrain.py with training/configs/tiny.yaml and --time_budget, exactly as the main job's
  pretrain stage runs it (it measures the machine, chooses the model size, precision and steps, trains with
  the schedule following the clock, evaluates and saves, all inside the budget);
* the reference: the same model (same config, fresh weights), tokenizer, training blocks, batch size,
  learning rate and precision, trained by a plain PyTorch loop (AdamW, warmup then cosine decay over the
  loop's own wall time) for as long as ours took in all, with only its optimizer steps on the clock.

Both are scored on every validation block by the same function; the figure is validation bits per byte
(ratio ours / reference: below 1 is better). Results go to benchmarks/results.json under "main_job", with
the machine and its load average.
"""

from __future__ import annotations

import json
import math
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, DataCollatorForLanguageModeling, set_seed

from hf_scratchgpt import ScratchGPTForCausalLM
from hf_scratchgpt.benchmarking import QUIET_TRAINING_ARGS, machine_record, write_result
from hf_scratchgpt.data import score_blocks, token_byte_lengths, tokenize_and_pack
from hf_scratchgpt.train.pretraining import DataArguments, ModelArguments, load_splits, load_tokenizer
from hf_scratchgpt.train.trainer import decay_parameter_names

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results.json"
CORPUS = REPO.parent / "shared" / "data" / "pretrain" / "tinystories_val_sample.txt"
SEED = 42


def option(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def without(argv: list[str], *names: str) -> list[str]:
    """``argv`` less the ``--name value`` pairs of ``names``."""
    kept, skip = [], False
    for arg in argv:
        if not skip and arg not in names:
            kept.append(arg)
        skip = arg in names and not skip
    return kept


def plain_loop(
    model: torch.nn.Module,
    blocks: Any,
    collator: Any,
    seconds: float,
    learning_rate: float,
    batch_size: int,
    precision: str,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.1,
) -> int:
    """Train ``model`` for ``seconds`` of optimizer steps (warmup, then cosine to ``min_lr_ratio`` over the
    time): nanoGPT's loop, timed instead of counted. Returns the number of steps."""
    device = next(model.parameters()).device
    decayed = set(decay_parameter_names(model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decayed], "weight_decay": 0.1},
        {"params": [p for n, p in model.named_parameters() if n not in decayed], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.99))
    loader = torch.utils.data.DataLoader(blocks, batch_size=batch_size, shuffle=True, collate_fn=collator)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model.train()
    steps, spent = 0, 0.0
    while spent < seconds:
        for batch in loader:
            start = time.perf_counter()
            progress = spent / seconds
            if progress < warmup_fraction:
                factor = progress / warmup_fraction
            else:
                cosine = 0.5 * (1 + math.cos(math.pi * (progress - warmup_fraction) / (1 - warmup_fraction)))
                factor = min_lr_ratio + (1 - min_lr_ratio) * cosine
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * factor
            with autocast:
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            spent += time.perf_counter() - start
            if spent >= seconds:
                break
    return steps


def run_ours(argv: list[str], data: str, budget: float, work: Path) -> dict[str, Any]:
    """training/pretrain.py as the main job's pretrain stage runs it, on ``data`` within ``budget`` minutes;
    its metrics. ``argv``'s other options go to it unchanged."""
    pretrain = runpy.run_path(str(REPO / "training" / "pretrain.py"))["main"]
    return pretrain(
        [
            "--config",
            str(REPO / "training" / "configs" / "tiny.yaml"),
            "--data",
            data,
            "--txt_mode",
            "line",
            "--split_mode",
            "tail",
            "--seed",
            str(SEED),
            "--tokenizer_name_or_path",
            str(work / "tokenizer"),
            "--output_dir",
            str(work / "ours"),
            *QUIET_TRAINING_ARGS,
            "--time_budget",
            str(budget),
            *without(argv, "--time_budget", "--data", "--tokenizer_vocab_size"),
        ]
    )


def run_plain_loop(ours: dict[str, Any], splits: Any, tokenizer: Any, work: Path) -> dict[str, Any]:
    """The reference: ours' model (fresh weights), blocks, learning rate and precision in `plain_loop` for as
    long as ours took in all; its steps, validation score (`score_blocks`) and device."""
    set_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = ScratchGPTForCausalLM(AutoConfig.from_pretrained(work / "ours")).to(device)
    train = tokenize_and_pack(splits["train"], tokenizer, ours["block_size"])
    validation = tokenize_and_pack(splits["validation"], tokenizer, ours["block_size"])
    learning_rate = (ours["budget"]["size"] or {}).get("learning_rate") or 2e-3
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    steps = plain_loop(model, train, collator, ours["script_seconds"], learning_rate, 16, ours["precision"])
    score = score_blocks(model, validation, token_byte_lengths(tokenizer), 32)
    return {"steps": steps, "score": score, "device": device.type}


def main(
    argv: list[str], results_file: Path = RESULTS, work: Path = REPO / "outputs" / "benchmark_main_job"
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    budget = float(option(argv, "--time_budget", "5"))
    data_args = DataArguments(data=option(argv, "--data", str(CORPUS)), txt_mode="line", split_mode="tail")
    vocab = int(option(argv, "--tokenizer_vocab_size", "4096"))
    splits, _ = load_splits(data_args, SEED)
    tokenizer = load_tokenizer(ModelArguments(tokenizer_vocab_size=vocab), splits["train"])
    tokenizer.save_pretrained(work / "tokenizer")

    ours = run_ours(argv, data_args.data, budget, work)
    plain = run_plain_loop(ours, splits, tokenizer, work)
    reference = plain["score"]
    result = {
        "corpus": data_args.data if data_args.data != str(CORPUS) else str(CORPUS.relative_to(REPO.parent)),
        "time_budget_minutes": budget,
        "ours": {
            "val_bits_per_byte": round(ours["eval_bits_per_byte"], 4),
            "val_loss": round(ours["eval_loss"], 4),
            "model_size": (ours["budget"]["size"] or {}).get("name"),
            "size_rule": ours["budget"]["size_rule"],
            "num_parameters": ours["num_parameters"],
            "precision": ours["precision"],
            "train_steps": ours["train_steps"],
            "planned_steps": ours["budget"]["planned_steps"],
            "epochs": round(ours["epoch"], 2),
            "wall_seconds": round(ours["script_seconds"], 1),
        },
        "plain_loop": {
            "val_bits_per_byte": round(reference["bits_per_byte"], 4),
            "val_loss": round(reference["loss"], 4),
            "train_steps": plain["steps"],
            "train_seconds": round(ours["script_seconds"], 1),
        },
        "bits_per_byte_ours_to_plain_loop": round(ours["eval_bits_per_byte"] / reference["bits_per_byte"], 4),
        "options": argv,
        "device": ours["device"],
        "machine": machine_record(plain["device"]),
        "load_average_before": round(load_before, 2),
    }
    write_result("main_job", result, results_file)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
