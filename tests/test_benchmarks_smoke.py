"""Every benchmark script runs end to end at a tiny size, so none silently rots (the real runs take minutes)."""

from __future__ import annotations

import json
import os
import runpy

import pytest
from conftest import REPO


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


def benchmark(name: str):
    return runpy.run_path(str(REPO / "benchmarks" / f"{name}.py"))["main"]


def test_train_throughput_benchmark_times_every_model_from_the_same_start(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"other_benchmark": {"kept": True}}))
    result = benchmark("train_throughput")(
        ["--shapes", "tiny", "--settings", "fp32,fp32+compile", "--compile_backend", "aot_eager",
         "--models", "ours,nanogpt,hf_gpt2,ours_plain_loss", "--rounds", "2", "--steps_per_round", "1",
         "--warmup", "1", "--trainer_steps", "2", "--peak_tflops", "1"],
        results_file=results,
    )  # fmt: skip
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
        ["--shapes", "tiny", "--new_tokens", "4", "--rounds", "1", "--batch_sizes", "1,2",
         "--compile_backend", "eager"],
        results_file=results,
    )  # fmt: skip
    assert json.loads(results.read_text())["generation"] == result
    for batch in ("batch 1", "batch 2"):
        measured = result[batch]
        assert measured["identical_tokens"]
        assert set(measured["tokens_per_second"]) == {"hf_gpt2", "hf_gpt2 fast", "ours", "ours fast"}
        assert measured["speedup_over_hf_gpt2"]["hf_gpt2"] == 1.0
    assert result["machine"]["torch"] and result["new_tokens"] == 4
