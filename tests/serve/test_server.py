"""``scratchgpt serve`` as a client sees it: a real server on 127.0.0.1 driven by the ``openai`` client.

The served model is a tiny untrained one whose greedy continuations are long and decisive, so the text
through the server (streamed or not) can be compared with ``model.generate()`` called directly; the
trained chat model (stops at the end of its turn, context cutting) is in test_chat_serve.py.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

from hf_scratchgpt.cli import main as scratchgpt
from hf_scratchgpt.model.tokenizer_sync import align_model_and_tokenizer
from hf_scratchgpt.serve.generation import StopStringCutter
from hf_scratchgpt.serve.server import API_KEY_ENV, add_arguments, is_loopback, server_options, start_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.usefixtures("one_thread")
QUESTION = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tokenizer) -> Path:
    tokenizer = copy.deepcopy(tokenizer)  # saving aligns its context length; the shared one stays as it is
    model = tiny_model("gpt2")
    align_model_and_tokenizer(model, tokenizer)
    folder = tmp_path_factory.mktemp("served") / "tiny-chat"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_folder):
    with start_server(str(model_folder), device="cpu") as handle:
        yield handle


def client_for(server, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0, timeout=60)


def get_json(url: str, headers: dict | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def health(server) -> dict:
    status, body = get_json(server.url.removesuffix("/v1") + "/health")
    assert status == 200
    return body


def greedy_text(model_folder: Path, prompt_ids: list[int], max_new_tokens: int, **kwargs) -> tuple[str, int]:
    """The reply text and its token count from ``model.generate()`` called directly."""
    model = AutoModelForCausalLM.from_pretrained(model_folder)
    input_ids = torch.tensor([prompt_ids])
    new = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)[
        0, len(prompt_ids) :
    ]
    return AutoTokenizer.from_pretrained(model_folder).decode(new, skip_special_tokens=True), len(new)


@pytest.mark.compat  # serve with the openai client, in the compatibility lane
def test_greedy_replies_equal_generate_streamed_or_not(server, model_folder):
    client, name = client_for(server), str(model_folder)
    prompt = AutoTokenizer.from_pretrained(model_folder).apply_chat_template(
        QUESTION, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    expected, count = greedy_text(model_folder, prompt, 20)
    # the cached generate (what the server runs) and a full recompute at each step agree
    assert count == 20 and greedy_text(model_folder, prompt, 20, use_cache=False)[0] == expected
    reply = client.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=20)
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(prompt), 20)
    stream = client.chat.completions.create(
        model=name, messages=QUESTION, temperature=0, max_completion_tokens=20, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == expected

    text_prompt = "The quick brown fox"
    prompt = AutoTokenizer.from_pretrained(model_folder)(text_prompt)["input_ids"]
    expected, count = greedy_text(model_folder, prompt, 12)
    completion = client.completions.create(model=name, prompt=text_prompt, temperature=0, max_tokens=12)
    assert completion.choices[0].text == expected and completion.usage.completion_tokens == count
    stream = client.completions.create(
        model=name, prompt=text_prompt, temperature=0, max_tokens=12, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream) == expected


def test_serve_on_the_fast_generation_path_gives_the_same_replies(model_folder, traced_fast_generation):
    prompt = AutoTokenizer.from_pretrained(model_folder).apply_chat_template(
        QUESTION, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    expected, _ = greedy_text(model_folder, prompt, 20)
    with start_server(str(model_folder), device="cpu", fast_generation="on") as server:
        # Generations run in threads of their own: compiled steps, no CUDA graphs (recorded per thread).
        assert traced_fast_generation.calls == [{"cuda_graphs": False}]
        client, name = client_for(server), str(model_folder)
        for _ in range(2):
            reply = client.chat.completions.create(
                model=name, messages=QUESTION, temperature=0, max_tokens=20
            )
            assert reply.choices[0].message.content == expected
    assert len(traced_fast_generation.graphs) == 1


def test_stop_strings_seed_and_bad_requests(server, model_folder):
    client, name = client_for(server), str(model_folder)
    full = client.chat.completions.create(model=name, messages=QUESTION, temperature=0, max_tokens=20)
    full = full.choices[0].message.content
    stop = full[6:9]
    for stream in (False, True):
        reply = client.chat.completions.create(
            model=name, messages=QUESTION, temperature=0, max_tokens=20, stop=[stop, "never"], stream=stream
        )
        text = (
            "".join(c.choices[0].delta.content or "" for c in reply)
            if stream
            else reply.choices[0].message.content
        )
        assert text == full[: full.index(stop)]
    sampled = [
        client.chat.completions.create(model=name, messages=QUESTION, temperature=2, max_tokens=20, seed=seed)
        .choices[0]
        .message.content
        for seed in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1] != sampled[2]

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=name, messages=QUESTION, n=2)
    assert refused.value.response.json()["error"]["param"] == "n"
    with pytest.raises(openai.BadRequestError) as refused:  # the prompt leaves no room in the 64 positions
        client.completions.create(model=name, prompt="fox " * 70)
    assert "context of 64" in refused.value.response.json()["error"]["message"]


def test_unknown_model_names_are_404_and_the_folder_name_is_accepted(server, model_folder):
    client = client_for(server)
    for call in (
        lambda model: client.chat.completions.create(model=model, messages=QUESTION, max_tokens=2),
        lambda model: client.completions.create(model=model, prompt="fox", max_tokens=2),
        lambda model: client.models.retrieve(model),
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call("gpt-4o")
        assert missing.value.response.json()["error"] == {
            "message": f"The model `gpt-4o` does not exist: this server serves `{model_folder}` (GET /v1/models lists it).",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
        call("tiny-chat")  # the folder's own name
    assert [model.id for model in client.models.list()] == [str(model_folder)]


def test_api_key_is_required_as_openai_clients_send_it(model_folder):
    with start_server(str(model_folder), device="cpu", api_key="sk-right") as server:
        status, body = get_json(server.url + "/models")  # no Authorization header
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert (
            set(body["error"]) == {"message", "type", "param", "code"}
            and "Bearer" in body["error"]["message"]
        )
        with pytest.raises(openai.AuthenticationError) as refused:
            client_for(server, "sk-wrong").chat.completions.create(model="tiny-chat", messages=QUESTION)
        assert refused.value.response.json()["error"]["message"] == "Incorrect API key provided."
        client = client_for(server, "sk-right")
        assert client.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=3).usage
        assert health(server)["status"] == "ok"  # load balancers probe without a key


def test_listening_beyond_this_machine_needs_a_key(model_folder, monkeypatch, capsys):
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.7", "example.com"]))
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match="--api_key"):
        start_server(str(model_folder), host="0.0.0.0")
    assert scratchgpt(["serve", str(model_folder), "--host", "0.0.0.0"]) == 2  # before loading the model
    assert "--api_key" in (err := capsys.readouterr().err) and API_KEY_ENV in err
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.setenv(API_KEY_ENV, "sk-from-env")
    assert (
        server_options(parser.parse_args([str(model_folder), "--host", "0.0.0.0"]))["api_key"]
        == "sk-from-env"
    )
    assert (
        server_options(parser.parse_args([str(model_folder), "--api_key", "sk-flag"]))["api_key"] == "sk-flag"
    )


class GenerateProbe:
    """Wraps ``model.generate`` to count the generations that run at the same time. Each call waits (up to
    ``overlap_wait`` seconds) for a second one to start beside it, so any overlap the server allows happens;
    with ``gate`` each call also waits until the test opens it."""

    def __init__(self, generate, overlap_wait: float = 0.0, gate: threading.Event | None = None):
        self.generate, self.overlap_wait, self.gate = generate, overlap_wait, gate
        self.lock, self.running, self.most_running, self.calls = threading.Lock(), 0, 0, 0
        self.started = threading.Event()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most_running = max(self.most_running, self.running)
        self.started.set()
        try:
            deadline = time.monotonic() + self.overlap_wait
            while self.running < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.gate is not None:
                assert self.gate.wait(60), "the test never opened the gate"
            return self.generate(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def ask_in_parallel(server, count: int, stream: bool = False) -> list[str]:
    def ask(_):
        reply = client_for(server).chat.completions.create(
            model="tiny-chat", messages=QUESTION, temperature=0, max_tokens=5, stream=stream
        )
        return (
            "".join(c.choices[0].delta.content or "" for c in reply)
            if stream
            else reply.choices[0].message.content
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(ask, range(count)))


@pytest.mark.parametrize("max_concurrent", [1, 2])
def test_generations_beyond_max_concurrent_wait_their_turn(model_folder, monkeypatch, max_concurrent):
    with start_server(str(model_folder), device="cpu", max_concurrent=max_concurrent) as server:
        model = server.engine.model
        probe = GenerateProbe(model.generate, overlap_wait=0.5)
        monkeypatch.setattr(model, "generate", probe)
        replies = ask_in_parallel(server, 3, stream=max_concurrent == 1)
        assert len(set(replies)) == 1 and replies[0] and probe.calls == 3
        assert probe.most_running == max_concurrent  # 2 proves the probe sees overlap when it is allowed
        assert health(server) == {"status": "ok", "generations_running": 0, "generations_waiting": 0}


def test_health_answers_while_a_generation_runs_and_counts_the_queue(server, monkeypatch):
    gate = threading.Event()
    probe = GenerateProbe(server.engine.model.generate, gate=gate)
    monkeypatch.setattr(server.engine.model, "generate", probe)
    with ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(ask_in_parallel, server, 1)
            assert probe.started.wait(30)
            assert health(server) == {"status": "ok", "generations_running": 1, "generations_waiting": 0}
            second = pool.submit(ask_in_parallel, server, 1, True)
            deadline = time.monotonic() + 30
            while health(server)["generations_waiting"] != 1:
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.02)
            assert probe.calls == 1  # the second waits for the first's slot
        finally:
            gate.set()
        assert first.result(60) == second.result(60)
    assert probe.calls == 2 and probe.most_running == 1


def test_stop_string_cutter_holds_back_what_may_start_a_stop_string():
    cutter = StopStringCutter(["END", "xyz"])
    assert [cutter.feed(piece) for piece in ["Hello E", "N", "ding x", "y!"]] == [
        "Hello ",
        "",
        "ENding ",
        "xy!",
    ]
    assert cutter.feed(" and EN") == " and " and cutter.feed("D more") == "" and cutter.stopped
    assert cutter.feed("later") == ""
    open_ended = StopStringCutter(["END"])
    assert open_ended.feed("tail E") == "tail " and open_ended.flush() == "E"


class SlowTokens(StoppingCriteria):
    """Never stops a generation; makes each token take 50 ms, so a reply of 30 tokens lasts 1.5 s."""

    def __call__(self, input_ids, scores, **kwargs):
        time.sleep(0.05)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_a_client_leaving_mid_stream_stops_its_generation(server, monkeypatch):
    generate, lengths = server.engine.model.generate, []

    def slow_generate(*args, **kwargs):
        output = generate(*args, stopping_criteria=kwargs.pop("stopping_criteria") + [SlowTokens()], **kwargs)
        lengths.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    monkeypatch.setattr(server.engine.model, "generate", slow_generate)
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": "tiny-chat", "messages": QUESTION, "max_tokens": 30, "temperature": 0, "stream": True}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.fp.readline()  # the first chunk came
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    deadline = time.monotonic() + 30
    while not lengths:  # the generation ends (and gives its slot back) well before its 30 tokens
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert lengths[0] < 30 and health(server)["generations_running"] == 0
