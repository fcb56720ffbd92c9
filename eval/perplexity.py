"""Perplexity and bits per byte of any causal LM on any text: a Hub dataset id or local files.

Usage:
    python eval/perplexity.py --model_name_or_path outputs/speedrun/model \
        --dataset ../shared/data/pretrain/tinystories_val_sample.txt --txt_mode line \
        --max_documents 200 --stride 128 --output_dir outputs/eval/perplexity

    python eval/perplexity.py --model_name_or_path gpt2 --dataset Salesforce/wikitext \
        --dataset_config wikitext-2-raw-v1 --dataset_split test --output_dir outputs/eval/ppl-gpt2

Documents longer than the context are read through overlapping windows (``--max_length`` tokens, a new
window every ``--stride`` tokens), so every token is scored once with at least max_length - stride
tokens of context. Writes OUTPUT_DIR/results.md and, last, metrics.json (perplexity, loss,
bits_per_byte, tokens, bytes, documents, windows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import hf_scratchgpt  # noqa: F401  (registers the scratchgpt model type with the Auto classes)
from hf_scratchgpt.data import load_text_dataset
from hf_scratchgpt.evaluation.harness import ModelLoadingArguments, load_model
from hf_scratchgpt.evaluation.perplexity import perplexity
from hf_scratchgpt.publish.markdown import metrics_table
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.stage_files import write_metrics


@dataclass
class PerplexityArguments:
    model_name_or_path: str = field(metadata={"help": "Model folder or Hub id (any causal LM)."})
    dataset: str = field(metadata={"help": "Hub dataset id, or a local file or folder of text."})
    output_dir: str = field(metadata={"help": "Where metrics.json and results.md go."})
    dataset_config: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    dataset_split: str = field(default="train", metadata={"help": "The Hub dataset's split."})
    text_column: str = "text"
    txt_mode: str = field(
        default="document", metadata={"help": "A .txt file is one document, or one per line."}
    )
    max_documents: int | None = field(default=None, metadata={"help": "Score only the first N documents."})
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per window (default: the context)."}
    )
    stride: int | None = field(default=None, metadata={"help": "Tokens between windows (default: half)."})
    batch_size: int = 8


def main(argv: list[str] | None = None) -> dict:
    args, loading = parse_args((PerplexityArguments, ModelLoadingArguments), argv)

    dataset = load_text_dataset(
        args.dataset,
        name=args.dataset_config,
        split=args.dataset_split,
        text_column=args.text_column,
        txt_mode=args.txt_mode,
    )
    if args.max_documents is not None:
        dataset = dataset.select(range(min(args.max_documents, len(dataset))))
    model, tokenizer = load_model(
        args.model_name_or_path, device=loading.device, trust_remote_code=loading.trust_remote_code
    )
    metrics = perplexity(
        model,
        tokenizer,
        dataset["text"],
        max_length=args.max_length,
        stride=args.stride,
        batch_size=args.batch_size,
    )
    metrics = {"model": args.model_name_or_path, "dataset": args.dataset, **metrics}
    table = metrics_table(metrics)
    print(table)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.md").write_text(table + "\n")
    write_metrics(output, metrics)
    return metrics


if __name__ == "__main__":
    run_script(main)
