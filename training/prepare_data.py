"""The data stage: load a corpus once, split it into train/validation, and save both as a `datasets` folder.

    python training/prepare_data.py --output_dir outputs/data                       # default corpus
    python training/prepare_data.py --data ../shared/data/pretrain --txt_mode line --output_dir outputs/data

Later stages read the folder with `--data outputs/data` and use its splits as they are, so the tokenizer, the
pretraining and the evaluation see exactly the same text without loading the corpus again. Writes
OUTPUT_DIR/{dataset_dict.json, train/, validation/, corpus.json} and, last, metrics.json (documents and bytes
per split, and ``corpus_documents``, the model card's "documents" row).
"""

import time
from dataclasses import dataclass, field

from hf_scratchgpt.train.arguments import ValidatedArguments, parse_args, run_script
from hf_scratchgpt.train.pretraining import DataArguments, load_splits, save_splits
from hf_scratchgpt.train.stage_files import write_metrics


@dataclass
class OutputArguments(ValidatedArguments):
    output_dir: str = field(default="outputs/data", metadata={"help": "Where to save the split corpus."})
    seed: int = field(default=42, metadata={"help": "Seed of the random train/validation split."})


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    output_args, data_args = parse_args((OutputArguments, DataArguments), argv)
    splits, corpus_name = load_splits(data_args, output_args.seed)
    save_splits(splits, corpus_name, output_args.output_dir)
    metrics = {"corpus": corpus_name, "seed": output_args.seed, "split_mode": data_args.split_mode}
    for name, split in splits.items():
        metrics[f"{name}_documents"] = len(split)
        metrics[f"{name}_bytes"] = sum(len(text.encode("utf-8")) for text in split["text"])
    metrics["corpus_documents"] = sum(len(split) for split in splits.values())
    metrics["script_seconds"] = time.perf_counter() - started
    write_metrics(output_args.output_dir, metrics)
    print(
        f"{corpus_name}: {metrics['train_documents']} train / {metrics['validation_documents']} validation "
        f"documents saved to {output_args.output_dir}"
    )
    return metrics


if __name__ == "__main__":
    run_script(main)
