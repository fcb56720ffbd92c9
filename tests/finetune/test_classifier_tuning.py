"""Classification fine-tuning: the data steps and metrics of hf_scratchgpt.finetune.classification_data, and
training/finetune_classifier.py end to end on a tiny model (full, last-N-blocks and LoRA)."""

from __future__ import annotations

import json
import logging
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_config
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, EvalPrediction, pipeline

from hf_scratchgpt import ScratchGPTForCausalLM
from hf_scratchgpt.data import DataError
from hf_scratchgpt.evaluation.classification import scores
from hf_scratchgpt.finetune import classification_data
from hf_scratchgpt.finetune.classification_data import (
    classes_seen,
    classification_metrics,
    classification_metrics_fn,
    encode_labels,
    infer_label_names,
    load_labelled_splits,
    select_text_and_label,
    split_labelled,
    tokenize_for_classification,
)
from hf_scratchgpt.finetune.classifier_tuning import ClassificationDataArguments, ClassifierModelArguments
from hf_scratchgpt.train.arguments import parse_args
from hf_scratchgpt.train.trainer import ScratchGPTTrainingArguments
from training import finetune_classifier

SCRIPT = REPO / "training" / "finetune_classifier.py"
# A separable toy task: the label is which word list a text's words come from.
WORDS = {"pos": ["sun", "joy", "gold", "smile", "warm"], "neg": ["rain", "grey", "cold", "mud", "gloom"]}
FAST_TRAINING = [
    "--precision",
    "fp32",
    "--use_cpu",
    "true",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--disable_tqdm",
    "true",
    "--per_device_train_batch_size",
    "16",
    "--seed",
    "0",
]


def script_module():
    return finetune_classifier


def finetune_main(argv: list[str]) -> dict:
    return script_module().main(argv)


def toy_rows(n: int, seed: int, positive_share: float = 0.3) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = "pos" if rng.random() < positive_share else "neg"
        rows.append({"text": " ".join(rng.choices(WORDS[label], k=rng.randint(2, 6))), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_model(tokenizer, tmp_path_factory) -> Path:
    """A tiny causal LM (random init) saved with its tokenizer, as a pretraining run would leave it."""
    torch.manual_seed(0)
    config = tiny_config(
        "gpt2",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        initializer_range=0.02,
    )
    folder = tmp_path_factory.mktemp("base")
    ScratchGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("toy")
    return {
        split: write_jsonl(folder / f"{split}.jsonl", toy_rows(n, seed))
        for split, n, seed in (("train", 240, 0), ("validation", 40, 1), ("test", 60, 2))
    }


def test_classifier_beats_majority_class_and_loads_in_a_pipeline(base_model, toy_files, tmp_path):
    out = tmp_path / "classifier"
    metrics = finetune_main(
        [
            "--model_name_or_path",
            str(base_model),
            "--train_file",
            toy_files["train"],
            "--validation_file",
            toy_files["validation"],
            "--test_file",
            toy_files["test"],
            "--output_dir",
            str(out),
            "--max_steps",
            "40",
            "--learning_rate",
            "3e-3",
            *FAST_TRAINING,
        ]
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["label_names"] == ["neg", "pos"]
    assert metrics["test_majority_class_accuracy"] < 0.8
    assert metrics["test_accuracy"] >= 0.95 > metrics["test_majority_class_accuracy"]
    assert sum(map(sum, metrics["test_confusion_matrix"])) == metrics["test_samples"] == 60
    assert {"test_f1", "test_precision_pos", "test_recall_neg", "eval_accuracy"} <= set(metrics)

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.pad_token_id is not None
    classify = pipeline("text-classification", model=str(out))
    assert classify(["sun joy gold warm", "rain mud cold grey"])[0]["label"] == "pos"
    samples = json.loads((out / "samples.json").read_text())
    assert samples and {"prompt", "output"} == set(samples[0])


def test_lora_adapter_saves_head_and_reloads_with_identical_logits(
    base_model, toy_files, tmp_path, monkeypatch
):
    from peft import AutoPeftModelForSequenceClassification

    out = tmp_path / "lora"
    monkeypatch.chdir(base_model.parent)  # a relative base path, as users type it
    metrics = finetune_main(
        [
            "--model_name_or_path",
            base_model.name,
            "--train_file",
            toy_files["train"],
            "--validation_file",
            toy_files["validation"],
            "--test_file",
            toy_files["test"],
            "--use_peft",
            "true",
            "--lora_r",
            "4",
            "--output_dir",
            str(out),
            "--max_steps",
            "8",
            "--learning_rate",
            "1e-2",
            *FAST_TRAINING,
        ]
    )
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("score" in name for name in adapter), "the new head must be saved with the adapter"
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapter.items())

    monkeypatch.chdir(tmp_path)  # the adapter finds its base from anywhere
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(out / "merged").eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    test = [json.loads(line) for line in Path(toy_files["test"]).read_text().splitlines()]
    batch = tokenizer([row["text"] for row in test], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = reloaded(**batch).logits
        torch.testing.assert_close(logits, merged(**batch).logits, atol=1e-5, rtol=1e-5)
    labels = np.array([merged.config.label2id[row["label"]] for row in test])
    assert (logits.argmax(-1).numpy() == labels).mean() == pytest.approx(metrics["test_accuracy"])


def test_last_blocks_mode_leaves_earlier_blocks_unchanged(base_model, toy_files, tmp_path):
    out = tmp_path / "last1"
    metrics = finetune_main(
        [
            "--model_name_or_path",
            str(base_model),
            "--train_file",
            toy_files["train"],
            "--trainable_layers",
            "1",
            "--output_dir",
            str(out),
            "--max_steps",
            "3",
            "--learning_rate",
            "1e-2",
            *FAST_TRAINING,
        ]
    )
    before = load_file(base_model / "model.safetensors")
    after = load_file(out / "model.safetensors")
    frozen = [
        name for name in after if name.startswith(("transformer.h.0.", "transformer.wte", "transformer.wpe"))
    ]
    trained = [name for name in after if name.startswith(("transformer.h.1.", "transformer.ln_f"))]
    assert frozen and trained
    for name in frozen:
        torch.testing.assert_close(after[name], before[name], atol=0, rtol=0)
    assert all(not torch.equal(after[name], before[name]) for name in trained if name.endswith("weight"))
    expected = sum(after[n].numel() for n in trained) + after["score.weight"].numel()
    assert metrics["trainable_parameters"] == expected
    # Without validation/test files the 240 rows were split 70/10/20.
    assert metrics["test_samples"] == 48 and metrics["train_samples"] + metrics["eval_samples"] == 192
    assert metrics["eval_samples"] in (24, 25)


def test_headerless_tsv_gives_label_names_and_a_balanced_stratified_split(tmp_path):
    lines = [f"ham\tsee you at {i} o'clock" for i in range(80)] + [
        f'spam\t"WIN" prize {i} now' for i in range(20)
    ]
    path = tmp_path / "sms.tsv"
    path.write_text("\n".join(lines) + "\n")
    raw = load_labelled_splits(train_file=str(path), headerless_label_text=True)
    labelled = select_text_and_label(raw, None, None)
    assert labelled["train"][80] == {"text": '"WIN" prize 0 now', "label": "spam"}  # quotes kept as text
    names = infer_label_names(labelled["train"])
    assert names == ["ham", "spam"]
    splits = split_labelled(encode_labels(labelled, names), seed=3, balance_classes="undersample")
    sizes = {split: len(data) for split, data in splits.items()}
    assert sizes == {"train": 28, "validation": 4, "test": 8}  # 20 + 20 after undersampling, 70/10/20
    for data in splits.values():
        assert sorted(data["label"]).count(0) == len(data) // 2
    again = split_labelled(encode_labels(labelled, names), seed=3, balance_classes="undersample")
    assert again["test"]["text"] == splits["test"]["text"]


def test_numeric_labels_sort_as_numbers():
    train = Dataset.from_dict({"label": ["10", "2", "1", "2"], "text": list("abcd")})
    assert infer_label_names(train) == ["1", "2", "10"]


def test_shared_sms_spam_file_reads_every_message(shared_data):
    raw = load_labelled_splits(
        train_file=str(shared_data / "classification" / "sms_spam.tsv"), headerless_label_text=True
    )
    labels = raw["train"]["label"]
    assert (len(labels), labels.count("ham"), labels.count("spam")) == (5574, 4827, 747)


def test_unknown_label_in_validation_names_the_value():
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "label": ["ham", "spam"]}),
            "validation": Dataset.from_dict({"text": ["c", "d"], "label": ["ham", "eggs"]}),
        }
    )
    with pytest.raises(
        DataError, match=r"validation data has label value\(s\) \{'eggs': 1\}.*\['ham', 'spam'\]"
    ):
        encode_labels(splits, ["ham", "spam"])


def test_empty_class_and_single_class_are_refused():
    train = Dataset.from_dict({"text": ["a", "b"], "label": ["ham", "ham"]})
    with pytest.raises(DataError, match=r"\['spam'\] have no training example"):
        infer_label_names(train, ["ham", "spam"])
    with pytest.raises(DataError, match="at least two classes"):
        infer_label_names(train)


def test_missing_columns_are_named_with_the_columns_that_exist():
    raw = DatasetDict({"train": Dataset.from_dict({"review": ["a"], "stars": [1]})})
    with pytest.raises(DataError, match="The test data has no rows"):
        select_text_and_label(DatasetDict(test=raw["train"].select([])), "review", "stars")
    with pytest.raises(DataError, match=r"no label column 'label'; its columns are \['review', 'stars'\]"):
        select_text_and_label(raw, "review", None)
    with pytest.raises(
        DataError, match=r"no text column\(s\) \['body'\]; its columns are \['review', 'stars'\]"
    ):
        select_text_and_label(raw, "body", "stars")
    with pytest.raises(DataError, match=r"none of the default text columns.*\['review', 'stars'\]"):
        select_text_and_label(raw, None, "stars")


def test_unknown_label_stops_the_script_before_training(base_model, toy_files, tmp_path):
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"text": "sun", "label": "pos"}, {"text": "x", "label": "meh"}]
    )
    with pytest.raises(DataError, match="meh"):
        finetune_main(
            [
                "--model_name_or_path",
                str(base_model),
                "--train_file",
                toy_files["train"],
                "--test_file",
                bad,
                "--output_dir",
                str(tmp_path / "out"),
                *FAST_TRAINING,
            ]
        )
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_texts_longer_than_the_context_are_cut_with_one_warning(tokenizer, caplog):
    texts = ["short text", "word " * 100, "another " * 80, "ok"]
    splits = encode_labels(
        DatasetDict(
            {
                "train": Dataset.from_dict({"text": texts, "label": ["a", "b", "a", "b"]}),
                "test": Dataset.from_dict({"text": ["long " * 90], "label": ["a"]}),
            }
        ),
        ["a", "b"],
    )
    with caplog.at_level(logging.WARNING):
        tokenized, length = tokenize_for_classification(splits, tokenizer, context_length=64)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert length == 64
    assert len(warnings) == 1 and "3 of 5 texts (train 2, test 1) are longer than 64 tokens" in warnings[0]
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 64
    assert tokenized["train"]["input_ids"][0] == tokenizer("short text")["input_ids"]

    caplog.clear()
    short = DatasetDict({split: data.select([0]) for split, data in splits.items()}).map(
        lambda _: {"text": "ok"}
    )
    with caplog.at_level(logging.WARNING):
        _, fitted = tokenize_for_classification(short, tokenizer, 64)
    assert fitted == len(tokenizer("ok")["input_ids"]) and not caplog.records
    short["test"] = splits["test"]  # a test text longer than every training text
    with caplog.at_level(logging.WARNING):
        tokenize_for_classification(short, tokenizer, 64)
    assert "1 of 2 texts (test 1)" in caplog.text and "(the longest training text)" in caplog.text


def test_metrics_match_hand_counts():
    metrics = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["neg", "pos"])
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["precision_pos"] == pytest.approx(2 / 3) and metrics["recall_pos"] == pytest.approx(2 / 3)
    assert metrics["precision_neg"] == pytest.approx(1 / 2) and metrics["recall_neg"] == pytest.approx(1 / 2)
    assert metrics["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_a_class_absent_from_the_references_gets_no_invented_zero_scores():
    # Only "neg" is in the references: "pos" has no recall or F1 to report, and the macro averages are
    # those of "neg" alone (sklearn's zero_division=0 would add a 0.0 for "pos" and halve them).
    metrics = classification_metrics([0, 0, 1], [0, 0, 0], ["neg", "pos"])
    assert metrics["recall_neg"] == pytest.approx(2 / 3) and metrics["precision_neg"] == 1.0
    assert not {"precision_pos", "recall_pos", "f1_pos"} & set(metrics)
    assert metrics["f1"] == metrics["f1_neg"] == pytest.approx(0.8)
    with pytest.warns(
        UserWarning, match=re.escape("The test split has no example of class(es) ['pos']")
    ) as seen:
        assert classes_seen([0, 0, 0], ["neg", "pos"], "test", train_labels=[1, 1, 0]) == ["neg"]
    assert "'pos' (the most frequent training class)" in str(seen[0].message)  # why the baseline scores 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert classes_seen([1, 0], ["neg", "pos"], "test") == ["neg", "pos"]
        assert classes_seen([0], ["neg", "pos"]) == ["neg"]  # no split named: no warning
    # The side-by-side evaluation scores the same way and records the classes seen with each method.
    with pytest.warns(UserWarning, match=re.escape("no example of class(es) ['pos']")):
        scored = scores([0, 0, 1], [0, 0, 0], ["neg", "pos"])
    assert scored["classes_seen"] == ["neg"] and scored["f1"] == metrics["f1"] and "f1_pos" not in scored


def test_a_test_file_without_one_class_is_reported_with_the_classes_seen(base_model, toy_files, tmp_path):
    only_neg = write_jsonl(
        tmp_path / "test.jsonl", [row for row in toy_rows(40, seed=3) if row["label"] == "neg"]
    )
    with pytest.warns(UserWarning, match=re.escape("The test split has no example of class(es) ['pos']")):
        metrics = finetune_main(
            [
                "--model_name_or_path",
                str(base_model),
                "--train_file",
                toy_files["train"],
                "--validation_file",
                toy_files["validation"],
                "--test_file",
                only_neg,
                "--output_dir",
                str(tmp_path / "out"),
                "--max_steps",
                "2",
                *FAST_TRAINING,
            ]
        )
    assert metrics["test_classes_seen"] == ["neg"] and metrics["eval_classes_seen"] == ["neg", "pos"]
    assert "test_recall_neg" in metrics and not {"test_recall_pos", "test_f1_pos"} & set(metrics)
    assert metrics["test_f1"] == metrics["test_f1_neg"]


@pytest.mark.parametrize("content", ["", "text,label\n"], ids=["empty", "header only"])
def test_an_empty_test_file_is_named_with_its_split(tmp_path, toy_files, content):
    empty = tmp_path / "test.csv"
    empty.write_text(content)
    with pytest.raises(DataError, match=re.escape(f"--test_file {empty} (the test split) holds no records")):
        load_labelled_splits(toy_files["train"], test_file=str(empty))


def test_a_malformed_training_file_is_named_with_the_line(tmp_path):
    broken = tmp_path / "train.jsonl"
    broken.write_text('{"text": "sun", "label": "pos"}\n{"text": "rain", "label": neg}\n')
    with pytest.raises(DataError, match=re.escape(f"{broken}: not valid JSON at line 2, column 27")):
        load_labelled_splits(str(broken))


def test_class_label_ids_become_their_names_and_keep_their_order():
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    raw = DatasetDict(
        {
            "train": Dataset.from_dict(
                {"sentence": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features
            ),
            "test": Dataset.from_dict({"sentence": ["hidden"], "label": [-1]}, features=features),
        }
    )
    labelled = select_text_and_label(raw, None, None)
    assert labelled["train"]["label"] == ["negative", "positive", "positive"]
    assert infer_label_names(labelled["train"], ["negative", "positive"]) == ["negative", "positive"]
    with pytest.raises(DataError, match=r"\{'-1': 1\}"):  # an unlabelled test split is named, not scored
        encode_labels(labelled, ["negative", "positive"])


def test_extra_metrics_are_merged_into_the_trainer_metrics():
    class Agreement:  # anything with evaluate's compute(predictions=, references=) signature
        def compute(self, predictions, references):
            return {"agreement": float(np.mean(predictions == references))}

    compute = classification_metrics_fn(["neg", "pos"], [Agreement()])
    metrics = compute(
        EvalPrediction(predictions=np.array([[2.0, 1.0], [0.0, 3.0]]), label_ids=np.array([0, 0]))
    )
    assert metrics["agreement"] == metrics["accuracy"] == 0.5 and metrics["recall_neg"] == 0.5


def test_sms_recipe_parses_with_the_script_arguments():
    model_args, data_args, training_args = parse_args(
        (ClassifierModelArguments, ClassificationDataArguments, ScratchGPTTrainingArguments),
        [
            "--config",
            str(REPO / "training/configs/finetune_sms_spam.yaml"),
            "--model_name_or_path",
            "m",
            "--precision",
            "fp32",
        ],
    )
    assert data_args.headerless_label_text and data_args.balance_classes == "undersample"
    assert training_args.max_steps == 400 and model_args.trainable_layers == -1


def test_hub_dataset_id_with_a_split_used_as_test(monkeypatch):
    """--dataset_name with --test_split_name (SST-2 on the Hub has labelled rows only in `validation`).
    `datasets` does the Hub download (tests/data/test_hub_data.py runs it against a local Hub); this checks
    which of the dataset's splits becomes train / validation / test."""
    hub = DatasetDict(
        {
            split: Dataset.from_list(toy_rows(n, seed))
            for split, n, seed in (("train", 12, 0), ("validation", 5, 1))
        }
    )
    calls = []
    monkeypatch.setattr(classification_data, "load_dataset", lambda *args: calls.append(args) or hub)
    splits = load_labelled_splits(
        dataset_name="user/toy", dataset_config_name="en", split_names={"test": "validation"}
    )
    assert calls == [("user/toy", "en")]
    assert sorted(splits) == ["test", "train"] and splits["test"]["text"] == hub["validation"]["text"]
    assert sorted(load_labelled_splits(dataset_name="user/toy")) == ["train", "validation"]
    with pytest.raises(
        DataError, match=r"no split for --test_split_name dev; it has \['train', 'validation'\]"
    ):
        load_labelled_splits(dataset_name="user/toy", split_names={"test": "dev"})
