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
instructions) and, last, metrics.json. Saves are atomic and a used OUTPUT_DIR is refused, as in pretraining
(--resume_from_checkpoint latest continues a run, --overwrite_output_dir true replaces it). Every field of
InstructionTuningDataArguments, SFTArguments and FinetuneModelConfig (trl.ModelConfig; all in
hf_scratchgpt.finetune.instruction_tuning) can be set in --config FILE.yaml.
"""

import time

from hf_scratchgpt.finetune.instruction_data import to_messages
from hf_scratchgpt.finetune.instruction_tuning import (
    FinetuneModelConfig,
    InstructionTuningDataArguments,
    SafeSFTTrainer,
    SFTArguments,
    last_logged,
    run_instruction_tuning,
)
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.budget import BudgetArguments


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    data_args, training_args, model_args, budget_args = parse_args(
        (InstructionTuningDataArguments, SFTArguments, FinetuneModelConfig, BudgetArguments), argv
    )
    # Any instruction layout -> chat messages (loss on the assistant turns only); LoRA with --use_peft.
    run = run_instruction_tuning(
        SafeSFTTrainer, to_messages, data_args, training_args, model_args, budget_args, started
    )
    if run is None:  # not the main process
        return {}
    metrics = {
        **run.metrics(),
        "train_tokens": last_logged(run.trainer, "num_tokens"),
        "train_examples": len(run.splits["train"]),
        "eval_examples": len(run.splits["validation"]),
        "packing": training_args.packing,
        "max_length": training_args.max_length,
    }
    run.write_outputs(metrics, data_args, base_model=model_args.model_name_or_path)
    print(f"SFT done: {metrics}")
    return metrics


if __name__ == "__main__":
    run_script(main)
