"""Precision is decided from the hardware before TrainingArguments hands it to Accelerate, and it sticks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from conftest import REPO, tiny_model

from hf_scratchgpt.train import hardware
from hf_scratchgpt.train.arguments import parse_args
from hf_scratchgpt.train.hardware import PrecisionError, can_compile
from hf_scratchgpt.train.pretraining import DataArguments, ModelArguments
from hf_scratchgpt.train.trainer import ScratchGPTTrainer, ScratchGPTTrainingArguments


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend to be a CPU machine with the given flags (no GPU), with a clean Accelerate environment."""

    def pretend(*flags: str) -> None:
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        for variable in ("ACCELERATE_MIXED_PRECISION", "SCRATCHGPT_PRECISION_DECIDED"):
            monkeypatch.delenv(variable, raising=False)

    return pretend


def forward_dtype(args: ScratchGPTTrainingArguments) -> torch.dtype:
    """The dtype the output head computes in when the Trainer's accelerator runs the model, as in training.

    (Read inside the forward: Accelerate converts the returned outputs back to fp32.)"""
    trainer = ScratchGPTTrainer(model=tiny_model(), args=args)
    model = trainer.accelerator.prepare_model(trainer.model)  # wraps forward in the accelerator's autocast
    seen = []
    model.lm_head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    model(torch.tensor([[1, 2, 3]]))
    return seen[0]


def test_the_recipe_on_a_cpu_without_bf16_trains_in_fp32(cpu_with, tmp_path):
    # The tiny recipe used to say `bf16: true`; on an AVX2-only CPU that meant emulated bf16, 100x slower.
    cpu_with("avx2", "fma")
    *_, args = parse_args(
        (ModelArguments, DataArguments, ScratchGPTTrainingArguments),
        [
            "--config",
            str(REPO / "training/configs/tiny.yaml"),
            "--output_dir",
            str(tmp_path),
            "--eval_strategy",
            "no",
        ],
    )
    assert args.precision == "fp32" and not args.bf16 and not args.fp16
    trainer = ScratchGPTTrainer(model=tiny_model(), args=args)
    assert trainer.accelerator.mixed_precision == "no"
    assert forward_dtype(args) == torch.float32


def test_auto_uses_native_bf16_on_a_cpu_that_has_it(cpu_with, tmp_path):
    for flag in ("avx512_bf16", "amx_bf16"):
        cpu_with("avx2", flag)
        args = ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none")
        assert args.precision == "bf16" and args.bf16 and args.use_cpu
        assert ScratchGPTTrainer(model=tiny_model(), args=args).accelerator.mixed_precision == "bf16"
        assert forward_dtype(args) == torch.bfloat16


def test_an_explicit_choice_wins_or_says_why_it_cannot(cpu_with, tmp_path):
    cpu_with("avx2")
    for request in ({"precision": "bf16"}, {"bf16": True}):
        with pytest.raises(PrecisionError, match=r"emulated.*--precision auto \(picks fp32 here\)"):
            ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none", **request)
    with pytest.raises(PrecisionError, match="fp16 needs a GPU"):
        ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none", precision="fp16")
    with pytest.raises(PrecisionError, match="not one of"):
        ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none", precision="half")
    with pytest.raises(PrecisionError, match="Conflicting"):
        ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none", precision="fp32", bf16=True)
    args = ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none", precision="fp32")
    assert forward_dtype(args) == torch.float32
    cpu_with("avx512_bf16")  # an explicit fp32 is kept on a bf16 machine too
    args = ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none", precision="fp32")
    assert (
        args.precision == "fp32"
        and ScratchGPTTrainer(model=tiny_model(), args=args).accelerator.mixed_precision == "no"
    )


def test_gpu_rules(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert hardware.resolve_precision("auto") == "fp16"  # T4 / V100: fp16 with loss scaling
    with pytest.raises(PrecisionError, match="Tesla T4 has no bf16"):
        hardware.resolve_precision("bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert hardware.resolve_precision("auto") == "bf16"
    assert hardware.resolve_precision("auto", use_cpu=True) in ("bf16", "fp32")  # then the CPU decides


def test_machine_description_names_the_processor():
    info = hardware.describe_machine(use_cpu=True)
    assert info["cpu"] and info["torch_threads"] >= 1 and info["device"] == "cpu"
    assert info["cpu"] in hardware.machine_summary(info)


def test_a_script_can_switch_to_the_precision_it_measured_faster(cpu_with, tmp_path):
    cpu_with("avx512_bf16")
    args = ScratchGPTTrainingArguments(output_dir=str(tmp_path), report_to="none")
    assert args.precision_requested == "auto" and forward_dtype(args) == torch.bfloat16  # a Trainer existed
    args.switch_precision("fp32")
    assert (args.precision, args.bf16, args.mixed_precision) == ("fp32", False, "no")
    assert ScratchGPTTrainer(model=tiny_model(), args=args).accelerator.mixed_precision == "no"
    assert forward_dtype(args) == torch.float32


def test_no_recipe_forces_the_cpu_and_auto_picks_bf16_on_a_bf16_gpu(monkeypatch):
    # Trainer picks CUDA, then MPS, then the CPU unless --use_cpu true; a recipe must not take that away.
    for recipe in sorted((REPO / "training" / "configs").glob("*.yaml")):
        assert "use_cpu" not in yaml.safe_load(recipe.read_text()), recipe.name
    use_cpu = next(f for f in dataclasses.fields(ScratchGPTTrainingArguments) if f.name == "use_cpu").default
    assert use_cpu is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert hardware.resolve_precision("auto", use_cpu) == "bf16"
    assert hardware.machine_summary(hardware.describe_machine(use_cpu)).startswith("1 x NVIDIA H200")


def test_compilation_needs_the_c_plus_plus_compiler_inductor_calls_on_a_cpu(monkeypatch):
    monkeypatch.delenv("TORCHDYNAMO_DISABLE", raising=False)
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert not can_compile(use_cpu=True)
    monkeypatch.setenv("CXX", "sh")  # any program on PATH stands for one here
    assert can_compile(use_cpu=True)
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")  # torch's own switch wins
    assert not can_compile(use_cpu=True)
