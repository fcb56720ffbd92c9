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
majority-class accuracy, and the label names. Every field of ClassifierModelArguments and
ClassificationDataArguments (hf_scratchgpt.finetune.classifier_tuning) and of ScratchGPTTrainingArguments can
be set in --config FILE.yaml.
"""

import logging
import os
import time
from pathlib import Path

from transformers import DataCollatorWithPadding, set_seed

import hf_scratchgpt  # noqa: F401  (registers the scratchgpt model type with the Auto classes)
from hf_scratchgpt.finetune.classification_data import classification_metrics_fn, tokenize_for_classification
from hf_scratchgpt.finetune.classifier_tuning import (
    ClassificationDataArguments,
    ClassifierModelArguments,
    build_labelled_splits,
    choose_trainable_weights,
    evaluate_classifier,
    limit_splits,
    load_classifier,
    load_extra_metrics,
    trainable_parameters,
)
from hf_scratchgpt.finetune.stage import MERGED_DIR, make_stage_trainer, save_finetuned, write_stage_files
from hf_scratchgpt.train.arguments import parse_args, run_script
from hf_scratchgpt.train.budget import BudgetArguments
from hf_scratchgpt.train.stage_files import forget_metrics
from hf_scratchgpt.train.trainer import ScratchGPTTrainer, ScratchGPTTrainingArguments, check_output_dir


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    model_args, data_args, training_args, budget_args = parse_args(
        (ClassifierModelArguments, ClassificationDataArguments, ScratchGPTTrainingArguments, BudgetArguments),
        argv,
    )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    set_seed(training_args.seed)
    check_output_dir(training_args)  # before any loading: a used OUTPUT_DIR, or a resume that cannot be
    forget_metrics(training_args.output_dir)  # the stage is complete again only when rewritten

    # Data: text + label name -> classes -> label ids -> train/validation/test -> token ids.
    splits, label_names = build_labelled_splits(data_args)
    splits = limit_splits(splits, data_args)
    model, tokenizer = load_classifier(model_args, label_names)
    tokenized, max_seq_length = tokenize_for_classification(
        splits,
        tokenizer,
        model.config.max_position_embeddings,
        data_args.max_seq_length,
        data_args.pad_to_max_length,
    )
    model = choose_trainable_weights(model, model_args)

    trainer = make_stage_trainer(
        ScratchGPTTrainer,
        model,
        training_args,
        tokenized,
        tokenizer,
        budget_args,
        started,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=classification_metrics_fn(label_names, load_extra_metrics(data_args.metric_name)),
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    evaluation, samples = evaluate_classifier(trainer, splits, tokenized, label_names, data_args.num_samples)
    metrics = {
        **train_result.metrics,
        **evaluation,
        "label_names": label_names,
        "train_samples": len(tokenized["train"]),
        "max_seq_length": max_seq_length,
        "trainable_parameters": trainable_parameters(model),
        "finetuning": model_args.describe_finetuning(),
    }
    # The classifier, or with LoRA the adapter + head (and the merged classifier in OUTPUT_DIR/merged).
    merged_dir = Path(training_args.output_dir) / MERGED_DIR
    saved = save_finetuned(
        trainer, merged_dir if model_args.use_peft and model_args.save_merged_model else None
    )
    if trainer.is_world_process_zero():
        write_stage_files(training_args.output_dir, metrics, saved, model_args.model_name_or_path, samples)
    return metrics


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_script(main)
