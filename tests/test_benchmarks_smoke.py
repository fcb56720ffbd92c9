"""Every benchmark script runs end to end at a tiny size, so none silently rots (the real runs take minutes)."""

from __future__ import annotations

import json
import os
import random
import runpy
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def benchmark(name: str):
    return runpy.run_path(str(REPO / "benchmarks" / f"{name}.py"))["main"]


@pytest.fixture(scope="module")
def small_text(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = "the a cat dog fox bird sees eats runs past under big small red green old new house tree river".split()
    lines = [" ".join(rng.choice(words) for _ in range(40)) + "." for _ in range(300)]
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shakespeare_char_benchmark_runs_both_recipes_and_writes_ratios(small_text, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"other_benchmark": {"kept": True}}))
    result = benchmark("shakespeare_char")(
        ["--data", str(small_text), "--max_steps", "4", "--eval_steps", "2", "--warmup_steps", "1"],
        results_file=results,
        work=tmp_path,
    )
    saved = json.loads(results.read_text())
    assert saved["other_benchmark"] == {"kept": True} and saved["shakespeare_char"] == result
    for recipe in ("gpt2_recipe", "modern_recipe"):
        run = result[recipe]
        assert (
            run["steps"] == 4 and [step for step, _, _ in run["curve"]] == [2, 4] and run["train_seconds"] > 0
        )
    assert result["val_loss_modern_to_reference"] == pytest.approx(
        result["modern_recipe"]["val_loss"] / result["gpt2_recipe"]["val_loss"], abs=1e-3
    )
    assert result["machine"]["cpu"] and result["load_average_before"] >= 0
    assert result["gpt2_recipe"]["train_wall_seconds"] > 0


def test_shakespeare_time_to_target_is_interpolated_between_evaluations():
    seconds_to_reach = runpy.run_path(str(REPO / "benchmarks" / "shakespeare_char.py"))["seconds_to_reach"]
    curve = [(100, 10.0, 2.2), (200, 20.0, 1.9), (300, 30.0, 1.8)]
    assert seconds_to_reach(curve, 1.88) == pytest.approx(22.0)
    assert seconds_to_reach(curve, 2.5) == 10.0 and seconds_to_reach(curve, 1.5) is None


def test_main_job_benchmark_compares_the_pretrain_stage_with_a_plain_loop(small_text, tmp_path):
    results = tmp_path / "results.json"
    result = benchmark("main_job")(
        [
            "--time_budget",
            "0.1",
            "--data",
            str(small_text),
            "--tokenizer_vocab_size",
            "300",
            "--precision",
            "fp32",
            "--budget_probe_steps",
            "2",
            "--max_eval_blocks",
            "4",
            "--preset",
            "tiny",
            "--model_overrides",
            "n_layer=1,n_embd=32,n_head=2,n_positions=64",
        ],
        results_file=results,
        work=tmp_path,
    )
    assert json.loads(results.read_text())["main_job"] == result
    ours, plain = result["ours"], result["plain_loop"]
    assert ours["train_steps"] > 0 and plain["train_steps"] > 0
    assert plain["train_seconds"] == ours["wall_seconds"]  # the same wall time for both
    assert result["bits_per_byte_ours_to_plain_loop"] == pytest.approx(
        ours["val_bits_per_byte"] / plain["val_bits_per_byte"], abs=1e-3
    )
    assert result["device"].startswith(("cpu: ", "cuda: "))


def test_speedrun_budget_benchmark_records_what_the_budget_bought(small_text, tmp_path):
    results = tmp_path / "results.json"
    result = benchmark("speedrun_budget")(
        [
            "--time_budget",
            "0.6",
            "--data",
            str(small_text),
            "--txt_mode",
            "line",
            "--tokenizer_vocab_size",
            "300",
            "--budget_probe_steps",
            "2",
            "--max_eval_blocks",
            "4",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
            "--precision",
            "fp32",
            "--preset",
            "tiny",
            "--model_overrides",
            "n_layer=1,n_embd=32,n_head=2,n_positions=64",
        ],
        results_file=results,
        run_dir=tmp_path / "run",
    )
    saved = json.loads(results.read_text())["speedrun_budget"]
    assert list(saved.values()) == [result]
    assert (
        result["train_steps"] > 0
        and result["wall_minutes"] > 0
        and result["device"].startswith(("cpu: ", "cuda: "))
    )


def test_train_throughput_benchmark_times_every_model_from_the_same_start(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"other_benchmark": {"kept": True}}))
    result = benchmark("train_throughput")(
        [
            "--shapes",
            "tiny",
            "--settings",
            "fp32,fp32+compile",
            "--compile_backend",
            "aot_eager",
            "--models",
            "ours,nanogpt,hf_gpt2,ours_plain_loss",
            "--rounds",
            "2",
            "--steps_per_round",
            "1",
            "--warmup",
            "1",
            "--trainer_steps",
            "2",
            "--peak_tflops",
            "1",
        ],
        results_file=results,
    )
    saved = json.loads(results.read_text())
    assert saved["other_benchmark"] == {"kept": True} and saved["train_throughput"] == result
    keys = {
        f"{m} {s}"
        for m in ("ours", "nanogpt", "hf_gpt2", "ours_plain_loss")
        for s in ("fp32", "fp32+compile")
    }
    assert set(result["tokens_per_second"]) == keys and all(
        v > 0 for v in result["tokens_per_second"].values()
    )
    assert set(result["speedup_of_ours_best_settings"]) == {"nanogpt", "hf_gpt2", "ours_plain_loss"}
    # Same weights, same batches: after 3 steps the losses agree (the loss without logits is the same loss).
    losses = result["final_loss"]
    assert losses["ours fp32"] == pytest.approx(losses["ours_plain_loss fp32"], abs=1e-3)
    assert losses["ours fp32"] == pytest.approx(losses["hf_gpt2 fp32"], abs=1e-3)
    assert losses["ours fp32"] == pytest.approx(
        losses["nanogpt fp32"], abs=0.05
    )  # exact GELU, one more target
    assert losses["ours fp32+compile"] == pytest.approx(losses["ours fp32"], abs=1e-3)
    trainer = result["trainer"]
    assert trainer["optim"] == "adamw_torch_fused" and trainer["trainer_to_plain_loop"] > 0
    assert 0 < result["mfu"]["ours fp32"] < 1 and result["machine"]["cpu"] and result["clock"]


def test_train_throughput_counts_flops_as_nanogpt_does():
    flops_per_token = runpy.run_path(str(REPO / "benchmarks" / "train_throughput.py"))["flops_per_token"]
    gpt2 = dict(vocab=50257, width=768, layers=12, heads=12, context=1024)
    # 6 x GPT-2 124M's parameters without the position table, + 12 x layers x width x context for attention
    assert flops_per_token(gpt2) == 6 * 123_653_376 + 12 * 12 * 768 * 1024


def test_generation_benchmark_checks_identical_tokens_at_every_batch_size(tmp_path):
    results = tmp_path / "results.json"
    result = benchmark("generation")(
        [
            "--shapes",
            "tiny",
            "--new_tokens",
            "4",
            "--rounds",
            "1",
            "--batch_sizes",
            "1,2",
            "--compile_backend",
            "eager",
        ],
        results_file=results,
    )
    assert json.loads(results.read_text())["generation"] == result
    for batch in ("batch 1", "batch 2"):
        measured = result[batch]
        assert measured["identical_tokens"]
        assert set(measured["tokens_per_second"]) == {"hf_gpt2", "hf_gpt2 fast", "ours", "ours fast"}
        assert measured["speedup_over_hf_gpt2"]["hf_gpt2"] == 1.0
    assert result["machine"]["torch"] and result["new_tokens"] == 4
