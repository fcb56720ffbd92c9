"""Model cards: the YAML the Hub reads (model-index equal to the results JSON) and the sections built
from a stage's files, for a model, a fine-tune and an adapter; the example card in model_cards/ is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TRAINING_TEXT, tiny_config, tiny_model
from datasets import load_from_disk
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from transformers import AutoTokenizer

from hf_scratchgpt import ScratchGPTForSequenceClassification
from hf_scratchgpt.publish.cards import (
    REPO_PLACEHOLDER,
    CardError,
    build_model_card,
    count_parameters,
    fill_repo_id,
    render_sections,
    write_model_card,
)
from hf_scratchgpt.train.hardware import describe_machine, machine_summary
from training import prepare_data, train_tokenizer

EXAMPLE = REPO / "model_cards" / "examples" / "tiny-scratchgpt"

# lm-eval's layout, as eval/run_lm_eval.py writes it (with its random-guess baselines).
LM_EVAL = {
    "results": {
        "arc_easy_local": {
            "alias": "arc_easy_local",
            "acc,none": 0.3125,
            "acc_stderr,none": 0.0832,
            "acc_norm,none": 0.28125,
            "acc_norm_stderr,none": 0.0808,
        },
        "lambada_local": {
            "alias": "lambada_local",
            "acc,none": 0.0625,
            "acc_stderr,none": 0.0435,
            "perplexity,none": 812.5,
            "perplexity_stderr,none": 150.25,
        },
    },
    "configs": {
        "arc_easy_local": {"dataset_path": "json", "test_split": "test"},
        "lambada_local": {
            "dataset_path": "EleutherAI/lambada_openai",
            "dataset_name": "default",
            "test_split": "test",
        },
    },
    "n-shot": {"arc_easy_local": 0, "lambada_local": 3},
    "n-samples": {
        "arc_easy_local": {"original": 2376, "effective": 32},
        "lambada_local": {"original": 5153, "effective": 32},
    },
    "config": {"model": "hf", "limit": 32},
    "random_baseline": {"arc_easy_local": 0.25, "lambada_local": None},
}
PERPLEXITY = {
    "name": "perplexity",
    "perplexity": 41.5,
    "bits_per_byte": 1.625,
    "eval_runtime": 3.5,
    "num_tokens": 4096,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card") / "tiny"
    model = tiny_model()
    model.save_pretrained(folder)
    metrics = {
        "num_parameters": model.num_parameters(),
        "train_runtime": 130.0,
        "train_loss": 4.25,
        "eval_loss": 4.5,
        "tokens_seen": 819200,
        "precision": "fp32",
        "machine": describe_machine(use_cpu=True),
        "corpus": "roneneldan/TinyStories (train)",
        "max_steps": 200,
        "block_size": 64,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _metadata(readme: Path) -> dict:
    _, header, _ = readme.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(header)


def test_card_yaml_parses_with_the_results_as_model_index(model_dir, tmp_path):
    (tmp_path / "lm_eval").mkdir()
    (tmp_path / "lm_eval" / "results.json").write_text(json.dumps(LM_EVAL))
    readme = write_model_card(
        model_dir, metrics=model_dir / "metrics.json", eval_results=[tmp_path / "lm_eval", PERPLEXITY]
    )
    card = ModelCard.load(readme)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.license == "apache-2.0" and data.language == "en" and "scratchgpt" in data.tags
    assert data.datasets == ["roneneldan/TinyStories"]  # the Hub corpus named in the stage metrics
    assert data.base_model is None  # trained from scratch

    scores = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
    expected = {
        (task, key.split(",")[0]): value
        for task, row in LM_EVAL["results"].items()
        for key, value in row.items()
        if "stderr" not in key and key != "alias"
    }
    expected.update({("perplexity", "perplexity"): 41.5, ("perplexity", "bits_per_byte"): 1.625})
    assert scores == expected  # every score, unchanged; no stderr, runtime or baseline as a "score"
    shots = {r.dataset_name: r.dataset_args for r in data.eval_results}
    assert shots["lambada_local"] == {"num_few_shot": 3}
    lambada = next(r for r in data.eval_results if r.dataset_name == "lambada_local")
    assert (lambada.dataset_type, lambada.dataset_config, lambada.dataset_split) == (
        "EleutherAI/lambada_openai",
        "default",
        "test",
    )
    # The raw YAML is the same model-index (what the Hub validates on push).
    index = _metadata(readme)["model-index"][0]
    assert index["name"] == "tiny"
    assert sum(len(result["metrics"]) for result in index["results"]) == len(expected)

    text = card.text
    assert "| arc_easy_local | 0 | acc | 0.3125 | 0.0832 | 0.25 | 32 |" in text  # random guess beside acc
    assert "At most 32 examples per task" in text
    assert f'from_pretrained("{REPO_PLACEHOLDER}", trust_remote_code=True, revision=revision)' in text
    assert fill_repo_id(str(card), "alice/tiny").count(REPO_PLACEHOLDER) == 0


def test_sections_show_architecture_training_and_machine(model_dir):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    sections = dict(render_sections(metrics, [LM_EVAL], model_dir / "config.json", loss_curve="loss.png"))
    assert list(sections) == ["Model", "Training data", "Training procedure", "Evaluation"]
    model = tiny_model()
    assert count_parameters(model_dir) == model.num_parameters()  # tied embedding stored and counted once
    assert f"**{model.num_parameters():,} parameters**" in sections["Model"]
    assert "| layers | 2 |" in sections["Model"] and "| context length | 64 |" in sections["Model"]
    assert "RoPE" not in sections["Model"]  # learned positions: no rotary settings shown
    procedure = sections["Training procedure"]
    assert machine_summary(metrics["machine"]) in procedure
    assert "| precision | fp32 |" in procedure and "| training tokens seen | 819,200 |" in procedure
    assert "| training time | 130 s (2.2 min) |" in procedure
    assert "roneneldan/TinyStories (train)" in sections["Training data"]
    assert sections["Evaluation"].endswith("![training and validation loss](loss.png)")
    # Nothing known: no empty headings.
    assert render_sections({}) == []


def test_the_data_and_tokenizer_stages_fill_the_cards_data_rows(model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{text} ({i})" for i, text in enumerate(TRAINING_TEXT)), encoding="utf-8")
    data_dir, tokenizer_dir = tmp_path / "data", tmp_path / "tokenizer"
    prepare_data.main(["--data", str(corpus), "--txt_mode", "line", "--output_dir", str(data_dir)])
    train_tokenizer.main(["--data", str(data_dir), "--vocab_size", "300", "--output_dir", str(tokenizer_dir)])
    # What the tokenizer does to the validation text, counted here from the saved files.
    validation = load_from_disk(data_dir)["validation"]["text"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokens = sum(len(tokenizer(text)["input_ids"]) for text in validation)
    bytes_per_token = sum(len(text.encode()) for text in validation) / tokens

    stages = [data_dir / "metrics.json", tokenizer_dir / "metrics.json", model_dir / "metrics.json"]
    data_section = dict(render_sections(stages))["Training data"]
    assert f"| documents | {len(TRAINING_TEXT)} |" in data_section
    assert f"| tokenizer vocabulary | {len(tokenizer)} tokens |" in data_section and len(tokenizer) == 300
    assert f"| bytes per token (validation text) | {bytes_per_token:.4g} |" in data_section


def test_loss_curve_is_drawn_from_the_trainer_state(model_dir, tmp_path):
    folder = tmp_path / "with_state"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    log = [{"step": s, "loss": 5.0 - s / 100} for s in (10, 20, 30)] + [{"step": 30, "eval_loss": 4.9}]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    readme = write_model_card(folder)
    assert (folder / "loss_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "![training and validation loss](loss_curves.png)" in readme.read_text()
    assert f"**{count_parameters(folder):,} parameters**" in readme.read_text()  # counted from the weights


def test_fine_tune_and_adapter_cards_name_their_base_model(model_dir, tmp_path):
    card = build_model_card(model_dir, base_model="alice/tiny-base", repo_id="alice/tiny-sft")
    assert card.data.base_model == "alice/tiny-base" and card.data.library_name == "transformers"
    assert 'pipeline("text-generation", model="alice/tiny-sft")' in card.text

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["c_attn", "c_proj"],
        "base_model_name_or_path": "alice/tiny-base",
    }
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        {"lora_A.weight": torch.zeros(8, 64), "lora_B.weight": torch.zeros(64, 8)},
        adapter / "adapter_model.safetensors",
    )
    card = ModelCard.load(write_model_card(adapter))
    assert card.data.library_name == "peft" and card.data.base_model == "alice/tiny-base"
    assert card.data.pipeline_tag == "text-generation" and "lora" in card.data.tags
    assert "**1,024 trainable adapter parameters**" in card.text and "| rank r | 8 |" in card.text
    assert "AutoPeftModelForCausalLM.from_pretrained" in card.text

    config["base_model_name_or_path"] = str(model_dir)  # PEFT's absolute local path names nothing on the Hub
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert build_model_card(adapter).data.base_model is None


def test_bad_inputs_name_the_file(model_dir, tmp_path):
    with pytest.raises(CardError, match="neither config.json nor adapter_config.json"):
        build_model_card(tmp_path)
    with pytest.raises(CardError, match="does not exist"):
        build_model_card(model_dir, metrics=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CardError, match="bad.json is not valid JSON"):
        render_sections(eval_results=tmp_path / "bad.json")


def test_example_card_in_model_cards_is_what_the_template_renders_today():
    """model_cards/examples/tiny-scratchgpt/README.md is rendered from the stage files beside it."""
    rendered = str(
        build_model_card(EXAMPLE, metrics=EXAMPLE / "metrics.json", eval_results=EXAMPLE / "eval" / "lm_eval")
    )
    assert rendered == (EXAMPLE / "README.md").read_text(encoding="utf-8"), (
        "The example card is stale: regenerate it with the command in model_cards/README.md."
    )


def test_classifier_card_takes_the_test_scores_and_keeps_baselines_out_of_the_model_index(tmp_path):
    folder = tmp_path / "classifier"
    ScratchGPTForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(folder)
    stage = {
        "train_loss": 0.3,
        "eval_loss": 0.2,
        "eval_accuracy": 0.9,
        "test_accuracy": 0.875,
        "test_f1": 0.8,
        "test_majority_class_accuracy": 0.5,
        "test_confusion_matrix": [[7, 1], [1, 7]],
        "test_runtime": 1.5,
    }
    (folder / "metrics.json").write_text(json.dumps(stage))
    # An evaluation folder whose results.json is not lm-eval's: its flat metrics.json is read instead.
    side_by_side = tmp_path / "eval" / "sms"
    side_by_side.mkdir(parents=True)
    (side_by_side / "results.json").write_text(json.dumps({"zero_shot": {"accuracy": 0.5, "per_class": {}}}))
    (side_by_side / "metrics.json").write_text(
        json.dumps({"zero_shot/accuracy": 0.5, "random_baseline": 0.5})
    )
    card = build_model_card(folder, metrics=stage, eval_results=[folder / "metrics.json", side_by_side])
    assert card.data.pipeline_tag == "text-classification"
    scores = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert scores == {
        ("classifier", "accuracy"): 0.875,
        ("classifier", "f1"): 0.8,
        ("zero_shot", "accuracy"): 0.5,
    }
    assert "| `test_majority_class_accuracy` (baseline) | 0.5 |" in card.text
    assert "AutoModelForSequenceClassification.from_pretrained(" in card.text
