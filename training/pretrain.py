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
deadline (hf_scratchgpt.train.budget_plan, hf_scratchgpt.train.schedule). Every field of ModelArguments / DataArguments (hf_scratchgpt.train.pretraining),
BudgetArguments (hf_scratchgpt.train.budget), OptimizerArguments (hf_scratchgpt.train.optim: --muon) and TrainingArguments
can be set in the YAML file or on the command line.
"""

import logging
import time

import torch
from transformers import TrainerCallback, set_seed

from hf_scratchgpt.model.tokenizer_sync import align_model_and_tokenizer
from hf_scratchgpt.publish.cards import write_model_card
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.budget import BudgetArguments
from hf_scratchgpt.train.budget_plan import compile_if_it_pays, fit_to_budget
from hf_scratchgpt.train.optim import OptimizerArguments, trainer_optimizer_kwargs
from hf_scratchgpt.train.pretraining import (
    DataArguments,
    ModelArguments,
    build_model,
    check_before_loading,
    evenly_spaced,
    load_pretraining_corpus,
    pretraining_metrics,
    print_validation_summary,
)
from hf_scratchgpt.train.stage_files import write_metrics
from hf_scratchgpt.train.trainer import (
    SampleGenerationCallback,
    ScratchGPTTrainer,
    ScratchGPTTrainingArguments,
)


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
    check_before_loading(model_args, data_args, training_args)
    set_seed(training_args.seed)

    # 1. Text and tokenizer; 2. fit the run to the time budget (size, precision, steps, schedule), if any.
    corpus = load_pretraining_corpus(model_args, data_args, training_args)
    optimizer = trainer_optimizer_kwargs(optim_args, training_args)  # Muon + AdamW with --muon
    budgeted = fit_to_budget(budget_args, model_args, corpus, started, optimizer)
    if not budgeted:  # a fixed number of steps: compile if a few timed steps say the run is long enough
        compile_if_it_pays(model_args, corpus, optimizer)

    # 3. The model and its blocks.
    model = build_model(model_args, corpus.tokenizer, budgeted.size if budgeted else None)
    align_model_and_tokenizer(model, corpus.tokenizer)
    train_blocks = corpus.blocks(model.config.max_position_embeddings, "train")
    eval_blocks = corpus.blocks(model.config.max_position_embeddings, "validation")

    # 4. Train, the in-training evaluations on an evenly spaced subset of the validation blocks.
    trainer = ScratchGPTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=evenly_spaced(eval_blocks, data_args.max_eval_blocks),
        data_collator=corpus.collator,
        processing_class=corpus.tokenizer,
        callbacks=[
            SampleGenerationCallback(
                corpus.tokenizer, corpus.sample_prompts(), data_args.sample_max_new_tokens
            ),
            *(callbacks or []),
        ],
        **optimizer,
    )
    if budgeted:
        trainer.add_callback(budgeted.schedule)
        budgeted.schedule.install(trainer)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # model + tokenizer, loadable with the Auto classes
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return {}

    # 5. The final validation on every block; metrics.json last: the main job reads the stage as complete.
    plan = budgeted.plan if budgeted else None
    metrics = pretraining_metrics(trainer, train_result, corpus, train_blocks, eval_blocks, plan, started)
    write_model_card(training_args.output_dir, metrics=metrics)  # README.md: the Hub model card
    write_metrics(training_args.output_dir, metrics)
    print_validation_summary(metrics, training_args.output_dir)
    return metrics


if __name__ == "__main__":
    try:
        run_script(main)
    finally:
        # Under torchrun / accelerate, leaving the process group alive aborts the process at exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
