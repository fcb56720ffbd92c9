"""Fine-tune a pretrained ScratchGPT causal LM as a text classifier ("LLMs from scratch", chapter 6).

    python training/finetune_classifier.py --model_name_or_path outputs/speedrun/pretrain \\
        --train_file ../shared/data/classification/sms_spam.tsv --headerless_label_text true \\
        --balance_classes undersample --output_dir outputs/classifier-sms --max_steps 200
    python training/finetune_classifier.py --model_name_or_path MODEL --dataset_name stanfordnlp/sst2 \\
        --test_split_name validation --use_peft true --output_dir outputs/classifier-sst2

The data arguments are those of transformers' examples/pytorch/text-classification/run_classification.py
(``--train_file/--validation_file/--test_file`` as .csv/.tsv/.jsonl, or ``--dataset_name`` with
``--dataset_config_name`` and ``--{train,validation,test}_split_name``; ``--text_column_names`` joined
with ``--text_column_delimiter``; ``--label_column_name``; ``--max_seq_length``; ``--shuffle_train_dataset``;
``--max_{train,eval,predict}_samples``; ``--metric_name``), plus:

* ``--headerless_label_text true``: tab-separated ``label<TAB>text`` lines with no header (SMS spam, SST-2);
* ``--balance_classes undersample``: cut every class to the size of the smallest;
* ``--split_fractions 0.7,0.1,0.2``: how data without validation/test sets is split (stratified, fixed seed);
* ``--max_seq_length`` unset: the longest training text, capped at the model's context;
* what trains: all weights (default), ``--trainable_layers N`` (the last N blocks + final norm + head),
  or LoRA with ``--use_peft true`` (``--lora_r``, ``--lora_alpha``, ``--lora_dropout``,
  ``--lora_target_modules``; TRL's names). The head ``score`` is trained and saved with the adapter.

Writes OUTPUT_DIR: the classifier (model + tokenizer; ``AutoModelForSequenceClassification`` and
``pipeline("text-classification", model=OUTPUT_DIR)`` load it) or, with LoRA, the adapter (loads with
``peft.AutoPeftModelForSequenceClassification``; pass ``num_labels=`` for more than two classes) plus
the merged classifier in OUTPUT_DIR/merged; ``samples.json`` (a few test texts with their predicted
label) and, last, ``metrics.json``: ``eval_*`` (validation) and ``test_*`` accuracy, macro and per-class
precision / recall / F1 (of the classes each split holds: ``*_classes_seen``), confusion matrix,
majority-class accuracy, and the label names.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    set_seed,
)

import hf_scratchgpt  # noqa: F401  (registers the scratchgpt model type with the Auto classes)
from hf_scratchgpt.budget import BudgetArguments, TimeBudgetCallback
from hf_scratchgpt.cards import write_model_card
from hf_scratchgpt.cli import parse_args, run_script
from hf_scratchgpt.finetuning.classification import (
    build_labelled_splits,
    classes_seen,
    classification_metrics_fn,
    confusion_matrix_of,
    majority_class_accuracy,
    tokenize_for_classification,
    train_only_last_blocks,
)
from hf_scratchgpt.training import ScratchGPTTrainer, ScratchGPTTrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """The pretrained model to start from and which of its weights to train."""

    model_name_or_path: str = field(metadata={"help": "A causal-LM folder or Hub id (ours, or GPT-2 style)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Load Hub models' own code."})
    trainable_layers: int = field(
        default=-1, metadata={"help": "-1: all weights; N >= 0: only the last N blocks + final norm + head."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters (and the head) only."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules to adapt; default every linear layer ('all-linear'), as the book."},
    )
    save_merged_model: bool = field(
        default=True, metadata={"help": "With LoRA, also save the merged classifier in OUTPUT_DIR/merged."}
    )


@dataclass
class DataTrainingArguments:
    """Where the labelled text comes from and how it is prepared (names as in run_classification.py)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_split_name: str | None = field(default=None, metadata={"help": "Hub split used as train."})
    validation_split_name: str | None = field(
        default=None, metadata={"help": "Hub split used as validation."}
    )
    test_split_name: str | None = field(default=None, metadata={"help": "Hub split used as test."})
    train_file: str | None = field(default=None, metadata={"help": ".csv/.tsv/.jsonl training file."})
    validation_file: str | None = field(default=None, metadata={"help": ".csv/.tsv/.jsonl validation file."})
    test_file: str | None = field(default=None, metadata={"help": ".csv/.tsv/.jsonl test file."})
    headerless_label_text: bool = field(
        default=False, metadata={"help": "Files are label<TAB>text lines without a header row."}
    )
    text_column_names: str | None = field(
        default=None,
        metadata={"help": "Comma-separated text column(s), joined; default 'sentence' or 'text'."},
    )
    text_column_delimiter: str = field(default=" ", metadata={"help": "Joins several text columns."})
    label_column_name: str | None = field(default=None, metadata={"help": "Label column; default 'label'."})
    class_names: str | None = field(
        default=None,
        metadata={"help": "Comma-separated classes in id order; default: sorted training labels."},
    )
    balance_classes: str = field(default="none", metadata={"help": "none or undersample."})
    split_fractions: str = field(
        default="0.7,0.1,0.2",
        metadata={"help": "train,validation,test shares when the data has no such splits."},
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Tokens per text; default: longest training text, capped at the context."},
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every text to max_seq_length (else per batch)."}
    )
    shuffle_train_dataset: bool = field(default=False, metadata={"help": "Shuffle the training split first."})
    shuffle_seed: int = field(default=42, metadata={"help": "Seed for shuffling, balancing and splitting."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training texts."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N validation texts."}
    )
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test texts."})
    metric_name: str | None = field(
        default=None, metadata={"help": "Extra evaluate metric(s), comma-separated Hub names or local paths."}
    )
    num_samples: int = field(
        default=8, metadata={"help": "Test texts written to samples.json with predictions."}
    )


def load_model_and_tokenizer(args: ModelArguments, label_names: list[str]):
    """The pretrained backbone under a fresh classification head, with the label names in its config."""
    # A local folder by its absolute path: a LoRA adapter records it and must find it from any directory.
    source = (
        str(Path(args.model_name_or_path).resolve())
        if Path(args.model_name_or_path).is_dir()
        else args.model_name_or_path
    )
    tokenizer = AutoTokenizer.from_pretrained(
        args.tokenizer_name or source, trust_remote_code=args.trust_remote_code
    )
    if tokenizer.pad_token is None:  # GPT-2's tokenizer has none; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        trust_remote_code=args.trust_remote_code,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        pad_token_id=tokenizer.pad_token_id,
        problem_type="single_label_classification",
    )
    # A tokenizer saved with the classifier carries its context length, so pipelines truncate in time.
    tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    return model, tokenizer


def choose_trainable_weights(model, args: ModelArguments):
    """All weights, the last N blocks + norm + head, or LoRA adapters + head."""
    if args.use_peft and args.trainable_layers >= 0:
        raise ValueError("Pass either --use_peft true or --trainable_layers N, not both.")
    if args.trainable_layers >= 0:
        train_only_last_blocks(model, args.trainable_layers)
    elif args.use_peft:
        lora = LoraConfig(
            task_type="SEQ_CLS",  # keeps the new head `score` fully trainable and saves it with the adapter
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules or "all-linear",
        )
        model = get_peft_model(model, lora)
    return model


def describe_finetuning(args: ModelArguments) -> str:
    if args.use_peft:
        return f"lora r={args.lora_r}"
    return f"last {args.trainable_layers} blocks" if args.trainable_layers >= 0 else "all weights"


def load_extra_metrics(names: str | None) -> list[Any]:
    if not names:
        return []
    import evaluate  # only when asked: its import is slow and its metrics come from the Hub or a local path

    return [evaluate.load(name.strip()) for name in names.split(",")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    model_args, data_args, training_args, budget_args = parse_args(
        (ModelArguments, DataTrainingArguments, ScratchGPTTrainingArguments, BudgetArguments), argv
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    (output_dir / "metrics.json").unlink(missing_ok=True)  # the stage is complete again only when rewritten

    # Data: text + label name -> classes -> label ids -> train/validation/test -> token ids
    split_names = {split: name for split, name in (("train", data_args.train_split_name),
                   ("validation", data_args.validation_split_name), ("test", data_args.test_split_name)) if name}  # fmt: skip
    splits, label_names = build_labelled_splits(
        data_args.train_file, data_args.validation_file, data_args.test_file, data_args.dataset_name,
        data_args.dataset_config_name, split_names, data_args.headerless_label_text,
        data_args.text_column_names, data_args.label_column_name, data_args.text_column_delimiter,
        class_names=data_args.class_names.split(",") if data_args.class_names else None,
        split_fractions=[float(share) for share in data_args.split_fractions.split(",")],
        seed=data_args.shuffle_seed,
        balance_classes=data_args.balance_classes,
    )  # fmt: skip
    if data_args.shuffle_train_dataset:
        splits["train"] = splits["train"].shuffle(seed=data_args.shuffle_seed)
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples),
                         ("test", data_args.max_predict_samples)):  # fmt: skip
        if limit is not None and split in splits:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))

    model, tokenizer = load_model_and_tokenizer(model_args, label_names)
    tokenized, max_seq_length = tokenize_for_classification(
        splits, tokenizer, model.config.max_position_embeddings, data_args.max_seq_length,
        data_args.pad_to_max_length,
    )  # fmt: skip
    model = choose_trainable_weights(model, model_args)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("training %d of %d parameters", trainable, sum(p.numel() for p in model.parameters()))

    tokenizer.model_max_length = (
        max_seq_length  # the saved tokenizer (and a pipeline) cuts texts as training did
    )
    # Within the main job's budget: train until this stage's time is up (or max_steps, if sooner).
    callbacks = (
        [TimeBudgetCallback.for_stage(budget_args.time_budget, started)] if budget_args.time_budget else []
    )
    trainer = ScratchGPTTrainer(
        callbacks=callbacks,
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=classification_metrics_fn(label_names, load_extra_metrics(data_args.metric_name)),
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics: dict[str, Any] = dict(train_result.metrics)
    train_labels = tokenized["train"]["label"]
    samples = []
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split not in tokenized:
            continue
        prediction = trainer.predict(tokenized[split], metric_key_prefix=prefix)
        metrics.update(prediction.metrics)
        metrics[f"{prefix}_confusion_matrix"] = confusion_matrix_of(
            prediction.predictions, prediction.label_ids, len(label_names)
        )
        metrics[f"{prefix}_majority_class_accuracy"] = majority_class_accuracy(
            train_labels, prediction.label_ids
        )
        # A class with no example in this split has no scores: say so, and which classes were scored.
        metrics[f"{prefix}_classes_seen"] = classes_seen(
            prediction.label_ids, label_names, split, train_labels
        )
        metrics[f"{prefix}_samples"] = len(tokenized[split])
        if split == "test":
            shown = splits["test"].select(range(min(data_args.num_samples, len(splits["test"]))))
            predicted = np.argmax(prediction.predictions[: len(shown)], axis=-1)
            samples = [
                {"prompt": text, "output": label_names[p]}
                for text, p in zip(shown["text"], predicted, strict=True)
            ]

    trainer.save_model()  # the classifier, or with LoRA the adapter + head; the tokenizer in both cases
    if model_args.use_peft and model_args.save_merged_model and trainer.is_world_process_zero():
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(output_dir / "merged")
        tokenizer.save_pretrained(output_dir / "merged")

    if trainer.is_world_process_zero():
        metrics.update(
            label_names=label_names,
            train_samples=len(tokenized["train"]),
            max_seq_length=max_seq_length,
            trainable_parameters=trainable,
            finetuning=describe_finetuning(model_args),
        )
        if samples:
            (output_dir / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n")
        for model_dir in (
            (output_dir, output_dir / "merged") if (output_dir / "merged").is_dir() else (output_dir,)
        ):
            write_model_card(model_dir, metrics=metrics, base_model=model_args.model_name_or_path)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_script(main)
