"""Talking to a fine-tuned model: `scratchgpt chat` (stdin, streaming, context window) and `scratchgpt serve`
(OpenAI API, streaming and not), on a tiny model that learned four answers with training/sft.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from conftest import TRAINING_TEXT, tiny_config, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_scratchgpt import ScratchGPTForCausalLM, ScratchGPTTokenizer
from hf_scratchgpt.cli import main as scratchgpt
from hf_scratchgpt.serve.chat import (
    continue_text,
    fast_generation_for,
    fit_to_context,
    generate_reply,
    load_chat_model,
    resolve_device,
)
from training import sft

ANSWERS = {"Name a colour.": "Blue.", "Say hello.": "Hello!", "What is two plus two?": "Four."}
SYSTEM = {"role": "system", "content": "Be brief."}  # the model is trained with it, so every test uses it


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, one_thread) -> Path:
    """A tiny chat model: SFT (training/sft.py) until it answers the three questions and ends its turn."""
    work = tmp_path_factory.mktemp("chat")
    tokenizer = ScratchGPTTokenizer.train(
        TRAINING_TEXT + [f"{q} {a}" for q, a in ANSWERS.items()] * 20, vocab_size=320, model_max_length=64
    )
    torch.manual_seed(0)
    ScratchGPTForCausalLM(
        tiny_config("gpt2", vocab_size=len(tokenizer), initializer_range=0.02)
    ).save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    rows = [{"instruction": q, "input": "", "output": a} for q, a in ANSWERS.items()] * 12
    (work / "data.json").write_text(json.dumps(rows))
    sft.main(
        [
            "--model_name_or_path",
            str(work / "base"),
            "--dataset_name",
            str(work / "data.json"),
            "--output_dir",
            str(work / "sft"),
            "--max_steps",
            "40",
            "--learning_rate",
            "3e-3",
            "--lr_scheduler_type",
            "constant",
            "--per_device_train_batch_size",
            "4",
            "--precision",
            "fp32",
            "--save_strategy",
            "no",
            "--disable_tqdm",
            "true",
            "--num_samples",
            "1",
            "--sample_max_new_tokens",
            "8",
            "--system_prompt",
            SYSTEM["content"],
        ]
    )
    return work / "sft" / "merged"


def test_a_reply_stops_at_the_end_of_its_turn(chat_model):
    model = AutoModelForCausalLM.from_pretrained(chat_model)
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    for question, answer in ANSWERS.items():
        conversation = [SYSTEM, {"role": "user", "content": question}]
        assert generate_reply(model, tokenizer, conversation, max_new_tokens=30, temperature=0) == answer
    prompt = tokenizer.apply_chat_template(
        [SYSTEM, {"role": "user", "content": "Say hello."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    # Plain generate / pipeline users get the same stop from the saved generation config.
    new = model.generate(**prompt, max_new_tokens=30, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    assert tokenizer.decode(new) == "Hello!<|im_end|>"


def test_a_text_prompt_is_continued_within_the_context(tokenizer):
    model = tiny_model()  # a 64-token context
    prompt = "Once upon a time"
    ids = tokenizer(prompt, return_tensors="pt")
    expected = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = continue_text(model, tokenizer, prompt, 8, do_sample=False)
    assert text == tokenizer.decode(expected[0], skip_special_tokens=True) and text.startswith(prompt)
    # Asked for more than the context holds: stops at the context's last position.
    long_prompt = TRAINING_TEXT[1]
    assert 40 < len(tokenizer(long_prompt)["input_ids"]) < 64
    generated = []
    model.generate = lambda **kwargs: generated.append(kwargs["max_new_tokens"]) or kwargs["input_ids"]
    continue_text(model, tokenizer, long_prompt, 500, do_sample=False)
    assert generated == [64 - len(tokenizer(long_prompt)["input_ids"])]
    del model.generate
    assert continue_text(model, tokenizer, "", 4, do_sample=False)  # an empty prompt starts at end-of-text
    with pytest.raises(ValueError, match="context of 64 tokens"):
        continue_text(model, tokenizer, long_prompt * 2, 4)


def test_the_conversation_is_cut_to_the_context_window(chat_model):
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    system = SYSTEM
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i} " * 3} for i in range(12)]
    turns[-1] = {"role": "user", "content": "Say hello."}
    kept, prompt_ids = fit_to_context([system, *turns], tokenizer, context_length=64, reply_room=16)
    assert kept[0] == system and kept[-1] == turns[-1] and kept[1]["role"] == "user"
    assert len(kept) < len(turns) + 1 and len(prompt_ids) + 16 <= 64
    # One more turn would not have fitted: the oldest turns were dropped, not more.
    longer = [system, *turns[len(turns) - len(kept) - 1 :]]
    assert (
        len(tokenizer.apply_chat_template(longer, add_generation_prompt=True, return_dict=True)["input_ids"])
        > 48
    )
    with pytest.raises(ValueError, match="--max_new_tokens"):
        fit_to_context(
            [{"role": "user", "content": "word " * 80}], tokenizer, context_length=64, reply_room=16
        )


def test_chat_command_reads_stdin_and_streams_each_reply(chat_model, monkeypatch, capsys):
    lines = ["Name a colour.", "", "word " * 80, "Say hello.", "/clear", "What is two plus two?"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    command = [
        "chat",
        str(chat_model),
        "--temperature",
        "0",
        "--max_new_tokens",
        "20",
        "--system",
        SYSTEM["content"],
    ]
    assert scratchgpt(command) == 0
    out, err = capsys.readouterr()
    assert "context of 64" in err  # the message longer than the context is refused and the chat goes on
    assert out.splitlines() == ["assistant> Blue.", "assistant> Hello!", "assistant> Four."]


def test_chat_on_the_fast_generation_path_gives_the_same_replies(
    chat_model, traced_fast_generation, monkeypatch, capsys
):
    model, _ = load_chat_model(str(chat_model), device="cpu")
    assert fast_generation_for("auto", model) is None  # a CPU: the first reply would wait for a compilation
    assert fast_generation_for("off", model) is None
    assert fast_generation_for("on", model)["cache_implementation"] == "static"
    with pytest.raises(ValueError, match="--fast_generation 'fast' is not one of auto, on, off"):
        fast_generation_for("fast", model)

    monkeypatch.setattr("sys.stdin", io.StringIO("Name a colour.\nSay hello.\nWhat is two plus two?\n"))
    command = ["chat", str(chat_model), "--temperature", "0", "--system", SYSTEM["content"]]
    assert scratchgpt([*command, "--fast_generation", "on"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "assistant> Blue.",
        "assistant> Hello!",
        "assistant> Four.",
    ]
    assert len(traced_fast_generation.graphs) == 1  # one compiled decoding step served every reply


def test_serve_answers_the_openai_client_streaming_and_not(chat_model):
    from openai import BadRequestError, OpenAI

    from hf_scratchgpt.serve.server import start_server

    with start_server(str(chat_model), port=0, device="cpu") as server:
        client = OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        assert [model.id for model in client.models.list()] == [str(chat_model)]
        messages = [SYSTEM, {"role": "user", "content": "Name a colour."}]
        reply = client.chat.completions.create(model=str(chat_model), messages=messages, temperature=0)
        assert reply.choices[0].message.content == "Blue." and reply.choices[0].finish_reason == "stop"
        tokenizer = AutoTokenizer.from_pretrained(chat_model)
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        answer = tokenizer("Blue.", add_special_tokens=False)["input_ids"]
        # usage counts the prompt as templated and the reply with its end-of-turn token
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(prompt), len(answer) + 1)
        chunks = list(
            client.chat.completions.create(
                model="merged",
                messages=messages,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Blue."
        assert (
            chunks[0].choices[0].delta.role == "assistant" and chunks[-2].choices[0].finish_reason == "stop"
        )
        assert chunks[-1].usage.total_tokens == reply.usage.total_tokens
        # A conversation longer than the 64-token context is cut to fit instead of failing.
        long = [{"role": "user", "content": "word " * 20}, {"role": "assistant", "content": "ok " * 20}] * 3
        reply = client.chat.completions.create(
            model="merged",
            messages=[SYSTEM, *long, {"role": "user", "content": "Say hello."}],
            temperature=0,
            max_tokens=500,
        )
        assert reply.choices[0].message.content == "Hello!"
        with pytest.raises(BadRequestError) as refused:  # one message longer than the context
            client.chat.completions.create(
                model="merged", messages=[{"role": "user", "content": "word " * 80}]
            )
        error = refused.value.response.json()["error"]
        assert "context of 64" in error["message"] and "max_tokens" in error["message"]
        assert error["code"] == "context_length_exceeded" and error["param"] == "messages"


def test_device_is_chosen_automatically_and_precision_suits_the_cpu(chat_model, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for wrong, named in [("cuda:0", "no CUDA device"), ("gpu", "is not a device")]:
        with pytest.raises(ValueError, match=named):
            resolve_device(wrong)
    # bf16 weights stay bf16 on a CPU with bf16 instructions and run in fp32 on one that would emulate them
    AutoModelForCausalLM.from_pretrained(chat_model, dtype=torch.bfloat16).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(chat_model).save_pretrained(tmp_path)
    for native, dtype in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(
            "hf_scratchgpt.serve.chat.native_bf16", lambda use_cpu=False, native=native: native
        )
        model, tokenizer = load_chat_model(str(tmp_path))
        assert model.dtype == dtype and model.device.type == "cpu" and tokenizer.chat_template
    assert load_chat_model(str(tmp_path), dtype="float32")[0].dtype == torch.float32
