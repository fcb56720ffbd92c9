"""Instruction following: held-out answers through the chat template, ROUGE-L / exact match with intervals,
and an LLM judge, local and behind a real OpenAI-compatible server on 127.0.0.1 (``scratchgpt serve``).

The chat model is a tiny one trained for a few steps to answer every prompt with "85" and end its turn, so
generation, stopping, scoring and the judge's 0-100 parsing all have one known right answer.
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch
from conftest import TRAINING_TEXT, tiny_model

from eval import instruction_following
from hf_scratchgpt.evaluation.instruction import (
    exact_match,
    load_held_out_instructions,
    mean_with_interval,
    rouge_l,
)
from hf_scratchgpt.evaluation.judge import LocalJudge, OpenAIJudge, judge_answers, judge_prompt, parse_score
from hf_scratchgpt.finetune.instruction_data import InstructionDataArguments, alpaca_user_text
from hf_scratchgpt.model.tokenizer_sync import align_model_and_tokenizer
from hf_scratchgpt.serve.server import start_server

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = [
    {
        "instruction": f"Give score number {i}.",
        "input": "" if i % 2 else "fox",
        "output": "85" if i % 4 else "No.",
    }
    for i in range(20)
]


@pytest.fixture(scope="module")
def instruction_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("instructions") / "instructions.json"
    path.write_text(json.dumps(ITEMS))
    return path


@pytest.fixture(scope="module")
def answers_85(tmp_path_factory, tokenizer) -> Path:
    """A chat model folder whose every answer is "85<|im_end|>" (trained on the assistant tokens only)."""
    tokenizer = copy.deepcopy(tokenizer)  # saving aligns its context length; the shared one stays as it is
    model = tiny_model("gpt2", max_position_embeddings=512, initializer_range=0.02)
    rng = random.Random(0)
    users = [rng.choice(TRAINING_TEXT)[: rng.randint(3, 40)] for _ in range(6)]
    users += [judge_prompt("Name a colour.", "Blue.", rng.choice(TRAINING_TEXT)[:30]) for _ in range(2)]
    answer = tokenizer("85", add_special_tokens=False).input_ids + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    data = []
    for user in users:
        messages = [{"role": "user", "content": user}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        data.append((torch.tensor([prompt + answer]), torch.tensor([[-100] * len(prompt) + answer])))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        (sum(model(input_ids=ids, labels=labels).loss for ids, labels in data) / len(data)).backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("answers_85")
    align_model_and_tokenizer(model.eval(), tokenizer)  # generation stops at <|im_end|> in any server
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def judge_server(answers_85):
    """``scratchgpt serve`` (FastAPI + ``generate()``) on a free 127.0.0.1 port,
    serving the "85" model."""
    with start_server(str(answers_85), device="cpu") as server:
        yield server.url


def test_scores_parsing_and_intervals():
    assert rouge_l(
        ["the cat sat", "the cat", "dog"], ["the cat sat", "the cat sat", "a cat"]
    ) == pytest.approx([1.0, 0.8, 0.0])
    assert exact_match([" 85 ", "85.", "No."], ["85", "85", "No."]) == [1.0, 0.0, 1.0]
    summary = mean_with_interval([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert summary["mean"] == 3 and summary["ci_low"] == pytest.approx(3 - half) and summary["n"] == 5
    assert mean_with_interval([7.0]) == {"mean": 7.0, "ci_low": None, "ci_high": None, "n": 1}
    assert [parse_score(r) for r in ["85", "Score: 92/100", "150", "3.5", "none", "0 points"]] == [
        85,
        92,
        None,
        None,
        None,
        0,
    ]


def test_held_out_instructions_are_the_sft_validation_rows(instruction_file):
    data = InstructionDataArguments(dataset_name=str(instruction_file), validation_fraction=0.2)
    held_out = load_held_out_instructions(data, seed=42)
    assert len(held_out) == 4 and len(load_held_out_instructions(data, seed=42, limit=2)) == 2
    by_user_text = {alpaca_user_text(item): item["output"] for item in ITEMS}
    for example in held_out:
        assert [m["role"] for m in example["messages"]] == ["user"]
        assert by_user_text[example["messages"][0]["content"]] == example["reference"]
    assert load_held_out_instructions(data, seed=42) == held_out
    assert load_held_out_instructions(data, seed=1) != held_out


def test_script_with_a_judge_behind_an_openai_compatible_server(
    tmp_path, answers_85, instruction_file, judge_server
):
    out = tmp_path / "out"
    metrics = instruction_following.main(
        [
            "--model_name_or_path",
            str(answers_85),
            "--dataset_name",
            str(instruction_file),
            "--validation_fraction",
            "0.4",
            "--limit",
            "6",
            "--max_new_tokens",
            "8",
            "--device",
            "cpu",
            "--judge_url",
            judge_server,
            "--judge_model",
            str(answers_85),
            "--output_dir",
            str(out),
        ]
    )
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples) == 6
    assert all(
        item["output"] == "85" and item["judge_reply"] == "85" and item["judge_score"] == 85
        for item in samples
    )
    expected_exact = [float(item["reference"] == "85") for item in samples]
    assert [item["exact_match"] for item in samples] == expected_exact
    assert metrics["exact_match/mean"] == pytest.approx(sum(expected_exact) / 6)
    assert (
        metrics["judge_score/mean"] == 85
        and metrics["judge_score/ci_low"] == metrics["judge_score/ci_high"] == 85
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert json.loads((out / "results.json").read_text())["scores"]["judge_score"]["n"] == 6
    assert "| judge_score | 85.0000 | [85.0000, 85.0000] | 6 | 0 |" in (out / "results.md").read_text()

    # The same model as a local judge, and the server's replies, agree prompt for prompt.
    prompts = [judge_prompt(item["prompt"], item["reference"], item["output"]) for item in samples[:2]]
    local, remote = LocalJudge(str(answers_85)), OpenAIJudge(judge_server, str(answers_85))
    assert [local(p) for p in prompts] == [remote(p) for p in prompts] == ["85", "85"]
    # A prompt past the judge's context gets no reply, hence no score, instead of stopping the run.
    too_long = [{"prompt": "word " * 600, "reference": "x", "output": "y"}]
    assert judge_answers(local, too_long)[0]["judge_score"] is None
    assert judge_answers(remote, too_long)[0]["judge_reply"] == ""


def test_script_without_a_judge_scores_rouge_only(tmp_path, answers_85, instruction_file, caplog):
    out = tmp_path / "out"
    metrics = instruction_following.main(
        [
            "--model_name_or_path",
            str(answers_85),
            "--dataset_name",
            str(instruction_file),
            "--limit",
            "2",
            "--max_new_tokens",
            "8",
            "--device",
            "cpu",
            "--output_dir",
            str(out),
        ]
    )
    assert "No judge given" in caplog.text
    assert set(metrics) == {
        f"{key}/{stat}"
        for key in ("rouge_l", "exact_match")
        for stat in ("mean", "ci_low", "ci_high", "n", "unscored")
    }
    assert all("judge_score" not in item for item in json.loads((out / "samples.json").read_text()))
