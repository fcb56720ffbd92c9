"""The main job end to end: stages hand over folders, a rerun resumes, a failure says how to resume."""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import sys
from pathlib import Path

import pytest
from conftest import byte_level_corpus_flags
from datasets import load_from_disk
from fakes.hub_server import LocalHub, run_client
from transformers import AutoModelForCausalLM

from hf_scratchgpt.data import DataError
from hf_scratchgpt.train.arguments import InvalidArgumentsError
from hf_scratchgpt.train.budget import MOST_EPOCHS, SIZE_LADDER
from hf_scratchgpt.train.hardware import cpu_model_name
from hf_scratchgpt.train.pretraining import corpus_prompts
from hf_scratchgpt.train.speedrun import (
    Stage,
    StageFailed,
    check_run_dir,
    fetch_task_data,
    run_stages,
    split_options,
    stage_command,
)
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


QUIET = ["--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"]  # no logs, bars or saves


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
        *QUIET,
        *extra,
    ]


def test_stages_hand_over_folders_and_a_rerun_skips_them(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    report = speedrun.main(small_job(run, corpus, "--max_steps", "6", "--time_budget", "10", "--seed", "7"))
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
    samples = json.loads((run / "samples" / "metrics.json").read_text())
    assert data["seed"] == pretrained["seed"] == samples["seed"] == 7  # one --seed reached every stage
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


def budgeted_pretraining(corpus: Path, out: Path, minutes: str = "0.75") -> list[str]:
    return [
        *byte_level_corpus_flags(corpus),
        "--output_dir",
        str(out),
        "--time_budget",
        minutes,
        "--budget_probe_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_eval_blocks",
        "4",
        *QUIET,
        "--eval_strategy",
        "steps",
    ]


def test_a_time_budget_sizes_the_model_and_the_steps(corpus, tmp_path, capsys):
    out = tmp_path / "pretrain"
    metrics = pretrain.main(budgeted_pretraining(corpus, out))
    printed = capsys.readouterr().out
    plan = json.loads((out / "budget.json").read_text())
    assert not plan["torch_compile"]  # 45 s trains too briefly to pay for a compilation
    assert (
        plan["size"]["name"] in {rung.name for rung in SIZE_LADDER}
        and "the largest model" in plan["size_rule"]
    )
    assert plan["corpus_tokens"] > 0 and "epochs of the corpus" in plan["size_rule"]
    # The Trainer's max_steps is only a bound (ten times the plan, at most MOST_EPOCHS epochs): the schedule follows
    # the clock.
    assert metrics["max_steps"] == plan["planned_steps"] >= 10 and metrics["budget"] == plan
    assert 0 < metrics["train_steps"] <= 10 * plan["planned_steps"]
    assert metrics["tokens_seen"] == metrics["train_steps"] * 2 * metrics["block_size"]
    trainer_state = json.loads((out / "trainer_state.json").read_text())
    most_epochs = int(MOST_EPOCHS * plan["corpus_tokens"] * plan["planned_steps"] / plan["planned_tokens"])
    assert trainer_state["max_steps"] == min(10 * plan["planned_steps"], most_epochs)
    # The plan says when the epoch cap, not the deadline, will end the run.
    capped = f"at most {most_epochs} steps, {MOST_EPOCHS:g} epochs of the corpus"
    assert (capped in printed) == (most_epochs < plan["planned_steps"])
    # A tiny corpus: the run stops after MOST_EPOCHS epochs, fully decayed.
    assert metrics["epoch"] <= MOST_EPOCHS + 0.1
    assert metrics["non_embedding_parameters"] < metrics["num_parameters"]
    assert metrics["device"] == f"cpu: {cpu_model_name()}" and metrics["better_than_chance"]


def test_a_run_that_trains_for_minutes_compiles_its_model(corpus, tmp_path, monkeypatch):
    import torch._dynamo.utils

    from hf_scratchgpt.train import budget_plan

    # As if the budget were minutes in a precision that gains from compilation (the probes pick it per machine).
    monkeypatch.setattr(budget_plan, "compile_pays_off", lambda *args: True)
    out = tmp_path / "pretrain"
    torch._dynamo.utils.counters.clear()
    metrics = pretrain.main(budgeted_pretraining(corpus, out, minutes="0.6"))
    assert (
        json.loads((out / "budget.json").read_text())["torch_compile"] and metrics["budget"]["torch_compile"]
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the training steps ran compiled
    assert metrics["train_steps"] > 0 and metrics["better_than_chance"]
    saved = AutoModelForCausalLM.from_pretrained(out)  # saved without the compiled wrapper's names
    assert all("_orig_mod" not in name for name in saved.state_dict())


def test_compilation_pays_off_for_minutes_of_bf16_on_a_cpu_not_fp32(monkeypatch):
    from hf_scratchgpt.train import budget_plan
    from hf_scratchgpt.train.budget_plan import COMPILE_MIN_TRAINING_SECONDS, compile_pays_off

    monkeypatch.setattr(budget_plan, "can_compile", lambda use_cpu: True)
    minutes = COMPILE_MIN_TRAINING_SECONDS
    assert compile_pays_off(minutes, "bf16", use_cpu=True)
    assert not compile_pays_off(minutes - 1, "bf16", use_cpu=True)
    assert not compile_pays_off(10 * minutes, "fp32", use_cpu=True)  # no faster compiled on a CPU
    monkeypatch.setattr(budget_plan, "can_compile", lambda use_cpu: False)  # no C++ compiler, no Triton
    assert not compile_pays_off(10 * minutes, "bf16", use_cpu=True)


def fixed_step_pretraining(corpus: Path, out: Path, *extra: str) -> list[str]:
    """budgeted_pretraining's run with 4 steps instead of a budget."""
    argv = budgeted_pretraining(corpus, out)
    budget = argv.index("--time_budget")
    return [*argv[:budget], *argv[budget + 2 :], "--max_steps", "4", *extra]


@pytest.mark.parametrize("long_enough", [True, False])
def test_a_fixed_step_run_compiles_when_its_timed_steps_say_it_pays(
    corpus, tmp_path, monkeypatch, capsys, long_enough
):
    import torch._dynamo.utils

    from hf_scratchgpt.train import budget_plan
    from hf_scratchgpt.train.trainer import ScratchGPTTrainingArguments

    # Compilation pays for runs at least `threshold` seconds long (any precision, any machine, for the test); the
    # 4 steps count as long enough (COMPILE_MIN_STEPS); "eager" compiles without building kernels.
    threshold = 0.0 if long_enough else 1e9
    timed = []
    monkeypatch.setattr(budget_plan, "compile_pays_off", lambda seconds, *args: seconds >= threshold)
    monkeypatch.setattr(budget_plan, "COMPILE_MIN_STEPS", 4)
    measure = budget_plan.measure_seconds_per_step
    monkeypatch.setattr(
        budget_plan, "measure_seconds_per_step", lambda *a, **k: timed.append(a) or measure(*a, **k)
    )
    enable = ScratchGPTTrainingArguments.enable_compile
    monkeypatch.setattr(ScratchGPTTrainingArguments, "enable_compile", lambda self: enable(self, "eager"))
    torch._dynamo.utils.counters.clear()
    metrics = pretrain.main(fixed_step_pretraining(corpus, tmp_path / "pretrain"))
    printed = capsys.readouterr().out
    assert len(timed) == 1 and timed[0][4] == budget_plan.COMPILE_PROBE_STEPS  # a few eager steps timed, once
    assert (
        metrics["torch_compile"] is long_enough and metrics["train_steps"] == 4 and metrics["budget"] is None
    )
    assert (torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0) is long_enough
    verdict = "compiled (torch.compile)" if long_enough else "too short to pay for a compilation"
    assert "4 steps at " in printed and verdict in printed


def test_an_explicit_torch_compile_is_kept_without_timing(corpus, tmp_path, monkeypatch):
    from hf_scratchgpt.train import budget_plan

    monkeypatch.setattr(budget_plan, "compile_pays_off", lambda *args: True)
    monkeypatch.setattr(budget_plan, "COMPILE_MIN_STEPS", 1)
    monkeypatch.setattr(budget_plan, "measure_seconds_per_step", lambda *a, **k: pytest.fail("timed steps"))
    metrics = pretrain.main(fixed_step_pretraining(corpus, tmp_path / "pretrain", "--torch_compile", "false"))
    assert metrics["torch_compile"] is False and metrics["train_steps"] == 4


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


def test_a_stage_command_is_its_command_line_filled_in():
    command = stage_command(
        "{training}/pretrain.py --data {run}/data {extra} --seed {seed} --judge {judge} --outtypes f16 q8_0",
        training="/repo/training",
        run="/tmp/my run",
        extra=["--preset", "tiny"],
        seed=None,
        judge="a/b",
    )
    # One word per path however many spaces; a list is several words; a None value drops its flag.
    assert command == [
        sys.executable,
        "/repo/training/pretrain.py",
        "--data",
        "/tmp/my run/data",
        "--preset",
        "tiny",
        "--judge",
        "a/b",
        "--outtypes",
        "f16",
        "q8_0",
    ]
    data, rest = split_options(
        ["--data=a.txt", "--txt-mode", "line", "--preset", "tiny", "--bf16", "--max_documents", "5"],
        {"data", "txt_mode", "max_documents"},
    )
    assert data == ["--data=a.txt", "--txt-mode", "line", "--max_documents", "5"]
    assert rest == ["--preset", "tiny", "--bf16"]


def task_data_folder(root: Path, *relative: str) -> Path:
    for name in relative:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("[]\n")
    return root


TASK_FILES = (
    "classification/sms_spam.tsv",
    "instruction/instruction-data.json",
    "instruction/instruction-data-with-preference.json",
    "eval/arc_easy.jsonl",
)


def script_flags(script: str, capsys) -> set[str]:
    """The flags a training/ or eval/ script lists in its --help."""
    module = importlib.import_module(f"{Path(script).parent.name}.{Path(script).stem}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    return set(re.findall(r"--\w+", capsys.readouterr().out))


def test_one_seed_reaches_every_stage_that_takes_one_and_every_flag_exists(tmp_path, capsys):
    tasks = task_data_folder(tmp_path / "tasks", *TASK_FILES)
    args = speedrun.SpeedrunArguments(run_dir=str(tmp_path / "run"), seed=7, task_data_dir=str(tasks))
    stages = speedrun.main_job_stages(args, ["--data", "corpus.txt"], ["--preset", "tiny"])
    assert [stage.skip_reason for stage in stages if stage.name != "export"] == [None] * 10
    for stage in stages:
        words = stage.command[1:]
        if stage.name == "export":  # `scratchgpt verify` writes files; it has no seed
            assert "--seed" not in words
            continue
        assert words[words.index("--seed") + 1] == "7", stage.name
        # Every flag the stage passes is one its script knows (a typo would only fail mid-run).
        used = {word for word in words if word.startswith("--")}
        assert used <= script_flags(words[0], capsys), stage.name
    # Without --seed every script keeps its own default.
    args.seed = None
    assert all("--seed" not in stage.command for stage in speedrun.main_job_stages(args, [], []))


def test_task_data_comes_from_a_hub_dataset_id(tmp_path):
    uploaded = '[{"instruction": "Say hi.", "input": "", "output": "hi"}]\n'
    with LocalHub() as hub:
        hub.add_repo(
            "testuser/task-data",
            {
                "classification/sms_spam.tsv": "ham\thello\n",
                "instruction/instruction-data.json": uploaded,
                "unrelated/big.bin": "not downloaded",
            },
        )
        code = """
from training.speedrun import SpeedrunArguments, main_job_stages
stages = main_job_stages(SpeedrunArguments(run_dir="run", task_data_dir="testuser/task-data"), [], [])
sft = next(stage for stage in stages if stage.name == "sft").command
result = {
    "skipped": {stage.name: stage.skip_reason for stage in stages if stage.skip_reason},
    "sft_data": open(sft[sft.index("--dataset_name") + 1]).read(),
}
try:
    main_job_stages(SpeedrunArguments(run_dir="run", task_data_dir="testuser/no-such-data"), [], [])
except ValueError as error:
    result["missing"] = str(error)
"""
        result = run_client(hub.url, code, tmp_path)
        requests = list(hub.requests)
    assert result["sft_data"] == uploaded  # the file the stage reads is the one on the Hub
    # The repo has no preference or eval files: only the stages that need them are skipped.
    assert set(result["skipped"]) - {"export"} == {"dpo", "eval_lm"}
    assert "instruction-data-with-preference.json not found" in result["skipped"]["dpo"]
    assert not any("unrelated" in request for request in requests)  # only the task folders come down
    assert "--task_data_dir testuser/no-such-data" in result["missing"]
    assert "RepositoryNotFoundError" in result["missing"]


def test_task_data_that_is_neither_a_folder_nor_a_hub_id_is_refused(tmp_path):
    assert fetch_task_data(str(tmp_path)) == tmp_path
    with pytest.raises(
        DataError, match=r"--task_data_dir .*not a folder nor a Hub dataset id \(owner/name\)"
    ):
        fetch_task_data(str(tmp_path / "missing" / "tasks"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        fetch_task_data(str(tmp_path / "file.txt"))
