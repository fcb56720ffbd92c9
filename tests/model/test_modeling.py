"""Behaviour of the model itself: caching, padding, attention kernels, checkpointing, heads, errors.

Model robustness: packed rows past the context, generation that stops at the context, empty prompts,
and a tensor-parallel plan that is valid for every recipe.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import RECIPES, tiny_config, tiny_model
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache, pipeline
from transformers.distributed import DistributedConfig
from transformers.distributed.parallel_utils import ALL_PARALLEL_STYLES, replace_layer_number_by_wildcard
from transformers.testing_utils import CaptureLogger

from hf_scratchgpt import (
    ScratchGPTConfig,
    ScratchGPTForCausalLM,
    ScratchGPTForQuestionAnswering,
    ScratchGPTForSequenceClassification,
    ScratchGPTForTokenClassification,
    ScratchGPTModel,
)
from hf_scratchgpt.model.modeling_scratchgpt import CACHE_NAME
from hf_scratchgpt.model.modeling_scratchgpt import logger as modeling_logger
from hf_scratchgpt.model.tokenizer_sync import align_model_and_tokenizer

pytestmark = pytest.mark.compat  # part of the compatibility lane (see tests/test_compat.py)

ALL_RECIPES = list(RECIPES)


def prompt(batch: int = 1, length: int = 7, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, 300, (batch, length), generator=generator)


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_greedy_generation_identical_with_dynamic_static_and_no_cache(recipe):
    model = tiny_model(recipe)
    ids = prompt()
    greedy = dict(max_new_tokens=12, do_sample=False, pad_token_id=1, eos_token_id=None)
    dynamic = model.generate(ids, **greedy)
    no_cache = model.generate(ids, use_cache=False, **greedy)
    static = model.generate(ids, cache_implementation="static", **greedy)
    assert dynamic.shape == (1, 7 + 12)
    assert torch.equal(dynamic, no_cache)
    assert torch.equal(dynamic, static)
    assert len(set(dynamic[0, 7:].tolist())) > 1, "a degenerate model would make this test meaningless"


@pytest.mark.parametrize("recipe", ALL_RECIPES)
@pytest.mark.parametrize("cache_keyword", ["cache", "past_key_values"])
def test_continuing_from_returned_cache_equals_full_forward(recipe, cache_keyword):
    """The cache is taken under either name (transformers >= 5.24 passes `cache`, older `past_key_values`) and
    returned under the running version's output field."""
    model = tiny_model(recipe)
    ids = prompt(length=10)
    full = model(ids).logits
    first = model(ids[:, :6], use_cache=True)
    returned = getattr(first, CACHE_NAME)
    assert isinstance(returned, DynamicCache)
    assert returned.get_seq_length() == 6
    # The old name warns where transformers has renamed it (as its own models do), and is silent before.
    renamed = cache_keyword == "past_key_values" and CACHE_NAME == "cache"
    with pytest.warns(FutureWarning, match="past_key_values") if renamed else contextlib.nullcontext():
        rest = model(ids[:, 6:], use_cache=True, **{cache_keyword: returned}).logits
    torch.testing.assert_close(torch.cat([first.logits, rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_given_under_both_names_is_refused():
    model = tiny_model("gpt2")
    first = model(prompt(length=4), use_cache=True)
    returned = getattr(first, CACHE_NAME)
    with pytest.raises(ValueError, match="`cache` and as `past_key_values`"):
        model(prompt(length=1), cache=returned, past_key_values=returned)


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_left_padded_batch_generates_like_one_by_one(recipe):
    model = tiny_model(recipe)
    prompts = [prompt(length=n, seed=n)[0] for n in (3, 8, 5)]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((3, width), 1)
    attention_mask = torch.zeros((3, width), dtype=torch.long)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p) :] = p
        attention_mask[row, width - len(p) :] = 1
    greedy = dict(max_new_tokens=10, do_sample=False, pad_token_id=1, eos_token_id=None)
    batched = model.generate(input_ids, attention_mask=attention_mask, **greedy)
    for row, p in enumerate(prompts):
        single = model.generate(p[None], **greedy)
        assert batched[row, width:].tolist() == single[0, len(p) :].tolist()


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_eager_and_sdpa_attention_agree(recipe):
    model = tiny_model(recipe)
    ids = prompt(batch=2, length=12)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding on one row exercises the padding mask too
    model.set_attn_implementation("eager")
    eager = model(ids, attention_mask=mask).logits
    model.set_attn_implementation("sdpa")
    sdpa = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(eager[:, 4:], sdpa[:, 4:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager[0], sdpa[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_activation_checkpointing_gives_the_same_gradients(recipe):
    ids = prompt(batch=2, length=16)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(recipe).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(block.gradient_checkpointing for block in model.transformer.h)
        model(ids, labels=ids).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)
    assert any(g.abs().sum() > 0 for g in grads[1].values())


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_packed_sequences_with_restarting_position_ids_do_not_leak(recipe):
    model = tiny_model(recipe)
    a, b = prompt(length=5, seed=3), prompt(length=7, seed=4)
    packed = torch.cat([a, b], dim=1)
    position_ids = torch.cat([torch.arange(5), torch.arange(7)])[None]
    logits = model(packed, position_ids=position_ids).logits
    torch.testing.assert_close(logits[:, :5], model(a).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[:, 5:], model(b).logits, atol=1e-5, rtol=1e-5)


def test_loss_is_shifted_cross_entropy_and_logits_to_keep():
    model = tiny_model()
    ids = prompt(batch=2, length=9)
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    last = model(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, 300)
    torch.testing.assert_close(last[:, 0], out.logits[:, -1])


def test_hidden_states_and_attentions_are_returned():
    model = tiny_model()
    model.set_attn_implementation("eager")
    out = model(prompt(length=6), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3  # embeddings + one per block
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (1, 4, 6, 6)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(1, 4, 6))  # rows are distributions
    assert torch.all(out.attentions[0].triu(diagonal=1) == 0)  # causal
    as_tuple = model(prompt(length=6), return_dict=False)
    assert isinstance(as_tuple, tuple)


def test_input_longer_than_learned_context_raises_clear_error():
    model = tiny_model("gpt2")  # 64 learned positions
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(prompt(length=65))
    rope = tiny_model("modern")  # rotary positions have no table to index out of
    assert rope(prompt(length=65)).logits.shape == (1, 65, 300)


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_weight_tying_follows_the_config(recipe):
    model = tiny_model(recipe)
    tied = model.config.tie_word_embeddings
    assert (model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()) == tied
    assert model.get_input_embeddings() is model.transformer.wte
    assert model.get_output_embeddings() is model.lm_head


def test_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    config = ScratchGPTConfig.from_preset("tiny", num_hidden_layers=8)
    model = ScratchGPTForCausalLM(config)
    block = model.transformer.h[0]
    expected = 0.02 / (2 * 8) ** 0.5
    assert abs(block.attn.o_proj.weight.std().item() - expected) < 0.1 * expected
    assert abs(block.mlp.down_proj.weight.std().item() - expected) < 0.1 * expected
    assert abs(block.attn.q_proj.weight.std().item() - 0.02) < 0.002
    assert torch.all(block.ln_1.weight == 1) and torch.all(block.attn.q_proj.bias == 0)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_sequence_classification_pools_last_non_padding_token(padding_side):
    torch.manual_seed(0)
    config = tiny_config("gpt2", num_labels=3)
    model = ScratchGPTForSequenceClassification(config).eval()
    short, long = prompt(length=4, seed=5)[0], prompt(length=9, seed=6)[0]
    ids = torch.full((2, 9), config.pad_token_id)
    mask = torch.zeros((2, 9), dtype=torch.long)
    ids[1], mask[1] = long, 1
    if padding_side == "left":
        ids[0, 5:], mask[0, 5:] = short, 1
    else:
        ids[0, :4], mask[0, :4] = short, 1
    batched = model(ids, attention_mask=mask).logits
    assert batched.shape == (2, 3)
    torch.testing.assert_close(batched[0], model(short[None]).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], model(long[None]).logits[0], atol=1e-5, rtol=1e-5)
    if padding_side == "right":  # without a mask, the pad token id finds the same position
        torch.testing.assert_close(model(ids).logits, batched, atol=1e-5, rtol=1e-5)
    labels = torch.tensor([0, 2])
    loss = model(ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(batched, labels))


def test_token_classification_and_question_answering_heads():
    torch.manual_seed(0)
    ids = prompt(batch=2, length=8)
    tokens = ScratchGPTForTokenClassification(tiny_config(num_labels=5)).eval()
    out = tokens(ids, labels=torch.zeros(2, 8, dtype=torch.long))
    assert out.logits.shape == (2, 8, 5)
    torch.testing.assert_close(
        out.loss, torch.nn.functional.cross_entropy(out.logits.reshape(-1, 5), torch.zeros(16).long())
    )
    qa = ScratchGPTForQuestionAnswering(tiny_config()).eval()
    out = qa(ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
    assert out.start_logits.shape == out.end_logits.shape == (2, 8)
    assert out.loss > 0
    assert (
        qa.get_input_embeddings() is qa.transformer.wte
    )  # GPT-2's name, not the generic head's embed_tokens
    backbone = ScratchGPTModel(tiny_config())
    assert backbone(ids).last_hidden_state.shape == (2, 8, 64)


def test_token_classification_dropout_is_classifier_dropout_else_residual_dropout():
    assert ScratchGPTForTokenClassification(tiny_config(residual_dropout=0.2)).dropout.p == 0.2
    head = ScratchGPTForTokenClassification(tiny_config(residual_dropout=0.2, classifier_dropout=0.3))
    assert head.dropout.p == 0.3


def test_auto_model_builds_from_config_and_preset_shapes():
    model = AutoModelForCausalLM.from_config(tiny_config("modern"))
    assert isinstance(model, ScratchGPTForCausalLM)
    gpt2 = ScratchGPTConfig.from_preset("gpt2")
    assert (gpt2.hidden_size, gpt2.num_hidden_layers, gpt2.num_attention_heads, gpt2.vocab_size) == (
        768,
        12,
        12,
        50257,
    )
    with torch.device("meta"):
        n_params = ScratchGPTForCausalLM(gpt2).num_parameters()
    assert n_params == 124_439_808  # OpenAI GPT-2 small, with the head tied to the embedding
    shapes = {
        name: (
            ScratchGPTConfig.from_preset(name).hidden_size,
            ScratchGPTConfig.from_preset(name).num_hidden_layers,
        )
        for name in ("gpt2-medium", "gpt2-large", "gpt2-xl")
    }
    assert shapes == {"gpt2-medium": (1024, 24), "gpt2-large": (1280, 36), "gpt2-xl": (1600, 48)}


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_flex_attention_agrees_with_eager(recipe):
    model = tiny_model(recipe)
    ids = prompt(batch=2, length=16)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with torch.no_grad():  # flex attention has no CPU backward
        eager = model(ids, attention_mask=mask).logits
        model.set_attn_implementation("flex_attention")
        flex = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(flex[:, 5:], eager[:, 5:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_decoding_with_static_cache_compiles_as_one_graph(recipe):
    model = tiny_model(recipe)
    ids = prompt(length=8)
    expected = model.generate(
        ids,
        max_new_tokens=5,
        do_sample=False,
        cache_implementation="static",
        pad_token_id=1,
        eos_token_id=None,
    )[0, 8:]
    cache = StaticCache(config=model.config, max_cache_len=32)
    # fullgraph=True fails on any graph break (e.g. Python branching on a tensor); "eager" skips codegen.
    forward = torch.compile(model.forward, fullgraph=True, backend="eager")
    tokens = [forward(input_ids=ids, cache=cache, use_cache=True).logits[:, -1].argmax(-1)]
    for step in range(4):
        position = torch.tensor([[8 + step]])
        logits = forward(
            input_ids=tokens[-1][:, None], cache=cache, use_cache=True, position_ids=position
        ).logits
        tokens.append(logits[:, -1].argmax(-1))
    assert torch.cat(tokens).tolist() == expected.tolist()


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
