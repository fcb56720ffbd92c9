"""Preference tuning with trl.DPOTrainer and LoRA: the SFT model learns to prefer the chosen answers.

    python training/dpo.py --model_name_or_path outputs/sft/merged \
        --dataset_name ../shared/data/instruction/instruction-data-with-preference.json \
        --output_dir outputs/dpo --max_steps 100

Data: rows with `chosen` and `rejected` answers and an Alpaca `instruction` (+ `input`) or a `prompt`,
from a local file or the Hub (a row lacking one of them: an error, or skipped and counted with
--skip_invalid_records true). LoRA is on by default (--use_peft false trains every weight): the
reference model is then the same weights with the adapter switched off, so no second copy is held.

Writes the adapter in OUTPUT_DIR (AutoPeftModelForCausalLM), OUTPUT_DIR/merged (AutoModelForCausalLM),
samples.json and, last, metrics.json (losses, reward accuracy and margin on held-out pairs). Saves are
atomic and a used OUTPUT_DIR is refused, as in pretraining (--resume_from_checkpoint latest continues a run,
--overwrite_output_dir true replaces it). Every field of InstructionTuningDataArguments, DPOArguments and
LoRAModelConfig (trl.ModelConfig; all in hf_scratchgpt.finetune.instruction_tuning) can be set in
--config FILE.yaml.
"""

import time

from hf_scratchgpt.finetune.instruction_data import to_preference
from hf_scratchgpt.finetune.instruction_tuning import (
    DPOArguments,
    InstructionTuningDataArguments,
    LoRAModelConfig,
    SafeDPOTrainer,
    run_instruction_tuning,
)
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.budget import BudgetArguments


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    data_args, training_args, model_args, budget_args = parse_args(
        (InstructionTuningDataArguments, DPOArguments, LoRAModelConfig, BudgetArguments), argv
    )
    # Preference rows -> prompt / chosen / rejected; from the SFT model (any causal LM), LoRA by default.
    run = run_instruction_tuning(
        SafeDPOTrainer, to_preference, data_args, training_args, model_args, budget_args, started
    )
    if run is None:  # not the main process
        return {}
    metrics = {
        **run.metrics(),
        "eval_reward_accuracy": run.eval_metrics.get("eval_rewards/accuracies"),
        "eval_reward_margin": run.eval_metrics.get("eval_rewards/margins"),
        "train_pairs": len(run.splits["train"]),
        "eval_pairs": len(run.splits["validation"]),
        "beta": training_args.beta,
    }
    run.write_outputs(metrics, data_args, base_model=model_args.model_name_or_path)
    print(f"DPO done: {metrics}")
    return metrics


if __name__ == "__main__":
    run_script(main)
