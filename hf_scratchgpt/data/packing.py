"""Tokenize and pack: documents in, fixed-length blocks of token ids out, cached on disk.

nanoGPT-style packing: documents are joined with an end-of-text token and cut into blocks of exactly
``block_size`` tokens, cached as Arrow files so a second run (or another rank) does not re-tokenize.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, IterableDataset, Value

from .files import DataError
from .sources import _CACHE_VERSION, _MAP_BATCH_SIZE, AnyDataset, _sha256

logger = logging.getLogger(__name__)
_INPUT_IDS_FEATURES = Features({"input_ids": datasets.List(Value("int32"))})

#
# Layout, as nanoGPT's prepare.py: every document's tokens are followed by one end-of-text
# token, all documents are joined into one stream, and the stream is cut into consecutive
# blocks of block_size tokens. The last, partial block is dropped. A block starts wherever the
# cut falls (usually mid-document, never with a forced EOS); the model learns document starts
# from the EOS that precedes each one. No `labels` column: the causal-LM collator copies
# input_ids and the model shifts them.


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides the token ids: the whole pipeline, vocabulary and EOS."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # tokenizers' JSON covers normalizer, pre-tokenizer, model (vocab + merges), specials.
        content = backend.to_str()
    else:
        content = json.dumps(sorted(tokenizer.get_vocab().items()))
    return _sha256(type(tokenizer).__name__, content, tokenizer.eos_token_id)


def _tokenize_batch(batch: dict[str, list], tokenizer: Any, eos_token_id: int | None) -> dict[str, list]:
    # add_special_tokens=False: packing decides where EOS goes, not the tokenizer's template
    # (which may add a BOS per document). verbose=False: documents longer than the model's
    # context are expected here, they are cut into blocks later.
    ids = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False, verbose=False)[
        "input_ids"
    ]
    if eos_token_id is not None:
        ids = [doc + [eos_token_id] for doc in ids]
    return {"input_ids": ids}


class _BlockPacker:
    """Batched map function that carries the unfinished block of one batch into the next.

    The carry makes the packing global (exactly one remainder is dropped, at the very end),
    rather than dropping a remainder per batch as the transformers run_clm example does. It is
    only correct when batches arrive in order, in one process: the packing map never uses
    num_proc (tokenizing, the expensive part, does).
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.carry = np.empty(0, dtype=np.int64)

    def __call__(self, batch: pa.Table) -> dict[str, list]:
        flat = pc.list_flatten(batch.column("input_ids")).to_numpy(zero_copy_only=False)
        stream = np.concatenate([self.carry, flat])
        n_full = len(stream) // self.block_size * self.block_size
        self.carry = stream[n_full:]
        return {"input_ids": list(stream[:n_full].reshape(-1, self.block_size))}


def _iter_blocks(
    tokenized: IterableDataset, block_size: int, split: str | None
) -> Iterator[dict[str, list[int]]]:
    """Streaming packing: the same layout as _BlockPacker, generated on the fly."""
    carry: list[int] = []
    n_blocks = n_tokens = 0
    for batch in tokenized.iter(batch_size=_MAP_BATCH_SIZE):
        for ids in batch["input_ids"]:
            carry.extend(ids)
            n_tokens += len(ids)
        n_full = len(carry) // block_size * block_size
        for start in range(0, n_full, block_size):
            yield {"input_ids": carry[start : start + block_size]}
            n_blocks += 1
        del carry[:n_full]
    if n_blocks == 0:
        raise _too_short(n_tokens, block_size, split)


def _too_short(n_tokens: int, block_size: int, split: str | None) -> DataError:
    """The corpus (or one split of it) is shorter than one block: say which, and the ways out."""
    if split is None:
        return DataError(
            f"The corpus has {n_tokens} tokens, but one block needs block_size={block_size} tokens. "
            f"Use a smaller block_size (at most {n_tokens}) or more text."
        )
    more = "a larger --validation_fraction or more text" if split == "validation" else "more text"
    return DataError(
        f"The {split} split has {n_tokens} tokens, but one block needs --block_size {block_size}. "
        f"Give the {split} split more tokens ({more}), or use a smaller --block_size (at most {n_tokens})."
    )


def _check_tokenizer(tokenizer: Any, add_eos: bool) -> int | None:
    if not add_eos:
        return None
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError(
            f"The tokenizer ({type(tokenizer).__name__}) has no eos_token, which separates the "
            "packed documents. Set one (e.g. tokenizer.eos_token = '<|endoftext|>') or pass "
            "add_eos=False."
        )
    return int(eos)


def _check_block_size(block_size: int) -> None:
    if not isinstance(block_size, int) or block_size < 1:
        raise DataError(f"block_size must be a positive integer, got {block_size!r}.")


def _check_text_column(dataset: AnyDataset) -> None:
    columns = dataset.column_names
    if columns is not None and "text" not in columns:
        raise DataError(
            f"The dataset has no 'text' column; its columns are {columns}. "
            "Load it with load_text_dataset(..., text_column=...) or rename the column."
        )


def _resolve_cache_dir(dataset: Dataset, cache_dir: str | os.PathLike | None) -> Path | None:
    if not datasets.is_caching_enabled():
        return None
    if cache_dir is not None:
        return Path(cache_dir)
    if dataset.cache_files:  # file-backed: keep our files next to datasets' own
        return Path(dataset.cache_files[0]["filename"]).parent
    # In memory (e.g. the default corpus): datasets would not cache it at all; we do.
    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_scratchgpt"


def _tokenize(
    dataset: Dataset,
    tokenizer: Any,
    *,
    add_eos: bool,
    num_proc: int | None,
    cache_dir: str | os.PathLike | None,
) -> Dataset:
    """One row of token ids (+ EOS) per document, cached under a key of (data, tokenizer)."""
    eos_token_id = _check_tokenizer(tokenizer, add_eos)
    _check_text_column(dataset)
    # The dataset fingerprint is datasets' own content key: a hash of the source files (with
    # their modification times) and every transform since, or of the table for in-memory data.
    key = _sha256(_CACHE_VERSION, dataset._fingerprint, _tokenizer_fingerprint(tokenizer), eos_token_id)
    directory = _resolve_cache_dir(dataset, cache_dir)
    cache_file = directory / f"tokenized-{key}.arrow" if directory else None
    if cache_file is not None and cache_file.is_file():
        logger.info("tokenized corpus found in the cache: %s", cache_file)
    else:
        logger.info("tokenizing %d documents", len(dataset))
    return dataset.map(
        _tokenize_batch,
        batched=True,
        batch_size=_MAP_BATCH_SIZE,
        remove_columns=dataset.column_names,
        fn_kwargs={"tokenizer": tokenizer, "eos_token_id": eos_token_id},
        features=_INPUT_IDS_FEATURES,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        cache_file_name=str(cache_file) if cache_file else None,
        # An explicit fingerprint: datasets need not hash the tokenizer, and the key is stable.
        new_fingerprint=key,
        desc="Tokenizing",
    )


def _count_tokens(tokenized: Dataset) -> int:
    total = 0
    for batch in tokenized.with_format("arrow").iter(batch_size=10_000):
        total += pc.sum(pc.list_value_length(batch.column("input_ids"))).as_py() or 0
    return total


def tokenize_and_pack(
    dataset: Dataset | IterableDataset,
    tokenizer: Any,
    block_size: int,
    *,
    num_proc: int | None = None,
    add_eos: bool = True,
    cache_dir: str | os.PathLike | None = None,
    split: str | None = None,
) -> Dataset | IterableDataset:
    """Tokenize every document and pack the token stream into blocks of ``block_size`` ids.

    Each document's tokens are followed by ``tokenizer.eos_token_id`` (if ``add_eos``), the
    documents are concatenated in order, and the stream is cut into consecutive blocks; the
    final partial block is dropped. The result has one column, ``input_ids``, every row exactly
    ``block_size`` ints (no ``labels``: the causal-LM collator and model shift for themselves).

    Works with any `transformers` tokenizer. For a `Dataset`, tokenizing is a batched
    `datasets.map` (``num_proc`` workers when > 1) and both steps are cached as Arrow files
    whose names hash (dataset fingerprint, tokenizer, EOS) and then block_size, under
    ``cache_dir`` (default: next to the dataset's own cache files, or
    ``$HF_DATASETS_CACHE/hf_scratchgpt`` for an in-memory dataset). A second call with the same
    inputs loads them instead of re-tokenizing, and a new block_size reuses the tokens.
    For an `IterableDataset`, blocks are produced lazily while iterating; nothing is cached.
    ``split`` (``"train"``, ``"validation"``) names the text in errors. (Not the dataset's own ``split``:
    both halves of a ``train_test_split`` keep the parent's, e.g. ``train``.)

    Raises:
        DataError: the tokenizer has no EOS (with ``add_eos``), the dataset has no ``text``
            column, or the corpus has fewer tokens than one block.
    """
    _check_block_size(block_size)
    if isinstance(dataset, IterableDataset):
        eos_token_id = _check_tokenizer(tokenizer, add_eos)
        _check_text_column(dataset)
        tokenized = dataset.map(
            _tokenize_batch,
            batched=True,
            batch_size=_MAP_BATCH_SIZE,
            remove_columns=dataset.column_names or ["text"],
            fn_kwargs={"tokenizer": tokenizer, "eos_token_id": eos_token_id},
        )
        # A generator (not a stateful map) so each pass over the data starts with no carry.
        return IterableDataset.from_generator(
            _iter_blocks,
            features=_INPUT_IDS_FEATURES,
            gen_kwargs={"tokenized": tokenized, "block_size": block_size, "split": split},
        )

    tokenized = _tokenize(dataset, tokenizer, add_eos=add_eos, num_proc=num_proc, cache_dir=cache_dir)
    n_tokens = _count_tokens(tokenized)
    if n_tokens < block_size:
        raise _too_short(n_tokens, block_size, split)
    key = _sha256(tokenized._fingerprint, block_size)
    directory = _resolve_cache_dir(tokenized, cache_dir)
    packed = tokenized.with_format("arrow").map(
        _BlockPacker(block_size),
        batched=True,
        batch_size=_MAP_BATCH_SIZE,
        features=_INPUT_IDS_FEATURES,
        cache_file_name=str(directory / f"packed-{key}-block{block_size}.arrow") if directory else None,
        new_fingerprint=key,
        desc=f"Packing into blocks of {block_size}",
    )
    return packed.with_format(None)
