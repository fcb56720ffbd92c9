"""Keep a model and its tokenizer in step before they are saved together.

A model folder holds a config, a generation config and a tokenizer, written by different code at
different times. Three things drift apart unless someone sets them on purpose:

* the context length: a tokenizer trained with the default ``model_max_length`` of 1024 next to a
  256-position model lets ``truncation=True`` produce inputs the model cannot take;
* the stop tokens: a chat model whose ``generation_config.eos_token_id`` is only ``<|endoftext|>``
  rambles past the end of its turn (``<|im_end|>``) in ``generate``, ``pipeline`` and any server;
* the special-token ids in the config (``pad_token_id`` picks the last real token of a classifier).

``align_model_and_tokenizer`` sets all three from one source of truth (the model's context, the
tokenizer's ids). Every place that saves a model calls it first.
"""

from __future__ import annotations

from typing import Any

from .tokenization_scratchgpt import IM_END_TOKEN


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids generation stops at: end of text, and end of turn when the tokenizer has the chat tokens."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    im_end = tokenizer.convert_tokens_to_ids(IM_END_TOKEN) if IM_END_TOKEN in tokenizer.get_vocab() else None
    if im_end is not None and im_end not in ids:
        ids.append(im_end)
    return ids


def align_model_and_tokenizer(model: Any, tokenizer: Any) -> None:
    """Make ``model`` (config + generation config) and ``tokenizer`` agree, in place.

    * ``tokenizer.model_max_length`` becomes the model's context (``max_position_embeddings``, the
      hard limit of learned positions and the trained context of rotary ones);
    * ``config.bos/eos/pad_token_id`` become the tokenizer's;
    * ``generation_config`` (when the model generates) gets the same pad/bos ids and stops at
      ``<|endoftext|>`` and, when the tokenizer has it, ``<|im_end|>``.

    ``model`` may be a plain model or a PEFT wrapper (both expose ``config`` and ``generation_config``).

    Raises:
        ValueError: if the tokenizer has ids the model's embedding has no row for.
    """
    config = model.config
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding only "
            f"{config.vocab_size} rows (config.vocab_size): ids >= {config.vocab_size} would index past it. "
            "Grow the model first: model.resize_token_embeddings(len(tokenizer))."
        )
    tokenizer.model_max_length = config.max_position_embeddings
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id

    generation_config = getattr(model, "generation_config", None)
    if generation_config is None:  # heads that do not generate (classification, QA) have none
        return
    stops = stop_token_ids(tokenizer)
    generation_config.bos_token_id = tokenizer.bos_token_id
    generation_config.pad_token_id = tokenizer.pad_token_id
    generation_config.eos_token_id = stops if len(stops) > 1 else (stops[0] if stops else None)


__all__ = ["align_model_and_tokenizer", "stop_token_ids"]
