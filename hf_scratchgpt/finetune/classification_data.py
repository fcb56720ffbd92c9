"""Text classification with a causal LM: labelled data in, tokenized splits with label ids out, and metrics.

The steps of "LLMs from scratch" chapter 6, each on ``datasets`` objects so they cache and compose:

    load_labelled_splits -> select_text_and_label -> infer_label_names -> encode_labels
      -> split_labelled (70/10/20, balanced by undersampling if asked) -> tokenize_for_classification
      -> Trainer(compute_metrics=classification_metrics_fn(label_names)) -> confusion_matrix_of

plus `train_only_last_blocks` (the book's "last block + final norm + head" fine-tuning).
`hf_scratchgpt.finetune.classifier_tuning` chains the data steps (`build_labelled_splits`) from the script's
arguments.

Why the metrics call scikit-learn rather than ``evaluate.load("accuracy")``: the ``evaluate`` metrics are
scripts fetched from the Hub on first use, so ``evaluate.load`` fails without a network ("Couldn't find a
module script ... doesn't exist on the Hugging Face Hub either"; nothing ships in the wheel), and
accuracy / precision / recall / f1 / confusion_matrix there are thin wrappers over ``sklearn.metrics``.
Calling ``sklearn.metrics`` directly gives the same numbers, online and offline, without running code
downloaded at training time. Any further ``evaluate`` metric (by Hub name or local path, online) can be
added with ``extra_metrics`` (``--metric_name`` in ``training/finetune_classifier.py``).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torch import nn
from transformers import EvalPrediction, PreTrainedTokenizerBase

from ..data.files import FILE_BUILDERS, RECORD_EXTENSIONS, DataError, file_builder, load_data_file

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Headerless `label<TAB>text` files (SMS spam, SST-2): the TSV reading (no quote handling: a message may start
# with a quote that is not a CSV quote), with the two columns named and read as text.
_HEADERLESS_OPTIONS = {
    **FILE_BUILDERS[".tsv"][1],
    "column_names": ["label", "text"],
    "features": Features({"label": Value("string"), "text": Value("string")}),
}
# Text columns tried, in order, when --text_column_names is not given.
DEFAULT_TEXT_COLUMNS = ("sentence", "text")


def load_labelled_splits(
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    split_names: dict[str, str] | None = None,
    headerless_label_text: bool = False,
) -> DatasetDict:
    """The raw splits (``train`` and, where present, ``validation`` / ``test``) from local files or the Hub.

    Local files may be ``.csv`` / ``.tsv`` with a header row, ``.jsonl`` / ``.json``, or with
    ``headerless_label_text`` tab-separated ``label<TAB>text`` lines with no header. ``split_names`` maps
    ``train`` / ``validation`` / ``test`` to the Hub dataset's own split names (e.g. SST-2's labelled
    ``validation`` as ``test``).
    """
    if dataset_name and train_file:
        raise DataError(
            "Pass either --dataset_name or --train_file (and --validation_file/--test_file), not both."
        )
    if dataset_name:
        return _load_hub_splits(dataset_name, dataset_config_name, split_names or {})
    if not train_file:
        raise DataError(
            "No training data: pass --train_file FILE (.csv/.tsv/.jsonl) or --dataset_name HUB_ID."
        )
    files = {
        split: path
        for split, path in zip(SPLITS, (train_file, validation_file, test_file), strict=True)
        if path
    }
    loaded = {}
    for split, path in files.items():
        file = Path(path)
        if not file.is_file():
            raise DataError(f"--{split}_file {path}: no such file.")
        loader, options = file_builder(file, f"--{split}_file {path}", RECORD_EXTENSIONS)
        if headerless_label_text:
            if loader != "csv":
                raise DataError(
                    f"--headerless_label_text reads tab-separated label<TAB>text files, not {path}."
                )
            options = _HEADERLESS_OPTIONS
        loaded[split] = load_data_file(file, loader, f"--{split}_file {path} (the {split} split)", **options)
    return DatasetDict(loaded)


def _load_hub_splits(name: str, config_name: str | None, split_names: dict[str, str]) -> DatasetDict:
    raw = load_dataset(name, config_name)
    # A Hub split given a role explicitly (e.g. --test_split_name validation) plays no other role.
    claimed = set(split_names.values())
    wanted = {split: split_names.get(split, split if split not in claimed else None) for split in SPLITS}
    missing = [
        f"--{split}_split_name {hub}"
        for split, hub in wanted.items()
        if split in split_names and hub not in raw
    ]
    if missing:
        raise DataError(f"{name}: no split for {', '.join(missing)}; it has {list(raw)}.")
    if wanted["train"] not in raw:
        raise DataError(
            f"{name} has no '{wanted['train']}' split (it has {list(raw)}); pass --train_split_name."
        )
    return DatasetDict({split: raw[hub] for split, hub in wanted.items() if hub in raw})


def select_text_and_label(
    raw: DatasetDict, text_column_names: str | None, label_column_name: str | None, delimiter: str = " "
) -> DatasetDict:
    """Every split reduced to ``text`` (the text columns joined with ``delimiter``) and ``label`` (a string).

    Label values become their names: a ``ClassLabel`` id becomes its name, any other value its ``str()``.
    """
    label_column = label_column_name or "label"
    selected = {}
    for split, dataset in raw.items():
        columns = dataset.column_names
        if len(dataset) == 0:
            raise DataError(f"The {split} data has no rows.")
        text_columns = _text_columns(text_column_names, columns, split)
        if label_column not in columns:
            raise DataError(
                f"The {split} data has no label column {label_column!r}; its columns are {columns}. "
                "Pass --label_column_name (or --headerless_label_text true for label<TAB>text files)."
            )
        feature = dataset.features[label_column]
        to_name = feature.int2str if isinstance(feature, ClassLabel) else str

        def join(batch: dict[str, list], text_columns=text_columns, to_name=to_name, split=split) -> dict:
            texts = []
            for row, parts in enumerate(zip(*(batch[c] for c in text_columns), strict=True)):
                if any(part is None for part in parts):
                    raise DataError(
                        f"The {split} data has a row with no text in {list(text_columns)}: "
                        f"{dict(zip(text_columns, parts, strict=True))} (label {batch[label_column][row]!r})."
                    )
                texts.append(delimiter.join(str(part) for part in parts))
            labels = [_label_name(value, to_name) for value in batch[label_column]]
            return {"text": texts, "label": labels}

        selected[split] = dataset.map(
            join,
            batched=True,
            remove_columns=columns,
            desc=f"selecting text and label ({split})",
            features=Features({"text": Value("string"), "label": Value("string")}),
        )
    return DatasetDict(selected)


def _text_columns(text_column_names: str | None, columns: list[str], split: str) -> list[str]:
    if text_column_names:
        names = [name.strip() for name in text_column_names.split(",")]
        absent = [name for name in names if name not in columns]
        if absent:
            raise DataError(
                f"The {split} data has no text column(s) {absent}; its columns are {columns}. "
                "Fix --text_column_names (comma-separated)."
            )
        return names
    for name in DEFAULT_TEXT_COLUMNS:
        if name in columns:
            return [name]
    raise DataError(
        f"The {split} data has none of the default text columns {list(DEFAULT_TEXT_COLUMNS)}; its "
        f"columns are {columns}. Pass --text_column_names."
    )


def _label_name(value: Any, to_name: Callable[[Any], str]) -> str:
    # A ClassLabel's -1 means "no label" (e.g. the hidden test split of GLUE tasks): keep it visible.
    if isinstance(value, int) and value < 0:
        return str(value)
    return to_name(value)


def infer_label_names(train: Dataset, label_names: Sequence[str] | None = None) -> list[str]:
    """The classes in id order: ``label_names`` if given, else the training labels sorted (numerically when
    they are all integers, so ``"2"`` comes before ``"10"``).

    Raises `DataError` for fewer than two classes or a class with no training example.
    """
    counts = Counter(train["label"])
    if label_names:
        names = list(label_names)
        empty = [name for name in names if counts[name] == 0]
        if empty:
            raise DataError(
                f"Class(es) {empty} have no training example (training label counts: "
                f"{dict(counts)}). Add examples or drop them from --class_names."
            )
    else:
        names = sorted(counts, key=lambda name: (0, int(name), name) if _is_int(name) else (1, 0, name))
    if len(names) < 2:
        raise DataError(f"Classification needs at least two classes; the training data has {dict(counts)}.")
    return names


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def encode_labels(splits: DatasetDict, label_names: Sequence[str]) -> DatasetDict:
    """Label names -> ids (a ``ClassLabel`` column). Raises `DataError` naming any value that is not a class."""
    known = set(label_names)
    for split, dataset in splits.items():
        unknown = Counter(label for label in dataset["label"] if label not in known)
        if unknown:
            raise DataError(
                f"The {split} data has label value(s) {dict(unknown)} (value: rows) that are not classes of the "
                f"training data {list(label_names)}. Fix the data, or list every class with --class_names."
            )
    return DatasetDict(
        {
            split: dataset.cast_column("label", ClassLabel(names=list(label_names)))
            for split, dataset in splits.items()
        }
    )


def undersample(dataset: Dataset, seed: int) -> Dataset:
    """Every class cut down, at random, to the size of the smallest (the book's balanced SMS spam set)."""
    labels = np.asarray(dataset["label"])
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == label), counts.min(), replace=False) for label in classes]
    return dataset.select(np.sort(np.concatenate(keep)))


def split_labelled(
    splits: DatasetDict,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 42,
    balance_classes: str | None = None,
) -> DatasetDict:
    """Train / validation / test, split off the training data where the data has none (stratified, fixed seed).

    With only training data: ``balance_classes="undersample"`` balances it all first, then it is split by
    ``fractions`` (the book's order: its test set is balanced too). With a test set but no validation set,
    the validation set is taken from the training data in the ratio ``fractions[1] : fractions[0]``. Given
    splits are never balanced except the training split.
    """
    if balance_classes not in (None, "none", "undersample"):
        raise DataError(f"--balance_classes {balance_classes!r}: use 'none' or 'undersample'.")
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(
            f"--split_fractions {fractions}: three positive shares that sum to 1, e.g. 0.7,0.1,0.2."
        )
    balance = balance_classes == "undersample"
    out = dict(splits)
    train_share, validation_share, test_share = fractions
    if "test" not in out and "validation" not in out:
        data = undersample(out["train"], seed) if balance else out["train"]
        out["train"], out["test"] = _split_off(data, test_share, seed)
        balance = False
    if "validation" not in out:
        out["train"], out["validation"] = _split_off(
            out["train"], validation_share / (train_share + validation_share), seed
        )
    if balance:
        out["train"] = undersample(out["train"], seed)
    return DatasetDict({split: out[split] for split in SPLITS if split in out})


def _split_off(dataset: Dataset, share: float, seed: int) -> tuple[Dataset, Dataset]:
    # A whole number of rows, rounded (a float share can land a hair above x.0 and take a row too many).
    held = dataset.train_test_split(
        test_size=round(share * len(dataset)), seed=seed, stratify_by_column="label"
    )
    return held["train"], held["test"]


def tokenize_for_classification(
    splits: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    context_length: int,
    max_seq_length: int | None = None,
    pad_to_max_length: bool = False,
) -> tuple[DatasetDict, int]:
    """Token ids per text, cut to one length for every split; returns the splits and that length.

    The length is ``max_seq_length``, or the longest training text, never more than ``context_length``.
    Longer texts keep their first tokens, with ONE warning saying how many were cut.
    """
    tokenized = splits.map(
        lambda batch: tokenizer(batch["text"], truncation=False, verbose=False),
        batched=True,
        desc="tokenizing",
    )
    lengths = {split: np.array([len(ids) for ids in data["input_ids"]]) for split, data in tokenized.items()}
    longest = int(lengths["train"].max()) if len(lengths["train"]) else 1
    if max_seq_length is not None and max_seq_length > context_length:
        logger.warning(
            "--max_seq_length %d is longer than the model's context; using %d.",
            max_seq_length,
            context_length,
        )
    length = min(max_seq_length or longest, context_length)
    too_long = {split: int((lens > length).sum()) for split, lens in lengths.items()}
    if sum(too_long.values()):
        if length == context_length:
            limit = "the model's context"
        elif max_seq_length:
            limit = "--max_seq_length"
        else:
            limit = "the longest training text"
        total = sum(len(lens) for lens in lengths.values())
        per_split = ", ".join(f"{split} {n}" for split, n in too_long.items() if n)
        logger.warning(
            "%d of %d texts (%s) are longer than %d tokens (%s): kept their first %d tokens.",
            sum(too_long.values()),
            total,
            per_split,
            length,
            limit,
            length,
        )

    def cut(batch: dict[str, list]) -> dict[str, list]:
        cut_batch = {key: [row[:length] for row in batch[key]] for key in ("input_ids", "attention_mask")}
        if pad_to_max_length:
            return tokenizer.pad(cut_batch, padding="max_length", max_length=length)
        return cut_batch

    tokenized = tokenized.map(cut, batched=True, remove_columns=["text"], desc="cutting to length")
    return tokenized, length


def train_only_last_blocks(model: nn.Module, num_blocks: int) -> list[str]:
    """Freeze everything but the last ``num_blocks`` transformer blocks, the final norm and the head.

    The book's chapter 6 choice (one block): the top of the network adapts to the task, the rest keeps
    what pretraining learned, and training is cheaper. Works for ScratchGPT and GPT-2 style models
    (``transformer.h``, ``transformer.ln_f``, ``score``). Returns the names of the trainable parameters.
    """
    backbone = model.base_model
    blocks, final_norm = getattr(backbone, "h", None), getattr(backbone, "ln_f", None)
    head = getattr(model, "score", None)
    if blocks is None or final_norm is None or head is None:
        raise ValueError(
            f"{type(model).__name__} lacks transformer.h / transformer.ln_f / score: "
            "--trainable_layers supports ScratchGPT and GPT-2 style models."
        )
    if not 0 <= num_blocks <= len(blocks):
        raise ValueError(
            f"--trainable_layers {num_blocks}: the model has {len(blocks)} blocks (use 0 to "
            f"{len(blocks)}, or -1 for all weights)."
        )
    model.requires_grad_(False)
    for module in [*blocks[len(blocks) - num_blocks :], final_norm, head]:
        module.requires_grad_(True)
    return [name for name, param in model.named_parameters() if param.requires_grad]


def classification_metrics(
    predictions: Sequence[int], references: Sequence[int], label_names: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro precision / recall / F1 and the same per class (``f1_<label>``), as plain floats.

    Only the classes the references hold are scored: a class with no reference example has no recall (and
    so no F1) to measure, and scikit-learn's ``zero_division=0`` would report 0.0 for it and pull the macro
    averages down by a share that depends only on how many classes are missing. `classes_seen` says which.
    """
    present = sorted({int(label) for label in references})
    metrics = {"accuracy": float(accuracy_score(references, predictions))}
    macro = precision_recall_fscore_support(
        references, predictions, labels=present, average="macro", zero_division=0
    )
    metrics.update(zip(("precision", "recall", "f1"), map(float, macro[:3]), strict=True))
    per_class = precision_recall_fscore_support(
        references, predictions, labels=present, average=None, zero_division=0
    )
    for name, values in zip(("precision", "recall", "f1"), per_class[:3], strict=True):
        metrics.update(
            {f"{name}_{label_names[i]}": float(value) for i, value in zip(present, values, strict=True)}
        )
    return metrics


def classes_seen(
    references: Sequence[int],
    label_names: Sequence[str],
    split: str | None = None,
    train_labels: Sequence[int] | None = None,
) -> list[str]:
    """The names of the classes ``references`` hold, in id order. With ``split``, a warning names the
    classes it lacks: they get no scores (see `classification_metrics`). With ``train_labels`` too, the
    warning says when the most frequent training class is among them: the majority-class baseline then
    scores 0.0 on ``split`` by construction, not because the baseline is weak.

    A Python warning, so that scoring several methods on one split says it once.
    """
    present = {int(label) for label in references}
    seen = [name for i, name in enumerate(label_names) if i in present]
    absent = [name for i, name in enumerate(label_names) if i not in present]
    if split is None or not absent:
        return seen
    majority = Counter(train_labels).most_common(1)[0][0] if train_labels is not None else None
    baseline = (
        f"; the majority-class baseline always answers {label_names[majority]!r} (the most frequent "
        "training class), so it scores 0.0 here"
        if majority is not None and majority not in present
        else ""
    )
    warnings.warn(
        f"The {split} split has no example of class(es) {absent} (classes seen: {seen}): their precision, "
        f"recall and F1 are left out and the macro averages cover the classes seen only{baseline}. Add "
        "examples of every class to compare these numbers with other test sets.",
        UserWarning,
        stacklevel=2,
    )
    return seen


def classification_metrics_fn(
    label_names: Sequence[str], extra_metrics: Sequence[Any] = ()
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer``: `classification_metrics` plus any ``evaluate`` modules'
    ``compute(predictions=, references=)`` results (e.g. ``evaluate.load("matthews_correlation")``)."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        predicted = np.argmax(logits, axis=-1)
        metrics = classification_metrics(predicted, prediction.label_ids, label_names)
        for metric in extra_metrics:
            metrics.update(metric.compute(predictions=predicted, references=prediction.label_ids))
        return metrics

    return compute_metrics


def confusion_matrix_of(logits: np.ndarray, references: Sequence[int], num_labels: int) -> list[list[int]]:
    """Rows: true class, columns: predicted class, both in label-id order."""
    predicted = np.argmax(logits, axis=-1)
    return confusion_matrix(references, predicted, labels=list(range(num_labels))).tolist()


def majority_class_accuracy(train_labels: Sequence[int], labels: Sequence[int]) -> float:
    """Accuracy of always answering the most frequent training class: the floor a classifier must beat."""
    majority = Counter(train_labels).most_common(1)[0][0]
    return float(np.mean(np.asarray(labels) == majority)) if len(labels) else float("nan")


__all__ = [
    "DEFAULT_TEXT_COLUMNS",
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
