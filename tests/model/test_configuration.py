"""ScratchGPTConfig: presets, aliases, overrides, serialisation and every validation error.

A saved config.json with a missing vocab_size or a misspelt field is named, never silently defaulted.
"""

from __future__ import annotations

import json

import pytest
from conftest import tiny_model
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.testing_utils import CaptureLogger

from hf_scratchgpt import PRESETS, ScratchGPTConfig
from hf_scratchgpt.model.configuration_scratchgpt import logger as config_logger


def test_presets_and_standard_names():
    assert {"tiny", "tiny-modern", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"} <= set(PRESETS)
    tiny = ScratchGPTConfig.from_preset("tiny")
    assert (
        tiny.position_embedding_type,
        tiny.norm_type,
        tiny.mlp_type,
        tiny.bias,
        tiny.tie_word_embeddings,
    ) == ("learned", "layernorm", "gelu", True, True)
    assert tiny.intermediate_size == 4 * tiny.hidden_size
    modern = ScratchGPTConfig.from_preset("tiny-modern")
    assert (modern.position_embedding_type, modern.norm_type, modern.mlp_type, modern.qk_norm) == (
        "rope",
        "rmsnorm",
        "swiglu",
        True,
    )
    assert modern.num_key_value_heads < modern.num_attention_heads and not modern.tie_word_embeddings
    assert modern.hidden_size == tiny.hidden_size and modern.num_hidden_layers == tiny.num_hidden_layers
    xl = ScratchGPTConfig.from_preset("gpt2-xl")
    assert (xl.hidden_size, xl.num_hidden_layers, xl.num_attention_heads, xl.max_position_embeddings) == (
        1600,
        48,
        25,
        1024,
    )


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


@pytest.fixture
def saved_model(tmp_path):
    model = tiny_model("gpt2")
    model.save_pretrained(tmp_path)
    return tmp_path, json.loads((tmp_path / "config.json").read_text())


def rewrite(folder, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_vocab_size_is_named(saved_model):
    folder, config = saved_model
    del config["vocab_size"]
    rewrite(folder, config)
    for load in (
        ScratchGPTConfig.from_pretrained,
        AutoConfig.from_pretrained,
        AutoModelForCausalLM.from_pretrained,
    ):
        with pytest.raises(ValueError, match=r"config.json\) has no `vocab_size`"):
            load(folder)
    assert ScratchGPTConfig().vocab_size == 50257  # code keeps the GPT-2 default


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("n_layers", "num_hidden_layers"),
        ("hiden_size", "hidden_size"),
        ("context_length", "max_position_embeddings"),
    ],
)
def test_misspelt_field_is_named_with_a_suggestion(saved_model, key, suggestion):
    folder, config = saved_model
    rewrite(folder, {**config, key: 3})
    with pytest.raises(ValueError, match=rf"'{key}' \(did you mean '{suggestion}'\?\)"):
        AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ValueError, match=key):
        ScratchGPTConfig.from_dict({**config, key: 3})


def test_keys_transformers_writes_are_not_flagged_and_other_unknown_keys_warn(saved_model):
    folder, config = saved_model
    legitimate = {
        "architectures": ["ScratchGPTForCausalLM"],
        "torch_dtype": "float32",
        "dtype": "float32",
        "id2label": {"0": "a", "1": "b"},
        "label2id": {"a": 0, "b": 1},
        "problem_type": "single_label_classification",
        "num_labels": 2,
        "tokenizer_class": "ScratchGPTTokenizer",
        "_name_or_path": "x",
        "max_length": 50,
        "do_sample": True,
        "temperature": 0.7,
        "output_hidden_states": False,
        "return_dict": True,
    }
    rewrite(folder, {**config, **legitimate})
    with CaptureLogger(config_logger) as captured:
        loaded = AutoConfig.from_pretrained(folder)
    assert captured.out == "" and loaded.num_hidden_layers == 2
    rewrite(folder, {**config, "trained_on": "my corpus"})
    with CaptureLogger(config_logger) as captured:
        AutoConfig.from_pretrained(folder)
    assert "['trained_on'] are not ScratchGPT fields" in captured.out


def test_norm_epsilon_names_of_other_configs_set_ours():
    """GPT-2's `layer_norm_epsilon`, Llama's `rms_norm_eps` and the other names transformers' test helper
    (`set_config_for_less_flaky_test`) sets on every config all reach the one epsilon the model reads."""
    for name in ("layer_norm_epsilon", "rms_norm_eps", "norm_eps", "norm_epsilon"):
        config = ScratchGPTConfig.from_preset("tiny", **{name: 0.25})
        assert config.layer_norm_eps == 0.25
        config.layer_norm_eps = 1e-5
        setattr(config, name, 0.5)
        reloaded = ScratchGPTConfig.from_dict(config.to_dict())
        assert reloaded.layer_norm_eps == 0.5 and name not in config.to_dict()


def test_attributes_other_tools_set_survive_a_round_trip_with_a_warning(caplog):
    config = ScratchGPTConfig.from_preset("tiny")
    for name in (
        "batch_norm_eps",
        "post_norm_eps",
    ):  # what transformers' test helper sets besides the norm eps
        setattr(config, name, 1.0)
    with caplog.at_level("WARNING"):
        reloaded = ScratchGPTConfig.from_dict(config.to_dict())
    assert reloaded.batch_norm_eps == 1.0 and reloaded.post_norm_eps == 1.0
    assert "batch_norm_eps" in caplog.text
