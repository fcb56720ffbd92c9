"""Building blocks of the pretraining stages: arguments, the corpus and its split, the tokenizer, the model.

The scripts in ``training/`` wire these together (``prepare_data.py``, ``train_tokenizer.py``, ``pretrain.py``);
the main job runs those scripts as stages that hand over folders:

    prepare_data.py   -> RUN/data/       the corpus loaded ONCE and split (a `datasets` DatasetDict on disk)
    train_tokenizer.py -> RUN/tokenizer/  trained on the train split only
    pretrain.py        -> RUN/pretrain/   a model folder + metrics.json

Every script also takes raw data (a Hub id, files, a folder), loads and splits it the same way (same seed,
same fraction), so a stage run alone sees the same train/validation text as inside the main job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from transformers.trainer_utils import TrainOutput

from ..data import (
    DataError,
    hub_is_reachable,
    load_default_dataset,
    load_text_dataset,
    score_blocks,
    split_train_validation,
    token_byte_lengths,
    tokenize_and_pack,
)
from ..model.configuration_scratchgpt import ScratchGPTConfig
from ..model.modeling_scratchgpt import ScratchGPTForCausalLM
from ..model.tokenization_scratchgpt import ScratchGPTTokenizer
from .arguments import ValidatedArguments, check_choice
from .budget import ModelSize, better_than_chance, non_embedding_parameters, tokens_per_step
from .hardware import cpu_model_name, describe_machine
from .trainer import check_output_dir

logger = logging.getLogger(__name__)

# The default corpus when the Hub is reachable, and how many stories of it a default run reads.
DEFAULT_HUB_DATASET = "roneneldan/TinyStories"
DEFAULT_HUB_DOCUMENTS = 50_000
OFFLINE_CORPUS_NAME = "Python's bundled docs (offline default)"
_OFFLINE_NOTICE_SHOWN: list[bool] = []  # the fallback notice is printed once per process


TXT_MODES = ("document", "line", "separator")
SPLIT_MODES = ("random", "tail")


@dataclass
class ModelArguments(ValidatedArguments):
    """Which model to train and with which tokenizer."""

    preset: str | None = field(
        default=None,
        metadata={
            "help": "ScratchGPTConfig preset (tiny, tiny-modern, gpt2, ...). Default: tiny, or with "
            "--time_budget the size that budget can train best (see hf_scratchgpt.train.budget)."
        },
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
class DataArguments(ValidatedArguments):
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
        default_factory=list,
        metadata={
            "help": "Prompts for sample generations (default: the first words of validation documents)."
        },
    )
    sample_max_new_tokens: int = field(default=64)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Any other word would silently mean the default (split_train_validation reads "not tail" as random).
        check_choice("txt_mode", self.txt_mode, TXT_MODES)
        check_choice("split_mode", self.split_mode, SPLIT_MODES)


def load_corpus(args: DataArguments) -> tuple[Dataset, str]:
    """The training text as a ``Dataset`` with a ``text`` column, and a one-line description of it.

    Everything stays in Arrow files on disk (memory-mapped), however large the corpus: a Hub dataset is
    streamed and only the documents used are written to the `datasets` cache, once; other ranks and reruns
    read that cache.
    """
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
    # Written to the datasets cache as Arrow, keyed by what was asked for, instead of a Python list per rank.
    key = json.dumps([source, args.dataset_config, args.dataset_split, args.text_column, args.max_documents])
    dataset = Dataset.from_generator(_iterate, gen_kwargs={"stream": stream}, fingerprint=_fingerprint(key))
    return dataset, f"{source} ({args.dataset_split}{config})"


def _iterate(stream: Any) -> Any:
    yield from stream


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


# What the data stage writes next to the DatasetDict, so later stages can name the corpus.
CORPUS_FILE = "corpus.json"


def save_splits(splits: DatasetDict, corpus_name: str, output_dir: str | Path) -> None:
    """Write the train/validation split as a `datasets` folder (``save_to_disk``) plus its description."""
    output_dir = Path(output_dir)
    splits.save_to_disk(output_dir)
    (output_dir / CORPUS_FILE).write_text(json.dumps({"corpus": corpus_name}) + "\n")


def is_saved_splits(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / "dataset_dict.json").is_file()


def load_splits(args: DataArguments, seed: int) -> tuple[DatasetDict, str]:
    """``train`` and ``validation`` text, and the corpus description.

    A folder written by `save_splits` (the data stage) is used as it is; anything else is loaded with
    `load_corpus` and split with ``--validation_fraction`` / ``--split_mode`` and ``seed``.
    """
    source = args.data or args.data_dir
    if is_saved_splits(source):
        splits = load_from_disk(source)
        missing = {"train", "validation"} - set(splits)
        if missing:
            raise DataError(
                f"{source} holds splits {sorted(splits)}; the pipeline needs train and validation."
            )
        description = Path(source) / CORPUS_FILE
        name = json.loads(description.read_text())["corpus"] if description.is_file() else str(source)
        return splits, name
    corpus, name = load_corpus(args)
    return split_train_validation(corpus, args.validation_fraction, seed, args.split_mode), name


def corpus_prompts(texts: Iterable[str], count: int = 3, words: int = 4) -> list[str]:
    """The first ``words`` words of the first ``count`` documents that have that many: sample prompts that
    suit whatever the corpus is (stories, documentation, code), unlike fixed story openings."""
    prompts = []
    for text in texts:
        opening = text.split()[:words]
        if len(opening) == words and (prompt := " ".join(opening)) not in prompts:
            prompts.append(prompt)
        if len(prompts) == count:
            break
    return prompts


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
        (row["text"] for row in train_text), vocab_size=args.tokenizer_vocab_size, show_progress=True
    )


def model_config(
    args: ModelArguments, tokenizer: ScratchGPTTokenizer, size: ModelSize | None = None
) -> ScratchGPTConfig:
    """The config of a fresh model: preset (or ``size``, a rung of the budget's size ladder) or config file,
    sized to the tokenizer, then ``--model_overrides``."""
    settings = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **(size.overrides if size else {}),
        **parse_overrides(args.model_overrides),
    }
    if args.model_config:
        # Merge before constructing, so the overrides are validated like any other config value.
        saved, _ = ScratchGPTConfig.get_config_dict(args.model_config)
        config = ScratchGPTConfig.from_dict({**saved, **settings})
    else:
        config = ScratchGPTConfig.from_preset(size.preset if size else args.preset or "tiny", **settings)
    if config.vocab_size < len(tokenizer):
        raise ValueError(
            f"vocab_size={config.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens."
        )
    return config


def size_is_open(args: ModelArguments) -> bool:
    """True when nothing fixed the model's size, so a time budget may choose it."""
    return not (args.preset or args.model_config or args.model_name_or_path)


def build_model(
    args: ModelArguments, tokenizer: ScratchGPTTokenizer, size: ModelSize | None = None
) -> ScratchGPTForCausalLM:
    """A fresh model (`model_config`, at ``size`` when a time budget chose one), or a saved one to continue."""
    if args.model_name_or_path:
        return ScratchGPTForCausalLM.from_pretrained(
            args.model_name_or_path, attn_implementation=args.attn_implementation
        )
    config = model_config(args, tokenizer, size)
    return ScratchGPTForCausalLM._from_config(config, attn_implementation=args.attn_implementation)


def context_length(args: ModelArguments) -> int | None:
    """The context of the model these arguments describe, known before any data or tokenizer is loaded
    (None when a time budget will choose the size)."""
    if args.model_name_or_path or args.model_config:
        saved, _ = ScratchGPTConfig.get_config_dict(args.model_name_or_path or args.model_config)
        context = saved.get("max_position_embeddings", saved.get("n_positions"))
    elif args.preset:
        context = ScratchGPTConfig.from_preset(args.preset).max_position_embeddings
    else:
        return None
    overrides = parse_overrides(args.model_overrides)
    return overrides.get("max_position_embeddings", overrides.get("n_positions", context))


def check_block_size(block_size: int | None, context: int) -> int:
    """The block size to pack at: ``--block_size`` if it fits the model's context, else a clear error."""
    if block_size is None:
        return context
    if block_size > context:
        raise DataError(
            f"--block_size {block_size} is longer than the model's context (max_position_embeddings={context}): "
            f"use --block_size {context} or less, or a model with a longer context."
        )
    return block_size


def check_before_loading(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> None:
    """Refuse another run's work in ``--output_dir`` or a ``--block_size`` past the context, before loading."""
    check_output_dir(training_args)
    if data_args.block_size and (context := context_length(model_args)):
        check_block_size(data_args.block_size, context)


@dataclass
class PretrainingCorpus:
    """The split text (``train``, ``validation``), its description and tokenizer, packed into blocks on demand."""

    splits: DatasetDict
    name: str
    tokenizer: ScratchGPTTokenizer
    data_args: DataArguments
    training_args: TrainingArguments

    @property
    def collator(self) -> DataCollatorForLanguageModeling:
        return DataCollatorForLanguageModeling(self.tokenizer, mlm=False)

    def blocks(self, context: int, split: str) -> Dataset:
        """``split`` tokenized and packed into blocks of ``--block_size`` (default: the model's ``context``)."""
        block_size = check_block_size(self.data_args.block_size, context)
        with self.training_args.main_process_first(desc=f"tokenizing and packing {split}"):
            return tokenize_and_pack(
                self.splits[split],
                self.tokenizer,
                block_size,
                num_proc=self.data_args.preprocessing_num_workers,
                split=split,
            )

    def sample_prompts(self) -> list[str]:
        """``--sample_prompts``, or the first words of a few validation documents."""
        return self.data_args.sample_prompts or corpus_prompts(
            row["text"] for row in self.splits["validation"]
        )


def load_pretraining_corpus(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> PretrainingCorpus:
    """The text (`load_splits`) and its tokenizer (`load_tokenizer`); rank 0 goes first, the other ranks
    then read its Arrow caches."""
    with training_args.main_process_first(desc="loading the corpus"):
        splits, name = load_splits(data_args, training_args.seed)
        tokenizer = load_tokenizer(model_args, splits["train"])
    return PretrainingCorpus(splits, name, tokenizer, data_args, training_args)


def evenly_spaced(blocks: Dataset, most: int | None) -> Dataset:
    """At most ``most`` of ``blocks``, evenly spaced (all when None): the in-training evaluations' subset."""
    if not most or len(blocks) <= most:
        return blocks
    stride = len(blocks) / most
    return blocks.select([int(i * stride) for i in range(most)])


def pretraining_metrics(
    trainer: Trainer,
    train_result: TrainOutput,
    corpus: PretrainingCorpus,
    train_blocks: Dataset,
    eval_blocks: Dataset,
    plan: dict[str, Any] | None,
    started: float,
) -> dict[str, Any]:
    """What ``metrics.json`` records of a pretraining run, with the run's one validation loss: every
    validation block, fp32, and bits per byte from the very tokens scored. ``plan``: budget.json, if any."""
    args, model, tokenizer = trainer.args, trainer.model, corpus.tokenizer
    validation = score_blocks(
        model, eval_blocks, token_byte_lengths(tokenizer), args.per_device_eval_batch_size
    )
    block_size = len(train_blocks[0]["input_ids"])
    return {
        **train_result.metrics,
        **{f"eval_{key}": value for key, value in validation.items()},
        "eval_blocks": len(eval_blocks),
        "corpus": corpus.name,
        "train_blocks": len(train_blocks),
        "block_size": block_size,
        # With a budget: the steps it planned (the Trainer's max_steps is only a bound) and the steps trained
        # when the schedule reached the deadline.
        "max_steps": plan["planned_steps"] if plan else trainer.state.max_steps,
        "train_steps": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * tokens_per_step(args, block_size),
        "num_parameters": model.num_parameters(),
        "non_embedding_parameters": non_embedding_parameters(model.config),
        "vocab_size": len(tokenizer),
        # A model that learned nothing guesses uniformly over the vocabulary.
        "chance_loss": math.log(len(tokenizer)),
        "better_than_chance": better_than_chance(validation["loss"], len(tokenizer)),
        "precision": args.precision,
        "torch_compile": bool(args.torch_compile),
        "device": device_description(args.device),
        "machine": describe_machine(args.use_cpu),
        "world_size": args.world_size,
        "seed": args.seed,
        "budget": plan,
        "script_seconds": time.perf_counter() - started,
    }


def print_validation_summary(metrics: dict[str, Any], output_dir: str | Path) -> None:
    """The run's outcome in one line, and a warning when the model is no better than chance."""
    print(
        f"validation loss {metrics['eval_loss']:.4f}, {metrics['eval_bits_per_byte']:.3f} bits/byte; "
        f"model in {output_dir}"
    )
    if not metrics["better_than_chance"]:
        logger.warning(
            "validation loss %.3f is no better than chance (ln %d = %.3f): train longer (a larger "
            "--time_budget or --max_steps).",
            metrics["eval_loss"],
            metrics["vocab_size"],
            metrics["chance_loss"],
        )


def device_description(device: torch.device) -> str:
    """The device that trained, for metrics and the report: 'cuda: NVIDIA H200', 'cpu: <model name>'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu: {cpu_model_name()}"
    return "mps: Apple GPU (Metal)" if device.type == "mps" else str(device)


__all__ = [
    "DataArguments",
    "ModelArguments",
    "PretrainingCorpus",
    "build_model",
    "check_before_loading",
    "check_block_size",
    "context_length",
    "corpus_prompts",
    "device_description",
    "evenly_spaced",
    "load_corpus",
    "load_pretraining_corpus",
    "load_splits",
    "load_tokenizer",
    "model_config",
    "pretraining_metrics",
    "print_validation_summary",
    "save_splits",
    "size_is_open",
]
