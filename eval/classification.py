"""Classification side by side: zero-shot vs k-shot prompting of a causal LM vs a fine-tuned classifier,
on the same test split.

Usage (SMS spam, split as training/finetune_classifier.py splits it from the same arguments):
    python eval/classification.py --train_file ../shared/data/classification/sms_spam.tsv \
        --headerless_label_text true --balance_classes undersample \
        --model_name_or_path outputs/speedrun/model --num_fewshot 0,4 \
        --classifier_path outputs/classifier-sms --max_test_samples 200 --output_dir outputs/eval/sms

    # SST-2 (labels 0/1) with label words and a sentiment prompt
    python eval/classification.py --train_file sst2_train.tsv --test_file sst2_dev.tsv \
        --headerless_label_text true --label_words negative,positive \
        --prompt_template $'Review: {text}\nSentiment:' --model_name_or_path M --output_dir OUT

Either model may be left out. Writes OUTPUT_DIR/results.json (per method: accuracy, macro and per-class
precision / recall / F1, confusion matrix, predictions), results.md (one table: methods and the
majority-class and random-guess baselines) and, last, metrics.json (flat: "method/metric": value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForSequenceClassification

import hf_scratchgpt  # noqa: F401  (registers the scratchgpt model type with the Auto classes)
from hf_scratchgpt.evaluation.classification import (
    DEFAULT_PROMPT,
    classifier_predictions,
    load_labelled_test_split,
    prompted_predictions,
    shots_method,
    trained_max_length,
    write_side_by_side,
)
from hf_scratchgpt.evaluation.harness import PromptingArguments, load_lm, load_model
from hf_scratchgpt.finetune.classifier_tuning import LabelledDataArguments
from hf_scratchgpt.train.arguments import InvalidArgumentsError, ValidatedArguments, parse_args, run_script


@dataclass
class HeldOutDataArguments(LabelledDataArguments):
    """The labelled data, with the flags of training/finetune_classifier.py: the same flags, the same test set."""

    max_test_samples: int | None = field(default=None, metadata={"help": "Keep the first N test texts."})


@dataclass
class ClassificationEvalArguments(ValidatedArguments):
    output_dir: str = field(metadata={"help": "Where results.json, results.md and metrics.json go."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Causal LM to prompt."})
    classifier_path: str | None = field(default=None, metadata={"help": "Fine-tuned classifier folder."})
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Tokens per text for the classifier; default: its fine-tuning's."}
    )
    num_fewshot: str = field(default="0,4", metadata={"help": "Comma-separated shot counts to prompt with."})
    label_words: str | None = field(default=None, metadata={"help": "Word per class, in class order."})
    prompt_template: str = field(default=DEFAULT_PROMPT, metadata={"help": "Prompt with {text}."})
    description: str = field(default="", metadata={"help": "Instruction line before the examples."})
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not self.model_name_or_path and not self.classifier_path:
            raise InvalidArgumentsError(
                "Nothing to evaluate: pass --model_name_or_path (prompting) and/or --classifier_path."
            )
        super().__post_init__()

    def words_for(self, label_names: list[str]) -> list[str]:
        """The word the prompted model answers with for each class: ``--label_words``, else the class names."""
        if not self.label_words:
            return label_names
        words = self.label_words.split(",")
        if len(words) != len(label_names):
            raise ValueError(
                f"--label_words {self.label_words}: one word per class {label_names}, in that order."
            )
        return words


def main(argv: list[str] | None = None) -> dict:
    data_args, args, prompting = parse_args(
        (HeldOutDataArguments, ClassificationEvalArguments, PromptingArguments), argv
    )
    train, test, label_names = load_labelled_test_split(data_args)
    if data_args.max_test_samples is not None:
        test = test.select(range(min(data_args.max_test_samples, len(test))))
    label_words = args.words_for(label_names)

    predictions: dict[str, list[int]] = {}
    if args.model_name_or_path:
        lm = load_lm(
            args.model_name_or_path,
            batch_size=args.batch_size,
            device=prompting.device,
            trust_remote_code=prompting.trust_remote_code,
        )
        by_shots = prompted_predictions(
            lm,
            test,
            train,
            label_words,
            [int(k) for k in args.num_fewshot.split(",")],
            template=args.prompt_template,
            description=args.description,
            apply_chat_template=prompting.apply_chat_template,
            seed=prompting.seed,
        )
        predictions |= {shots_method(k): predicted for k, predicted in by_shots.items()}
    if args.classifier_path:
        classifier, tokenizer = load_model(
            args.classifier_path,
            AutoModelForSequenceClassification,
            device=prompting.device,
            trust_remote_code=prompting.trust_remote_code,
        )
        max_length = args.max_seq_length or trained_max_length(args.classifier_path)
        predictions["fine-tuned"] = classifier_predictions(
            classifier, tokenizer, test["text"], label_names, args.batch_size, max_length
        )

    about = {"label_words": label_words, "prompt_template": args.prompt_template}
    metrics = write_side_by_side(args.output_dir, predictions, train, test, label_names, **about)
    print((Path(args.output_dir) / "results.md").read_text())
    return metrics


if __name__ == "__main__":
    run_script(main)
