"""What breaks when transformers, PEFT, TRL or lm-eval change under the model: the compatibility lane's core.

transformers 5.24 renamed the KV cache (`past_key_values` -> `cache`) in `generate()`, masks, outputs and Trainer,
and moved the paged-cache update into models. Each test here drives the model through a library's own entry
point (not our wrappers) and compares with a reference computed without the feature under test, so a release
that changes the contract fails here by name. `make test` runs these on the lock; `.ci/run`'s compatibility
lane runs the tests marked `compat` on the newest releases and on the declared minimums.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from conftest import tiny_model
from datasets import Dataset
from transformers import ContinuousBatchingConfig, GenerationConfig, Trainer, TrainingArguments

pytestmark = pytest.mark.compat

GREEDY = dict(do_sample=False, pad_token_id=1, eos_token_id=None)


def prompts(lengths: tuple[int, ...] = (5, 9, 3), seed: int = 3) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 300, (n,), generator=generator).tolist() for n in lengths]


def one_by_one(model, batch: list[list[int]], new_tokens: int, **greedy) -> list[list[int]]:
    """Greedy continuations without a cache, one prompt at a time: the reference every faster path must equal."""
    greedy = {**GREEDY, **greedy}
    return [
        model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, use_cache=False, **greedy)[
            0, len(ids) :
        ].tolist()
        for ids in batch
    ]


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_continuous_batching_paged_cache_equals_generate(recipe, one_thread):
    """`generate_batch` (a paged cache that the model updates from transformers 5.24 on) gives every request
    the tokens plain greedy decoding gives, not one token per request."""
    model = tiny_model(recipe)
    batch = prompts()
    config = GenerationConfig(max_new_tokens=6, **GREEDY)
    # A cache for these few requests: by default transformers sizes it from free memory and zero-fills it, on a CPU
    # several GB and ~2 minutes.
    cache = ContinuousBatchingConfig(num_blocks=8, max_batch_tokens=128)
    results = model.generate_batch(batch, generation_config=config, continuous_batching_config=cache)
    got = [
        result.generated_tokens for result in sorted(results.values(), key=lambda r: int(r.request_id[4:]))
    ]
    assert got == one_by_one(model, batch, 6)


def test_left_padded_lora_batch_generates_like_one_by_one(one_thread):
    peft = pytest.importorskip("peft")
    model = tiny_model("modern")
    lora = peft.get_peft_model(
        model, peft.LoraConfig(task_type="CAUSAL_LM", r=4, init_lora_weights=False)
    ).eval()
    batch = prompts()
    width = max(map(len, batch))
    ids = torch.tensor([[1] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    generated = lora.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, **GREEDY)[:, width:]
    assert generated.tolist() == one_by_one(lora, batch, 6)


def test_trainer_trains_and_evaluates_with_use_cache_on(tmp_path, one_thread):
    """Trainer drops the cache from the outputs it gathers (`keys_to_ignore_at_inference` names both names)."""
    model = tiny_model("gpt2", use_cache=True)
    rows = [{"input_ids": ids, "labels": ids} for ids in prompts((8, 8, 8, 8), seed=5)]
    data = Dataset.from_list(rows)
    args = TrainingArguments(
        tmp_path,
        max_steps=2,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        learning_rate=1e-3,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    metrics = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        expected = torch.stack(
            [model(torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss for r in rows]
        ).mean()
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_no_deprecation_warning_from_forward_generate_or_outputs(caplog):
    """The model speaks the running version's cache name: no FutureWarning, no "deprecated" log line."""
    model = tiny_model("modern")
    ids = torch.tensor(prompts((6,))[0])[None]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        model.generate(ids, max_new_tokens=4, **GREEDY)
        model.generate(ids, max_new_tokens=4, cache_implementation="static", **GREEDY)
        model(ids, use_cache=True)
    messages = [str(w.message) for w in caught] + [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "deprecat" in m.lower()], messages


@pytest.mark.parametrize("batch_size", [1, 2])
def test_lm_eval_generate_until_equals_generate(tokenizer, batch_size, one_thread):
    """lm-eval's `generate_until` (batched, left-padded) continues each context as greedy `generate` does."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model = tiny_model("gpt2", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    contexts = ["Once upon a time", "The quick brown fox jumps over", "Hugging"]
    settings = {"until": ["never-seen-stop"], "max_gen_toks": 6, "do_sample": False}
    requests = [Instance("generate_until", {}, (text, dict(settings)), i) for i, text in enumerate(contexts)]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=batch_size)
    generated = lm.generate_until(requests)
    # lm-eval stops at the tokenizer's end-of-text as well as at `until`.
    continuations = one_by_one(
        model, [tokenizer(text).input_ids for text in contexts], 6, eos_token_id=tokenizer.eos_token_id
    )
    expected = [tokenizer.decode(tokens, skip_special_tokens=True) for tokens in continuations]
    assert generated == expected
