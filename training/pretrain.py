"""Pretrain a ScratchGPT causal LM with transformers.Trainer.

    python training/pretrain.py --config training/configs/tiny.yaml
    python training/pretrain.py --config training/configs/tiny.yaml --time_budget 10    # minutes, sizes the run
    python training/pretrain.py --config training/configs/shakespeare_char.yaml --max_steps 200
    python training/pretrain.py --config training/configs/shakespeare_char_modern.yaml    # modern recipe + Muon
    accelerate launch --config_file training/accelerate/ddp.yaml training/pretrain.py --config ...

Reads text (a Hub id, files, a folder, or the data stage's saved split: --data RUN/data) and a tokenizer
(--tokenizer_name_or_path, `byte`, or none to train one on the training split); writes --output_dir: the model
and tokenizer (loadable with the Auto classes), checkpoints, samples.jsonl, budget.json (how the run was fitted
to --time_budget) and, last, metrics.json. With --time_budget, warmup and decay follow the clock and end at the
deadline (hf_scratchgpt.train.schedule). Every field of ModelArguments / DataArguments (hf_scratchgpt.train.pretraining),
BudgetArguments (hf_scratchgpt.train.budget), OptimizerArguments (hf_scratchgpt.train.optim: --muon) and TrainingArguments
can be set in the YAML file or on the command line.
"""

import json
import logging
import math
import time
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling, TrainerCallback, set_seed

from hf_scratchgpt.data import score_blocks, token_byte_lengths, tokenize_and_pack
from hf_scratchgpt.model.tokenizer_sync import align_model_and_tokenizer
from hf_scratchgpt.publish.cards import write_model_card
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.budget import (
    MOST_EPOCHS,
    BudgetArguments,
    ModelSize,
    better_than_chance,
    non_embedding_parameters,
    tokens_per_step,
)
from hf_scratchgpt.train.checkpoints import resume_requested
from hf_scratchgpt.train.hardware import describe_machine
from hf_scratchgpt.train.optim import OptimizerArguments, trainer_optimizer_kwargs
from hf_scratchgpt.train.pretraining import (
    DataArguments,
    ModelArguments,
    budget_warning,
    build_model,
    check_block_size,
    context_length,
    corpus_prompts,
    device_description,
    load_splits,
    load_tokenizer,
    model_config,
    plan_budget,
)
from hf_scratchgpt.train.schedule import DeadlineSchedule, fit_steps_to_schedule
from hf_scratchgpt.train.trainer import (
    SampleGenerationCallback,
    ScratchGPTTrainer,
    ScratchGPTTrainingArguments,
    check_output_dir,
)

logger = logging.getLogger("pretrain")


def main(argv: list[str] | None = None, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Run pretraining with ``argv`` (default: the command line); ``callbacks`` join the Trainer's (benchmarks
    use them to time the steps). Returns the metrics written to metrics.json."""
    started = time.perf_counter()
    model_args, data_args, budget_args, optim_args, training_args = parse_args(
        (ModelArguments, DataArguments, BudgetArguments, OptimizerArguments, ScratchGPTTrainingArguments),
        argv,
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
                splits[split],
                tokenizer,
                block_size,
                num_proc=data_args.preprocessing_num_workers,
                split=split,
            )

    # 2. Fit the run to the time budget: measure this machine, pick the size if none was given, plan the steps.
    budget_file = output_dir / "budget.json"
    optimizer = trainer_optimizer_kwargs(optim_args, training_args)  # Muon + AdamW with --muon
    size, plan, schedule = None, None, None
    if budget_args.time_budget:
        if resume_requested(training_args.resume_from_checkpoint) and budget_file.is_file():
            plan = json.loads(budget_file.read_text())  # a resumed run keeps its size and schedule
        else:
            plan = plan_budget(
                budget_args,
                model_args,
                data_args,
                training_args,
                tokenizer,
                splits,
                blocks_for,
                collator,
                started,
                ScratchGPTTrainer,
                optimizer,
            )
        size = plan["size"]
        if plan["precision"] != training_args.precision or plan["precision_seconds_per_step"]:
            # Before any Trainer reads it; probes in another precision also left Accelerate's state behind.
            training_args.switch_precision(plan["precision"])
        if size:
            training_args.learning_rate = size["learning_rate"]
        # Warmup and decay follow the clock to the deadline, which keeps back the final evaluation and save.
        steps_per_epoch = plan["corpus_tokens"] * plan["planned_steps"] / plan["planned_tokens"]
        warmup = fit_steps_to_schedule(
            training_args, plan["planned_steps"], most_steps=int(MOST_EPOCHS * steps_per_epoch)
        )
        deadline = started + budget_args.time_budget * 60 - plan["final_reserve_seconds"]
        schedule = DeadlineSchedule(deadline, warmup)
        if training_args.process_index == 0:
            budget_file.write_text(json.dumps(plan, indent=2) + "\n")
            print(
                f"time budget {budget_args.time_budget:g} min: {plan['size_rule']}; about {plan['planned_steps']} "
                f"steps at {plan['seconds_per_step']:.3f} s/step, the schedule ending at the deadline"
            )
            if warning := budget_warning(plan, len(tokenizer)):
                print(f"WARNING: {warning}", flush=True)  # next to the plan, before training starts

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
    prompts = data_args.sample_prompts or corpus_prompts(row["text"] for row in splits["validation"])
    trainer = ScratchGPTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=curve_blocks,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[
            SampleGenerationCallback(tokenizer, prompts, data_args.sample_max_new_tokens),
            *(callbacks or []),
        ],
        **optimizer,
    )
    if schedule:
        trainer.add_callback(schedule)
        schedule.install(trainer)
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
            # With a budget: the steps it planned (the Trainer's max_steps is only a bound) and the steps trained
            # when the schedule reached the deadline.
            "max_steps": plan["planned_steps"] if plan else trainer.state.max_steps,
            "train_steps": trainer.state.global_step,
            "tokens_seen": trainer.state.global_step * tokens_per_step(training_args, block_size),
            "num_parameters": model.num_parameters(),
            "non_embedding_parameters": non_embedding_parameters(model.config),
            "vocab_size": len(tokenizer),
            # A model that learned nothing guesses uniformly over the vocabulary.
            "chance_loss": math.log(len(tokenizer)),
            "better_than_chance": better_than_chance(validation["loss"], len(tokenizer)),
            "precision": training_args.precision,
            "device": device_description(training_args.device),
            "machine": describe_machine(training_args.use_cpu),
            "world_size": training_args.world_size,
            "budget": plan if budget_args.time_budget else None,
            "script_seconds": time.perf_counter() - started,
        }
        write_model_card(output_dir, metrics=metrics)  # README.md: the Hub model card
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(
            f"validation loss {validation['loss']:.4f}, {validation['bits_per_byte']:.3f} bits/byte; "
            f"model in {output_dir}"
        )
        if not metrics["better_than_chance"]:
            logger.warning(
                "validation loss %.3f is no better than chance (ln %d = %.3f): train longer (a larger "
                "--time_budget or --max_steps).",
                validation["loss"],
                len(tokenizer),
                metrics["chance_loss"],
            )
        return metrics
    return {}


if __name__ == "__main__":
    try:
        run_script(main)
    finally:
        # Under torchrun / accelerate, leaving the process group alive aborts the process at exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
