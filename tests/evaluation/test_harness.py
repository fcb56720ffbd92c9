"""lm-evaluation-harness wiring: task resolution, exact log-likelihoods, batching, truncation, scoring.

The harness is proven right from both ends: its log-likelihood of a request equals a hand-summed
log-probability of the model, and planted scorers (an oracle that knows the answers, a constant one that
knows nothing) get exactly 100% and exactly the constant's share through the whole task pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from fakes.scorers import PlantedScorer
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from eval import run_lm_eval
from hf_scratchgpt.evaluation.harness import (
    TaskError,
    evaluate_tasks,
    random_baselines,
    resolve_tasks,
    results_table,
    write_task_yamls,
)

N_DOCS = 24


pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture(scope="module")
def task_files(tmp_path_factory) -> dict[str, Path]:
    """Three files, one per scoring path: choices after one context, contexts before one continuation,
    and a single continuation. Gold answers cycle through every position, so guessing is exactly chance."""
    folder = tmp_path_factory.mktemp("tasks")
    words = ["red", "green", "blue", "yellow"]
    choice = [
        {"query": f"Question {i}: which colour is number {i % 4}?", "choices": words, "gold": i % 4}
        for i in range(N_DOCS)
    ]
    wino = [
        {
            "context_options": [f"Ann met Bo on day {i} so Ann", f"Ann met Bo on day {i} so Bo"],
            "continuation": "was happy.",
            "gold": i % 2,
        }
        for i in range(N_DOCS)
    ]
    lambada = [{"context": f"Count to {i}: one two", "continuation": " three"} for i in range(N_DOCS)]
    return {
        "choice": write_jsonl(folder / "colours.jsonl", choice),
        "wino": write_jsonl(folder / "wino.jsonl", wino),
        "lambada": write_jsonl(folder / "count.jsonl", lambada),
    }


def oracle_for(files: dict[str, Path]) -> PlantedScorer:
    """Knows every gold answer; finds the document by the end of the (few-shot) context."""
    choice = [json.loads(line) for line in files["choice"].read_text().splitlines()]
    wino = [json.loads(line) for line in files["wino"].read_text().splitlines()]
    right = {(doc["query"], " " + doc["choices"][doc["gold"]]) for doc in choice}
    right |= {(doc["context_options"][doc["gold"]], " " + doc["continuation"]) for doc in wino}

    def is_right(context: str, continuation: str) -> bool:
        if continuation == " three":
            return True
        return any(context.endswith(ctx) and continuation == cont for ctx, cont in right)

    return PlantedScorer(is_right)


def test_resolve_tasks(tmp_path, task_files):
    data_dir = tmp_path / "eval"
    data_dir.mkdir()
    (data_dir / "arc_easy.jsonl").write_text(task_files["choice"].read_text())
    local, standard = resolve_tasks(
        [
            "arc_easy_local",
            str(task_files["wino"]),
            f"lambada={task_files['lambada']}",
            "mine=" + str(task_files["choice"]),
            "hellaswag",
        ],
        data_dir=data_dir,
    )
    assert [(t.name, t.template) for t in local] == [
        ("arc_easy_local", "arc.yaml"),
        ("wino_file", "winogrande.yaml"),
        ("count_file", "lambada.yaml"),
        ("mine", "multiple_choice.yaml"),
    ]
    assert standard == ["hellaswag"]
    as_list = tmp_path / "listed.json"  # a JSON list, indented over many lines
    as_list.write_text(
        json.dumps([json.loads(line) for line in task_files["wino"].read_text().splitlines()], indent=2)
    )
    assert resolve_tasks([str(as_list)])[0][0].template == "winogrande.yaml"
    with pytest.raises(TaskError, match="--data_dir"):
        resolve_tasks(["boolq_local"])
    with pytest.raises(TaskError, match="does not exist"):
        resolve_tasks(["boolq_local"], data_dir=data_dir)
    with pytest.raises(TaskError, match="no known schema"):
        resolve_tasks([str(write_jsonl(tmp_path / "odd.jsonl", [{"text": "x"}]))])
    with pytest.raises(TaskError, match="given twice"):
        resolve_tasks([str(task_files["wino"])] * 2)


def test_oracle_scores_100_percent_and_constant_scores_chance(task_files):
    tasks = [str(path) for path in task_files.values()]
    oracle = evaluate_tasks(oracle_for(task_files), tasks, num_fewshot=2)
    constant = evaluate_tasks(PlantedScorer(lambda context, continuation: True), tasks, num_fewshot=2)

    for name in ("colours_file", "wino_file", "count_file"):
        assert oracle["results"][name]["acc,none"] == 1.0
        assert len(oracle["samples"][name]) == N_DOCS
    assert oracle["results"]["colours_file"]["acc_norm,none"] == 1.0
    # Equal scores make the harness pick the first choice; gold is first for exactly 1/4 and 1/2 of docs.
    assert constant["results"]["colours_file"]["acc,none"] == pytest.approx(0.25)
    assert constant["results"]["wino_file"]["acc,none"] == pytest.approx(0.5)
    assert random_baselines(constant) == {"colours_file": 0.25, "wino_file": 0.5, "count_file": None}
    # Few-shot contexts end with the document itself and start with two solved examples.
    first = oracle["samples"]["colours_file"][0]["arguments"][0][0]
    assert first.endswith("Question 0: which colour is number 0?") and first.count("Question") == 3
    table = results_table(constant)
    # task, shots, metric, accuracy, stderr, random guess, scored examples
    assert "| colours_file | 2 | acc | 0.25 | " in table and "| 0.25 | 24 |" in table


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_loglikelihood_equals_hand_summed_log_probabilities(tokenizer, recipe):
    model = tiny_model(recipe)
    short = ("The quick brown fox", " jumps over the lazy dog.")
    # Longer than the 64-token context: lm-eval keeps the last 65 tokens (context + continuation) and
    # feeds the first 64 of them.
    long = (" ".join(["Once upon a time there was a little robot."] * 8), " It loved stories.")

    def hand_summed(context: str, continuation: str) -> float:
        context_ids = tokenizer(context).input_ids
        ids = context_ids + tokenizer(context + continuation).input_ids[len(context_ids) :]
        n_continuation = len(ids) - len(context_ids)
        window = ids[-(model.config.max_position_embeddings + 1) :]
        with torch.no_grad():
            log_probs = model(torch.tensor([window[:-1]])).logits[0].log_softmax(-1)
        targets = torch.tensor(window[1:])
        return log_probs[torch.arange(len(targets)), targets][-n_continuation:].sum().item()

    assert len(tokenizer(long[0]).input_ids) > model.config.max_position_embeddings
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=1)
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate([short, long])]
    scores = [score for score, _ in lm.loglikelihood(requests)]
    assert scores == pytest.approx([hand_summed(*short), hand_summed(*long)], abs=1e-4)


def test_batch_size_one_equals_batch_size_n(tokenizer):
    model = tiny_model("modern")
    pairs = [(f"Story {i}: once upon a time" + " there" * i, " was a robot.") for i in range(6)]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    one = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=1).loglikelihood(requests)
    many = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=4).loglikelihood(requests)
    assert [score for score, _ in many] == pytest.approx([score for score, _ in one], abs=2e-5)
    assert [greedy for _, greedy in many] == [greedy for _, greedy in one]


def test_script_on_bundled_tasks_writes_results(tmp_path, tokenizer, shared_data):
    model_dir = tmp_path / "model"
    tiny_model(max_position_embeddings=256).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "out"
    metrics = run_lm_eval.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--tasks",
            "arc_easy_local,winogrande_local",
            "--data_dir",
            str(shared_data / "eval"),
            "--limit",
            "4",
            "--num_fewshot",
            "1",
            "--batch_size",
            "2",
            "--device",
            "cpu",
            "--output_dir",
            str(out),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["results"]["arc_easy_local"]["acc,none"] <= 1
    assert results["random_baseline"] == {"arc_easy_local": 0.25, "winogrande_local": 0.5}
    assert results["n-shot"] == {"arc_easy_local": 1, "winogrande_local": 1}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["winogrande_local/acc"] == results["results"]["winogrande_local"]["acc,none"]
    assert len((out / "samples_arc_easy_local.jsonl").read_text().splitlines()) == 4
    table = (out / "results.md").read_text()
    assert "| arc_easy_local | 1 | acc | " in table and "At most 4 examples per task (`--limit`)" in table


def test_script_on_another_causal_lm_and_file_tasks(tmp_path, tokenizer, task_files):
    """transformers' own GPT-2 class, and generic files by path: multiple choice and LAMBADA-style."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model_dir = tmp_path / "gpt2"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "out"
    metrics = run_lm_eval.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--tasks",
            f"{task_files['choice']},lambada={task_files['lambada']}",
            "--limit",
            "6",
            "--device",
            "cpu",
            "--output_dir",
            str(out),
        ]
    )
    assert metrics["count_file/perplexity"] > 1 and 0 <= metrics["count_file/acc"] <= 1
    assert metrics["colours_file/random_baseline"] == 0.25 and metrics["count_file/random_baseline"] is None
    results = json.loads((out / "results.json").read_text())
    assert results["configs"]["count_file"]["output_type"] == "loglikelihood"
    assert len((out / "samples_count_file.jsonl").read_text().splitlines()) == 6


def test_without_the_package_through_remote_code(tmp_path, tokenizer, task_files):
    """A user with only lm-eval installed: ``model_args="pretrained=DIR,trust_remote_code=True"`` in a fresh
    process where importing hf_scratchgpt fails gives the same scores as this package's in-process run."""
    model_dir, tasks_dir = tmp_path / "model", tmp_path / "tasks"
    tiny_model("modern").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    tasks_dir.mkdir()
    write_task_yamls(resolve_tasks([str(task_files["choice"])])[0], tasks_dir)
    code = f"""
import json, sys
sys.modules["hf_scratchgpt"] = None  # not installed
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
results = simple_evaluate(model="hf", model_args="pretrained={model_dir},trust_remote_code=True,device=cpu",
                          tasks=["colours_file"], limit=6, task_manager=TaskManager(include_path="{tasks_dir}",
                          include_defaults=False))
print(json.dumps([s["filtered_resps"] for s in results["samples"]["colours_file"]]))
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = [ll for doc in json.loads(done.stdout.strip().splitlines()[-1]) for ll, _ in doc]
    local = evaluate_tasks(str(model_dir), [str(task_files["choice"])], limit=6, device="cpu")
    in_package = [
        float(ll) for sample in local["samples"]["colours_file"] for ll, _ in sample["filtered_resps"]
    ]
    assert len(remote) == 24 and remote == pytest.approx(in_package, abs=1e-4)


def test_chat_template_for_instruction_models(tokenizer, task_files):
    """With ``apply_chat_template`` the prompt (few-shot examples as earlier turns) is a chat conversation and
    each choice is scored as the start of the assistant's reply."""
    lm = HFLM(pretrained=tiny_model(max_position_embeddings=256), tokenizer=tokenizer, device="cpu")
    results = evaluate_tasks(
        lm, [str(task_files["choice"])], limit=2, num_fewshot=1, apply_chat_template=True
    )
    context, continuation = results["samples"]["colours_file"][0]["arguments"][0]
    assert context.startswith("<|im_start|>user\nQuestion") and context.endswith("<|im_start|>assistant\n")
    assert context.count("<|im_start|>user") == 2 and continuation == "red"
