"""Model robustness: packed rows past the context, generation that stops at the context, empty prompts,
and a tensor-parallel plan that is valid for every recipe."""

from __future__ import annotations

import pytest
import torch
from conftest import RECIPES, tiny_model
from transformers import pipeline
from transformers.distributed import DistributedConfig
from transformers.distributed.parallel_utils import ALL_PARALLEL_STYLES, replace_layer_number_by_wildcard
from transformers.testing_utils import CaptureLogger

from hf_scratchgpt import ScratchGPTForSequenceClassification
from hf_scratchgpt.model.modeling_scratchgpt import logger as modeling_logger
from hf_scratchgpt.model.tokenizer_sync import align_model_and_tokenizer


def random_ids(length: int, seed: int) -> torch.Tensor:
    return torch.randint(2, 300, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_packed_row_longer_than_the_context_equals_separate_forwards(recipe):
    model = tiny_model(recipe)  # 64 positions
    sequences = [random_ids(30, 1), random_ids(25, 2), random_ids(20, 3)]  # 75 tokens in one row
    packed = torch.cat(sequences, dim=1)
    position_ids = torch.cat([torch.arange(s.shape[1]) for s in sequences])[None]
    with torch.no_grad():
        logits = model(packed, position_ids=position_ids).logits
        start = 0
        for sequence in sequences:
            end = start + sequence.shape[1]
            torch.testing.assert_close(logits[:, start:end], model(sequence).logits, atol=1e-5, rtol=1e-5)
            start = end
    if recipe == "modern":
        return  # rotary positions have no table to index past
    # The positions actually looked up still are checked.
    with pytest.raises(ValueError, match=r"reaches position 64.*max_position_embeddings=64"):
        model(random_ids(2, 4), position_ids=torch.tensor([[63, 64]]))


def test_generation_stops_at_the_learned_context_with_a_warning_and_keeps_the_tokens():
    model = tiny_model("gpt2")
    prompt = random_ids(60, 5)
    settings = {"do_sample": False, "pad_token_id": 1, "eos_token_id": None}
    with CaptureLogger(modeling_logger) as captured:
        capped = model.generate(prompt, max_new_tokens=20, **settings)
    assert "Asked for 20 new tokens but only 4 fit" in captured.out
    assert capped.shape == (1, 64)
    torch.testing.assert_close(capped, model.generate(prompt, max_new_tokens=4, **settings))
    static = model.generate(prompt, max_new_tokens=20, cache_implementation="static", **settings)
    torch.testing.assert_close(static, capped)
    embeds = model.generate(inputs_embeds=model.get_input_embeddings()(prompt), max_new_tokens=20, **settings)
    torch.testing.assert_close(embeds, capped[:, 60:])
    # A rope model has no position table: nothing is capped.
    assert tiny_model("modern").generate(prompt, max_new_tokens=20, **settings).shape == (1, 80)


def test_prompt_that_fills_the_context_and_empty_prompt_get_clear_errors():
    model = tiny_model("gpt2")
    with pytest.raises(ValueError, match="The prompt has 64 tokens, which fills the model's context"):
        model.generate(random_ids(64, 6), max_new_tokens=3, pad_token_id=1)
    with pytest.raises(ValueError, match="input of 0 tokens"):
        model.generate(torch.empty(1, 0, dtype=torch.long), max_new_tokens=3, pad_token_id=1)
    with pytest.raises(ValueError, match="input of 0 tokens"):
        ScratchGPTForSequenceClassification(model.config)(torch.empty(2, 0, dtype=torch.long))
    from_bos = model.generate(max_new_tokens=3, do_sample=False, pad_token_id=1, eos_token_id=None)
    assert from_bos.shape == (1, 4) and from_bos[0, 0] == model.config.bos_token_id


def test_text_generation_pipeline_returns_what_fits_in_the_context(tokenizer):
    model = tiny_model("gpt2", vocab_size=len(tokenizer))
    align_model_and_tokenizer(model, tokenizer)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompt = "Once upon a time there was a little robot."
    n_prompt = len(tokenizer(prompt).input_ids)
    assert 20 < n_prompt < 64
    with CaptureLogger(modeling_logger) as captured:
        output = generator(prompt, max_new_tokens=50, do_sample=False, eos_token_id=None, return_tensors=True)
    assert f"only {64 - n_prompt} fit" in captured.out
    generated = output[0]["generated_token_ids"]
    assert len(generated) == 64 and generated[:n_prompt] == tokenizer(prompt).input_ids


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_tensor_parallel_plan_names_real_modules_with_known_styles(recipe):
    model = tiny_model(recipe)
    names = {replace_layer_number_by_wildcard(name) for name, _ in model.named_modules()}
    assert set(model.tp_plan) <= names, set(model.tp_plan) - names
    assert set(model.tp_plan.values()) <= set(ALL_PARALLEL_STYLES)
    assert model.tp_plan["transformer.wte"] == "embedding_rowwise"
    assert model.tp_plan["lm_head"] == "colwise_gather_output"  # tied or not, the logits are gathered
    assert ("transformer.h.*.mlp.gate_proj" in model.tp_plan) == (model.config.mlp_type == "swiglu")
    # What from_pretrained(tp_plan="auto") resolves: every linear layer of every block gets a rule.
    tp_plan, _, _ = model._resolve_parallel_plans(DistributedConfig(tp_size=2))
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    assert linears <= set(tp_plan)
