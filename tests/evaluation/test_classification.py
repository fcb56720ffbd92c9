"""Classification side by side: prompted predictions through the harness (proven with planted scorers), a
fine-tuned classifier's predictions (batched == one by one, classes matched by name), and the script's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_model
from fakes.scorers import PlantedScorer

from eval import classification as classification_script
from hf_scratchgpt import ScratchGPTForSequenceClassification
from hf_scratchgpt.evaluation.classification import (
    classifier_predictions,
    load_labelled_test_split,
    prompted_predictions,
    scores,
    trained_max_length,
)
from hf_scratchgpt.finetune.classifier_tuning import LabelledDataArguments
from hf_scratchgpt.train.arguments import InvalidArgumentsError

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [
    ("spam", f"WIN a prize {i} now call 0800") if i % 3 == 0 else ("ham", f"see you at {i} for lunch")
    for i in range(60)
]


@pytest.fixture(scope="module")
def sms_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sms") / "sms.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in ROWS))
    return path


def test_prompted_predictions_with_planted_scorers(sms_file):
    data_args = LabelledDataArguments(train_file=str(sms_file), headerless_label_text=True)
    train, test, label_names = load_labelled_test_split(data_args)
    assert label_names == ["ham", "spam"] and len(test) == 12
    gold = {f"Text: {row['text']}\nLabel:": " " + label_names[row["label"]] for row in test}

    def knows(context: str, continuation: str) -> bool:
        return any(context.endswith(prompt) and continuation == word for prompt, word in gold.items())

    oracle = prompted_predictions(PlantedScorer(knows), test, train, label_names, [0, 3])
    constant = prompted_predictions(
        PlantedScorer(lambda context, continuation: True), test, train, label_names, [2]
    )
    assert oracle[0] == oracle[3] == test["label"]
    assert constant[2] == [0] * len(test)  # ties go to the first class
    perfect, always_ham = (
        scores(oracle[3], test["label"], label_names),
        scores(constant[2], test["label"], label_names),
    )
    assert perfect["accuracy"] == 1.0 and perfect["f1"] == 1.0
    assert perfect["confusion_matrix"] == [[8, 0], [0, 4]]
    assert always_ham["accuracy"] == pytest.approx(8 / 12) and always_ham["confusion_matrix"] == [
        [8, 0],
        [4, 0],
    ]


def test_classifier_predictions_match_single_forwards_and_names(tokenizer):
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, id2label={0: "c", 1: "a", 2: "b"}, label2id={"c": 0, "a": 1, "b": 2})
    model = ScratchGPTForSequenceClassification(config).eval()
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    texts = ["short", "a much longer text about a little robot", "medium text here", "x"] * 2
    label_names = ["a", "b", "c"]  # the test data's order differs from the classifier's
    predicted = classifier_predictions(model, tokenizer, texts, label_names, batch_size=3)
    with torch.no_grad():
        one_by_one = [
            model(**tokenizer(text, return_tensors="pt")).logits.argmax(-1).item() for text in texts
        ]
    assert predicted == [label_names.index(config.id2label[i]) for i in one_by_one]
    # Cut to the length the classifier was fine-tuned with: the first 3 tokens of every text.
    cut = classifier_predictions(model, tokenizer, texts, label_names, batch_size=3, max_length=3)
    with torch.no_grad():
        first_3 = [
            model(input_ids=tokenizer(text, return_tensors="pt").input_ids[:, :3]).logits.argmax(-1).item()
            for text in texts
        ]
    assert cut == [label_names.index(config.id2label[i]) for i in first_3]
    with pytest.raises(ValueError, match="not the test data's"):
        classifier_predictions(model, tokenizer, texts, ["ham", "spam"])


def test_script_side_by_side(tmp_path, tokenizer, sms_file):
    lm_dir, classifier_dir = tmp_path / "lm", tmp_path / "classifier"
    tiny_model(max_position_embeddings=128).save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    torch.manual_seed(0)
    labels = {"id2label": {0: "ham", 1: "spam"}, "label2id": {"ham": 0, "spam": 1}}
    ScratchGPTForSequenceClassification(tiny_config(num_labels=2, **labels)).save_pretrained(classifier_dir)
    tokenizer.save_pretrained(classifier_dir)
    (classifier_dir / "metrics.json").write_text(
        json.dumps({"max_seq_length": 12})
    )  # as fine-tuning records it
    assert trained_max_length(classifier_dir) == 12 and trained_max_length(lm_dir) is None
    out = tmp_path / "out"
    metrics = classification_script.main(
        [
            "--train_file",
            str(sms_file),
            "--headerless_label_text",
            "true",
            "--model_name_or_path",
            str(lm_dir),
            "--num_fewshot",
            "0,2",
            "--classifier_path",
            str(classifier_dir),
            "--max_test_samples",
            "10",
            "--device",
            "cpu",
            "--output_dir",
            str(out),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["zero-shot", "2-shot", "fine-tuned"]
    for method in results["methods"].values():
        assert method["samples"] == 10 and sum(map(sum, method["confusion_matrix"])) == 10
        assert method["accuracy"] == pytest.approx(
            sum(method["confusion_matrix"][i][i] for i in range(2)) / 10
        )
    assert results["baselines"]["random guess (baseline)"] == 0.5
    assert metrics["fine-tuned/accuracy"] == results["methods"]["fine-tuned"]["accuracy"]
    table = (out / "results.md").read_text()
    ham_share = sum(results["methods"]["fine-tuned"]["confusion_matrix"][0]) / 10
    assert results["baselines"]["majority class (baseline)"] == pytest.approx(ham_share)
    assert (
        "| zero-shot |" in table
        and "| 2-shot |" in table
        and f"| majority class (baseline) | {ham_share:.4f} |" in table
    )


def test_script_refuses_to_run_with_no_model_to_evaluate(tmp_path, sms_file):
    with pytest.raises(InvalidArgumentsError, match="Nothing to evaluate: pass --model_name_or_path"):
        classification_script.main(["--train_file", str(sms_file), "--output_dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before loading or writing anything
