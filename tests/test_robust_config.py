"""A saved config.json with a missing vocab_size or a misspelt field is named, never silently defaulted."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_model
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.testing_utils import CaptureLogger

from hf_scratchgpt import ScratchGPTConfig
from hf_scratchgpt.model.configuration_scratchgpt import logger as config_logger


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
        "architectures": ["ScratchGPTForCausalLM"], "torch_dtype": "float32", "dtype": "float32",
        "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1}, "problem_type": "single_label_classification",
        "num_labels": 2, "tokenizer_class": "ScratchGPTTokenizer", "_name_or_path": "x", "max_length": 50,
        "do_sample": True, "temperature": 0.7, "output_hidden_states": False, "return_dict": True,
    }  # fmt: skip
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
