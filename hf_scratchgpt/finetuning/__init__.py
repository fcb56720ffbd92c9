"""Fine-tuning a pretrained ScratchGPT: the data preparation and metrics each fine-tuning stage needs.

* `classification`: labelled text -> label ids, balanced and split -> tokenized; metrics (chapter 6).
* `instructions`: Alpaca / prompt-completion / preference rows -> chat `messages` or DPO format (chapter 7).
* `instruction_tuning` (imports TRL, so not re-exported here): configs and outputs of training/sft.py, dpo.py.
"""

from .classification import (
    build_labelled_splits,
    classes_seen,
    classification_metrics,
    classification_metrics_fn,
    confusion_matrix_of,
    encode_labels,
    infer_label_names,
    load_labelled_splits,
    majority_class_accuracy,
    select_text_and_label,
    split_labelled,
    tokenize_for_classification,
    train_only_last_blocks,
    undersample,
)
from .instructions import (
    alpaca_to_messages,
    detect_format,
    load_instruction_dataset,
    preference_to_dpo,
    to_messages,
    to_preference,
)

__all__ = [
    "alpaca_to_messages",
    "detect_format",
    "load_instruction_dataset",
    "preference_to_dpo",
    "to_messages",
    "to_preference",
    "build_labelled_splits",
    "classes_seen",
    "classification_metrics",
    "classification_metrics_fn",
    "confusion_matrix_of",
    "encode_labels",
    "infer_label_names",
    "load_labelled_splits",
    "majority_class_accuracy",
    "select_text_and_label",
    "split_labelled",
    "tokenize_for_classification",
    "train_only_last_blocks",
    "undersample",
]
