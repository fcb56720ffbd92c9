"""transformers' own common model tests on ScratchGPT, for the GPT-2 recipe and the modern recipe.

The tests are transformers' (ModelTesterMixin, GenerationTesterMixin and the causal-LM tests, through
``CausalLMModelTester`` / ``CausalLMModelTest``); this module only says which classes and which tiny shapes to
test, and skips, with the reason, the tests that do not apply to ScratchGPT, as transformers' own model tests
do. They need a transformers source tree of the installed release (``TRANSFORMERS_TESTS_DIR``, see
``transformers_tree.py`` and README.md): without one the module is skipped, so the offline suite is unaffected.
"""

from __future__ import annotations

import dataclasses
import unittest
from unittest import mock

import torch
from transformers.models.auto import modeling_auto

from hf_scratchgpt import (
    ScratchGPTConfig,
    ScratchGPTForCausalLM,
    ScratchGPTForQuestionAnswering,
    ScratchGPTForSequenceClassification,
    ScratchGPTForTokenClassification,
    ScratchGPTModel,
)
from hf_scratchgpt.model.configuration_scratchgpt import AUTO_MAP, PRESETS

from .transformers_tree import import_upstream, require_tree

TREE = require_tree()
common = import_upstream("test_modeling_common")

# The tester's tiny shapes stay the tester's; everything else a preset sets is the recipe under test.
SHAPE_FIELDS = {
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
}

# The common tests choose labels, and which class is the base model, from the in-tree name tables of the Auto
# classes. ScratchGPT is registered through the public Auto API instead, so each test runs with its classes
# listed in those tables under its model type, as an in-tree model's are.
NAME_TABLE_OF_AUTO_CLASS = {
    "AutoModel": "MODEL_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
}


def list_in_auto_name_tables(test: unittest.TestCase) -> None:
    """Add ScratchGPT's classes to the Auto name tables until ``test`` ends."""
    for auto_class, reference in AUTO_MAP.items():
        if auto_class == "AutoConfig":
            continue
        table = getattr(modeling_auto, NAME_TABLE_OF_AUTO_CLASS[auto_class])
        patcher = mock.patch.dict(table, {ScratchGPTConfig.model_type: reference.rpartition(".")[2]})
        patcher.start()
        test.addCleanup(patcher.stop)


class _TesterWithoutCausalLMTester:
    """What ModelTesterMixin reads from a model tester, for a tree without ``causal_lm_tester.py`` (the sdist).

    The shapes are CausalLMModelTester's defaults, so both kinds of tree test the same models.
    """

    defaults = {
        "batch_size": 13,
        "seq_length": 7,
        "is_training": True,
        "vocab_size": 99,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": 512,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "num_labels": 3,
        "type_sequence_label_size": 2,
        "num_choices": 4,
    }

    def __init__(self, parent: unittest.TestCase, **settings):
        self.parent = parent
        for name, value in {**self.defaults, **settings}.items():
            setattr(self, name, value)

    @property
    def all_model_classes(self) -> list[type]:
        heads = (
            "base_model_class",
            "causal_lm_class",
            "question_answering_class",
            "sequence_classification_class",
            "token_classification_class",
        )
        return [getattr(self, head) for head in heads]

    def get_config(self) -> ScratchGPTConfig:
        fields = (field.name for field in dataclasses.fields(self.config_class))
        return self.config_class(**{name: getattr(self, name) for name in fields if hasattr(self, name)})

    def prepare_config_and_inputs_for_common(self) -> tuple[ScratchGPTConfig, dict[str, torch.Tensor]]:
        input_ids = common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        # Right padding of every length from seq_length - 1 tokens down to none.
        attention_mask = torch.ones_like(input_ids).tril()
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class _TestWithoutCausalLMTest(common.ModelTesterMixin):
    """ModelTesterMixin's tests alone, for a tree without ``causal_lm_tester.py`` (the sdist)."""

    model_tester_class = None

    def setUp(self):
        self.model_tester = self.model_tester_class(self)
        self.all_model_classes = tuple(self.model_tester.all_model_classes)

    @unittest.skip(
        reason="The sdist has no tests/generation/test_utils.py, so GenerationTesterMixin cannot run."
    )
    def test_generation_tester_mixin_inheritance(self):
        pass


if TREE.kind == "checkout":
    causal_lm_tester = import_upstream("causal_lm_tester")
    UpstreamTester, UpstreamTestCase = (
        causal_lm_tester.CausalLMModelTester,
        causal_lm_tester.CausalLMModelTest,
    )
else:
    UpstreamTester, UpstreamTestCase = _TesterWithoutCausalLMTester, _TestWithoutCausalLMTest


class ScratchGPTModelTester(UpstreamTester):
    """The GPT-2 recipe: the ``tiny`` preset's switches at the tester's tiny shapes."""

    preset = "tiny"
    config_class = ScratchGPTConfig
    base_model_class = ScratchGPTModel
    causal_lm_class = ScratchGPTForCausalLM
    sequence_classification_class = ScratchGPTForSequenceClassification
    token_classification_class = ScratchGPTForTokenClassification
    question_answering_class = ScratchGPTForQuestionAnswering

    def __init__(self, parent: unittest.TestCase, num_attention_heads: int = 4, **settings):
        preset = PRESETS[self.preset]
        # Keep the preset's ratio of query heads to key/value heads (grouped-query attention in tiny-modern).
        kv_heads = preset.get("num_key_value_heads", preset["num_attention_heads"])
        settings["num_key_value_heads"] = num_attention_heads * kv_heads // preset["num_attention_heads"]
        super().__init__(parent, num_attention_heads=num_attention_heads, **settings)
        for name, value in preset.items():
            if name not in SHAPE_FIELDS:
                setattr(self, name, value)


class ScratchGPTModernModelTester(ScratchGPTModelTester):
    """The modern recipe (``tiny-modern``): rotary positions, RMSNorm, SwiGLU, GQA, QK-norm, untied head."""

    preset = "tiny-modern"


class ScratchGPTModelTest(UpstreamTestCase, unittest.TestCase):
    model_tester_class = ScratchGPTModelTester
    # The mixin tells a model's age from a "# Copyright <year>" line our files do not have, and would skip the
    # weight-initialisation test as if the model predated 2023.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        list_in_auto_name_tables(self)
        super().setUp()

    def test_tester_builds_the_recipe(self):
        """The configs under test carry the preset's recipe: the upstream tester passes only the arguments it
        recognises, so a switch it dropped would silently test the default recipe instead."""
        config = self.model_tester.get_config()
        recipe = {
            name: value
            for name, value in PRESETS[self.model_tester.preset].items()
            if name not in SHAPE_FIELDS
        }
        self.assertEqual({name: getattr(config, name) for name in recipe}, recipe)
        self.assertEqual(config.num_attention_heads, 4)
        expected_kv_heads = 2 if self.model_tester.preset == "tiny-modern" else 4
        self.assertEqual(config.num_key_value_heads, expected_kv_heads)


class ScratchGPTModernModelTest(ScratchGPTModelTest):
    model_tester_class = ScratchGPTModernModelTester
