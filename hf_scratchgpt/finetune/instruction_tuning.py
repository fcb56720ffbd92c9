"""What ``training/sft.py`` and ``training/dpo.py`` share around TRL: configs with CPU-sane defaults, TRL's
trainers with this project's safe saves, the start model, the data, and the samples a stage writes.

TRL's defaults suit a GPU: bf16, activation checkpointing, ``max_length=1024``. Here precision is
decided from the hardware (`PrecisionArguments`), checkpointing is off (it only costs time on a small
model) and ``max_length`` is capped at the model's context, which a learned-position model cannot
exceed. With the length capped, TRL's best-fit-decreasing packing is correct for ScratchGPT: rows stay
within the context and restarting ``position_ids`` keep the packed conversations apart.

`SafeSFTTrainer` and `SafeDPOTrainer` are TRL's trainers with `SafeSavesMixin`, as pretraining's
``ScratchGPTTrainer``: ``--resume_from_checkpoint latest``, no silent overwrite of another run's
``output_dir`` (``--overwrite_output_dir true`` replaces it), model folders replaced atomically, a full
disk named as such.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, PreTrainedModel, Trainer
from transformers.trainer_utils import TrainOutput
from trl import DPOConfig, DPOTrainer, ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from ..model.tokenizer_sync import align_model_and_tokenizer
from ..serve.chat import generate_reply
from ..train.arguments import ValidatedArguments
from ..train.budget import BudgetArguments
from ..train.trainer import OutputDirArguments, PrecisionArguments, SafeSavesMixin, check_output_dir
from .gpt2_start import load_model_and_tokenizer
from .instruction_data import InstructionDataArguments, held_out_prompts, load_instruction_splits
from .stage import MERGED_DIR, SavedModel, make_stage_trainer, save_finetuned, write_stage_files

BASE_DIR = "base"  # OUTPUT_DIR/base: a LoRA run's start model, when it existed only in memory


@dataclass
class InstructionTuningDataArguments(InstructionDataArguments):
    """The instruction data (`InstructionDataArguments`) and the sample answers a stage writes."""

    num_samples: int = field(
        default=5, metadata={"help": "Held-out instructions answered into samples.json."}
    )
    sample_max_new_tokens: int = field(default=128, metadata={"help": "Longest sample answer, in tokens."})


@dataclass
class SmallModelTrainingDefaults:
    """Mixin for TRL's configs: defaults that suit a small model on any machine (see the module docstring)."""

    # None: TrainingArguments' own default (off) instead of TRL's on; --activation_checkpointing true turns it on.
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest tokenized example (prompt + answer); default and upper bound: the context."
        },
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (LoRA wants ~1e-3)."})


@dataclass
class SFTArguments(
    ValidatedArguments, PrecisionArguments, OutputDirArguments, SmallModelTrainingDefaults, SFTConfig
):
    """``trl.SFTConfig`` with precision from the hardware, ``--overwrite_output_dir`` and
    ``--resume_from_checkpoint latest``, and defaults for chat SFT of a small model."""

    packing: bool = field(default=True, metadata={"help": "Pack conversations into context-long rows (bfd)."})
    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on the assistant turns only."})


@dataclass
class DPOArguments(
    ValidatedArguments, PrecisionArguments, OutputDirArguments, SmallModelTrainingDefaults, DPOConfig
):
    """``trl.DPOConfig`` with precision from the hardware, ``--overwrite_output_dir`` and
    ``--resume_from_checkpoint latest``, and defaults for a small model."""


@dataclass
class FinetuneModelConfig(ValidatedArguments, ModelConfig):
    """``trl.ModelConfig`` (the model to start from + LoRA settings) with its numbers checked."""


@dataclass
class LoRAModelConfig(FinetuneModelConfig):
    """`FinetuneModelConfig` with LoRA on by default (used for DPO)."""

    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter instead of every weight."})


class SafeSFTTrainer(SafeSavesMixin, SFTTrainer):
    """``trl.SFTTrainer`` with saves that lose nothing (see `SafeSavesMixin`)."""


class SafeDPOTrainer(SafeSavesMixin, DPOTrainer):
    """``trl.DPOTrainer`` with saves that lose nothing (see `SafeSavesMixin`)."""


def load_start_model(
    model_args: ModelConfig, training_args: SFTConfig | DPOConfig
) -> tuple[PreTrainedModel, Any]:
    """The model to fine-tune and its tokenizer: ours, any causal LM, or GPT-2 converted, with the chat
    tokens added where missing; ``training_args.max_length`` capped at its context (see `cap_max_length`).
    For LoRA, a start model that exists only in memory is saved first (see `save_start_model`)."""
    model, tokenizer = load_model_and_tokenizer(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        trust_remote_code=training_args.trust_remote_code,
    )
    cap_max_length(training_args, model)
    if model_args.use_peft:
        save_start_model(model, tokenizer, training_args.output_dir)
    return model, tokenizer


@dataclass
class InstructionTuningRun:
    """What `run_instruction_tuning` did: the trainer, the data, the training and evaluation results and
    where the model was saved. `metrics` and `write_outputs` give the stage its metrics and files."""

    trainer: Trainer
    splits: DatasetDict
    skipped_invalid_records: int
    train_result: TrainOutput
    eval_metrics: dict[str, float]
    saved: SavedModel

    def metrics(self) -> dict[str, Any]:
        """What every instruction-tuning stage reports: losses, time, steps, data left out, how it trained."""
        return {
            "train_loss": self.train_result.training_loss,
            "eval_loss": self.eval_metrics["eval_loss"],
            "train_runtime": self.train_result.metrics["train_runtime"],
            "train_steps": self.trainer.state.global_step,
            "skipped_invalid_records": self.skipped_invalid_records,
            "use_peft": self.saved.adapter_dir is not None,
            "precision": self.trainer.args.precision,
            "model_dir": str(self.saved.model_dir),
        }

    def write_outputs(
        self, metrics: dict[str, Any], data_args: InstructionTuningDataArguments, base_model: str
    ) -> None:
        """samples.json (answers of the saved model to held-out prompts), model cards and, last, metrics.json."""
        samples = sample_answers(
            self.saved.model_dir, self.trainer.processing_class, self.splits["validation"], data_args
        )
        write_stage_files(self.trainer.args.output_dir, metrics, self.saved, base_model, samples)


def run_instruction_tuning(
    trainer_class: type[Trainer],
    convert: Callable[..., Dataset],
    data_args: InstructionTuningDataArguments,
    training_args: SFTConfig | DPOConfig,
    model_args: ModelConfig,
    budget_args: BudgetArguments,
    started: float,
) -> InstructionTuningRun | None:
    """The stage training/sft.py and training/dpo.py run alike, with ``trainer_class`` (`SafeSFTTrainer`,
    `SafeDPOTrainer`) on the data in its format (``convert``: `to_messages`, `to_preference`).

    Refuses a used ``output_dir`` before loading anything; loads the start model (`load_start_model`) and
    the data (`load_instruction_splits`); trains (LoRA with ``--use_peft``) within the stage's share of a
    ``--time_budget`` (counted from ``started``), evaluates on the held-out part, and saves the adapter and
    the merged model in ``OUTPUT_DIR/merged`` (`save_finetuned`). Returns None on every process but the main
    one, which goes on alone (trackers and the process group are finished).
    """
    check_output_dir(training_args)
    model, tokenizer = load_start_model(model_args, training_args)
    splits, skipped = load_instruction_splits(data_args, convert, seed=training_args.seed)
    trainer = make_stage_trainer(
        trainer_class,
        model,
        training_args,
        splits,
        tokenizer,
        budget_args,
        started,
        peft_config=get_peft_config(model_args),
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    eval_metrics = trainer.evaluate()
    saved = save_finetuned(trainer, Path(training_args.output_dir) / MERGED_DIR)
    trainer.end()
    if not trainer.is_world_process_zero():
        return None
    return InstructionTuningRun(trainer, splits, skipped, train_result, eval_metrics, saved)


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


def sample_answers(
    model_dir: str | os.PathLike, tokenizer: Any, dataset: Dataset, data_args: InstructionTuningDataArguments
) -> list[dict[str, str]]:
    """Greedy answers of the model saved in ``model_dir`` (what was saved, not what is in memory) to the first
    ``--num_samples`` held-out conversations: ``{"prompt", "output", "reference"}``."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    samples = []
    for example in held_out_prompts(dataset, data_args.num_samples):
        reply = generate_reply(
            model,
            tokenizer,
            example["messages"],
            max_new_tokens=data_args.sample_max_new_tokens,
            temperature=0,
        )
        samples.append(
            {"prompt": example["messages"][-1]["content"], "output": reply, "reference": example["reference"]}
        )
    return samples


def last_logged(trainer: Trainer, key: str) -> float | None:
    """The last value the trainer logged under ``key`` (e.g. ``num_tokens``), or None."""
    values = [entry[key] for entry in trainer.state.log_history if key in entry]
    return values[-1] if values else None


__all__ = [
    "BASE_DIR",
    "DPOArguments",
    "FinetuneModelConfig",
    "InstructionTuningDataArguments",
    "InstructionTuningRun",
    "LoRAModelConfig",
    "SFTArguments",
    "SafeDPOTrainer",
    "SafeSFTTrainer",
    "SmallModelTrainingDefaults",
    "cap_max_length",
    "last_logged",
    "load_start_model",
    "run_instruction_tuning",
    "sample_answers",
    "save_start_model",
]
