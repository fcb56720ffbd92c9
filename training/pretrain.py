"""Pretrain a ScratchGPT causal LM with transformers.Trainer.

    python training/pretrain.py --config training/configs/tiny.yaml
    python training/pretrain.py --config training/configs/tiny.yaml --time_budget 10    # minutes, sizes the run
    python training/pretrain.py --config training/configs/shakespeare_char.yaml --max_steps 200
    accelerate launch --config_file training/accelerate/ddp.yaml training/pretrain.py --config ...

Reads text (a Hub id, files, a folder, or the data stage's saved split: --data RUN/data) and a tokenizer
(--tokenizer_name_or_path, `byte`, or none to train one on the training split); writes --output_dir: the model
and tokenizer (loadable with the Auto classes), checkpoints, samples.jsonl, budget.json (how the run was fitted
to --time_budget) and, last, metrics.json. Every field of ModelArguments / DataArguments
(hf_scratchgpt.pretraining), BudgetArguments (hf_scratchgpt.budget) and TrainingArguments can be set in the
YAML file or on the command line.
"""

import copy
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling, set_seed

from hf_scratchgpt.alignment import align_model_and_tokenizer
from hf_scratchgpt.budget import (
    BudgetArguments,
    ModelSize,
    TimeBudgetCallback,
    measure_seconds_per_step,
    non_embedding_parameters,
    plan_to_budget,
    tokens_per_step,
)
from hf_scratchgpt.cards import write_model_card
from hf_scratchgpt.checkpoints import resume_requested
from hf_scratchgpt.cli import parse_args
from hf_scratchgpt.data import score_blocks, token_byte_lengths, tokenize_and_pack
from hf_scratchgpt.hardware import describe_machine
from hf_scratchgpt.pretraining import (
    DataArguments,
    ModelArguments,
    build_model,
    check_block_size,
    context_length,
    load_splits,
    load_tokenizer,
    model_config,
    size_is_open,
)
from hf_scratchgpt.training import (
    SampleGenerationCallback,
    ScratchGPTTrainer,
    ScratchGPTTrainingArguments,
    check_output_dir,
)

logger = logging.getLogger("pretrain")


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    model_args, data_args, budget_args, training_args = parse_args(
        (ModelArguments, DataArguments, BudgetArguments, ScratchGPTTrainingArguments), argv
    )
    # INFO on the main process; other ranks follow --log_level_replica (default: warnings only).
    logging.basicConfig(
        level=logging.INFO if training_args.should_log else training_args.get_process_log_level()
    )
    # Refuse what cannot work before loading anything: another run's work in --output_dir, a block longer
    # than the model's context.
    check_output_dir(training_args)
    if data_args.block_size and (context := context_length(model_args)):
        check_block_size(data_args.block_size, context)
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Text and tokenizer. Rank 0 goes first; the other ranks then read its Arrow caches.
    with training_args.main_process_first(desc="loading the corpus"):
        splits, corpus_name = load_splits(data_args, training_args.seed)
        tokenizer = load_tokenizer(model_args, splits["train"])
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def blocks_for(context: int, split: str):
        block_size = check_block_size(data_args.block_size, context)
        with training_args.main_process_first(desc=f"tokenizing and packing {split}"):
            return tokenize_and_pack(
                splits[split], tokenizer, block_size, num_proc=data_args.preprocessing_num_workers
            )

    # 2. Fit the run to the time budget: measure this machine, pick the size if none was given, set max_steps.
    budget_file = output_dir / "budget.json"
    size = None
    if (
        budget_args.time_budget
        and resume_requested(training_args.resume_from_checkpoint)
        and budget_file.is_file()
    ):
        plan = json.loads(budget_file.read_text())  # a resumed run keeps its size and schedule
    elif budget_args.time_budget:

        def probe(rung, precision=None):
            model = build_model(
                model_args, tokenizer, model_config(model_args, tokenizer, rung) if rung else None
            )
            config = model.config
            train = blocks_for(config.max_position_embeddings, "train")
            args = training_args
            if precision:
                args = copy.deepcopy(training_args)
                args.switch_precision(precision)
            seconds = measure_seconds_per_step(
                model, train, args, collator, budget_args.budget_probe_steps, ScratchGPTTrainer
            )
            return config, tokens_per_step(training_args, len(train[0]["input_ids"])), seconds

        cpu_bf16_is_a_guess = (
            training_args.precision_requested == "auto"
            and training_args.precision == "bf16"
            and training_args.use_cpu
        )
        validation_texts = list(splits["validation"]["text"])
        validation_tokens = sum(map(len, tokenizer(validation_texts, verbose=False)["input_ids"]))
        validation_blocks = validation_tokens / 256  # in blocks of 256 tokens (the cost is per token)

        def evaluation_seconds(seconds_per_step: float) -> float:
            # A forward pass costs about a third of a training step. The evaluations during training (every
            # fifth of the run, on the curve subset) and the final one (every validation block).
            per_block = seconds_per_step / (3 * training_args.per_device_train_batch_size)
            curve = min(validation_blocks, data_args.max_eval_blocks or validation_blocks)
            return per_block * (6 * curve + validation_blocks)

        fitted = plan_to_budget(
            seconds_left=lambda: budget_args.time_budget * 60 - (time.perf_counter() - started),
            probe=probe,
            config_for=lambda rung: model_config(model_args, tokenizer, rung),
            size_open=size_is_open(model_args),
            evaluation_seconds=evaluation_seconds,
            # A CPU's bf16 instructions do not pay off at every size (small matrices, casts): under
            # --precision auto, measure fp32 too and keep the faster.
            precisions=("bf16", "fp32") if cpu_bf16_is_a_guess else (),
        )
        plan = {
            "time_budget_minutes": budget_args.time_budget,
            "max_steps": fitted.max_steps,
            "seconds_per_step": fitted.seconds_per_step,
            "flops_per_second": fitted.flops_per_second,
            "planned_tokens": fitted.tokens,
            "size": asdict(fitted.size) if fitted.size else None,
            "size_rule": fitted.size_rule or "fixed by --preset / --model_config / --model_name_or_path",
            "precision": fitted.precision or training_args.precision,
            "precision_seconds_per_step": fitted.precision_seconds_per_step,
        }
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shared = [plan]  # every rank must train the same size for the same number of steps
            torch.distributed.broadcast_object_list(shared, src=0)
            plan = shared[0]
    if budget_args.time_budget:
        size = plan["size"]
        if plan["precision"] != training_args.precision:
            training_args.switch_precision(plan["precision"])  # before any Trainer reads it
        training_args.max_steps = plan["max_steps"]
        training_args.warmup_steps = min(training_args.warmup_steps, max(1, plan["max_steps"] // 10))
        training_args.eval_steps = training_args.save_steps = max(1, plan["max_steps"] // 5)
        if size:
            training_args.learning_rate = size["learning_rate"]
        if training_args.process_index == 0:
            budget_file.write_text(json.dumps(plan, indent=2) + "\n")
            print(f"time budget {budget_args.time_budget} min: {plan['size_rule']}; {plan['max_steps']} steps "
                  f"at {plan['seconds_per_step']:.3f} s/step")  # fmt: skip

    # 3. The model and its blocks.
    model = build_model(
        model_args, tokenizer, model_config(model_args, tokenizer, ModelSize(**size)) if size else None
    )
    align_model_and_tokenizer(model, tokenizer)
    train_blocks = blocks_for(model.config.max_position_embeddings, "train")
    eval_blocks = blocks_for(model.config.max_position_embeddings, "validation")
    curve_blocks = eval_blocks  # the in-training evaluations may use an evenly spaced subset
    if data_args.max_eval_blocks and len(eval_blocks) > data_args.max_eval_blocks:
        stride = len(eval_blocks) / data_args.max_eval_blocks
        curve_blocks = eval_blocks.select([int(i * stride) for i in range(data_args.max_eval_blocks)])
    logger.info(
        "corpus %s: %d train / %d validation blocks", corpus_name, len(train_blocks), len(eval_blocks)
    )

    # 4. Train.
    trainer = ScratchGPTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=curve_blocks,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[
            SampleGenerationCallback(tokenizer, data_args.sample_prompts, data_args.sample_max_new_tokens)
        ],
    )
    if budget_args.time_budget:
        # A safety net under the plan: if this machine turns out slower than measured (another process on the
        # CPU), stop in time for the final evaluation and save rather than overrun the budget.
        budget_seconds = budget_args.time_budget * 60
        trainer.add_callback(TimeBudgetCallback(started + budget_seconds - max(10.0, 0.05 * budget_seconds)))
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # model + tokenizer, loadable with the Auto classes
    trainer.save_state()

    # 5. The run's one validation loss: every validation block, fp32, with bits per byte from the very
    # tokens scored. Then metrics.json, last: the main job treats the stage as complete once it exists.
    if trainer.is_world_process_zero():
        block_size = len(train_blocks[0]["input_ids"])
        validation = score_blocks(
            trainer.model,
            eval_blocks,
            token_byte_lengths(tokenizer),
            training_args.per_device_eval_batch_size,
        )
        metrics = {
            **train_result.metrics,
            **{f"eval_{key}": value for key, value in validation.items()},
            "eval_blocks": len(eval_blocks),
            "corpus": corpus_name,
            "train_blocks": len(train_blocks),
            "block_size": block_size,
            "max_steps": trainer.state.max_steps,
            "train_steps": trainer.state.global_step,  # fewer than max_steps if the budget's deadline stopped it
            "tokens_seen": trainer.state.global_step * tokens_per_step(training_args, block_size),
            "num_parameters": model.num_parameters(),
            "non_embedding_parameters": non_embedding_parameters(model.config),
            "vocab_size": len(tokenizer),
            "precision": training_args.precision,
            "machine": describe_machine(training_args.use_cpu),
            "world_size": training_args.world_size,
            "budget": plan if budget_args.time_budget else None,
            "script_seconds": time.perf_counter() - started,
        }
        write_model_card(output_dir, metrics=metrics)  # README.md: the Hub model card
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"validation loss {validation['loss']:.4f}, {validation['bits_per_byte']:.3f} bits/byte; "
              f"model in {output_dir}")  # fmt: skip
        return metrics
    return {}


if __name__ == "__main__":
    try:
        main()
    finally:
        # Under torchrun / accelerate, leaving the process group alive aborts the process at exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
