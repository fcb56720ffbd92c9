"""The main job end to end: stages hand over folders, a rerun resumes, a failure says how to resume."""

from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk
from transformers import AutoModelForCausalLM

from hf_scratchgpt.train.arguments import InvalidArgumentsError
from hf_scratchgpt.train.budget import MOST_EPOCHS, SIZE_LADDER
from hf_scratchgpt.train.hardware import cpu_model_name
from hf_scratchgpt.train.pretraining import corpus_prompts
from hf_scratchgpt.train.speedrun import Stage, StageFailed, check_run_dir, run_stages
from training import pretrain, speedrun


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(1)
    lines = [
        " ".join(f"The {rng.choice(['cat', 'dog', 'fox'])} {rng.choice(['runs', 'eats'])}." for _ in range(4))
        for _ in range(200)
    ]
    path = tmp_path_factory.mktemp("corpus") / "lines.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


def small_job(run_dir: Path, corpus: Path, *extra: str) -> list[str]:
    return [
        "--run_dir",
        str(run_dir),
        "--data",
        str(corpus),
        "--txt_mode",
        "line",
        "--tokenizer_vocab_size",
        "300",
        "--preset",
        "tiny",
        "--model_overrides",
        "n_layer=1,n_embd=32,n_head=2,max_position_embeddings=32",
        "--eval_steps",
        "3",
        "--logging_steps",
        "3",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        *extra,
    ]


def test_stages_hand_over_folders_and_a_rerun_skips_them(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    report = speedrun.main(small_job(run, corpus, "--max_steps", "6", "--time_budget", "10"))
    for stage in ("data", "tokenizer", "pretrain", "samples", "export"):
        assert (run / stage / "metrics.json").is_file(), stage
    assert {p.name for p in run.iterdir()} >= {
        "report.md",
        "metrics.json",
        "loss_curves_pretrain.png",
        "speedrun.json",
        "model",
    }
    data = json.loads((run / "data" / "metrics.json").read_text())
    tokenizer = json.loads((run / "tokenizer" / "metrics.json").read_text())
    assert (
        tokenizer["train_documents"] == data["train_documents"] == 180
    )  # the tokenizer saw the train split only
    pretrained = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert (
        pretrained["max_steps"] == 6 and pretrained["tokens_seen"] == 6 * 16 * 32
    )  # explicit steps: no budget
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert model.num_parameters() == pretrained["num_parameters"]
    # The export stage checked the in-tree and GGUF exports; the card shows that and every stage's data rows.
    card = (run / "pretrain" / "README.md").read_text()
    for row in ("Export parity", "| documents |", "| bytes per token (validation text) |"):
        assert row in card, row
    assert (run / "export" / "hf" / "config.json").is_file()

    text = report.read_text()
    merged = json.loads((run / "metrics.json").read_text())
    assert set(merged) >= {"run", "data", "tokenizer", "pretrain", "samples"}
    for fact in (
        pretrained["machine"]["cpu"],
        f"**Precision**: {pretrained['precision']}",
        "**Time budget**: 10 min",
        "| training tokens seen |",
        "## Samples: samples",
    ):
        assert fact in text, fact
    # One validation loss per run: one table row, the number pretraining measured on every validation block.
    assert text.count("| validation loss |") == 1
    assert f"| validation loss | {pretrained['eval_loss']:.4g}" in text
    assert "| validation bits per byte |" in text
    stages = merged["run"]["stages"]
    assert [entry["status"] for entry in stages.values()][:5] == ["done"] * 5
    assert all(stages[name]["seconds"] > 0 for name in ("data", "tokenizer", "pretrain", "samples"))
    # Without --task_data_dir, fine-tuning and evaluation are skipped with a notice, not a crash.
    skipped = {name: entry for name, entry in stages.items() if entry["status"] == "skipped"}
    assert set(skipped) == {"classifier", "sft", "dpo", "eval_lm", "eval_classification", "eval_instruction"}
    assert all("--task_data_dir" in entry["reason"] for entry in skipped.values())

    with pytest.raises(FileExistsError, match="--resume"):
        speedrun.main(small_job(run, corpus, "--max_steps", "6"))
    capsys.readouterr()
    speedrun.main(small_job(run, corpus, "--max_steps", "6", "--resume"))
    assert capsys.readouterr().out.count("already complete") == 5
    assert json.loads((run / "speedrun.json").read_text())["stages"]["pretrain"]["status"] == "reused"


def test_a_failing_stage_keeps_earlier_outputs_and_says_how_to_resume(corpus, tmp_path):
    run = tmp_path / "run"
    # A block longer than the model's context: pretraining refuses it (before tokenizing).
    with pytest.raises(
        SystemExit, match=r"(?s)stage 'pretrain' failed .*intact \(data, tokenizer\).*--resume"
    ):
        speedrun.main(small_job(run, corpus, "--max_steps", "2", "--block_size", "64"))
    assert (run / "data" / "metrics.json").is_file() and (run / "tokenizer" / "metrics.json").is_file()
    assert not (run / "pretrain" / "metrics.json").exists()
    assert json.loads((run / "speedrun.json").read_text())["stages"]["pretrain"]["status"] == "failed"


def test_a_time_budget_sizes_the_model_and_the_steps(corpus, tmp_path):
    out = tmp_path / "pretrain"
    metrics = pretrain.main(
        [
            "--data",
            str(corpus),
            "--txt_mode",
            "line",
            "--tokenizer_name_or_path",
            "byte",
            "--output_dir",
            str(out),
            "--time_budget",
            "0.75",
            "--budget_probe_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--max_eval_blocks",
            "4",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "steps",
        ]
    )
    plan = json.loads((out / "budget.json").read_text())
    assert (
        plan["size"]["name"] in {rung.name for rung in SIZE_LADDER}
        and "the largest model" in plan["size_rule"]
    )
    assert plan["corpus_tokens"] > 0 and "epochs of the corpus" in plan["size_rule"]
    # The Trainer's max_steps is only a bound (ten times the plan, at most 16 epochs): the schedule follows the clock.
    assert metrics["max_steps"] == plan["planned_steps"] >= 10 and metrics["budget"] == plan
    assert 0 < metrics["train_steps"] <= 10 * plan["planned_steps"]
    assert metrics["tokens_seen"] == metrics["train_steps"] * 2 * metrics["block_size"]
    trainer_state = json.loads((out / "trainer_state.json").read_text())
    most_epochs = int(MOST_EPOCHS * plan["corpus_tokens"] * plan["planned_steps"] / plan["planned_tokens"])
    assert trainer_state["max_steps"] == min(10 * plan["planned_steps"], most_epochs)
    # A tiny corpus: the run stops after 16 epochs, fully decayed.
    assert metrics["epoch"] <= MOST_EPOCHS + 0.1
    assert metrics["non_embedding_parameters"] < metrics["num_parameters"]
    assert metrics["device"] == f"cpu: {cpu_model_name()}" and metrics["better_than_chance"]


def fake_stage(name: str, run: Path, **settings) -> Stage:
    """A stage whose command only records the arguments it got and writes its metrics.json."""
    out = run / name
    code = (
        "import json, pathlib, sys; out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True); "
        "(out / 'metrics.json').write_text(json.dumps({'argv': sys.argv[2:]}))"
    )
    return Stage(name, [sys.executable, "-c", code, str(out)], out, **settings)


def test_budget_shares_reserves_skips_and_resume(tmp_path):
    run = tmp_path / "run"
    stages = [
        fake_stage("first", run),
        fake_stage("big", run, weight=0.75, budget_flag="--time_budget"),
        fake_stage("small", run, weight=0.25, budget_flag="--time_budget", reserve_seconds=30),
        fake_stage("missing", run, skip_reason="no data here", reserve_seconds=1000),
        fake_stage("last", run, reserve_seconds=60),
    ]
    record = run_stages(stages, run, budget_minutes=10, resume=False, resume_command="again")
    statuses = {name: entry["status"] for name, entry in record["stages"].items()}
    assert statuses == {"first": "done", "big": "done", "small": "done", "missing": "skipped", "last": "done"}
    big = record["stages"]["big"]["budget_seconds"]
    # 600 s minus what the later stages that will run need (30 + 60, not the skipped one's 1000), 3/4 of it.
    assert big == pytest.approx((600 - 90) * 0.75, abs=3)
    assert json.loads((run / "big" / "metrics.json").read_text())["argv"] == [
        "--time_budget",
        f"{big / 60:.3f}",
    ]
    # The fake "big" stage finished at once: what it left goes to the next budgeted stage.
    assert record["stages"]["small"]["budget_seconds"] == pytest.approx(600 - 60, abs=5)
    # A rerun with resume runs nothing; without resume the folder is refused.
    again = run_stages(stages, run, budget_minutes=10, resume=True, resume_command="again")
    assert {entry["status"] for name, entry in again["stages"].items() if name != "missing"} == {"reused"}
    with pytest.raises(FileExistsError, match="--resume"):
        check_run_dir(run, resume=False)


def test_a_stage_that_writes_no_metrics_has_failed(tmp_path):
    run = tmp_path / "run"
    broken = Stage("broken", [sys.executable, "-c", "print('did nothing')"], run / "broken")
    with pytest.raises(
        StageFailed, match=r"(?s)'broken' failed \(no metrics.json.*Resume with:\n    make it so"
    ):
        run_stages([fake_stage("ok", run), broken], run, None, False, "make it so")


@pytest.mark.parametrize("budget", ["-3", "0"])
def test_a_time_budget_of_zero_or_less_is_refused_before_anything_is_loaded(corpus, tmp_path, budget):
    with pytest.raises(InvalidArgumentsError, match=rf"--time_budget {budget}: must be a positive number"):
        pretrain.main(
            [
                "--data",
                str(tmp_path / "never read.txt"),
                "--output_dir",
                str(tmp_path / "out"),
                "--time_budget",
                budget,
            ]
        )
    assert not (tmp_path / "out").exists()
    if budget == "-3":  # the main job's --time_budget 0 means "no budget", as its help says
        with pytest.raises(InvalidArgumentsError, match="--time_budget -3: must be a positive number"):
            speedrun.main(small_job(tmp_path / "run", corpus, "--time_budget", budget))
        assert not (tmp_path / "run").exists()


def test_a_budget_too_small_is_said_before_training_and_marked_in_the_report(corpus, tmp_path, capfd):
    run = tmp_path / "run"
    report = speedrun.main(small_job(run, corpus, "--time_budget", "0.05", "--budget_probe_steps", "2"))
    output = capfd.readouterr().out
    warning = output.index("WARNING: --time_budget")
    assert warning < output.index("'train_runtime'")  # said before training started
    assert re.search(r"needs at least 50 .* A budget of about [0-9.]+ min would buy them", output[warning:])
    plan = json.loads((run / "pretrain" / "budget.json").read_text())
    assert plan["too_small"] and plan["sufficient_budget_minutes"] > plan["time_budget_minutes"]
    text = report.read_text()
    assert (
        "**Warning**: pretraining's time" in text
        and f"needed about {plan['sufficient_budget_minutes']:g} min" in text
    )
    assert f"**Device**: cpu: {cpu_model_name()}" in text
    # The samples stage prompted with the corpus's own first words, not with fixed story openings.
    samples = json.loads((run / "samples" / "samples.json").read_text())
    expected = corpus_prompts(row["text"] for row in load_from_disk(run / "data")["validation"])
    assert len(expected) == 3 and {sample["prompt"] for sample in samples} == set(expected)
