"""Preference tuning with trl.DPOTrainer and LoRA: the SFT model learns to prefer the chosen answers.

    python training/dpo.py --model_name_or_path outputs/sft/merged \
        --dataset_name ../shared/data/instruction/instruction-data-with-preference.json \
        --output_dir outputs/dpo --max_steps 100

Data: rows with `chosen` and `rejected` answers and an Alpaca `instruction` (+ `input`) or a `prompt`,
from a local file or the Hub (a row lacking one of them: an error, or skipped and counted with
--skip_invalid_records true). LoRA is on by default (--use_peft false trains every weight): the
reference model is then the same weights with the adapter switched off, so no second copy is held.

Writes the adapter in OUTPUT_DIR (AutoPeftModelForCausalLM), OUTPUT_DIR/merged (AutoModelForCausalLM),
samples.json and, last, metrics.json (losses, reward accuracy and margin on held-out pairs). Every
field of InstructionDataArguments, DPOArguments (hf_scratchgpt.finetuning.instruction_tuning) and
LoRAModelConfig (trl.ModelConfig) can be set in --config FILE.yaml.
"""

import time
from pathlib import Path

from transformers import AutoModelForCausalLM
from trl import DPOTrainer, get_peft_config

from hf_scratchgpt.budget import BudgetArguments, TimeBudgetCallback
from hf_scratchgpt.cards import write_model_card
from hf_scratchgpt.cli import parse_args, run_script
from hf_scratchgpt.data import split_train_validation
from hf_scratchgpt.finetuning.instruction_tuning import (
    DPOArguments,
    InstructionDataArguments,
    LoRAModelConfig,
    cap_max_length,
    sample_answers,
    save_adapter_and_merged,
    save_start_model,
    write_json,
)
from hf_scratchgpt.finetuning.instructions import load_instruction_dataset, to_preference
from hf_scratchgpt.gpt2_start import load_model_and_tokenizer


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    data_args, training_args, model_args, budget_args = parse_args(
        (InstructionDataArguments, DPOArguments, LoRAModelConfig, BudgetArguments), argv
    )

    # Start from the SFT model (any causal LM folder or Hub id works).
    model, tokenizer = load_model_and_tokenizer(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        trust_remote_code=training_args.trust_remote_code,
    )
    cap_max_length(training_args, model)

    # Data: preference rows -> conversational prompt / chosen / rejected, some held out.
    records = load_instruction_dataset(
        data_args.dataset_name, split=data_args.dataset_train_split, config=data_args.dataset_config
    )
    dataset = to_preference(
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
    trainer = DPOTrainer(
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
        "eval_reward_accuracy": eval_metrics.get("eval_rewards/accuracies"),
        "eval_reward_margin": eval_metrics.get("eval_rewards/margins"),
        "train_runtime": train_result.metrics["train_runtime"],
        "train_steps": trainer.state.global_step,
        "train_pairs": len(splits["train"]),
        "skipped_invalid_records": len(records) - len(dataset),
        "eval_pairs": len(splits["validation"]),
        "beta": training_args.beta,
        "use_peft": model_args.use_peft,
        "precision": training_args.precision,
        "model_dir": str(merged_dir),
    }
    # Model cards (README.md) for the merged model and, with LoRA, the adapter; metrics.json last.
    for model_dir in {merged_dir, Path(training_args.output_dir)} if model_args.use_peft else {merged_dir}:
        write_model_card(model_dir, metrics=metrics, base_model=model_args.model_name_or_path)
    write_json(f"{training_args.output_dir}/metrics.json", metrics)
    trainer.accelerator.print(f"DPO done: {metrics}")
    return metrics


if __name__ == "__main__":
    run_script(main)
