"""The time budget: model-size choice and step count from a (fake) measured throughput, and the real probe."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling

from hf_scratchgpt import ScratchGPTConfig, ScratchGPTForCausalLM, ScratchGPTTokenizer
from hf_scratchgpt.budget import (
    CHINCHILLA_TOKENS_PER_PARAMETER,
    SIZE_LADDER,
    TRAINING_SHARE,
    choose_model_size,
    max_steps_for_budget,
    measure_seconds_per_step,
    non_embedding_parameters,
    plan_to_budget,
    training_flops_per_token,
)
from hf_scratchgpt.training import ScratchGPTTrainingArguments

VOCAB = 4096


def config_for(size):
    return ScratchGPTConfig.from_preset(size.preset, vocab_size=VOCAB, **size.overrides)


def needed_flops(size) -> float:
    """FLOPs of the compute-optimal run of a rung: 20 tokens per non-embedding parameter."""
    config = config_for(size)
    tokens = CHINCHILLA_TOKENS_PER_PARAMETER * non_embedding_parameters(config)
    return tokens * training_flops_per_token(config, config.max_position_embeddings)


@pytest.mark.parametrize("recipe", ["tiny", "tiny-modern"])
def test_non_embedding_parameters_match_the_model(recipe):
    config = ScratchGPTConfig.from_preset(recipe, vocab_size=512, num_hidden_layers=2)
    model = ScratchGPTForCausalLM(config)
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    head = 0 if config.tie_word_embeddings else model.lm_head.weight.numel()
    assert non_embedding_parameters(config) == model.num_parameters() - embeddings - head


def test_the_ladder_grows_and_ends_at_gpt2():
    sizes = [non_embedding_parameters(config_for(size)) for size in SIZE_LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert SIZE_LADDER[-1].name == "gpt2" and sizes[-1] == 124_439_808 - (50257 + 1024) * 768  # GPT-2 small


def test_the_largest_rung_that_reaches_its_optimum_is_chosen():
    budget = 600.0
    for index, size in enumerate(SIZE_LADDER[:-1]):
        # Just enough FLOP/s for this rung's compute-optimal run, and not the next one's.
        speed = needed_flops(size) / budget * 1.01
        assert speed * budget < needed_flops(SIZE_LADDER[index + 1])
        choice = choose_model_size(speed, budget, config_for)
        assert choice.size == size, (size.name, choice.size.name)
        assert choice.affordable_tokens >= choice.optimal_tokens
        assert f"{size.name}," in choice.rule and "Chinchilla" in choice.rule


def test_bounds_of_the_ladder():
    slow = choose_model_size(1e6, 60.0, config_for)  # far too slow for even the smallest optimum
    assert slow.size == SIZE_LADDER[0] and "bounded below" in slow.rule
    assert slow.affordable_tokens < slow.optimal_tokens
    fast = choose_model_size(1e18, 3600.0, config_for)  # a GPU cluster: capped at the largest rung
    assert fast.size == SIZE_LADDER[-1] and "the largest rung" in fast.rule


def test_max_steps_fill_the_time():
    assert max_steps_for_budget(100.0, 0.25) == 400
    assert max_steps_for_budget(1.0, 0.25) == 10  # never fewer than min_steps
    with pytest.raises(ValueError, match="positive"):
        max_steps_for_budget(10.0, 0.0)


@pytest.mark.parametrize("flops_per_second", [2e9, 2e11, 2e13])
def test_plan_with_a_fake_throughput(flops_per_second):
    """A fake machine of a given speed: the plan picks the size for it and fills the seconds left."""
    step_seconds = {}

    def probe(size):
        config = config_for(size)
        tokens = 16 * config.max_position_embeddings
        step_seconds[size.name] = (
            tokens * training_flops_per_token(config, config.max_position_embeddings) / flops_per_second
        )
        return config, tokens, step_seconds[size.name]

    def evaluation_seconds(seconds_per_step):
        return 10 * seconds_per_step

    plan = plan_to_budget(
        lambda: 900.0, probe, config_for, size_open=True, evaluation_seconds=evaluation_seconds
    )
    # The size is chosen from the first probe (the default tiny rung), at that rung's speed in FLOP/s.
    expected = choose_model_size(
        flops_per_second, (900.0 - 10 * step_seconds["tiny"]) * TRAINING_SHARE, config_for
    )
    assert plan.size == expected.size and plan.size_rule == expected.rule
    assert list(step_seconds)[0] == "tiny" and plan.size.name in step_seconds
    assert plan.flops_per_second == pytest.approx(flops_per_second)
    # Then max_steps fills the time left at the chosen rung's own measured speed.
    assert plan.seconds_per_step == step_seconds[plan.size.name]
    train_seconds = (900.0 - 10 * plan.seconds_per_step) * TRAINING_SHARE
    assert plan.max_steps == max(10, math.floor(train_seconds / plan.seconds_per_step))
    assert plan.tokens == plan.max_steps * plan.tokens_per_step


def test_faster_machines_train_bigger_models():
    chosen = [choose_model_size(speed, 900.0, config_for).size for speed in (1e9, 1e11, 1e13, 1e15, 1e17)]
    indices = [SIZE_LADDER.index(size) for size in chosen]
    assert indices == sorted(indices) and indices[0] == 0 and indices[-1] == len(SIZE_LADDER) - 1


def test_a_fixed_size_is_kept():
    calls = []

    def probe(size):
        calls.append(size)
        return config_for(SIZE_LADDER[3]), 4096, 0.5

    plan = plan_to_budget(lambda: 100.0, probe, config_for, size_open=False)
    assert calls == [None] and plan.size is None and plan.size_rule is None
    assert plan.max_steps == int(100.0 * TRAINING_SHARE / 0.5)


def test_measuring_a_real_step_leaves_the_model_untouched(tmp_path):
    tokenizer = ScratchGPTTokenizer()
    config = ScratchGPTConfig.from_preset("tiny", vocab_size=len(tokenizer), num_hidden_layers=1, hidden_size=32,
                                          num_attention_heads=2, max_position_embeddings=32)  # fmt: skip
    model = ScratchGPTForCausalLM(config)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    blocks = Dataset.from_dict({"input_ids": [[i % 200 + 5] * 32 for i in range(64)]})
    args = ScratchGPTTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none",
                                       use_cpu=True, precision="fp32")  # fmt: skip
    seconds = measure_seconds_per_step(
        model, blocks, args, DataCollatorForLanguageModeling(tokenizer, mlm=False), 3
    )
    assert 0 < seconds < 30
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert args.max_steps == -1 and args.output_dir == str(tmp_path)  # the run's own arguments are unchanged


def test_time_budget_callback_stops_training_when_the_time_is_up(tmp_path):
    import time

    from transformers import Trainer

    from hf_scratchgpt.budget import TimeBudgetCallback

    tokenizer = ScratchGPTTokenizer()
    config = ScratchGPTConfig.from_preset("tiny", vocab_size=len(tokenizer), num_hidden_layers=1, hidden_size=32,
                                          num_attention_heads=2, max_position_embeddings=16)  # fmt: skip
    blocks = Dataset.from_dict({"input_ids": [[i % 200 + 5] * 16 for i in range(64)]})
    args = ScratchGPTTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=30,
                                       report_to="none", use_cpu=True, precision="fp32", save_strategy="no")  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    out_of_time = TimeBudgetCallback(deadline=time.perf_counter() + 0.0)
    trainer = Trainer(model=ScratchGPTForCausalLM(config), args=args, train_dataset=blocks, data_collator=collator,
                      callbacks=[out_of_time])  # fmt: skip
    trainer.train()
    assert trainer.state.global_step == out_of_time.stopped_at_step == 1
    plenty = TimeBudgetCallback.for_stage(10.0, time.perf_counter())  # 7 of 10 minutes for training
    assert plenty.deadline == pytest.approx(time.perf_counter() + 420, abs=5)


def test_several_precisions_are_measured_and_the_fastest_kept():
    calls = []

    def probe(size, precision=None):
        calls.append((size.name, precision))
        seconds = {"bf16": 2.0, "fp32": 1.0}[precision]  # a CPU whose bf16 is slower at this size
        return config_for(size), 4096, seconds

    plan = plan_to_budget(lambda: 600.0, probe, config_for, size_open=True, precisions=("bf16", "fp32"))
    assert plan.precision == "fp32" and plan.precision_seconds_per_step == {"bf16": 2.0, "fp32": 1.0}
    assert calls[:2] == [("tiny", "bf16"), ("tiny", "fp32")]
    assert all(precision == "fp32" for _, precision in calls[2:])  # the chosen size is measured in fp32
