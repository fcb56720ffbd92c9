"""Perplexity and bits per byte: sliding windows score every token once, agree with a single pass when the
text fits, work past the context for learned and rotary positions, and fall when the model learns the text."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_model

from eval import perplexity as perplexity_script
from hf_scratchgpt.data import load_text_dataset
from hf_scratchgpt.evaluation.perplexity import perplexity, sliding_windows

pytestmark = pytest.mark.usefixtures("one_thread")

STORY = "Once upon a time there was a little robot who loved to read stories. "


def single_pass_nats(model, ids: list[int]) -> float:
    with torch.no_grad():
        log_probs = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    return -log_probs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()


@pytest.mark.parametrize("stride", [1, 3, 7, 10])
def test_windows_score_every_target_once_with_enough_context(stride):
    ids = list(range(40))
    windows = list(sliding_windows(ids, max_length=10, stride=stride))
    scored = [t for w in windows for t in w.targets[w.first_scored :]]
    assert scored == ids[1:]
    assert all(len(w.inputs) <= 10 and w.targets == [i + 1 for i in w.inputs] for w in windows)
    # After the first window, the first scored target sees at least max_length - stride tokens.
    assert all(w.first_scored >= 10 - stride - 1 for w in windows[1:])


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_sliding_window_equals_single_pass_when_the_text_fits(tokenizer, recipe):
    model = tiny_model(recipe)
    text = "The quick brown fox jumps over the lazy dog."
    ids = [tokenizer.bos_token_id] + tokenizer(text).input_ids
    assert len(ids) < 64
    expected = single_pass_nats(model, ids)
    for stride in (4, 32, 64):
        result = perplexity(model, tokenizer, [text], stride=stride)
        assert result["windows"] == 1
        assert result["loss"] * result["tokens"] == pytest.approx(expected, rel=1e-5)
    assert result["tokens"] == len(ids) - 1
    assert result["bytes"] == len(text.encode("utf-8"))
    assert result["bits_per_byte"] == pytest.approx(expected / math.log(2) / len(text.encode()), rel=1e-5)


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_documents_longer_than_the_context(tokenizer, recipe):
    model = tiny_model(recipe)  # 64 positions; learned positions would fail past them
    texts = [STORY * 6, "Emoji 🤗🚀 and café.", STORY * 3]
    n_tokens = sum(len(tokenizer(text).input_ids) for text in texts)
    assert max(len(tokenizer(text).input_ids) for text in texts) > 3 * 64
    one_by_one = perplexity(model, tokenizer, texts, stride=16, batch_size=1)
    batched = perplexity(model, tokenizer, texts, stride=16, batch_size=5)
    assert one_by_one["tokens"] == batched["tokens"] == n_tokens
    assert one_by_one["bytes"] == sum(len(text.encode()) for text in texts)
    assert batched["loss"] == pytest.approx(one_by_one["loss"], rel=1e-5)
    # Disjoint chunks (stride == max_length) are independent single passes, the first after BOS.
    ids = [tokenizer.bos_token_id] + tokenizer(texts[0]).input_ids
    chunks = sum(single_pass_nats(model, ids[start : start + 65]) for start in range(0, len(ids) - 1, 64))
    disjoint = perplexity(model, tokenizer, texts[:1], stride=64)
    assert disjoint["loss"] * disjoint["tokens"] == pytest.approx(chunks, rel=1e-5)


def test_perplexity_falls_after_training_on_the_text(tokenizer):
    model = tiny_model("modern", initializer_range=0.02)
    text = STORY * 4
    before = perplexity(model, tokenizer, [text])
    ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(text).input_ids[:63]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    after = perplexity(model, tokenizer, [text])
    assert after["perplexity"] < before["perplexity"] / 3
    assert after["bits_per_byte"] < before["bits_per_byte"]


def test_script_scores_a_text_file(tmp_path, tokenizer):
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "stories.txt").write_text(f"{STORY}\n{STORY * 5}\nThe end.\n")
    metrics = perplexity_script.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--dataset",
            str(tmp_path / "stories.txt"),
            "--txt_mode",
            "line",
            "--max_documents",
            "2",
            "--stride",
            "32",
            "--device",
            "cpu",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    documents = load_text_dataset(tmp_path / "stories.txt", txt_mode="line")["text"][:2]
    assert metrics["documents"] == 2 and metrics["bytes"] == sum(len(text.encode()) for text in documents)
    assert math.isclose(metrics["perplexity"], math.exp(metrics["loss"]), rel_tol=1e-9)
    assert "| bits_per_byte |" in (tmp_path / "out" / "results.md").read_text()
