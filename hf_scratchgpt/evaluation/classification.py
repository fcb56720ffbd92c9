"""Text classification side by side: a fine-tuned classifier and zero/few-shot prompting of a causal LM.

Both are scored on the same labelled test split, built by the fine-tuning stage's own functions
(`hf_scratchgpt.finetune.classification_data`) with the same arguments, so the numbers are comparable:

* a fine-tuned classifier (``AutoModelForSequenceClassification``) predicts the arg-max class;
* a base or instruction model is asked through a prompt (``"Text: {text}\\nLabel:"``) and predicts the
  label word it finds most likely; with k > 0, k solved training examples come first. The prompts are
  an lm-eval multiple-choice task (`harness`), so the harness does the few-shot sampling and scoring.

Accuracy, macro precision / recall / F1, per-class scores (`classification_metrics`) and the confusion
matrix for each, with the majority-class and random-guess accuracies beside them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sklearn.metrics import confusion_matrix

from ..finetune.classification_data import (
    classes_seen,
    classification_metrics,
    majority_class_accuracy,
)
from ..finetune.classifier_tuning import LabelledDataArguments, build_labelled_splits
from ..publish.markdown import markdown_table
from ..train.stage_files import METRICS_FILE, write_json, write_metrics
from .harness import LocalTask, evaluate_tasks

DEFAULT_PROMPT = "Text: {text}\nLabel:"


def load_labelled_test_split(data_args: LabelledDataArguments) -> tuple[Dataset, Dataset, list[str]]:
    """The train and test splits (``text``, ``label`` id) and the class names, exactly as
    ``training/finetune_classifier.py`` builds them from the same arguments."""
    splits, label_names = build_labelled_splits(data_args)
    return splits["train"], splits["test"], label_names


def scores(
    predictions: Sequence[int], references: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    """`classification_metrics` plus the confusion matrix (rows: true class, columns: predicted) and the
    classes the test split holds (``classes_seen``: only those are scored; a warning names the others)."""
    metrics: dict[str, Any] = classification_metrics(predictions, references, label_names)
    metrics["classes_seen"] = classes_seen(references, label_names, "test")
    metrics["confusion_matrix"] = confusion_matrix(
        references, predictions, labels=list(range(len(label_names)))
    ).tolist()
    metrics["samples"] = len(references)
    return metrics


def _class_ids_of_classifier(config: Any, label_names: Sequence[str]) -> list[int]:
    """For each of the classifier's output ids, the test set's class id (matched by name)."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    if set(names) >= set(label_names):
        return [label_names.index(name) if name in label_names else -1 for name in names]
    if len(names) == len(label_names) and all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return list(range(len(names)))  # an unnamed head: classes in the same (sorted) order
    raise ValueError(
        f"The classifier's classes {names} are not the test data's {list(label_names)}: evaluate it on the "
        "data it was trained for (or pass --class_names in the order it was trained with)."
    )


@torch.no_grad()
def classifier_predictions(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    label_names: Sequence[str],
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[int]:
    """Class ids (in ``label_names`` order) a sequence classifier predicts. Texts keep their first
    ``max_length`` tokens (default: the context): pass the length the classifier was fine-tuned with, since
    a head trained on texts cut to N tokens has never read a text's end past N (see `trained_max_length`)."""
    to_test_ids = _class_ids_of_classifier(model.config, label_names)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    max_length = min(max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    model.eval()
    device = next(model.parameters()).device
    predictions: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        predictions += [to_test_ids[i] for i in model(**batch).logits.argmax(-1).tolist()]
    return predictions


def trained_max_length(classifier_dir: str | Path) -> int | None:
    """The ``max_seq_length`` the fine-tuning stage cut texts to, from its ``metrics.json``, if recorded."""
    metrics_file = Path(classifier_dir) / METRICS_FILE
    if not metrics_file.is_file():
        return None
    return json.loads(metrics_file.read_text()).get("max_seq_length")


def _write_prompt_records(path: Path, data: Dataset, template: str, label_words: Sequence[str]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in data:
            record = {
                "query": template.format(text=row["text"]),
                "choices": list(label_words),
                "gold": row["label"],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def prompted_predictions(
    lm: Any,
    test: Dataset,
    train: Dataset,
    label_words: Sequence[str],
    shots: Sequence[int],
    *,
    template: str = DEFAULT_PROMPT,
    description: str = "",
    apply_chat_template: bool = False,
    seed: int = 1234,
) -> dict[int, list[int]]:
    """For each number of shots k, the class ids a causal LM (an lm-eval ``LM``) predicts for ``test``: the
    label word with the highest log-likelihood after the prompt, with k random solved ``train`` examples
    first (and ``description`` before everything); with ``apply_chat_template`` (instruction models) the
    prompt is a chat turn and the label word the assistant's reply."""
    if "{text}" not in template:
        raise ValueError(f"--prompt_template {template!r} must contain {{text}} where the text goes.")
    with tempfile.TemporaryDirectory(prefix="scratchgpt-classification-") as folder:
        test_file = _write_prompt_records(Path(folder) / "test.jsonl", test, template, label_words)
        train_file = _write_prompt_records(Path(folder) / "train.jsonl", train, template, label_words)
        tasks = [
            LocalTask(
                f"classification_{k}shot",
                "multiple_choice.yaml",
                test_file,
                {
                    "dataset_kwargs": {"data_files": {"test": str(test_file), "train": str(train_file)}},
                    "training_split": "train",
                    "fewshot_split": "train",
                    "num_fewshot": k,
                    "description": description,
                },
            )
            for k in shots
        ]
        results = evaluate_tasks(lm, tasks, apply_chat_template=apply_chat_template, seed=seed)
    predictions = {}
    for k, task in zip(shots, tasks, strict=True):
        samples = sorted(results["samples"][task.name], key=lambda sample: sample["doc_id"])
        predictions[k] = [
            max(range(len(label_words)), key=lambda i: sample["filtered_resps"][i][0]) for sample in samples
        ]
    return predictions


def side_by_side_table(methods: dict[str, dict[str, Any]], baselines: dict[str, float]) -> str:
    """Markdown: one row per method (zero-shot, k-shot, fine-tuned, ...) and one per baseline."""
    rows = [(method, f"{m['accuracy']:.4f}", f"{m['f1']:.4f}", m["samples"]) for method, m in methods.items()]
    rows += [(name, f"{accuracy:.4f}", "", "") for name, accuracy in baselines.items()]
    return markdown_table(("method", "accuracy", "macro F1", "n"), rows, align="lrrr") + "\n"


def baseline_accuracies(
    train_labels: Sequence[int], test_labels: Sequence[int], n_classes: int
) -> dict[str, float]:
    return {
        "majority class (baseline)": majority_class_accuracy(train_labels, test_labels),
        "random guess (baseline)": 1 / n_classes,
    }


def shots_method(shots: int) -> str:
    """How results name prompting with ``shots`` solved examples: ``zero-shot``, ``4-shot``."""
    return "zero-shot" if shots == 0 else f"{shots}-shot"


def write_side_by_side(
    output_dir: str | Path,
    predictions: dict[str, list[int]],
    train: Dataset,
    test: Dataset,
    label_names: list[str],
    **about: Any,
) -> dict[str, Any]:
    """Score every method's ``predictions`` of ``test`` and write OUTPUT_DIR/results.json (per method its
    `scores` and predictions, the `baseline_accuracies`, the class names and ``about``, e.g. the prompt),
    results.md (`side_by_side_table`) and, last, metrics.json; returns those flat ``method/metric`` metrics."""
    methods = {
        method: scores(predicted, test["label"], label_names) for method, predicted in predictions.items()
    }
    baselines = baseline_accuracies(train["label"], test["label"], len(label_names))
    results = {
        "label_names": label_names,
        **about,
        "methods": {method: {**methods[method], "predictions": predictions[method]} for method in methods},
        "baselines": baselines,
    }
    output = Path(output_dir)
    write_json(output / "results.json", results)
    (output / "results.md").write_text(side_by_side_table(methods, baselines))
    flat = {f"{method}/{key}": value for method, scored in methods.items() for key, value in scored.items()}
    metrics = {key: value for key, value in flat.items() if not isinstance(value, list)}
    write_metrics(output, metrics)
    return metrics
