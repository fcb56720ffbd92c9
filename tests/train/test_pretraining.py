"""The pretraining pipeline end to end: config parsing, a short real run, resume, 2 processes, speedrun."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, byte_level_corpus_flags
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, get_scheduler

from hf_scratchgpt import ScratchGPTConfig, ScratchGPTForCausalLM, ScratchGPTTokenizer
from hf_scratchgpt.data import DataError
from hf_scratchgpt.train.arguments import parse_args
from hf_scratchgpt.train.budget import BudgetArguments
from hf_scratchgpt.train.optim import MuonWithAdamW, OptimizerArguments, muon_parameter_names
from hf_scratchgpt.train.pretraining import DataArguments, ModelArguments, build_model
from hf_scratchgpt.train.trainer import ScratchGPTTrainer, ScratchGPTTrainingArguments
from training import prepare_data, pretrain, train_tokenizer

ANIMALS = ["cat", "dog", "bird", "fox", "cow", "hen"]
ACTIONS = ["runs", "sleeps", "eats", "jumps", "sings"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """A small learnable corpus: templated sentences, one story per line."""
    rng = random.Random(0)
    lines = []
    for _ in range(400):
        sentences = [
            f"The {rng.choice(ANIMALS)} {rng.choice(ACTIONS)} today." for _ in range(rng.randint(2, 5))
        ]
        lines.append(" ".join(sentences))
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def small_run_argv(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    """A byte-level 2-layer model on the corpus: a few seconds per run on a CPU."""
    return [
        *byte_level_corpus_flags(corpus),
        "--model_overrides",
        "n_layer=2,n_embd=64,n_head=4,max_position_embeddings=64",
        "--block_size",
        "64",
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "--report_to",
        "none",
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "16",
        "--learning_rate",
        "3e-3",
        "--warmup_steps",
        "5",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--seed",
        "7",
        "--sample_prompts",
        "The",
        "--sample_max_new_tokens",
        "16",
        "--disable_tqdm",
        "true",
        *extra,
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def logged_losses(output_dir: Path) -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def test_yaml_config_with_command_line_overrides(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(
        "preset: tiny-modern\nmodel_overrides: {num_hidden_layers: 3}\nblock_size: 32\n"
        "output_dir: out\nmax_steps: 7\nlearning_rate: 5.0e-4\nlr_scheduler_kwargs: {min_lr: 1.0e-5}\n"
    )
    model_args, data_args, training_args = parse_args(
        (ModelArguments, DataArguments, ScratchGPTTrainingArguments),
        ["--config", str(config), "--max_steps", "9", "--data-dir", "texts/"],
    )
    assert model_args.preset == "tiny-modern" and model_args.model_overrides == {"num_hidden_layers": 3}
    assert data_args.block_size == 32 and data_args.data_dir == "texts/"
    assert training_args.max_steps == 9  # the command line wins over the file
    assert training_args.learning_rate == 5e-4 and training_args.lr_scheduler_kwargs == {"min_lr": 1e-5}

    config.write_text("preset: tiny\nnum_layers: 3\n")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['num_layers'\]"):
        parse_args((ModelArguments, DataArguments, ScratchGPTTrainingArguments), ["--config", str(config)])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parse_args((ModelArguments,), ["--config", str(tmp_path / "missing.yaml")])


PRETRAIN_ARGUMENTS = (
    ModelArguments,
    DataArguments,
    BudgetArguments,
    OptimizerArguments,
    ScratchGPTTrainingArguments,
)


def test_shipped_recipes_parse_and_match_nanogpt():
    for name in ("tiny.yaml", "shakespeare_char.yaml", "shakespeare_char_modern.yaml", "gpt2_124m.yaml"):
        recipe = REPO / "training" / "configs" / name
        # --use_cpu: the GPU recipe would otherwise look for a GPU.
        parse_args(PRETRAIN_ARGUMENTS, ["--config", str(recipe), "--use_cpu", "true"])
    recipes = {
        name: parse_args(
            PRETRAIN_ARGUMENTS, ["--config", str(REPO / "training" / "configs" / f"{name}.yaml")]
        )
        for name in ("shakespeare_char", "shakespeare_char_modern")
    }
    model_args, data_args, _, optim_args, args = recipes["shakespeare_char"]
    assert model_args.model_overrides == {
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "hidden_size": 128,
        "max_position_embeddings": 64,
    }
    assert model_args.tokenizer_name_or_path == "byte" and not optim_args.muon
    assert (data_args.block_size, data_args.split_mode, data_args.validation_fraction) == (64, "tail", 0.1)
    assert (args.max_steps, args.per_device_train_batch_size, args.learning_rate) == (2000, 12, 1e-3)
    # The modern recipe: same shapes, data, batch, steps and precision; another architecture and optimizer.
    modern_model, modern_data, _, modern_optim, modern_args = recipes["shakespeare_char_modern"]
    reference, modern = (
        ScratchGPTConfig.from_preset(m.preset, **m.model_overrides) for m in (model_args, modern_model)
    )
    for shape in (
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "hidden_size",
        "max_position_embeddings",
    ):
        assert getattr(modern, shape) == getattr(reference, shape), shape
    assert modern.position_embedding_type == "rope" and modern_optim.muon
    assert modern_data == data_args and modern_model.tokenizer_name_or_path == "byte"
    for setting in (
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "precision",
        "seed",
    ):
        assert getattr(modern_args, setting) == getattr(args, setting), setting


def test_muon_trains_the_block_matrices_and_adamw_the_rest(tmp_path):
    model = ScratchGPTForCausalLM(
        ScratchGPTConfig.from_preset("tiny-modern", vocab_size=300, num_hidden_layers=2)
    )
    names = set(muon_parameter_names(model))
    matrices = {n for n, p in model.named_parameters() if p.ndim == 2}
    assert names == matrices - {"transformer.wte.weight", "lm_head.weight"} and names
    args = ScratchGPTTrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=3e-3,
        weight_decay=0.1,
        use_cpu=True,
        precision="fp32",
        report_to="none",
    )
    optimizer = MuonWithAdamW(model, args, learning_rate=1e-2)
    muon_params = {id(p) for group in optimizer.muon.param_groups for p in group["params"]}
    assert muon_params == {id(p) for n, p in model.named_parameters() if n in names}
    assert [group["lr"] for group in optimizer.param_groups] == [1e-2, 3e-3, 3e-3]
    # The tiny recipe's schedule scales every group from its own rate (min_lr relative to --learning_rate).
    scheduler = get_scheduler(
        "cosine_with_min_lr",
        optimizer,
        num_warmup_steps=0,
        num_training_steps=10,
        scheduler_specific_kwargs={"min_lr": 3e-4},
    )
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-3, 3e-4, 3e-4])
    # A scheduler's change reaches the inner optimizers, also after a checkpoint is loaded.
    optimizer.load_state_dict(optimizer.state_dict())
    optimizer.param_groups[0]["lr"] = 5e-3
    assert optimizer.muon.param_groups[0]["lr"] == 5e-3


def test_a_run_with_muon_resumes_with_the_same_losses(corpus_file, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    muon = ("--muon", "true", "--max_steps", "8")
    pretrain.main(small_run_argv(corpus_file, full, *muon, "--save_strategy", "steps", "--save_steps", "4"))
    pretrain.main(
        small_run_argv(corpus_file, resumed, *muon, "--resume_from_checkpoint", str(full / "checkpoint-4"))
    )
    uninterrupted, continued = logged_losses(full), logged_losses(resumed)
    assert uninterrupted[8] < uninterrupted[1]
    for step in (5, 6, 7, 8):
        assert continued[step] == pytest.approx(uninterrupted[step], abs=1e-6), step


def test_short_run_lowers_validation_loss_and_saves_a_loadable_model(corpus_file, tmp_path):
    out = tmp_path / "run"
    metrics = pretrain.main(
        small_run_argv(
            corpus_file,
            out,
            "--max_steps",
            "60",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "30",
            "--eval_on_start",
            "true",
        )
    )
    state = json.loads((out / "trainer_state.json").read_text())
    eval_losses = [entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry]
    assert eval_losses[0] > 4.0  # untrained: about ln(vocab) nats
    assert metrics["eval_loss"] < 0.5 * eval_losses[0]
    assert metrics["eval_perplexity"] == pytest.approx(
        torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-4
    )
    # Byte-level tokens: one byte per scored token (end-of-text tokens are not scored), so bits per byte
    # is the loss in bits.
    assert metrics["eval_bits_per_byte"] == pytest.approx(metrics["eval_loss"] / math.log(2), rel=1e-6)
    assert metrics["eval_tokens"] == metrics["eval_bytes"]
    assert metrics["precision"] in ("bf16", "fp32") and metrics["machine"]["cpu"]
    assert json.loads((out / "metrics.json").read_text())["eval_loss"] == metrics["eval_loss"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples][:3] == [0, 30, 60]

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) and tokenizer.padding_side == "left"
    ids = tokenizer("The cat", return_tensors="pt")
    text = tokenizer.decode(
        model.generate(**ids, max_new_tokens=20, do_sample=False)[0], skip_special_tokens=True
    )
    assert any(word in text[len("The cat") :] for word in ACTIONS + ["The", "today"]), text


def test_resume_from_checkpoint_gives_the_same_losses(corpus_file, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    pretrain.main(
        small_run_argv(corpus_file, full, "--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4")
    )
    # Resume in a fresh output folder from the step-4 checkpoint of the first run.
    pretrain.main(
        small_run_argv(
            corpus_file, resumed, "--max_steps", "8", "--resume_from_checkpoint", str(full / "checkpoint-4")
        )
    )
    uninterrupted, continued = logged_losses(full), logged_losses(resumed)
    # Steps 1-4 come back from the checkpoint's trainer_state.json; steps 5-8 were trained again.
    assert sorted(continued) == sorted(uninterrupted) == list(range(1, 9))
    for step in (5, 6, 7, 8):
        assert continued[step] == pytest.approx(uninterrupted[step], abs=1e-6), step


def test_two_processes_match_one_at_the_same_global_batch(corpus_file, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    script = REPO / "training" / "pretrain.py"
    common = ["--max_steps", "6", "--eval_strategy", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    one = subprocess.run(
        [sys.executable, str(script), *small_run_argv(corpus_file, tmp_path / "one", *common)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # A fresh copy of the corpus: nothing cached yet, so the log shows who tokenizes.
    fresh = tmp_path / "fresh" / corpus_file.name
    fresh.parent.mkdir()
    shutil.copy(corpus_file, fresh)
    two_argv = small_run_argv(
        fresh, tmp_path / "two", *common, "--per_device_train_batch_size", "4", "--log_level_replica", "info"
    )
    two = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), str(script), *two_argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    # The corpus is tokenized once (train and validation, by rank 0); rank 1 reads rank 0's Arrow cache.
    assert two.stderr.count("tokenizing ") == 2, two.stderr[-3000:]
    assert two.stderr.count("tokenized corpus found in the cache") == 2
    args = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    assert args["train_batch_size"] == 4  # per process; 2 processes x 4 = the single process's 8
    single, double = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert sorted(single) == sorted(double) == [1, 2, 3, 4, 5, 6]
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=2e-4), step
    assert double[6] < double[1]


def test_train_tokenizer_script(corpus_file, tmp_path):
    train_tokenizer.main(
        [
            "--data",
            str(corpus_file),
            "--txt_mode",
            "line",
            "--vocab_size",
            "300",
            "--output_dir",
            str(tmp_path / "tok"),
        ]
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tokenizer) == 300
    assert (
        len(tokenizer("The dog sleeps today.")["input_ids"]) < len("The dog sleeps today.") / 2
    )  # merges learned
    assert json.loads((tmp_path / "tok" / "metrics.json").read_text())["vocab_size"] == 300


def test_tokenizer_is_trained_on_the_train_split_only(tmp_path):
    # The last tenth of the lines (the tail validation split) is the only place "zqx" occurs.
    lines = ["the cat sat on the mat"] * 90 + ["zqxzqxzqx zqxzqx zqx"] * 10
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(lines) + "\n")
    common = ["--data", str(corpus), "--txt_mode", "line", "--split_mode", "tail", "--vocab_size", "280"]
    tokenizer = train_tokenizer.main([*common, "--output_dir", str(tmp_path / "tok")])
    assert not any("zq" in token or "qx" in token for token in tokenizer.get_vocab()), (
        "validation text leaked"
    )
    assert "Ġmat" in tokenizer.get_vocab() or "at" in tokenizer.get_vocab()
    # Through the data stage's saved split: the same.
    prepare_data.main([*common[:6], "--output_dir", str(tmp_path / "data")])
    saved = train_tokenizer.main(
        ["--data", str(tmp_path / "data"), "--vocab_size", "280", "--output_dir", str(tmp_path / "tok2")]
    )
    assert saved.get_vocab() == tokenizer.get_vocab()


def test_weight_decay_only_on_weight_matrices(tmp_path):
    model = ScratchGPTForCausalLM(ScratchGPTConfig.from_preset("tiny-modern", n_layer=1, vocab_size=300))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, weight_decay=0.1, report_to="none")
    trainer = ScratchGPTTrainer(model=model, args=args)
    optimizer = trainer.create_optimizer()
    decayed = {
        id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]
    }
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert "transformer.h.0.attn.q_proj.weight" in names and "lm_head.weight" in names  # untied head decays
    assert "transformer.h.0.mlp.gate_proj.weight" in names
    assert not any("wte" in n or "norm" in n or "ln_" in n or n.endswith("bias") for n in names), names
    all_params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all_params == {id(p) for p in model.parameters()}  # nothing left out of the optimizer


def test_model_from_a_config_file_with_overrides(tmp_path):
    ScratchGPTConfig.from_preset("tiny-modern", n_layer=3, n_embd=64, n_head=4).save_pretrained(tmp_path)
    tokenizer = ScratchGPTTokenizer()  # byte-level: 260 tokens
    args = ModelArguments(model_config=str(tmp_path), model_overrides="num_key_value_heads=1")
    model = build_model(args, tokenizer)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.position_embedding_type) == (3, 64, "rope")
    assert config.num_key_value_heads == 1 and config.vocab_size == 260
    assert config.pad_token_id == tokenizer.pad_token_id != config.eos_token_id
    with pytest.raises(ValueError, match="num_key_value_heads=3"):  # overrides are validated
        build_model(
            ModelArguments(model_config=str(tmp_path), model_overrides="num_key_value_heads=3"), tokenizer
        )
    with pytest.raises(ValueError, match="'n_layer:4' is not key=value"):
        build_model(ModelArguments(model_overrides="n_layer:4"), tokenizer)


def test_a_second_run_in_the_same_folder_starts_a_fresh_samples_file(corpus_file, tmp_path):
    argv = small_run_argv(
        corpus_file, tmp_path / "run", "--max_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2"
    )
    pretrain.main(argv)
    pretrain.main([*argv, "--overwrite_output_dir", "true"])  # a new run in a used folder must say so
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in samples] == [2]  # only the second run's evaluation


def test_a_block_longer_than_the_context_is_refused_before_any_data_is_read(tmp_path):
    argv = [
        "--data",
        str(tmp_path / "not-there.txt"),
        "--preset",
        "tiny",
        "--model_overrides",
        "n_positions=64",
        "--block_size",
        "128",
        "--output_dir",
        str(tmp_path / "out"),
        "--report_to",
        "none",
    ]
    with pytest.raises(DataError, match=r"--block_size 128 is longer than the model's context .*=64\)"):
        pretrain.main(argv)  # the missing data file would fail later, with another message
