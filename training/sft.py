"""Supervised fine-tuning (instruction tuning) with trl.SFTTrainer: a base model learns to answer in turns.

    python training/sft.py --model_name_or_path outputs/speedrun/model \
        --dataset_name ../shared/data/instruction/instruction-data.json --output_dir outputs/sft --max_steps 200
    python training/sft.py --model_name_or_path openai-community/gpt2 --dataset_name yahma/alpaca-cleaned \
        --output_dir outputs/gpt2-sft --use_peft --lora_r 16 --lora_alpha 32 --learning_rate 1e-3

Data: Alpaca rows (instruction, input, output), chat `messages`, or prompt/completion pairs, from a local
file or the Hub; every layout becomes chat `messages` and the loss falls on the assistant turns only.
A record lacking a field (e.g. an Alpaca `output`) stops the run naming the file and record, unless
`--skip_invalid_records true` leaves such records out (counted in metrics.json).
A GPT2LMHeadModel start (folder or Hub id) is converted to ScratchGPT with GPT-2's tokenizer plus the
chat tokens. `--use_peft` trains LoRA (TRL's ModelConfig flags: --lora_r, --lora_alpha, ...).

Writes OUTPUT_DIR/merged (the fine-tuned model, loads with AutoModelForCausalLM), the LoRA adapter in
OUTPUT_DIR with --use_peft (loads with AutoPeftModelForCausalLM), samples.json (answers to held-out
instructions) and, last, metrics.json. Every field of InstructionDataArguments, SFTArguments
(hf_scratchgpt.finetuning.instruction_tuning) and trl.ModelConfig can be set in --config FILE.yaml.
"""

import time
from pathlib import Path

from transformers import AutoModelForCausalLM
from trl import ModelConfig, SFTTrainer, get_peft_config

from hf_scratchgpt.budget import BudgetArguments, TimeBudgetCallback
from hf_scratchgpt.cards import write_model_card
from hf_scratchgpt.cli import parse_args, run_script
from hf_scratchgpt.data import split_train_validation
from hf_scratchgpt.finetuning.instruction_tuning import (
    InstructionDataArguments,
    SFTArguments,
    cap_max_length,
    last_logged,
    sample_answers,
    save_adapter_and_merged,
    save_start_model,
    write_json,
)
from hf_scratchgpt.finetuning.instructions import load_instruction_dataset, to_messages
from hf_scratchgpt.gpt2_start import load_model_and_tokenizer


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    data_args, training_args, model_args, budget_args = parse_args(
        (InstructionDataArguments, SFTArguments, ModelConfig, BudgetArguments), argv
    )

    # Model and tokenizer: ours, any causal LM, or GPT-2 converted; the chat tokens added where missing.
    model, tokenizer = load_model_and_tokenizer(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        trust_remote_code=training_args.trust_remote_code,
    )
    cap_max_length(training_args, model)

    # Data: any instruction layout -> chat messages, with a held-out part for eval loss and samples.
    records = load_instruction_dataset(
        data_args.dataset_name, split=data_args.dataset_train_split, config=data_args.dataset_config
    )
    dataset = to_messages(
        records,
        system_prompt=data_args.system_prompt,
        source=data_args.dataset_name,
        skip_invalid_records=data_args.skip_invalid_records,
    )
    splits = split_train_validation(dataset, data_args.validation_fraction, seed=training_args.seed)

    if model_args.use_peft:  # the adapter must name a base that loads: save a converted/grown start model
        save_start_model(model, tokenizer, training_args.output_dir)
    # Within the main job's budget: train until this stage's time is up (or max_steps, if sooner).
    callbacks = (
        [TimeBudgetCallback.for_stage(budget_args.time_budget, started)] if budget_args.time_budget else []
    )
    trainer = SFTTrainer(
        callbacks=callbacks,
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    eval_metrics = trainer.evaluate()

    merged_dir = save_adapter_and_merged(trainer, tokenizer, training_args.output_dir)
    trainer.end()  # trackers finished, process group gone: what follows runs on one process
    if not trainer.is_world_process_zero():
        return {}
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)  # samples come from what was saved
    samples = sample_answers(
        merged, tokenizer, splits["validation"], data_args.num_samples, data_args.sample_max_new_tokens
    )
    write_json(f"{training_args.output_dir}/samples.json", samples)

    metrics = {
        "train_loss": train_result.training_loss,
        "eval_loss": eval_metrics["eval_loss"],
        "train_runtime": train_result.metrics["train_runtime"],
        "train_steps": trainer.state.global_step,
        "train_tokens": last_logged(trainer, "num_tokens"),
        "train_examples": len(splits["train"]),
        "skipped_invalid_records": len(records) - len(dataset),
        "eval_examples": len(splits["validation"]),
        "use_peft": model_args.use_peft,
        "packing": training_args.packing,
        "max_length": training_args.max_length,
        "precision": training_args.precision,
        "model_dir": str(merged_dir),
    }
    # Model cards (README.md) for the merged model and, with LoRA, the adapter; metrics.json last.
    for model_dir in {merged_dir, Path(training_args.output_dir)} if model_args.use_peft else {merged_dir}:
        write_model_card(model_dir, metrics=metrics, base_model=model_args.model_name_or_path)
    write_json(f"{training_args.output_dir}/metrics.json", metrics)
    trainer.accelerator.print(f"SFT done: {metrics}")
    return metrics


if __name__ == "__main__":
    run_script(main)
