"""GPT-2 interop: exact conversion both ways against a randomly initialised transformers GPT2LMHeadModel."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from transformers import GPT2Config, GPT2LMHeadModel

from hf_scratchgpt import ScratchGPTForCausalLM, convert_gpt2_to_scratchgpt, convert_scratchgpt_to_gpt2

GREEDY = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)


def random_gpt2(**overrides) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    settings = dict(
        vocab_size=211, n_embd=64, n_layer=3, n_head=4, n_positions=48, bos_token_id=0, eos_token_id=0
    )
    settings.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**settings)).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_to_scratchgpt_is_exact(tied):
    gpt2 = random_gpt2(tie_word_embeddings=tied, n_inner=96)
    ours = convert_gpt2_to_scratchgpt(gpt2)
    assert isinstance(ours, ScratchGPTForCausalLM)
    assert ours.config.intermediate_size == 96 and ours.config.tie_word_embeddings == tied
    ids = torch.randint(0, 211, (2, 20))
    torch.testing.assert_close(ours(ids).logits, gpt2(ids).logits, atol=1e-5, rtol=0)
    assert torch.equal(ours.generate(ids[:1], **GREEDY), gpt2.generate(ids[:1], **GREEDY))


def test_scratchgpt_to_gpt2_is_exact_and_round_trips():
    ours = tiny_model("gpt2", initializer_range=0.02)
    gpt2 = convert_scratchgpt_to_gpt2(ours)
    assert isinstance(gpt2, GPT2LMHeadModel)
    assert gpt2.lm_head.weight.data_ptr() == gpt2.transformer.wte.weight.data_ptr()
    ids = torch.randint(2, 300, (2, 20))
    torch.testing.assert_close(gpt2(ids).logits, ours(ids).logits, atol=1e-5, rtol=0)
    assert torch.equal(gpt2.generate(ids[:1], **GREEDY), ours.generate(ids[:1], **GREEDY))
    back = convert_gpt2_to_scratchgpt(gpt2)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"mlp_type": "swiglu"}, "mlp_type"),
        ({"position_embedding_type": "rope"}, "position_embedding_type"),
        ({"num_key_value_heads": 2}, "num_key_value_heads"),
        ({"qk_norm": True}, "qk_norm"),
    ],
)
def test_non_gpt2_recipes_refuse_to_export(overrides, field):
    with pytest.raises(ValueError, match=field):
        convert_scratchgpt_to_gpt2(tiny_model("gpt2", **overrides))


def test_unsupported_gpt2_variants_refuse_to_import():
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        convert_gpt2_to_scratchgpt(random_gpt2(scale_attn_by_inverse_layer_idx=True))
