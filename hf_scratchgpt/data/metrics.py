"""Loss and bits per byte of a causal LM on packed blocks, counting the bytes of the very tokens scored.

Bits per byte compares models with different tokenizers: the total loss in bits divided by the UTF-8 bytes
of the text it was paid for. Both sums run over the same scored tokens: every target token of every block,
except special tokens (end-of-text, padding, chat markers), which stand for no bytes of text and are left
out of the loss sum and the byte count alike (as nanochat does).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tokenizers import pre_tokenizers


def token_byte_lengths(tokenizer: Any) -> torch.Tensor:
    """UTF-8 bytes each token id stands for (0 for special and added tokens), indexed by id.

    Byte-level BPE tokens are spelled in GPT-2's byte-to-unicode alphabet, one character per byte, so a
    token's length is its byte count even when it holds part of a multi-byte character. Other tokenizers
    are measured by decoding each token on its own.
    """
    vocab = tokenizer.get_vocab()
    special_ids = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    byte_alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    is_byte_level = all(
        char in byte_alphabet
        for token in list(vocab)[:1000]
        for char in token
        if vocab[token] not in special_ids
    )
    lengths = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.long)
    for token, token_id in vocab.items():
        if token_id in special_ids:
            continue
        if is_byte_level:
            lengths[token_id] = len(token)
        else:
            lengths[token_id] = len(tokenizer.decode([token_id]).encode("utf-8"))
    return lengths


@torch.no_grad()
def score_blocks(
    model: torch.nn.Module, blocks: Any, token_bytes: torch.Tensor, batch_size: int = 16
) -> dict[str, float]:
    """Mean next-token loss and bits per byte of ``model`` over ``blocks`` (rows of ``input_ids``).

    Returns ``loss`` (nats per scored token), ``perplexity``, ``bits_per_byte``, ``tokens`` and ``bytes``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    token_bytes = token_bytes.to(device)
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.tensor(blocks[start : start + batch_size]["input_ids"], device=device)
        logits = model(ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        )
        bytes_per_target = token_bytes[targets.reshape(-1)]
        scored = bytes_per_target > 0
        total_nats += losses[scored].sum().item()
        total_tokens += int(scored.sum())
        total_bytes += int(bytes_per_target.sum())
    model.train(was_training)
    if total_tokens == 0:
        raise ValueError("No scorable tokens in the blocks: every target is a special token.")
    return language_model_scores(total_nats, total_tokens, total_bytes)


def language_model_scores(total_nats: float, tokens: int, n_bytes: int) -> dict[str, float]:
    """Loss (nats per token), perplexity and bits per byte from the sums over the scored tokens."""
    loss = total_nats / tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bits_per_byte": total_nats / (math.log(2) * n_bytes),
        "tokens": tokens,
        "bytes": n_bytes,
    }


__all__ = ["language_model_scores", "score_blocks", "token_byte_lengths"]
