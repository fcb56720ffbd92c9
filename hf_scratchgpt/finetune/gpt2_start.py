"""Where fine-tuning starts: one of our model folders, or OpenAI's GPT-2 converted on the fly.

The book fine-tunes OpenAI's pretrained GPT-2 (chapters 5-7). ``load_model_and_tokenizer`` accepts any
causal-LM folder or Hub id; when it is a ``GPT2LMHeadModel`` (``openai-community/gpt2`` or a local
copy) the weights are converted exactly to a ScratchGPT model (GPT-2 recipe) and GPT-2's own
``vocab.json`` / ``merges.txt`` become a ScratchGPT tokenizer. Either way the result can hold a
conversation: the ChatML tokens (``<|im_start|>``, ``<|im_end|>``), a pad token distinct from the end
of text (otherwise the collator masks every real end-of-text out of the loss and the model never
learns to stop) and the chat template are added when missing, and the embedding grows to match.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, PreTrainedModel
from transformers.utils import cached_file

from ..model.conversion import convert_gpt2_to_scratchgpt
from ..model.tokenization_scratchgpt import CHAT_TOKENS, CHATML_TEMPLATE, PAD_TOKEN, ScratchGPTTokenizer
from ..model.tokenizer_sync import align_model_and_tokenizer


def is_gpt2_checkpoint(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> bool:
    """Whether ``name_or_path`` (folder or Hub id) holds an OpenAI-style ``GPT2LMHeadModel``."""
    return AutoConfig.from_pretrained(name_or_path, **hub_kwargs).model_type == "gpt2"


def add_chat_tokens(model: PreTrainedModel, tokenizer: Any) -> int:
    """Give ``tokenizer`` the ChatML tokens, a distinct pad token and the ChatML template where it lacks
    them, and grow ``model``'s embedding to the new vocabulary. Returns how many tokens were added.

    New rows are initialised around the mean of the existing ones (transformers' ``mean_resizing``), so
    the new tokens start as an "average" token instead of noise. A grown model's ``name_or_path`` is
    cleared, as a converted GPT-2's is: it exists only in memory (see ``save_start_model``).
    """
    vocab = tokenizer.get_vocab()
    missing_chat = [token for token in CHAT_TOKENS if token not in vocab]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing_chat}) if missing_chat else 0
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        added += tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
        model.name_or_path = ""  # the weights no longer match their folder: they exist only in memory
    return added


def load_gpt2_as_scratchgpt(
    name_or_path: str | os.PathLike, **hub_kwargs: Any
) -> tuple[PreTrainedModel, ScratchGPTTokenizer]:
    """An OpenAI GPT-2 checkpoint as a ScratchGPT model plus a ScratchGPT tokenizer ready for chat.

    The tokenizer is read from GPT-2's ``vocab.json`` and ``merges.txt`` (it tokenizes exactly as
    GPT-2), then gains the chat tokens and a distinct pad token; the embedding grows to match.

    Raises:
        ValueError: the checkpoint has no ``vocab.json`` / ``merges.txt``.
    """
    gpt2 = GPT2LMHeadModel.from_pretrained(name_or_path, **hub_kwargs)
    model = convert_gpt2_to_scratchgpt(gpt2).train()
    files = {}
    for name in ("vocab.json", "merges.txt"):
        files[name] = cached_file(
            name_or_path, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        if files[name] is None:
            raise ValueError(
                f"{name_or_path} has no {name}: a GPT-2 start needs OpenAI's tokenizer files "
                "(vocab.json and merges.txt) next to the weights."
            )
    tokenizer = ScratchGPTTokenizer.from_gpt2_files(
        files["vocab.json"], files["merges.txt"], add_chat_tokens=True, pad_token=PAD_TOKEN
    )
    add_chat_tokens(model, tokenizer)
    align_model_and_tokenizer(model, tokenizer)
    return model, tokenizer


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike, **model_kwargs: Any
) -> tuple[PreTrainedModel, Any]:
    """Any causal LM folder or Hub id (GPT-2 converted to ScratchGPT), with a tokenizer ready for chat.

    ``model_kwargs`` go to ``from_pretrained`` (``revision``, ``dtype``, ``trust_remote_code``, ...).
    """
    hub_kwargs = {k: model_kwargs[k] for k in ("revision", "trust_remote_code") if k in model_kwargs}
    if is_gpt2_checkpoint(name_or_path, **hub_kwargs):
        return load_gpt2_as_scratchgpt(
            name_or_path, **{k: v for k, v in hub_kwargs.items() if k == "revision"}
        )
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
    add_chat_tokens(model, tokenizer)
    align_model_and_tokenizer(model, tokenizer)
    return model, tokenizer


__all__ = ["add_chat_tokens", "is_gpt2_checkpoint", "load_gpt2_as_scratchgpt", "load_model_and_tokenizer"]
