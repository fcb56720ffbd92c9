"""Perplexity and bits per byte of a causal LM on any text, documents longer than its context included.

Each document is tokenized on its own, after one beginning-of-text token (BOS, else EOS) so that its first
real token is scored too. A document longer than the context is read through overlapping windows (the
recipe of the transformers guide "Perplexity of fixed-length models"): every window holds at most
``max_length`` input tokens, starts ``stride`` tokens after the previous one, and scores only the targets
the previous windows have not, so every token is scored exactly once and, after the first window, with at
least ``max_length - stride`` tokens of context. Every window starts at position 0, which is what both
learned and rotary position embeddings were trained on.

Bits per byte counts the UTF-8 bytes of the very tokens scored (`token_byte_lengths`); special tokens stand
for no text and are left out of the loss and the byte count alike, as in `hf_scratchgpt.data.metrics`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..data.metrics import language_model_scores, token_byte_lengths


@dataclass(frozen=True)
class Window:
    """``inputs`` feed the model; its predictions from position ``first_scored`` on are scored against
    ``targets`` (the inputs shifted by one)."""

    inputs: list[int]
    targets: list[int]
    first_scored: int


def sliding_windows(token_ids: list[int], max_length: int, stride: int) -> Iterator[Window]:
    """Windows over ``token_ids`` (the first one is context only) that score every later token once."""
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}.")
    n_targets = len(token_ids) - 1
    if n_targets < 1:
        return
    scored_until = 0  # targets [0, scored_until) are scored; target i is token_ids[i + 1]
    for begin in range(0, n_targets, stride):
        end = min(begin + max_length, n_targets)
        yield Window(token_ids[begin:end], token_ids[begin + 1 : end + 1], scored_until - begin)
        scored_until = end
        if end == n_targets:
            return


def _document_ids(tokenizer: Any, text: str) -> list[int]:
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([prefix] if prefix is not None else []) + ids


@torch.no_grad()
def _score_windows(model: Any, windows: list[Window], token_bytes: torch.Tensor) -> tuple[float, int, int]:
    """Summed loss (nats), scored tokens and their bytes for one batch of windows (right-padded)."""
    device = next(model.parameters()).device
    width = max(len(window.inputs) for window in windows)
    inputs = torch.zeros(len(windows), width, dtype=torch.long)
    targets = torch.zeros(len(windows), width, dtype=torch.long)
    scored = torch.zeros(len(windows), width, dtype=torch.bool)
    for row, window in enumerate(windows):
        inputs[row, : len(window.inputs)] = torch.tensor(window.inputs)
        targets[row, : len(window.targets)] = torch.tensor(window.targets)
        scored[row, window.first_scored : len(window.targets)] = True
    attention_mask = (torch.arange(width) < torch.tensor([len(w.inputs) for w in windows])[:, None]).long()
    logits = model(input_ids=inputs.to(device), attention_mask=attention_mask.to(device)).logits.float()
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.to(device), reduction="none")
    target_bytes = token_bytes.to(device)[targets.to(device)]
    scored = scored.to(device) & (target_bytes > 0)  # special tokens stand for no text
    return losses[scored].sum().item(), int(scored.sum()), int(target_bytes[scored].sum())


def perplexity(
    model: Any,
    tokenizer: Any,
    texts: Iterable[str],
    *,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Perplexity, loss (nats per token) and bits per byte of ``model`` over ``texts``.

    Args:
        max_length: tokens per window (default: the model's ``max_position_embeddings``).
        stride: tokens between window starts (default: half a window); ``stride == max_length`` reads
            disjoint chunks, smaller strides give every token more context at more compute.

    Returns ``loss``, ``perplexity``, ``bits_per_byte``, ``tokens``, ``bytes``, ``documents``, ``windows``,
    ``max_length`` and ``stride``.
    """
    max_length = max_length or model.config.max_position_embeddings
    stride = stride or max(1, max_length // 2)
    token_bytes = token_byte_lengths(tokenizer)
    n_documents = 0

    def all_windows() -> Iterator[Window]:
        nonlocal n_documents
        for text in texts:
            n_documents += 1
            yield from sliding_windows(_document_ids(tokenizer, text), max_length, stride)

    was_training = model.training
    model.eval()
    total_nats, total_tokens, total_bytes, n_windows = 0.0, 0, 0, 0
    windows = all_windows()
    while batch := list(itertools.islice(windows, batch_size)):
        nats, tokens, n_bytes = _score_windows(model, batch, token_bytes)
        total_nats, total_tokens, total_bytes = (
            total_nats + nats,
            total_tokens + tokens,
            total_bytes + n_bytes,
        )
        n_windows += len(batch)
    model.train(was_training)
    if total_tokens == 0:
        raise ValueError("No text to score: every document was empty or only special tokens.")
    return {
        **language_model_scores(total_nats, total_tokens, total_bytes),
        "documents": n_documents,
        "windows": n_windows,
        "max_length": max_length,
        "stride": stride,
    }
