"""What ``training/sft.py`` and ``training/dpo.py`` share around TRL: configs with CPU-sane defaults and
writing a stage's outputs (adapter, merged model, samples).

TRL's defaults suit a GPU: bf16, activation checkpointing, ``max_length=1024``. Here precision is
decided from the hardware (`PrecisionArguments`), checkpointing is off (it only costs time on a small
model) and ``max_length`` is capped at the model's context, which a learned-position model cannot
exceed. With the length capped, TRL's best-fit-decreasing packing is correct for ScratchGPT: rows stay
within the context and restarting ``position_ids`` keep the packed conversations apart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, Trainer
from trl import DPOConfig, ModelConfig, SFTConfig

from ..alignment import align_model_and_tokenizer
from ..chat import generate_reply
from ..training import PrecisionArguments
from .instructions import held_out_prompts

MERGED_DIR = "merged"  # OUTPUT_DIR/merged: the standalone fine-tuned model, whatever the method
BASE_DIR = "base"  # OUTPUT_DIR/base: a LoRA run's start model, when it existed only in memory


@dataclass
class InstructionDataArguments:
    """Which instruction data to train on and how to hold some out."""

    dataset_name: str = field(
        metadata={"help": "Hub dataset id or local .json/.jsonl/.csv/.parquet file (Alpaca, messages, "
                  "prompt/completion, or chosen/rejected for DPO)."}
    )  # fmt: skip
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on (Hub datasets)."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of the rows held out for eval loss and sample answers."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message put before every prompt."}
    )
    skip_invalid_records: bool = field(
        default=False,
        metadata={"help": "Leave out records that lack a required field (e.g. an Alpaca 'output') instead of "
                  "stopping; metrics.json counts them."},
    )  # fmt: skip
    num_samples: int = field(
        default=5, metadata={"help": "Held-out instructions answered into samples.json."}
    )
    sample_max_new_tokens: int = field(default=128, metadata={"help": "Longest sample answer, in tokens."})


@dataclass
class SFTArguments(PrecisionArguments, SFTConfig):
    """``trl.SFTConfig`` with precision from the hardware and defaults for chat SFT of a small model."""

    packing: bool = field(default=True, metadata={"help": "Pack conversations into context-long rows (bfd)."})
    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on the assistant turns only."})
    # None: TrainingArguments' own default (off) instead of TRL's on; --activation_checkpointing true turns it on.
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Longest tokenized row; default and upper bound: the model's context."},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (LoRA wants ~1e-3)."})


@dataclass
class DPOArguments(PrecisionArguments, DPOConfig):
    """``trl.DPOConfig`` with precision from the hardware and defaults for a small model."""

    # None: TrainingArguments' own default (off) instead of TRL's on; --activation_checkpointing true turns it on.
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Longest prompt+answer; default and upper bound: the model's context."},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate."})


@dataclass
class LoRAModelConfig(ModelConfig):
    """``trl.ModelConfig`` (model to start from + LoRA settings) with LoRA on by default (used for DPO)."""

    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter instead of every weight."})


def cap_max_length(args: SFTConfig | DPOConfig, model: PreTrainedModel) -> int:
    """Set ``args.max_length`` to at most the model's context (the context when unset) and return it."""
    context = model.config.max_position_embeddings
    args.max_length = min(args.max_length or context, context)
    return args.max_length


def save_start_model(model: PreTrainedModel, tokenizer: Any, output_dir: str | os.PathLike) -> None:
    """Save a start model that exists only in memory (converted from GPT-2, or grown by the chat tokens:
    empty ``name_or_path``) to ``output_dir/base``, so that a LoRA adapter trained on it names a base
    ``AutoPeftModelForCausalLM`` can load. A model loaded unchanged from a folder is left alone."""
    if model.name_or_path:
        return
    base_dir = Path(output_dir) / BASE_DIR
    align_model_and_tokenizer(model, tokenizer)
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    model.name_or_path = str(base_dir)  # what PEFT writes as the adapter's base_model_name_or_path


def save_adapter_and_merged(trainer: Trainer, tokenizer: Any, output_dir: str | os.PathLike) -> Path:
    """Save what a run produced; returns the folder of the standalone model (``OUTPUT_DIR/merged``).

    A LoRA run saves its adapter (with the tokenizer) in ``output_dir`` (``AutoPeftModelForCausalLM``
    loads it) and the adapter merged into the base weights in ``output_dir/merged``; a full fine-tune
    saves the model in ``output_dir/merged``. Stop tokens and context length are aligned first.
    """
    output_dir, merged_dir = Path(output_dir), Path(output_dir) / MERGED_DIR
    model = trainer.model
    align_model_and_tokenizer(model, tokenizer)
    if hasattr(model, "merge_and_unload"):
        trainer.save_model(str(output_dir))  # every rank: gathers sharded weights; writes on the main one
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        model.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
    trainer.accelerator.wait_for_everyone()
    return merged_dir


def sample_answers(
    model: PreTrainedModel, tokenizer: Any, dataset: Dataset, count: int, max_new_tokens: int
) -> list[dict[str, str]]:
    """Greedy answers to the first ``count`` held-out conversations: ``{"prompt", "output", "reference"}``."""
    model.eval()
    samples = []
    for example in held_out_prompts(dataset, count):
        reply = generate_reply(
            model, tokenizer, example["messages"], max_new_tokens=max_new_tokens, temperature=0
        )
        samples.append({"prompt": example["messages"][-1]["content"], "output": reply,
                        "reference": example["reference"]})  # fmt: skip
    return samples


def last_logged(trainer: Trainer, key: str) -> float | None:
    """The last value the trainer logged under ``key`` (e.g. ``num_tokens``), or None."""
    values = [entry[key] for entry in trainer.state.log_history if key in entry]
    return values[-1] if values else None


def write_json(path: str | os.PathLike, payload: Any) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = [
    "BASE_DIR",
    "DPOArguments",
    "InstructionDataArguments",
    "LoRAModelConfig",
    "MERGED_DIR",
    "SFTArguments",
    "cap_max_length",
    "last_logged",
    "sample_answers",
    "save_adapter_and_merged",
    "save_start_model",
    "write_json",
]
