"""align_model_and_tokenizer: context length, stop tokens and special ids agree before a save."""

from __future__ import annotations

import pytest
from conftest import TRAINING_TEXT, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_scratchgpt import ScratchGPTForSequenceClassification, ScratchGPTTokenizer
from hf_scratchgpt.model.tokenization_scratchgpt import ENDOFTEXT_TOKEN, PAD_TOKEN
from hf_scratchgpt.model.tokenizer_sync import align_model_and_tokenizer


def test_alignment_sets_context_stop_tokens_and_ids_and_survives_a_save(tmp_path):
    tokenizer = ScratchGPTTokenizer.train(TRAINING_TEXT, vocab_size=300, model_max_length=100_000)
    model = tiny_model("gpt2", pad_token_id=None, eos_token_id=None, bos_token_id=None)
    align_model_and_tokenizer(model, tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded_tokenizer.model_max_length == model.config.max_position_embeddings == 64
    assert reloaded.generation_config.eos_token_id == [tokenizer.eos_token_id, im_end]
    assert reloaded.generation_config.pad_token_id == tokenizer.pad_token_id == 1
    assert (reloaded.config.bos_token_id, reloaded.config.eos_token_id, reloaded.config.pad_token_id) == (
        0,
        0,
        1,
    )
    # truncation=True now gives inputs the model accepts.
    ids = reloaded_tokenizer("word " * 500, truncation=True, return_tensors="pt").input_ids
    assert ids.shape[1] == 64
    reloaded(ids)


def test_alignment_without_chat_tokens_and_for_a_classifier():
    tokenizer = ScratchGPTTokenizer.train(
        TRAINING_TEXT, vocab_size=300, special_tokens=[ENDOFTEXT_TOKEN, PAD_TOKEN]
    )
    model = tiny_model("modern")
    align_model_and_tokenizer(model, tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == 0

    classifier = ScratchGPTForSequenceClassification(model.config)
    classifier.config.pad_token_id = None
    align_model_and_tokenizer(classifier, tokenizer)
    assert classifier.config.pad_token_id == 1


def test_alignment_refuses_a_tokenizer_larger_than_the_embedding():
    tokenizer = ScratchGPTTokenizer.train(TRAINING_TEXT, vocab_size=300)
    model = tiny_model("gpt2", vocab_size=280)
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        align_model_and_tokenizer(model, tokenizer)
