"""The tokenizer stage: read a corpus and train a byte-level BPE ``ScratchGPTTokenizer`` on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .pretraining import DataArguments, load_corpus
from .tokenization_scratchgpt import ScratchGPTTokenizer


@dataclass
class TokenizerArguments:
    output_dir: str = field(default="outputs/tokenizer", metadata={"help": "Where to save the tokenizer."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(
        default=2, metadata={"help": "Merges seen fewer times than this are not learned."}
    )
    model_max_length: int = field(
        default=1024, metadata={"help": "Context length recorded in the tokenizer."}
    )


def train_tokenizer(tokenizer_args: TokenizerArguments, data_args: DataArguments) -> ScratchGPTTokenizer:
    """Train on every document of the corpus (with a progress bar) and save to ``output_dir``."""
    corpus, name = load_corpus(data_args)
    print(f"Training a {tokenizer_args.vocab_size}-token tokenizer on {name} ({len(corpus)} documents)")
    tokenizer = ScratchGPTTokenizer.train(
        (row["text"] for row in corpus),
        vocab_size=tokenizer_args.vocab_size,
        min_frequency=tokenizer_args.min_frequency,
        model_max_length=tokenizer_args.model_max_length,
        show_progress=True,
    )
    Path(tokenizer_args.output_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(tokenizer_args.output_dir)
    return tokenizer


def main(argv: list[str] | None = None) -> ScratchGPTTokenizer:
    from .cli import parse_args

    tokenizer_args, data_args = parse_args((TokenizerArguments, DataArguments), argv)
    return train_tokenizer(tokenizer_args, data_args)


__all__ = ["TokenizerArguments", "train_tokenizer", "main"]
