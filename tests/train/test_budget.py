"""The time budget: model-size choice and step count from a (fake) measured throughput, and the real probe."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainerState

from hf_scratchgpt import ScratchGPTConfig, ScratchGPTForCausalLM, ScratchGPTTokenizer
from hf_scratchgpt.train.arguments import InvalidArgumentsError, parse_args
from hf_scratchgpt.train.budget import (
    CHINCHILLA_TOKENS_PER_PARAMETER,
    EPOCHS_WORTH_REPEATING,
    MIN_STEPS_TO_GROW,
    MIN_USEFUL_STEPS,
    SIZE_LADDER,
    TRAINING_SHARE,
    BudgetArguments,
    choose_model_size,
    max_steps_for_budget,
    measure_seconds_per_step,
    non_embedding_parameters,
    plan_to_budget,
    training_flops_per_token,
)
from hf_scratchgpt.train.schedule import DeadlineLR, DeadlineSchedule, fit_steps_to_schedule, schedule_shape
from hf_scratchgpt.train.trainer import ScratchGPTTrainingArguments

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
        flops_per_second,
        (900.0 - 10 * step_seconds["tiny"]) * TRAINING_SHARE,
        config_for,
        sequences_per_step=16,
    )
    assert plan.size == expected.size and plan.size_rule == expected.rule
    assert list(step_seconds)[0] == "tiny" and plan.size.name in step_seconds
    assert plan.flops_per_second == pytest.approx(flops_per_second)
    # Then max_steps fills the time left at the chosen rung's own measured speed.
    assert plan.seconds_per_step == step_seconds[plan.size.name]
    train_seconds = (900.0 - 10 * plan.seconds_per_step) * TRAINING_SHARE
    assert plan.max_steps == max(10, math.floor(train_seconds / plan.seconds_per_step))
    assert plan.tokens == plan.max_steps * plan.tokens_per_step


def test_a_larger_rung_needs_enough_optimizer_steps():
    # Enough FLOP/s for `small`'s compute-optimal tokens, but in big batches: too few optimizer steps for it.
    small = next(rung for rung in SIZE_LADDER if rung.name == "small")
    budget = 600.0
    speed = needed_flops(small) / budget * 1.01
    assert choose_model_size(speed, budget, config_for).size == small  # no batch given: no floor
    context = config_for(small).max_position_embeddings
    optimal_steps = CHINCHILLA_TOKENS_PER_PARAMETER * non_embedding_parameters(config_for(small)) / context
    few_steps = optimal_steps / (MIN_STEPS_TO_GROW / 2)  # sequences per step that leave `small` ~125 steps
    held = choose_model_size(speed, budget, config_for, sequences_per_step=few_steps)
    assert held.size.name == "tiny"
    assert (
        "not small, which the budget buys only" in held.rule
        and f"fewer than {MIN_STEPS_TO_GROW}" in held.rule
    )
    steps = held.affordable_tokens / (few_steps * config_for(held.size).max_position_embeddings)
    assert steps >= MIN_STEPS_TO_GROW
    # Smaller batches buy `small` its steps: it is chosen again.
    many_steps = optimal_steps / (MIN_STEPS_TO_GROW * 2)
    assert choose_model_size(speed, budget, config_for, sequences_per_step=many_steps).size == small


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
    config = ScratchGPTConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        max_position_embeddings=32,
    )
    model = ScratchGPTForCausalLM(config)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    blocks = Dataset.from_dict({"input_ids": [[i % 200 + 5] * 32 for i in range(64)]})
    args = ScratchGPTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        report_to="none",
        use_cpu=True,
        precision="fp32",
    )
    seconds = measure_seconds_per_step(
        model, blocks, args, DataCollatorForLanguageModeling(tokenizer, mlm=False), 3
    )
    assert 0 < seconds < 30
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert args.max_steps == -1 and args.output_dir == str(tmp_path)  # the run's own arguments are unchanged


def test_time_budget_callback_stops_training_when_the_time_is_up(tmp_path):
    import time

    from transformers import Trainer

    from hf_scratchgpt.train.budget import TimeBudgetCallback

    tokenizer = ScratchGPTTokenizer()
    config = ScratchGPTConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        max_position_embeddings=16,
    )
    blocks = Dataset.from_dict({"input_ids": [[i % 200 + 5] * 16 for i in range(64)]})
    args = ScratchGPTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=30,
        report_to="none",
        use_cpu=True,
        precision="fp32",
        save_strategy="no",
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    out_of_time = TimeBudgetCallback(deadline=time.perf_counter() + 0.0)
    trainer = Trainer(
        model=ScratchGPTForCausalLM(config),
        args=args,
        train_dataset=blocks,
        data_collator=collator,
        callbacks=[out_of_time],
    )
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


# --- the schedule follows the clock (hf_scratchgpt.train.schedule), driven by a fake clock and fake slow steps ---


class FakeClock:
    """A clock that only moves when a step "takes" time: no real waiting, no timing in the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowSteps(TrainerCallback):
    """Every optimizer step takes ``seconds`` of the fake clock (before the scheduler reads it)."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.clock.now += self.seconds


def run_against_the_clock(
    tmp_path, step_seconds: float, headroom: float = 10.0, planned_steps: int = 20, window: float = 10.0
):
    """Train a tiny model whose plan said ``planned_steps`` fit in ``window`` seconds, with steps that
    really take ``step_seconds``; returns the trainer, the schedule and the learning rate of every step."""
    tokenizer = ScratchGPTTokenizer()
    config = ScratchGPTConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        max_position_embeddings=16,
    )
    blocks = Dataset.from_dict({"input_ids": [[i % 200 + 5] * 16 for i in range(64)]})
    args = ScratchGPTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        precision="fp32",
        learning_rate=1e-3,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": 1e-4},
        warmup_steps=2,
        logging_steps=1,
        eval_strategy="steps",
        save_strategy="no",
        disable_tqdm=True,
    )
    clock = FakeClock()
    warmup = fit_steps_to_schedule(args, planned_steps, headroom)
    schedule = DeadlineSchedule(clock() + window, warmup, clock=clock)
    trainer = Trainer(
        model=ScratchGPTForCausalLM(config),
        args=args,
        train_dataset=blocks,
        eval_dataset=blocks.select(range(4)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[SlowSteps(clock, step_seconds), schedule],
    )
    schedule.install(trainer)
    trainer.train()
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    return trainer, schedule, rates


def test_a_machine_slower_than_measured_still_warms_up_decays_and_stops_at_the_deadline(tmp_path):
    # The probe said 0.5 s/step (20 steps in 10 s); the steps really take 1 s: half the steps, whole schedule.
    trainer, schedule, rates = run_against_the_clock(tmp_path, step_seconds=1.0)
    assert trainer.state.global_step == schedule.stopped_at_step == 10
    assert schedule.progress == 1.0 and trainer.state.max_steps == 200  # ten times the plan: only a bound
    assert max(rates) == pytest.approx(1e-3, rel=0.05)  # warmed up to the peak
    assert rates[-1] < 1.5e-4  # and decayed to about min_lr (a step-based cosine would stop near 5.5e-4)
    assert rates == sorted(rates[: rates.index(max(rates)) + 1]) + sorted(
        rates[rates.index(max(rates)) + 1 :], reverse=True
    )
    # The evaluations come at fifths of the time, the last one at the deadline.
    eval_steps = [entry["step"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert eval_steps == [2, 4, 6, 8, 10]


def test_a_machine_faster_than_measured_uses_the_whole_time(tmp_path):
    trainer, schedule, rates = run_against_the_clock(tmp_path, step_seconds=0.25)  # twice as fast as planned
    assert trainer.state.global_step == schedule.stopped_at_step == 40 and schedule.progress == 1.0
    assert rates[-1] < 1.5e-4


def test_the_step_bound_is_at_most_the_steps_of_the_most_epochs_worth_training():
    args = ScratchGPTTrainingArguments(output_dir="unused", warmup_steps=50, use_cpu=True, precision="fp32")
    assert fit_steps_to_schedule(args, 100, most_steps=150) == pytest.approx(0.1) and args.max_steps == 150
    assert args.eval_steps == args.save_steps == 151  # the schedule requests evaluations by time instead
    fit_steps_to_schedule(args, 100)
    assert args.max_steps == 1000


def test_a_schedule_that_reaches_max_steps_first_ends_there_fully_decayed(tmp_path):
    trainer, schedule, rates = run_against_the_clock(
        tmp_path, step_seconds=0.1, headroom=2
    )  # 40 steps in 4 s
    assert trainer.state.global_step == 40 and schedule.progress == 1.0
    assert rates[-1] < 1.5e-4


def test_the_schedule_keeps_the_shape_transformers_gives_it():
    args = ScratchGPTTrainingArguments(
        output_dir="unused",
        learning_rate=2e-3,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": 2e-4},
        use_cpu=True,
        precision="fp32",
    )
    shape = schedule_shape(args, warmup_fraction=0.1)
    assert shape(0.0) == 0.0 and shape(0.05) == pytest.approx(0.5) and shape(0.1) == pytest.approx(1.0)
    assert shape(1.0) == pytest.approx(0.1)  # min_lr / learning_rate
    assert shape(0.55) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-3)  # halfway through the cosine
    args.lr_scheduler_type = "reduce_lr_on_plateau"
    with pytest.raises(ValueError, match="--lr_scheduler_type reduce_lr_on_plateau.*cosine"):
        schedule_shape(args, 0.1)


def test_a_resumed_run_continues_the_schedule_from_its_checkpoint(tmp_path):
    clock = FakeClock()
    optimizer = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=1.0)
    schedule = DeadlineSchedule(clock() + 100, warmup_fraction=0.0, clock=clock)
    scheduler = DeadlineLR(optimizer, schedule, shape=lambda progress: 1.0 - progress)
    schedule.progress = 0.6
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")  # as Trainer checkpoints it

    # A new process, with a new deadline (its own budget): the schedule goes on from 0.6 to 1 by then.
    resumed = DeadlineSchedule(clock() + 50, warmup_fraction=0.0, clock=clock)
    fresh = DeadlineLR(
        torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=1.0), resumed, lambda p: 1.0 - p
    )
    fresh.load_state_dict(torch.load(tmp_path / "scheduler.pt", weights_only=True))
    assert resumed.progress == 0.6 and fresh.get_last_lr() == scheduler.get_last_lr()
    resumed.on_train_begin(None, TrainerState(max_steps=1000), None)
    clock.now += 25  # half of the new window
    assert resumed.measure(step=10) == pytest.approx(0.8)


# --- a small corpus, a budget too small, a budget that makes no sense ---


def test_a_small_corpus_buys_a_larger_model_instead_of_more_epochs():
    budget, speed = 900.0, needed_flops(SIZE_LADDER[1]) / 900.0 * 1.5  # 1.5x nano's optimum, short of micro's
    unlimited = choose_model_size(speed, budget, config_for)
    assert unlimited.size.name == "nano" and "Chinchilla" in unlimited.rule
    corpus = unlimited.affordable_tokens / 10  # nano would see 10 epochs of this corpus
    constrained = choose_model_size(speed, budget, config_for, corpus_tokens=corpus)
    assert constrained.size.name == "micro" and "Muennighoff" in constrained.rule
    # micro sees at least 4 epochs (4.3 here); the next rung could not.
    assert (
        4 * corpus <= constrained.affordable_tokens < 5 * corpus
        and "epochs of the corpus" in constrained.rule
    )
    bigger = choose_model_size(speed, budget, config_for, ladder=SIZE_LADDER[3:], corpus_tokens=corpus)
    assert bigger.affordable_tokens < EPOCHS_WORTH_REPEATING * corpus
    # A corpus large enough for the Chinchilla optimum changes nothing.
    plenty = choose_model_size(speed, budget, config_for, corpus_tokens=unlimited.affordable_tokens)
    assert plenty.size == unlimited.size


def test_a_corpus_shorter_than_a_context_does_not_buy_that_context():
    # A GPU's speed: with unlimited text, a rung with a 512- or 1024-token context; with 300 tokens, not.
    unlimited = choose_model_size(1e15, 900.0, config_for)
    assert config_for(unlimited.size).max_position_embeddings > 300
    choice = choose_model_size(1e15, 900.0, config_for, corpus_tokens=300)
    assert config_for(choice.size).max_position_embeddings <= 300 and choice.size.name == "tiny"


def fixed_speed_probe(seconds_per_step: float):
    def probe(size):
        return config_for(SIZE_LADDER[1]), 4096, seconds_per_step

    return probe


def test_a_budget_too_small_for_a_useful_model_says_what_would_be_enough():
    plan = plan_to_budget(lambda: 20.0, fixed_speed_probe(1.0), config_for, size_open=False)
    assert plan.max_steps == 17 and plan.too_small  # 20 s x 0.85 at 1 s/step
    assert plan.seconds_short == pytest.approx((MIN_USEFUL_STEPS - 17) / TRAINING_SHARE)
    enough = plan_to_budget(
        lambda: 20.0 + plan.seconds_short, fixed_speed_probe(1.0), config_for, size_open=False
    )
    assert enough.max_steps == MIN_USEFUL_STEPS and not enough.too_small
    assert not plan_to_budget(lambda: 600.0, fixed_speed_probe(1.0), config_for, size_open=False).too_small


@pytest.mark.parametrize("value", ["-3", "0"])
def test_a_time_budget_of_zero_or_less_is_refused_naming_the_flag(value):
    with pytest.raises(
        InvalidArgumentsError, match=rf"--time_budget {value}: must be a positive number of minutes"
    ):
        parse_args((BudgetArguments,), ["--time_budget", value])
    with pytest.raises(InvalidArgumentsError, match="--budget_probe_steps 1: must be 2 or more"):
        parse_args((BudgetArguments,), ["--budget_probe_steps", "1"])
    assert parse_args((BudgetArguments,), ["--time_budget", "0.5"])[0].time_budget == 0.5
    assert parse_args((BudgetArguments,), [])[0].time_budget is None
