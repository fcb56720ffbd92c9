"""Fine-tuning a causal LM as a text classifier: the pieces ``training/finetune_classifier.py`` wires together.

* the arguments, named as in transformers' ``examples/pytorch/text-classification/run_classification.py``:
  `LabelledDataArguments` (where the labelled text comes from and how it is split: the classification
  evaluation takes the same, so the same flags give the same test set), `ClassificationDataArguments` (plus
  tokenizing, sampling and metrics) and `ClassifierModelArguments` (the start model and what trains);
* `build_labelled_splits`: load -> select the columns -> name the classes -> encode -> split (the steps of
  `hf_scratchgpt.finetune.classification_data`), and `limit_splits` (shuffle, keep the first N);
* `load_classifier`: the pretrained backbone under a new head; `choose_trainable_weights`: every weight, the
  last N blocks + final norm + head, or LoRA adapters + head;
* `evaluate_classifier`: validation and test metrics with the confusion matrix, the majority-class baseline,
  the classes each split holds, and a few test texts with their predicted label.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase, Trainer

from ..train.arguments import InvalidArgumentsError, ValidatedArguments
from .classification_data import (
    classes_seen,
    confusion_matrix_of,
    encode_labels,
    infer_label_names,
    load_labelled_splits,
    majority_class_accuracy,
    select_text_and_label,
    split_labelled,
    train_only_last_blocks,
)

logger = logging.getLogger(__name__)


@dataclass
class ClassifierModelArguments(ValidatedArguments):
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.use_peft and self.trainable_layers >= 0:
            raise InvalidArgumentsError("Pass either --use_peft true or --trainable_layers N, not both.")

    def describe_finetuning(self) -> str:
        """What trains, in words, for metrics.json and the model card."""
        if self.use_peft:
            return f"lora r={self.lora_r}"
        return f"last {self.trainable_layers} blocks" if self.trainable_layers >= 0 else "all weights"


@dataclass
class LabelledDataArguments(ValidatedArguments):
    """Where the labelled text comes from and how it becomes train / validation / test."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_split_name: str | None = field(default=None, metadata={"help": "Hub split used as train."})
    validation_split_name: str | None = field(
        default=None, metadata={"help": "Hub split used as validation."}
    )
    test_split_name: str | None = field(default=None, metadata={"help": "Hub split used as test."})
    train_file: str | None = field(default=None, metadata={"help": ".csv/.tsv/.jsonl training file."})
    validation_file: str | None = field(default=None, metadata={"help": ".csv/.tsv/.jsonl validation file."})
    test_file: str | None = field(
        default=None, metadata={"help": ".csv/.tsv/.jsonl test file; default: split off the training data."}
    )
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
    shuffle_seed: int = field(default=42, metadata={"help": "Seed for shuffling, balancing and splitting."})

    def hub_split_names(self) -> dict[str, str]:
        """The Hub dataset's split playing each role (``train`` / ``validation`` / ``test``), where given."""
        roles = {
            "train": self.train_split_name,
            "validation": self.validation_split_name,
            "test": self.test_split_name,
        }
        return {role: name for role, name in roles.items() if name}

    def class_list(self) -> list[str] | None:
        return [name.strip() for name in self.class_names.split(",")] if self.class_names else None

    def split_shares(self) -> list[float]:
        try:
            return [float(share) for share in self.split_fractions.split(",")]
        except ValueError as error:
            raise InvalidArgumentsError(
                f"--split_fractions {self.split_fractions}: three comma-separated shares, e.g. 0.7,0.1,0.2."
            ) from error


@dataclass
class ClassificationDataArguments(LabelledDataArguments):
    """The labelled data of the fine-tuning script, and how it is tokenized, sampled and scored."""

    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Tokens per text; default: longest training text, capped at the context."},
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every text to max_seq_length (else per batch)."}
    )
    shuffle_train_dataset: bool = field(default=False, metadata={"help": "Shuffle the training split first."})
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


def build_labelled_splits(args: LabelledDataArguments) -> tuple[DatasetDict, list[str]]:
    """Labelled data -> ``train`` / ``validation`` / ``test`` with ``text`` and a ``label`` id, and the class
    names: load, select the columns, name the classes, encode, split. The fine-tuning script and the
    classification evaluation both call this, so the same arguments always give the same test set."""
    raw = load_labelled_splits(
        args.train_file,
        args.validation_file,
        args.test_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        split_names=args.hub_split_names(),
        headerless_label_text=args.headerless_label_text,
    )
    labelled = select_text_and_label(
        raw, args.text_column_names, args.label_column_name, args.text_column_delimiter
    )
    label_names = infer_label_names(labelled["train"], args.class_list())
    splits = split_labelled(
        encode_labels(labelled, label_names),
        args.split_shares(),
        seed=args.shuffle_seed,
        balance_classes=args.balance_classes,
    )
    return splits, label_names


def limit_splits(splits: DatasetDict, args: ClassificationDataArguments) -> DatasetDict:
    """The training split shuffled (``--shuffle_train_dataset``) and each split cut to its first
    ``--max_{train,eval,predict}_samples`` texts."""
    splits = DatasetDict(splits)
    if args.shuffle_train_dataset:
        splits["train"] = splits["train"].shuffle(seed=args.shuffle_seed)
    limits = {
        "train": args.max_train_samples,
        "validation": args.max_eval_samples,
        "test": args.max_predict_samples,
    }
    for split, limit in limits.items():
        if limit is not None and split in splits:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    return splits


def load_classifier(
    args: ClassifierModelArguments, label_names: list[str]
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The pretrained backbone under a fresh classification head, with the label names in its config."""
    # A local folder by its absolute path: a LoRA adapter records it and must find it from any directory.
    source = Path(args.model_name_or_path)
    source = str(source.resolve()) if source.is_dir() else args.model_name_or_path
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


def choose_trainable_weights(model: nn.Module, args: ClassifierModelArguments) -> nn.Module:
    """All weights, the last N blocks + norm + head, or LoRA adapters + head; logs how many train."""
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
    logger.info("training %d of %d parameters", trainable_parameters(model), model.num_parameters())
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_extra_metrics(names: str | None) -> list[Any]:
    """``evaluate`` metrics named by ``--metric_name`` (comma-separated), for `classification_metrics_fn`."""
    if not names:
        return []
    import evaluate  # only when asked: its import is slow and its metrics come from the Hub or a local path

    return [evaluate.load(name.strip()) for name in names.split(",")]


def evaluate_classifier(
    trainer: Trainer, splits: DatasetDict, tokenized: DatasetDict, label_names: list[str], num_samples: int
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Metrics of the validation (``eval_*``) and test (``test_*``) splits present in ``tokenized`` (``splits``
    tokenized), and the first ``num_samples`` test texts with their predicted label (``{"prompt", "output"}``).

    Beside the trainer's metrics: the confusion matrix, the majority-class accuracy, the classes the split
    holds (a class with no example in it has no scores: see `classes_seen`) and the number of texts.
    """
    metrics: dict[str, Any] = {}
    samples: list[dict[str, str]] = []
    train_labels = tokenized["train"]["label"]
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
        metrics[f"{prefix}_classes_seen"] = classes_seen(
            prediction.label_ids, label_names, split, train_labels
        )
        metrics[f"{prefix}_samples"] = len(tokenized[split])
        if split == "test":
            predicted = np.argmax(prediction.predictions[:num_samples], axis=-1)
            texts = splits["test"]["text"][:num_samples]
            samples = [
                {"prompt": text, "output": label_names[p]} for text, p in zip(texts, predicted, strict=True)
            ]
    return metrics, samples


__all__ = [
    "ClassificationDataArguments",
    "ClassifierModelArguments",
    "LabelledDataArguments",
    "build_labelled_splits",
    "choose_trainable_weights",
    "evaluate_classifier",
    "limit_splits",
    "load_classifier",
    "load_extra_metrics",
    "trainable_parameters",
]
