"""Train a byte-level BPE ScratchGPTTokenizer on the training split of a corpus, and save it.

    python training/train_tokenizer.py --data ../shared/data/pretrain/tinystories_val_sample.txt \
        --txt_mode line --vocab_size 4096 --output_dir outputs/tokenizer
    python training/train_tokenizer.py --data outputs/data --output_dir outputs/tokenizer   # the data stage's split

Only the training split is read (split with --validation_fraction / --split_mode / --seed, as pretrain.py does),
so validation text stays unseen. Any data option of hf_scratchgpt.train.pretraining.DataArguments works (Hub id, files,
folders). Writes OUTPUT_DIR (tokenizer files) and, last, metrics.json (``vocab_size`` and
``tokenizer_bytes_per_token`` on the validation split: the model card's tokenizer rows).
"""

import time
from dataclasses import dataclass, field

from hf_scratchgpt import ScratchGPTTokenizer
from hf_scratchgpt.train.arguments import ValidatedArguments, parse_args, run_script
from hf_scratchgpt.train.pretraining import DataArguments, load_splits
from hf_scratchgpt.train.stage_files import write_metrics


@dataclass
class TokenizerArguments(ValidatedArguments):
    output_dir: str = field(default="outputs/tokenizer", metadata={"help": "Where to save the tokenizer."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(
        default=2, metadata={"help": "Merges seen fewer times than this are not learned."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the random train/validation split."})


def main(argv: list[str] | None = None) -> ScratchGPTTokenizer:
    started = time.perf_counter()
    tokenizer_args, data_args = parse_args((TokenizerArguments, DataArguments), argv)
    splits, corpus_name = load_splits(data_args, tokenizer_args.seed)
    train = splits["train"]
    print(
        f"Training a {tokenizer_args.vocab_size}-token tokenizer on the training split of {corpus_name} "
        f"({len(train)} documents)"
    )
    tokenizer = ScratchGPTTokenizer.train(
        (row["text"] for row in train),
        vocab_size=tokenizer_args.vocab_size,
        min_frequency=tokenizer_args.min_frequency,
        show_progress=True,
    )
    tokenizer.save_pretrained(tokenizer_args.output_dir)

    # How well it compresses text it never saw: bytes per token on the validation split.
    validation = list(splits["validation"]["text"])
    n_tokens = sum(len(ids) for ids in tokenizer(validation, verbose=False)["input_ids"])
    metrics = {
        "corpus": corpus_name,
        "train_documents": len(train),
        "vocab_size": len(tokenizer),
        "tokenizer_bytes_per_token": sum(len(text.encode()) for text in validation) / max(n_tokens, 1),
        "script_seconds": time.perf_counter() - started,
    }
    write_metrics(tokenizer_args.output_dir, metrics)
    return tokenizer


if __name__ == "__main__":
    run_script(main)
