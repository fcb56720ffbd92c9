"""Instruction following: answer held-out instructions, score with ROUGE-L, exact match and an LLM judge.

Usage:
    python eval/instruction_following.py --model_name_or_path outputs/sft/merged \
        --dataset_name ../shared/data/instruction/instruction-data.json --limit 20 \
        --output_dir outputs/eval/instruction
    # with a local judge model (any chat model folder or Hub id)
    ... --judge_model_name_or_path Qwen/Qwen2.5-0.5B-Instruct
    # with any OpenAI-compatible endpoint; the key comes from $OPENAI_API_KEY (or --judge_api_key_env)
    ... --judge_url https://api.openai.com/v1 --judge_model gpt-4o-mini
    scratchgpt serve JUDGE_DIR --port 8000 &   # or vLLM, Ollama, ...
    ... --judge_url http://127.0.0.1:8000/v1 --judge_model JUDGE_DIR

The held-out set is the SFT stage's (same --dataset_name, --validation_fraction, --seed, --system_prompt
and --skip_invalid_records as training/sft.py: the same function splits it). Answers are greedy and stop at the end of the assistant's turn.
Without a judge only ROUGE-L and exact match are computed, with a notice. Writes OUTPUT_DIR/samples.json
(per item: prompt, output, reference, rouge_l, exact_match, judge_reply, judge_score), results.json
(means with 95% confidence intervals), results.md and, last, metrics.json (flat).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import hf_scratchgpt  # noqa: F401  (registers the scratchgpt model type with the Auto classes)
from hf_scratchgpt.evaluation.harness import ModelLoadingArguments, load_model
from hf_scratchgpt.evaluation.instruction import (
    generate_answers,
    load_held_out_instructions,
    score_answers,
    summarize,
    summary_table,
)
from hf_scratchgpt.evaluation.judge import LocalJudge, OpenAIJudge, judge_answers
from hf_scratchgpt.finetune.instruction_data import InstructionDataArguments
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.stage_files import write_json, write_metrics

logger = logging.getLogger(__name__)


@dataclass
class InstructionEvalArguments:
    """The model to evaluate, the judge, and the SFT stage's seed (the data: `InstructionDataArguments`)."""

    model_name_or_path: str = field(
        metadata={"help": "Chat model folder or Hub id (e.g. outputs/sft/merged)."}
    )
    output_dir: str = field(metadata={"help": "Where samples.json, results.json and metrics.json go."})
    seed: int = field(default=42, metadata={"help": "The SFT stage's seed (its held-out rows)."})
    limit: int | None = field(default=None, metadata={"help": "Answer only the first N held-out items."})
    max_new_tokens: int = 128
    judge_model_name_or_path: str | None = field(
        default=None, metadata={"help": "A local chat model as judge."}
    )
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL (.../v1)."})
    judge_model: str | None = field(default=None, metadata={"help": "Model name at --judge_url."})
    judge_api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Env variable with the key."})


def load_judge(args: InstructionEvalArguments, trust_remote_code: bool = False):
    if args.judge_url and args.judge_model_name_or_path:
        raise ValueError(
            "Pass either --judge_url (with --judge_model) or --judge_model_name_or_path, not both."
        )
    if args.judge_url:
        if not args.judge_model:
            raise ValueError("--judge_url needs --judge_model (the model name the endpoint serves).")
        return OpenAIJudge(args.judge_url, args.judge_model, api_key_env=args.judge_api_key_env)
    if args.judge_model_name_or_path:
        return LocalJudge(args.judge_model_name_or_path, trust_remote_code=trust_remote_code)
    logger.warning(
        "No judge given (--judge_model_name_or_path or --judge_url): ROUGE-L and exact match only."
    )
    return None


def main(argv: list[str] | None = None) -> dict:
    data_args, args, loading = parse_args(
        (InstructionDataArguments, InstructionEvalArguments, ModelLoadingArguments), argv
    )
    judge = load_judge(args, loading.trust_remote_code)

    examples = load_held_out_instructions(data_args, seed=args.seed, limit=args.limit)
    model, tokenizer = load_model(
        args.model_name_or_path, device=loading.device, trust_remote_code=loading.trust_remote_code
    )
    items = score_answers(generate_answers(model, tokenizer, examples, args.max_new_tokens))
    if judge is not None:
        items = judge_answers(judge, items)

    summary = summarize(items)
    output = Path(args.output_dir)
    write_json(output / "samples.json", items)
    results = {
        "model": args.model_name_or_path,
        "judge": args.judge_model or args.judge_model_name_or_path,
        "scores": summary,
    }
    write_json(output / "results.json", results)
    (output / "results.md").write_text(summary_table(summary))
    print(summary_table(summary))

    metrics = {f"{key}/{stat}": value for key, stats in summary.items() for stat, value in stats.items()}
    write_metrics(output, metrics)
    return metrics


if __name__ == "__main__":
    run_script(main)
