"""The pretraining stage: text -> tokenizer -> packed blocks -> ``Trainer`` -> a saved causal LM.

``training/pretrain.py`` is a thin command line over ``run_pretraining``; the speedrun calls it in
process. Distribution is the Trainer's: the same function runs on one CPU, under
``torchrun --nproc_per_node N`` or under ``accelerate launch`` (DDP, FSDP, DeepSpeed).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, TrainingArguments, set_seed

from .configuration_scratchgpt import ScratchGPTConfig
from .data import (
    DataError,
    hub_is_reachable,
    load_default_dataset,
    load_text_dataset,
    split_train_validation,
    tokenize_and_pack,
)
from .modeling_scratchgpt import ScratchGPTForCausalLM
from .tokenization_scratchgpt import ScratchGPTTokenizer
from .training import SampleGenerationCallback, ScratchGPTTrainer, ScratchGPTTrainingArguments

logger = logging.getLogger(__name__)

# The default corpus when the Hub is reachable, and how many stories of it a default run reads.
DEFAULT_HUB_DATASET = "roneneldan/TinyStories"
DEFAULT_HUB_DOCUMENTS = 50_000
OFFLINE_CORPUS_NAME = "Python's bundled docs (offline default)"
_OFFLINE_NOTICE_SHOWN: list[bool] = []  # the fallback notice is printed once per process


@dataclass
class ModelArguments:
    """Which model to train and with which tokenizer."""

    preset: str = field(
        default="tiny", metadata={"help": "ScratchGPTConfig preset (tiny, tiny-modern, gpt2, ...)."}
    )
    # In a YAML config this may also be a mapping; on the command line it is 'n_layer=4,n_embd=128'.
    model_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields over the preset, e.g. 'n_layer=4,n_embd=128,rope_theta=1e4'."},
    )
    model_config: str | None = field(
        default=None,
        metadata={
            "help": "A ScratchGPT config.json (or a folder holding one) to start from instead of the preset."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue from a saved model (directory or Hub id) instead of a preset."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A saved tokenizer (directory or Hub id), 'byte' for byte-level with no merges "
            "(one token per byte), or empty to train one on the training split."
        },
    )
    tokenizer_vocab_size: int = field(
        default=4096, metadata={"help": "Vocabulary size when training a tokenizer."}
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "eager, sdpa, flash_attention_2, flex_attention"}
    )


@dataclass
class DataArguments:
    """Where the text comes from and how it becomes training blocks."""

    data: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, a file (.txt/.jsonl/.json/.csv/.tsv/.parquet) or a folder. Default: "
            f"{DEFAULT_HUB_DATASET} when the Hub is reachable, else text that ships with Python."
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "A folder of text files (same as --data DIR)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    txt_mode: str = field(
        default="document", metadata={"help": "document, line or separator (for .txt files)."}
    )
    max_documents: int | None = field(default=None, metadata={"help": "Read at most this many documents."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of the text kept for validation."}
    )
    split_mode: str = field(default="random", metadata={"help": "random (by document) or tail (last part)."})
    block_size: int | None = field(
        default=None, metadata={"help": "Tokens per block (default: model context)."}
    )
    max_eval_blocks: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many validation blocks (evenly spaced)."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenizing."}
    )
    sample_prompts: list[str] = field(
        default_factory=lambda: ["Once upon a time", "The"],
        metadata={"help": "Prompts for sample generations."},
    )
    sample_max_new_tokens: int = field(default=64)


def load_corpus(args: DataArguments) -> tuple[Dataset, str]:
    """The training text as a ``Dataset`` with a ``text`` column, and a one-line description of it."""
    if args.data and args.data_dir:
        raise DataError("Pass either --data or --data_dir, not both.")
    source = args.data or args.data_dir
    if source is None:
        if hub_is_reachable():
            source = DEFAULT_HUB_DATASET
            args.max_documents = args.max_documents or DEFAULT_HUB_DOCUMENTS
        else:
            if not _OFFLINE_NOTICE_SHOWN:
                print(
                    f"Hub not reachable: using the English text that ships with Python (help topics and "
                    f"standard-library docstrings) instead of {DEFAULT_HUB_DATASET}; pass --data PATH for your own."
                )
                _OFFLINE_NOTICE_SHOWN.append(True)
            return load_default_dataset(), OFFLINE_CORPUS_NAME
    if Path(source).exists():
        dataset = load_text_dataset(source, text_column=args.text_column, txt_mode=args.txt_mode)
        if args.max_documents:
            dataset = dataset.select(range(min(args.max_documents, len(dataset))))
        return dataset, str(source)
    # A Hub dataset: stream it so only the documents we use are downloaded.
    stream = load_text_dataset(
        source,
        name=args.dataset_config,
        split=args.dataset_split,
        text_column=args.text_column,
        streaming=True,
    )
    if args.max_documents:
        stream = stream.take(args.max_documents)
    config = f", config {args.dataset_config}" if args.dataset_config else ""
    return Dataset.from_list(list(stream)), f"{source} ({args.dataset_split}{config})"


def parse_overrides(overrides: dict[str, Any] | str | None) -> dict[str, Any]:
    """``"n_layer=4,dropout=0.1"`` (CLI) or a mapping (YAML) -> a dict with typed values."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    for item in overrides.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model_overrides: {item!r} is not key=value (e.g. n_layer=4,n_embd=128).")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def load_tokenizer(args: ModelArguments, train_text: Dataset) -> ScratchGPTTokenizer:
    """A saved tokenizer, the byte-level one, or a new one trained on the training split."""
    name = args.tokenizer_name_or_path
    if name == "byte":
        return ScratchGPTTokenizer()
    if name:
        return ScratchGPTTokenizer.from_pretrained(name)
    return ScratchGPTTokenizer.train(
        (row["text"] for row in train_text), vocab_size=args.tokenizer_vocab_size, show_progress=False
    )


def build_model(args: ModelArguments, tokenizer: ScratchGPTTokenizer) -> ScratchGPTForCausalLM:
    """A fresh model from the preset or config file (sized to the tokenizer), or a saved one to continue."""
    if args.model_name_or_path:
        return ScratchGPTForCausalLM.from_pretrained(
            args.model_name_or_path, attn_implementation=args.attn_implementation
        )
    settings = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **parse_overrides(args.model_overrides),
    }
    if args.model_config:
        # Merge before constructing, so the overrides are validated like any other config value.
        saved, _ = ScratchGPTConfig.get_config_dict(args.model_config)
        config = ScratchGPTConfig.from_dict({**saved, **settings})
    else:
        config = ScratchGPTConfig.from_preset(args.preset, **settings)
    if config.vocab_size < len(tokenizer):
        raise ValueError(
            f"vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens."
        )
    return ScratchGPTForCausalLM._from_config(config, attn_implementation=args.attn_implementation)


def run_pretraining(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> dict[str, Any]:
    """Train, evaluate, save model + tokenizer to ``output_dir``; return the final metrics."""
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)

    with training_args.main_process_first(desc="loading and tokenizing the corpus"):
        corpus, corpus_name = load_corpus(data_args)
        splits = split_train_validation(
            corpus, data_args.validation_fraction, training_args.seed, data_args.split_mode
        )
        tokenizer = load_tokenizer(model_args, splits["train"])
        model = build_model(model_args, tokenizer)
        block_size = data_args.block_size or model.config.max_position_embeddings
        tokenizer.model_max_length = model.config.max_position_embeddings
        num_proc = data_args.preprocessing_num_workers
        train_blocks = tokenize_and_pack(splits["train"], tokenizer, block_size, num_proc=num_proc)
        eval_blocks = tokenize_and_pack(splits["validation"], tokenizer, block_size, num_proc=num_proc)
        if data_args.max_eval_blocks and len(eval_blocks) > data_args.max_eval_blocks:
            stride = len(eval_blocks) / data_args.max_eval_blocks
            eval_blocks = eval_blocks.select([int(i * stride) for i in range(data_args.max_eval_blocks)])

    logger.info("corpus %s: %d train / %d validation blocks of %d tokens", corpus_name, len(train_blocks),
                len(eval_blocks), block_size)  # fmt: skip
    trainer = ScratchGPTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
        callbacks=[
            SampleGenerationCallback(tokenizer, data_args.sample_prompts, data_args.sample_max_new_tokens)
        ],
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = {**train_result.metrics, **trainer.evaluate()}
    trainer.save_model()  # model + tokenizer (the processing class), loadable with Auto* classes
    trainer.save_state()

    if trainer.is_world_process_zero():
        metrics.update(
            corpus=corpus_name,
            train_blocks=len(train_blocks),
            eval_blocks=len(eval_blocks),
            block_size=block_size,
            num_parameters=model.num_parameters(),
            vocab_size=len(tokenizer),
        )
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point (``training/pretrain.py``)."""
    from .cli import parse_args

    model_args, data_args, training_args = parse_args(
        (ModelArguments, DataArguments, ScratchGPTTrainingArguments), argv
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    os.makedirs(training_args.output_dir, exist_ok=True)
    try:
        return run_pretraining(model_args, data_args, training_args)
    finally:
        # Under torchrun / accelerate, leaving the process group alive aborts the process at exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


__all__ = ["DataArguments", "ModelArguments", "load_corpus", "run_pretraining", "main"]
