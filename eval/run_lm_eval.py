"""Zero/few-shot evaluation with lm-evaluation-harness on any causal LM (ours or any other).

Usage:
    python eval/run_lm_eval.py --model_name_or_path outputs/speedrun/model \
        --tasks arc_easy_local,hellaswag_local --data_dir ../shared/data/eval \
        --num_fewshot 0 --limit 100 --output_dir outputs/eval/lm_eval

    # any file in a generic schema ({query, choices, gold} or {context, continuation}), named or not
    python eval/run_lm_eval.py --model_name_or_path gpt2 --tasks my_mc.jsonl,lambada=my_lambada.jsonl ...
    # lm-eval's own tasks (need the Hub)
    python eval/run_lm_eval.py --model_name_or_path M --tasks arc_easy,lambada_openai ...
    # without this package installed, a ScratchGPT folder or Hub repo loads with --trust_remote_code

Writes OUTPUT_DIR/results.json (lm-eval's layout: results[task]["acc,none"], ..., plus random_baseline),
samples_TASK.jsonl, results.md (with the random-guess accuracy beside every accuracy) and, last,
metrics.json (flat: "task/metric": value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import hf_scratchgpt  # noqa: F401  (registers the scratchgpt model type with the Auto classes)
from hf_scratchgpt.evaluation.harness import PromptingArguments, evaluate_tasks, save_results
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.stage_files import write_metrics


@dataclass
class LmEvalArguments:
    model_name_or_path: str = field(metadata={"help": "Model folder or Hub id (any causal LM)."})
    tasks: str = field(
        metadata={"help": "Comma-separated: bundled names, NAME=FILE, FILE, or lm-eval tasks."}
    )
    output_dir: str = field(metadata={"help": "Where results.json, results.md and metrics.json go."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder with the bundled tasks' files."})
    num_fewshot: int | None = field(default=None, metadata={"help": "Examples in the prompt (task default)."})
    limit: float | None = field(
        default=None, metadata={"help": "Documents per task (count, or fraction < 1)."}
    )
    batch_size: str = field(default="1", metadata={"help": "An integer, or 'auto'."})
    max_length: int | None = field(default=None, metadata={"help": "Context length (default: the model's)."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Default: the model's."})


def main(argv: list[str] | None = None) -> dict:
    args, prompting = parse_args((LmEvalArguments, PromptingArguments), argv)

    results = evaluate_tasks(
        args.model_name_or_path,
        args.tasks.split(","),
        tokenizer=args.tokenizer_name_or_path,
        data_dir=args.data_dir,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=int(args.batch_size) if args.batch_size.isdigit() else args.batch_size,
        device=prompting.device,
        trust_remote_code=prompting.trust_remote_code,
        max_length=args.max_length,
        apply_chat_template=prompting.apply_chat_template,
        seed=prompting.seed,
    )
    metrics = save_results(results, args.output_dir)
    print((Path(args.output_dir) / "results.md").read_text())
    write_metrics(args.output_dir, metrics)
    return metrics


if __name__ == "__main__":
    run_script(main)
