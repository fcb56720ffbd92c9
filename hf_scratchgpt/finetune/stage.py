"""What every fine-tuning script does around its trainer: the time budget, saving the result, the stage's files.

* `make_stage_trainer`: a trainer that trains on the ``train`` split, evaluates on ``validation`` and, within
  the main job's time budget, stops when the stage's share of the time is up;
* `save_finetuned`: the trained model saved a whole folder at a time (the trainer's `SafeSavesMixin` for
  what it saves, `atomic_model_save` for the merged model), a LoRA run's adapter next to the adapter merged
  into the base weights;
* `write_stage_files`: ``samples.json``, a model card (README.md) in every saved model folder, and
  ``metrics.json`` last (the main job reads a stage as complete once it exists).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from datasets import DatasetDict
from transformers import Trainer, TrainingArguments

from ..model.tokenizer_sync import align_model_and_tokenizer
from ..publish.cards import write_model_card
from ..train.budget import BudgetArguments, TimeBudgetCallback
from ..train.checkpoints import atomic_model_save
from ..train.stage_files import write_json, write_metrics

MERGED_DIR = "merged"  # OUTPUT_DIR/merged: the standalone fine-tuned model of a LoRA run (and of SFT/DPO)


class SavedModel(NamedTuple):
    """Where `save_finetuned` put the model: the standalone one (full weights) and a LoRA run's adapter."""

    model_dir: Path | None
    adapter_dir: Path | None

    @property
    def folders(self) -> list[Path]:
        """Every folder holding a saved model (each gets a model card)."""
        return [folder for folder in (self.model_dir, self.adapter_dir) if folder is not None]


def make_stage_trainer(
    trainer_class: type[Trainer],
    model: Any,
    args: TrainingArguments,
    splits: DatasetDict,
    processing_class: Any,
    budget_args: BudgetArguments,
    started: float,
    **trainer_kwargs: Any,
) -> Trainer:
    """``trainer_class`` for a fine-tuning stage: trains on ``splits["train"]``, evaluates on
    ``splits["validation"]`` and, with ``--time_budget``, stops when the stage's time (counted from
    ``started``, a ``time.perf_counter()``) is up, or at ``max_steps`` if sooner. ``trainer_kwargs``: the
    trainer's other arguments (``peft_config``, ``data_collator``, ``compute_metrics``, ...)."""
    callbacks = (
        [TimeBudgetCallback.for_stage(budget_args.time_budget, started)] if budget_args.time_budget else []
    )
    return trainer_class(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("validation"),
        processing_class=processing_class,
        callbacks=callbacks,
        **trainer_kwargs,
    )


def save_finetuned(trainer: Trainer, merged_dir: str | os.PathLike | None = None) -> SavedModel:
    """Save what ``trainer`` trained, with its tokenizer (``processing_class``), aligned to the model.

    A LoRA model: the adapter (and any head trained in full) in ``args.output_dir``, which
    ``AutoPeftModelFor*`` loads; with ``merged_dir``, also the adapter merged into the base weights there.
    A fully trained model: in ``merged_dir`` if given, else in ``args.output_dir``. Every rank calls this
    (a sharded model is gathered); the main one writes.
    """
    output_dir = Path(trainer.args.output_dir)
    model = trainer.model
    if not hasattr(model, "merge_and_unload"):
        model_dir = Path(merged_dir) if merged_dir is not None else output_dir
        trainer.save_model(str(model_dir))
        return SavedModel(model_dir, None)
    trainer.save_model(str(output_dir))
    if merged_dir is None:
        return SavedModel(None, output_dir)
    merged, tokenizer = model.merge_and_unload(), trainer.processing_class
    if trainer.is_world_process_zero():
        align_model_and_tokenizer(merged, tokenizer)
        with atomic_model_save(merged_dir) as staging:
            merged.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    trainer.accelerator.wait_for_everyone()
    return SavedModel(Path(merged_dir), output_dir)


def write_stage_files(
    output_dir: str | os.PathLike,
    metrics: dict[str, Any],
    saved: SavedModel,
    base_model: str | None,
    samples: Sequence[dict[str, Any]] | None = None,
) -> None:
    """``samples.json`` (when given), a model card (README.md) in every folder of ``saved``, and, last,
    ``metrics.json``. Call it on the main process only."""
    if samples is not None:
        write_json(Path(output_dir) / "samples.json", list(samples))
    for folder in saved.folders:
        write_model_card(folder, metrics=metrics, base_model=base_model)
    write_metrics(output_dir, metrics)


__all__ = ["MERGED_DIR", "SavedModel", "make_stage_trainer", "save_finetuned", "write_stage_files"]
