"""Reload a saved causal LM with the Auto classes, as a user would, and write sample generations.

    python eval/generate_samples.py --model_name_or_path outputs/speedrun/pretrain --prompts_from outputs/speedrun/data
    python eval/generate_samples.py --model_name_or_path outputs/speedrun/pretrain --prompts "Once upon a time"

For each prompt: one greedy continuation (with a mild repetition penalty) and one sampled one (temperature 0.8,
top-k 40, fixed seed), never past the model's context. Also times greedy decoding with the KV cache. Writes
OUTPUT_DIR/samples.json ([{"prompt", "mode", "output"}]) and, last, metrics.json.
"""

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_scratchgpt.serve.chat import continue_text
from hf_scratchgpt.train.arguments import InvalidArgumentsError, ValidatedArguments, parse_args, run_script
from hf_scratchgpt.train.pretraining import DataArguments, corpus_prompts, load_splits
from hf_scratchgpt.train.stage_files import write_json, write_metrics


@dataclass
class SampleArguments(ValidatedArguments):
    model_name_or_path: str = field(metadata={"help": "A model folder or Hub id."})
    output_dir: str = field(default="outputs/samples", metadata={"help": "Where to write the samples."})
    prompts: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Prompts to continue (default: the first words of --prompts_from's validation documents)."
        },
    )
    prompts_from: str | None = field(
        default=None,
        metadata={
            "help": "The corpus the model learned from (the data stage's folder, a file or a folder of text): "
            "the first words of a few of its validation documents become the prompts."
        },
    )
    max_new_tokens: int = field(default=80, metadata={"help": "Tokens to generate per sample."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled continuations."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Load without the package installed."})


# Each prompt is continued twice: greedy with a mild repetition penalty, and sampled.
DECODING_MODES = {
    "greedy": {"do_sample": False, "repetition_penalty": 1.3},
    "sampled": {"do_sample": True, "temperature": 0.8, "top_k": 40},
}


def continuations(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """``{"prompt", "mode", "output"}`` for each prompt and `DECODING_MODES` mode, within the model's context
    (a prompt that fills it is skipped, with a notice)."""
    samples = []
    for prompt in prompts:
        try:
            for mode, settings in DECODING_MODES.items():
                output = continue_text(model, tokenizer, prompt, max_new_tokens, **settings)
                samples.append({"prompt": prompt, "mode": mode, "output": output})
        except ValueError as error:  # the prompt fills the context
            print(f"skipping prompt: {error}")
    return samples


def decoding_tokens_per_second(model: Any, tokenizer: Any, prompt: str) -> float:
    """Greedy decoding speed: batch of one, KV cache, as many tokens as the context allows (up to 128)."""
    inputs = tokenizer(prompt, return_tensors="pt")
    new_tokens = max(1, min(128, model.config.max_position_embeddings - inputs["input_ids"].shape[1]))
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return (output.shape[1] - inputs["input_ids"].shape[1]) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((SampleArguments,), argv)
    if not args.prompts:
        if not args.prompts_from:
            raise InvalidArgumentsError(
                "Pass --prompts TEXT ... or --prompts_from DATA (e.g. the run's data folder)."
            )
        splits, _ = load_splits(DataArguments(data=args.prompts_from), seed=args.seed)
        args.prompts = corpus_prompts(row["text"] for row in splits["validation"])
    model = AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path, trust_remote_code=args.trust_remote_code
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(
        args.model_name_or_path, trust_remote_code=args.trust_remote_code
    )
    torch.manual_seed(args.seed)  # the sampled continuations
    samples = continuations(model, tokenizer, args.prompts, args.max_new_tokens)
    write_json(f"{args.output_dir}/samples.json", samples)
    metrics = {
        "model": args.model_name_or_path,
        "samples": len(samples),
        "seed": args.seed,
        "generation_tokens_per_second": decoding_tokens_per_second(model, tokenizer, args.prompts[0]),
    }
    write_metrics(args.output_dir, metrics)  # last: the main job reads the stage as complete
    return metrics


if __name__ == "__main__":
    run_script(main)
