"""ScratchGPTConfig: presets, aliases, overrides, serialisation and every validation error."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from hf_scratchgpt import PRESETS, ScratchGPTConfig


def test_presets_and_standard_names():
    assert {"tiny", "tiny-modern", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"} <= set(PRESETS)
    tiny = ScratchGPTConfig.from_preset("tiny")
    assert (tiny.position_embedding_type, tiny.norm_type, tiny.mlp_type, tiny.bias, tiny.tie_word_embeddings) == (
        "learned", "layernorm", "gelu", True, True)  # fmt: skip
    assert tiny.intermediate_size == 4 * tiny.hidden_size
    modern = ScratchGPTConfig.from_preset("tiny-modern")
    assert (modern.position_embedding_type, modern.norm_type, modern.mlp_type, modern.qk_norm) == (
        "rope", "rmsnorm", "swiglu", True)  # fmt: skip
    assert modern.num_key_value_heads < modern.num_attention_heads and not modern.tie_word_embeddings
    assert modern.hidden_size == tiny.hidden_size and modern.num_hidden_layers == tiny.num_hidden_layers
    xl = ScratchGPTConfig.from_preset("gpt2-xl")
    assert (xl.hidden_size, xl.num_hidden_layers, xl.num_attention_heads, xl.max_position_embeddings) == (
        1600, 48, 25, 1024)  # fmt: skip


def test_overrides_accept_fields_and_gpt2_aliases():
    config = ScratchGPTConfig.from_preset(
        "tiny", n_layer=2, n_embd=128, n_head=2, vocab_size=500, rope_theta=500.0
    )
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 128, 2)
    assert config.n_embd == 128 and config.intermediate_size == 512 and config.vocab_size == 500
    assert ScratchGPTConfig(n_embd=64, n_head=4).num_key_value_heads == 4


def test_serialisation_round_trip(tmp_path):
    config = ScratchGPTConfig.from_preset("tiny-modern", rope_theta=5e5, num_labels=3)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, ScratchGPTConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.num_labels == 3 and loaded.rope_theta == 5e5 and loaded.head_dim == config.head_dim


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"position_embedding_type": "alibi"}, r"position_embedding_type='alibi'.*'learned', 'rope'"),
        ({"norm_type": "batchnorm"}, r"norm_type='batchnorm'.*'layernorm', 'rmsnorm'"),
        ({"mlp_type": "geglu"}, r"mlp_type='geglu'.*'gelu', 'swiglu', 'relu2'"),
        ({"hidden_size": 100, "num_attention_heads": 3}, r"hidden_size=100.*num_attention_heads=3"),
        (
            {"num_attention_heads": 4, "num_key_value_heads": 3},
            r"num_attention_heads=4.*num_key_value_heads=3",
        ),
        (
            {"hidden_size": 12, "num_attention_heads": 4, "position_embedding_type": "rope"},
            "even head dimension",
        ),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(kwargs, message):
    settings = {"hidden_size": 64, "num_attention_heads": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        ScratchGPTConfig(**settings)


def test_unknown_preset_and_field_are_named():
    with pytest.raises(ValueError, match=r"'gpt5'.*available presets.*tiny"):
        ScratchGPTConfig.from_preset("gpt5")
    with pytest.raises(ValueError, match=r"\['n_layers'\].*valid fields"):
        ScratchGPTConfig.from_preset("tiny", n_layers=2)
