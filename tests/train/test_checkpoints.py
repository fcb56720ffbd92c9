"""Nothing silent, nothing lost: atomic model saves (pretraining's trainer and TRL's SFT/DPO trainers alike),
refusing to clobber a run, resuming from the last complete checkpoint, a full disk named as such, over-long
sample prompts skipped."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from conftest import TRAINING_TEXT, tiny_model
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator

import hf_scratchgpt.train.checkpoints
from hf_scratchgpt import ScratchGPTTokenizer
from hf_scratchgpt.finetune.instruction_tuning import (
    DPOArguments,
    SafeDPOTrainer,
    SafeSFTTrainer,
    SFTArguments,
)
from hf_scratchgpt.train.arguments import parse_args
from hf_scratchgpt.train.checkpoints import (
    STAGING_DIR_NAME,
    CheckpointError,
    DiskFullError,
    OutputDirNotEmptyError,
    finish_interrupted_save,
    resolve_resume_checkpoint,
)
from hf_scratchgpt.train.trainer import (
    SampleGenerationCallback,
    ScratchGPTTrainer,
    ScratchGPTTrainingArguments,
    check_output_dir,
)

CONTEXT = 64  # tiny_model's max_position_embeddings


def training_args(output_dir: Path, **overrides) -> ScratchGPTTrainingArguments:
    settings = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        precision="fp32",
        report_to="none",
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return ScratchGPTTrainingArguments(**settings)


def command_line(output_dir: Path, *flags: str) -> list[str]:
    """The command line of a short run (2 steps, a checkpoint every 2) into ``output_dir``, plus ``flags``."""
    return [
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "--precision",
        "fp32",
        "--report_to",
        "none",
        "--max_steps",
        "2",
        "--save_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        *flags,
    ]


def blocks(n: int = 16, length: int = 32) -> Dataset:
    ids = torch.randint(2, 250, (n, length), generator=torch.Generator().manual_seed(0)).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def make_trainer(
    tokenizer, args: ScratchGPTTrainingArguments, seed: int = 0, model_overrides: dict | None = None, **kwargs
) -> ScratchGPTTrainer:
    return ScratchGPTTrainer(
        model=tiny_model(seed=seed, **(model_overrides or {})).train(),
        args=args,
        train_dataset=blocks(),
        data_collator=default_data_collator,
        processing_class=tokenizer,
        **kwargs,
    )


# Prompts and answers for TRL's trainers (plain text: the test tokenizer has no chat template).
PREFERENCES = {
    "prompt": ["The quick brown", "Once upon a"] * 4,
    "chosen": [" fox jumps.", " time there was."] * 4,
    "rejected": [" dog.", " robot."] * 4,
}
TRAINER_KINDS = ["pretraining", "sft", "dpo"]


def trainer_of(
    kind: str, tokenizer, output_dir: Path, seed: int = 0, model_overrides: dict | None = None, **overrides
):
    """A trainer with saves that lose nothing: pretraining's, or SFT's / DPO's (TRL's with `SafeSavesMixin`)."""
    if kind == "pretraining":
        return make_trainer(tokenizer, training_args(output_dir, **overrides), seed, model_overrides)
    settings = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        precision="fp32",
        report_to="none",
        max_steps=2,
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        disable_tqdm=True,
        max_length=CONTEXT,
    )
    settings.update(overrides)
    model = tiny_model(seed=seed, **(model_overrides or {})).train()
    if kind == "sft":
        data = Dataset.from_dict({"text": TRAINING_TEXT[:8]})
        return SafeSFTTrainer(
            model=model,
            args=SFTArguments(packing=False, assistant_only_loss=False, **settings),
            train_dataset=data,
            processing_class=tokenizer,
        )
    reference = tiny_model(seed=seed, **(model_overrides or {}))  # in memory only: DPO cannot load it by name
    return SafeDPOTrainer(
        model=model,
        ref_model=reference,
        args=DPOArguments(**settings),
        train_dataset=Dataset.from_dict(PREFERENCES),
        processing_class=tokenizer,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tokenizer) -> Path:
    """A 4-step run that left checkpoint-2 and checkpoint-4; tests copy it before changing it."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    make_trainer(tokenizer, training_args(output_dir)).train()
    return output_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "out"))


@pytest.fixture(scope="module")
def other_tokenizer() -> ScratchGPTTokenizer:
    """A second tokenizer with a different vocabulary: mixing it with the first model's files is visible."""
    return ScratchGPTTokenizer.train(
        ["completely different words here"] * 50 + TRAINING_TEXT[:8], vocab_size=270
    )


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def logits(model, ids=((5, 6, 7, 8),)) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.tensor(ids)).logits


# --- 1. atomic model save ---------------------------------------------------------------------------


def fail_writing_weights(monkeypatch):
    def killed(*args, **kwargs):
        raise RuntimeError("killed while writing the weights")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", killed)
    return RuntimeError, "killed while writing"


def fail_writing_tokenizer(monkeypatch):
    def killed(self, *args, **kwargs):
        raise RuntimeError("killed while writing the tokenizer")

    monkeypatch.setattr(ScratchGPTTokenizer, "save_pretrained", killed)
    return RuntimeError, "killed while writing"


def disk_full_writing_weights(monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    return DiskFullError, "no space left on .*out.*previous model .* unchanged"


@pytest.mark.parametrize("kind", TRAINER_KINDS)
@pytest.mark.parametrize("failure", [fail_writing_weights, fail_writing_tokenizer, disk_full_writing_weights])
def test_failed_save_leaves_the_previous_model_loadable_and_unchanged(
    failure, kind, tokenizer, other_tokenizer, tmp_path, monkeypatch
):
    output_dir = tmp_path / "out"
    first = trainer_of(kind, tokenizer, output_dir, seed=0)
    first.save_model()
    before = file_bytes(output_dir)
    expected_logits = logits(first.model)

    # Another shape: its config.json (written before the weights) does not fit the previous weights.
    second = trainer_of(kind, other_tokenizer, output_dir, seed=1, model_overrides={"num_hidden_layers": 1})
    error_type, message = failure(monkeypatch)
    with pytest.raises(error_type, match=message):
        second.save_model()
    monkeypatch.undo()

    assert file_bytes(output_dir) == before  # config, weights, tokenizer: all the first model's
    assert not (output_dir / STAGING_DIR_NAME).exists()
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(output_dir)), expected_logits)
    assert len(AutoTokenizer.from_pretrained(output_dir)) == len(tokenizer)


def test_save_replaces_only_the_model_files(run_copy, other_tokenizer):
    (run_copy / "metrics.json").write_text('{"eval_loss": 1.0}\n')
    (run_copy / "trainer_state.json").write_text('{"global_step": 4}\n')
    (run_copy / "runs").mkdir()
    (run_copy / "runs" / "events").write_text("log")
    stale = ["model-00001-of-00002.safetensors", "vocab.json", "modeling_old.py"]
    for name in stale:
        (run_copy / name).write_text("from an older model")
    others = {name: (run_copy / name).read_bytes() for name in ("metrics.json", "trainer_state.json")}
    checkpoint_files = file_bytes(run_copy / "checkpoint-2")

    trainer = make_trainer(other_tokenizer, training_args(run_copy), seed=3)
    trainer.model.config.max_position_embeddings = CONTEXT
    other_tokenizer.model_max_length = 1000  # made to agree with the model's context before the save
    trainer.save_model()

    assert not any((run_copy / name).exists() for name in stale)
    assert {name: (run_copy / name).read_bytes() for name in others} == others
    assert (run_copy / "runs" / "events").read_text() == "log"
    assert file_bytes(run_copy / "checkpoint-2") == checkpoint_files
    assert not (run_copy / STAGING_DIR_NAME).exists()
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(run_copy)), logits(trainer.model))
    loaded = AutoTokenizer.from_pretrained(run_copy)
    assert (len(loaded), loaded.model_max_length) == (len(other_tokenizer), CONTEXT)


@pytest.mark.parametrize("kind", TRAINER_KINDS)
def test_a_kill_while_moving_files_in_never_loads_a_mix_and_is_finished_later(
    kind, tokenizer, other_tokenizer, tmp_path, monkeypatch
):
    output_dir = tmp_path / "out"
    trainer_of(kind, tokenizer, output_dir, seed=0).save_model()
    second = trainer_of(kind, other_tokenizer, output_dir, seed=1)
    real_replace, moved = hf_scratchgpt.train.checkpoints.os.replace, []

    def killed_after_two(src, dst):
        if len(moved) == 2:
            raise KeyboardInterrupt("killed mid-move")
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(hf_scratchgpt.train.checkpoints.os, "replace", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        second.save_model()
    monkeypatch.undo()

    with pytest.raises((OSError, ValueError), match="config.json"):  # refuses to load, never loads a mix
        AutoModelForCausalLM.from_pretrained(output_dir)
    assert finish_interrupted_save(output_dir)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(output_dir)), logits(second.model))
    assert len(AutoTokenizer.from_pretrained(output_dir)) == len(other_tokenizer)


# --- 2. another run's output_dir ----------------------------------------------------------------------


def test_a_fresh_run_over_another_runs_checkpoints_is_refused_unless_overwrite(run_copy, tokenizer):
    make_trainer(tokenizer, training_args(run_copy)).save_model()
    with pytest.raises(OutputDirNotEmptyError, match=r"a saved model \(config.json, model.safetensors\)"):
        check_output_dir(training_args(run_copy))  # what a script calls before loading any data
    with pytest.raises(CheckpointError, match="checkpoint-9: cannot resume from it: no such folder"):
        check_output_dir(training_args(run_copy, resume_from_checkpoint=str(run_copy / "checkpoint-9")))
    check_output_dir(training_args(run_copy, resume_from_checkpoint="latest"))
    with pytest.raises(OutputDirNotEmptyError) as refused:
        make_trainer(tokenizer, training_args(run_copy, max_steps=2)).train()
    message = str(refused.value)
    for expected in (
        str(run_copy),
        "checkpoint-2",
        "checkpoint-4",
        "--overwrite_output_dir true",
        "--resume_from_checkpoint latest",
    ):
        assert expected in message
    assert (run_copy / "checkpoint-4").is_dir()

    (args,) = parse_args(
        (ScratchGPTTrainingArguments,), command_line(run_copy, "--overwrite_output_dir", "true")
    )
    make_trainer(tokenizer, args).train()
    assert not (run_copy / "checkpoint-4").exists()  # the old run's checkpoints are gone, not mixed in
    assert resolve_resume_checkpoint(run_copy, "latest") == str(run_copy / "checkpoint-2")


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_sft_and_dpo_refuse_another_runs_output_dir_and_resume_from_it(kind, run_copy, tokenizer):
    with pytest.raises(OutputDirNotEmptyError, match="--overwrite_output_dir true"):
        trainer_of(kind, tokenizer, run_copy).train()
    assert (run_copy / "checkpoint-4").is_dir()
    trainer = trainer_of(kind, tokenizer, run_copy, max_steps=2, overwrite_output_dir=True)
    trainer.train()  # the old checkpoints deleted first, then this run's written
    assert [p.name for p in run_copy.glob("checkpoint-*")] == ["checkpoint-2"]
    resumed = trainer_of(kind, tokenizer, run_copy, max_steps=4)
    resumed.train(resume_from_checkpoint="latest")
    assert resumed.state.global_step == 4


# --- 3. resume -----------------------------------------------------------------------------------------


def test_resume_latest_skips_incomplete_checkpoints(run_copy, caplog):
    assert resolve_resume_checkpoint(run_copy, "latest") == str(run_copy / "checkpoint-4")
    assert resolve_resume_checkpoint(run_copy, True) == str(run_copy / "checkpoint-4")
    assert resolve_resume_checkpoint(run_copy, "false") is None
    assert resolve_resume_checkpoint(run_copy, None) is None

    weights = run_copy / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a kill during the weights write
    shutil.copytree(run_copy / "checkpoint-2", run_copy / "checkpoint-6")
    (run_copy / "checkpoint-6" / "trainer_state.json").unlink()  # a kill before the state was written
    with caplog.at_level(logging.WARNING):
        assert resolve_resume_checkpoint(run_copy, "true") == str(run_copy / "checkpoint-2")
    assert "checkpoint-6: no trainer_state.json" in caplog.text
    assert "checkpoint-4: model.safetensors is not readable" in caplog.text

    with pytest.raises(CheckpointError, match="checkpoint-6: cannot resume from it: no trainer_state.json"):
        resolve_resume_checkpoint(run_copy, str(run_copy / "checkpoint-6"))
    with pytest.raises(CheckpointError, match="no such folder"):
        resolve_resume_checkpoint(run_copy, str(run_copy / "checkpoint-99"))


def test_resume_latest_with_no_checkpoint_starts_fresh(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_resume_checkpoint(tmp_path / "new", "latest") is None
    assert "no complete checkpoint" in caplog.text and "starting a fresh run" in caplog.text


def test_resume_true_from_the_command_line(run_copy, tokenizer, monkeypatch):
    (run_copy / "checkpoint-4" / "trainer_state.json").unlink()
    argv = command_line(run_copy, "--max_steps", "4", "--resume_from_checkpoint", "true")
    (args,) = parse_args((ScratchGPTTrainingArguments,), argv)
    loaded = []
    real_load = ScratchGPTTrainer._load_from_checkpoint
    monkeypatch.setattr(
        ScratchGPTTrainer,
        "_load_from_checkpoint",
        lambda self, path, *a: loaded.append(path) or real_load(self, path, *a),
    )
    trainer = make_trainer(tokenizer, args)
    trainer.train(args.resume_from_checkpoint)
    assert loaded == [str(run_copy / "checkpoint-2")]
    assert trainer.state.global_step == 4


def test_resuming_a_tied_head_does_not_warn_it_missing_but_a_really_missing_head_does(
    run_copy, tokenizer, caplog
):
    # A tied head is saved once, as the embedding: Trainer's load_state_dict then lists lm_head.weight as
    # missing although the head is loaded. That warning is dropped; a head that is really missing is not.
    args = training_args(run_copy, max_steps=6, resume_from_checkpoint="latest")
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(tokenizer, args)
        trainer.train(args.resume_from_checkpoint)
    assert trainer.state.global_step == 6 and trainer.model.config.tie_word_embeddings
    assert "missing keys" not in caplog.text

    untied = run_copy.parent / "untied"
    make_trainer(
        tokenizer, training_args(untied, max_steps=2), model_overrides={"tie_word_embeddings": False}
    ).train()
    weights = untied / "checkpoint-2" / "model.safetensors"
    tensors = load_file(weights)
    save_file({name: t for name, t in tensors.items() if name != "lm_head.weight"}, weights, {"format": "pt"})
    caplog.clear()
    args = training_args(untied, max_steps=4, resume_from_checkpoint="latest")
    with caplog.at_level(logging.WARNING):
        make_trainer(tokenizer, args, model_overrides={"tie_word_embeddings": False}).train("latest")
    assert "There were missing keys in the checkpoint model loaded: ['lm_head.weight']" in caplog.text


# --- 4. full disk during a checkpoint -------------------------------------------------------------------


def test_full_disk_during_a_checkpoint_is_named_and_the_last_checkpoint_stays_usable(
    tokenizer, tmp_path, monkeypatch
):
    output_dir = tmp_path / "out"
    real_save = torch.save

    def fills_up_at_step_2(obj, path, *args, **kwargs):
        if "checkpoint-2" in str(path) and str(path).endswith("optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1216 vs 1110")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up_at_step_2)
    with pytest.raises(DiskFullError, match=r"no space left on \S*checkpoint-2") as full:
        make_trainer(tokenizer, training_args(output_dir, max_steps=2, save_steps=1)).train()
    assert f"last complete checkpoint, {output_dir / 'checkpoint-1'}, is usable" in str(full.value)
    assert not (output_dir / "checkpoint-2").exists()  # half-written: removed, it frees space
    assert resolve_resume_checkpoint(output_dir, "latest") == str(output_dir / "checkpoint-1")


# --- 5. sample prompts longer than the context ----------------------------------------------------------


def test_sample_prompt_past_the_context_is_skipped_with_a_warning_before_step_1(tokenizer, tmp_path, caplog):
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 20
    callback = SampleGenerationCallback(tokenizer, [long_prompt, "Once upon"], max_new_tokens=4)
    args = training_args(
        tmp_path / "out", max_steps=1, save_strategy="no", eval_strategy="steps", eval_steps=1
    )
    trainer = make_trainer(tokenizer, args, callbacks=[callback], eval_dataset=blocks(4))
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert callback.prompts == ["Once upon"]
    assert f"context of {CONTEXT} tokens" in caplog.text and "The quick brown fox" in caplog.text
    samples = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 1 and '"Once upon' in samples[0]
