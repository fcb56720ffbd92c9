"""Arguments are checked when they are built: a nonsense number or word is refused naming the flag, whether it
comes from the command line, a YAML config or Python, in every dataclass of the project's scripts."""

from __future__ import annotations

import dataclasses

import pytest

from eval.generate_samples import SampleArguments
from hf_scratchgpt.finetune.instruction_tuning import DPOArguments, SFTArguments
from hf_scratchgpt.train.arguments import InvalidArgumentsError, ValidatedArguments, parse_args
from hf_scratchgpt.train.budget import BudgetArguments
from hf_scratchgpt.train.optim import OptimizerArguments
from hf_scratchgpt.train.pretraining import DataArguments, ModelArguments
from hf_scratchgpt.train.trainer import ScratchGPTTrainingArguments
from training.speedrun import SpeedrunArguments


@dataclasses.dataclass
class DataLikeArguments:
    validation_fraction: float = 0.1
    block_size: int | None = None


def parse(*flags: str):
    return parse_args(
        (DataLikeArguments, ScratchGPTTrainingArguments),
        ["--output_dir", "unused", "--use_cpu", "--precision", "fp32", *flags],
    )


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--max_steps", "-5"], "--max_steps -5"),
        (["--max_steps", "0"], "--max_steps 0"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0"),
        (["--per_device_eval_batch_size", "-1"], "--per_device_eval_batch_size -1"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0"),
        (["--learning_rate", "0"], "--learning_rate 0"),
        (["--learning_rate=-1e-3"], "--learning_rate -0.001"),
        (["--warmup_steps", "-1"], "--warmup_steps -1"),
        (["--eval_strategy", "steps", "--eval_steps", "0"], "--eval_steps 0"),
        (["--save_steps", "-10"], "--save_steps -10"),
        (["--logging_steps", "0"], "--logging_steps 0"),
        (["--validation_fraction", "0"], "--validation_fraction 0"),
        (["--validation_fraction", "1.5"], "--validation_fraction 1.5"),
        (["--block_size", "0"], "--block_size 0"),
        (["--num_train_epochs", "0"], "--num_train_epochs 0"),
    ],
)
def test_nonsense_numbers_are_refused_naming_the_flag(flags, named):
    with pytest.raises(InvalidArgumentsError, match=f"{named}: must be"):
        parse(*flags)


def test_sensible_numbers_pass_and_every_problem_is_named_at_once():
    data, args = parse(
        "--max_steps", "-1", "--block_size", "32", "--save_strategy", "no", "--save_steps", "0"
    )
    assert (args.max_steps, data.block_size, data.validation_fraction) == (-1, 32, 0.1)
    with pytest.raises(InvalidArgumentsError) as invalid:
        parse("--max_steps", "-5", "--warmup_steps", "-1", "--learning_rate", "0")
    assert [line.split(":")[0].strip() for line in str(invalid.value).splitlines()[1:]] == [
        "--max_steps -5",
        "--learning_rate 0",
        "--warmup_steps -1",
    ]


@dataclasses.dataclass
class CheckedArguments(ValidatedArguments):
    validation_fraction: float = 0.1
    block_size: int | None = None


def test_the_projects_arguments_check_their_numbers_when_built_from_python_too():
    with pytest.raises(InvalidArgumentsError, match="--block_size 0: must be a positive number"):
        CheckedArguments(block_size=0)
    # Before the parent's own __post_init__, which would silently turn --eval_steps 0 into --logging_steps.
    with pytest.raises(
        InvalidArgumentsError, match="--eval_steps 0: must be positive with --eval_strategy steps"
    ):
        SFTArguments(output_dir="unused", precision="fp32", eval_strategy="steps", eval_steps=0)
    with pytest.raises(InvalidArgumentsError) as invalid:  # every problem of a dataclass at once
        DPOArguments(output_dir="unused", precision="fp32", max_steps=-5, learning_rate=0)
    assert [line.split(":")[0].strip() for line in str(invalid.value).splitlines()[1:]] == [
        "--max_steps -5",
        "--learning_rate 0",
    ]


def test_a_config_file_gives_defaults_that_the_command_line_overrides(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("block_size: 8\nvalidation_fraction: 0.2\n")
    (data,) = parse_args((CheckedArguments,), [f"--config={config}", "--block_size", "16"])
    assert (data.block_size, data.validation_fraction) == (16, 0.2)
    config.write_text("validation_fraction: 1.5\n")  # a nonsense value from the file is named as a flag too
    with pytest.raises(InvalidArgumentsError, match="--validation_fraction 1.5: must be a fraction"):
        parse_args((CheckedArguments,), ["--config", str(config)])
    config.write_text("block_sise: 8\n")
    with pytest.raises(
        ValueError, match=r"recipe.yaml: unknown field\(s\) \['block_sise'\]. Valid fields: \["
    ):
        parse_args((CheckedArguments,), ["--config", str(config)])
    with pytest.raises(SystemExit):  # argparse's usage error, status 2
        parse_args((CheckedArguments,), ["--block_sise", "8"])


@pytest.mark.parametrize(
    "build, named",
    [
        (
            lambda: ScratchGPTTrainingArguments("unused", use_cpu=True, precision="fp32", max_steps=-5),
            "--max_steps -5: must be",
        ),
        (lambda: ModelArguments(tokenizer_vocab_size=0), "--tokenizer_vocab_size 0: must be"),
        (lambda: DataArguments(max_eval_blocks=0), "--max_eval_blocks 0: must be"),
        (lambda: DataArguments(split_mode="tial"), "--split_mode tial: must be one of random, tail"),
        (
            lambda: DataArguments(txt_mode="lines"),
            "--txt_mode lines: must be one of document, line, separator",
        ),
        (lambda: OptimizerArguments(muon_momentum=1.0), "--muon_momentum 1: must be"),
        (lambda: OptimizerArguments(muon_learning_rate=0), "--muon_learning_rate 0: must be"),
        (lambda: BudgetArguments(budget_probe_steps=1), "--budget_probe_steps 1: must be 2 or more"),
        (lambda: SpeedrunArguments(eval_limit=0), "--eval_limit 0: must be"),
        (lambda: SpeedrunArguments(tokenizer_vocab_size=-1), "--tokenizer_vocab_size -1: must be"),
        (lambda: SampleArguments("model", max_new_tokens=0), "--max_new_tokens 0: must be"),
        (lambda: SampleArguments("model", seed=-1), "--seed -1: must be"),
    ],
)
def test_every_scripts_arguments_refuse_a_bad_value_naming_the_flag(build, named):
    with pytest.raises(InvalidArgumentsError, match=named):
        build()


def test_good_values_build_as_given():
    assert DataArguments(split_mode="tail", txt_mode="line").split_mode == "tail"
    assert OptimizerArguments(muon=True, muon_momentum=0.9).muon_momentum == 0.9
    assert SpeedrunArguments(seed=7, eval_limit=5).eval_limit == 5


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], None),
        (["--torch_compile"], True),
        (["--torch_compile", "--seed", "3"], True),
        (["--torch_compile", "false"], False),
    ],
)
def test_torch_compile_unset_means_decide_and_a_bare_flag_still_means_true(flags, expected, tmp_path):
    (args,) = parse_args((ScratchGPTTrainingArguments,), ["--output_dir", str(tmp_path), *flags])
    assert args.torch_compile is expected
