"""Byte-level BPE written out in plain Python, for reading: the algorithm behind `ScratchGPTTokenizer.train`.

`ScratchGPTTokenizer.train` calls the fast Rust trainer of the `tokenizers` library; this module learns the
same vocabulary and the same merges, in the same order, slowly enough to follow. Training, step by step:

1. **Bytes as characters.** Text is UTF-8 encoded, and each of the 256 byte values is spelled as one
   printable character (GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others are
   shifted to U+0100 and up). Any string then becomes a string over a 256-character alphabet, so the
   vocabulary can spell everything and needs no "unknown" token.
2. **Pre-tokenization.** GPT-2's regex cuts text into words (`" the"`, `"'s"`, `" 42"`, `"!!"`, runs of
   spaces); merges never cross a word boundary. Identical words are counted once, with their frequency.
3. **Initial vocabulary.** The special tokens get ids 0..k-1, then the 256 byte characters in code-point
   order get the next ids.
4. **Count pairs.** Each word is a list of token ids; every adjacent pair is counted, weighted by how often
   its word occurs in the corpus.
5. **Merge.** The most frequent pair becomes a new token (its two strings concatenated, the next id), and
   every occurrence of it, left to right, is replaced in every word. Pair counts change only in the words
   that held the pair, so only those are recounted. Ties go to the pair with the smallest ids
   (left id first), exactly as in `tokenizers`' `BpeTrainer` (its heap orders by count, then by the pair).
6. **Repeat** until the vocabulary reaches `vocab_size` or no pair is seen `min_frequency` times.

The merges, in order, are the tokenizer: `encode` applies them to new text, always the earliest-learned
merge first, and `to_tokenizer` hands vocabulary and merges to the fast `ScratchGPTTokenizer`.

For exact equality with the trainer, two pieces come from the project's tokenizer rather than being
rewritten: the regex *engine* (`tokenizers.Regex`, Oniguruma: Python's `re` has no `\\p{L}`, and any
other engine could disagree on what counts as a letter or a space), and `_cut_long_runs`, which cuts
pathological runs of 256+ non-space characters before training, as `ScratchGPTTokenizer.train` does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import pairwise
from typing import TypeVar

from tokenizers import Regex, pre_tokenizers

from .tokenization_scratchgpt import (
    ENDOFTEXT_TOKEN,
    NUM_BYTES,
    PAD_TOKEN,
    ScratchGPTTokenizer,
    _cut_long_runs,
    _ordered_special_tokens,
)

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "bytes_to_unicode",
    "decode",
    "encode",
    "pre_tokenize",
    "to_tokenizer",
    "train_bpe",
]

# GPT-2's pre-tokenizer: English contractions, letters with one optional leading space, numbers, other
# symbols, and whitespace (a run of spaces before a word leaves its last space to that word).
GPT2_SPLIT_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_SPLITTER = pre_tokenizers.Split(Regex(GPT2_SPLIT_PATTERN), behavior="isolated")

Pair = tuple[int, int]
Symbol = TypeVar("Symbol", int, str)  # training merges token ids, `encode` merges strings


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte value to a printable character (step 1)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    byte_to_char = {byte: chr(byte) for byte in printable}
    # Control characters, space and the like would be invisible in vocab.json: give them U+0100, U+0101, ...
    for byte in range(NUM_BYTES):
        if byte not in byte_to_char:
            byte_to_char[byte] = chr(NUM_BYTES + len(byte_to_char) - len(printable))
    return byte_to_char


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {char: byte for byte, char in BYTE_TO_CHAR.items()}


def pre_tokenize(text: str) -> list[str]:
    """Cut `text` into words with GPT-2's regex and spell each word's UTF-8 bytes as characters (steps 1-2)."""
    return [
        "".join(BYTE_TO_CHAR[b] for b in word.encode("utf-8")) for word, _ in _SPLITTER.pre_tokenize_str(text)
    ]


def _add_pair_counts(
    pair_counts: Counter[Pair], words_with_pair: dict[Pair, set[int]], index: int, word: list[int], count: int
) -> None:
    """Count the adjacent pairs of word number `index` `count` more times (a negative count removes them)."""
    for pair in pairwise(word):
        pair_counts[pair] += count
        if pair_counts[pair] == 0:
            del pair_counts[pair]  # so that `max` never picks a pair that no longer occurs
        if count > 0:
            # Never shrunk: a word listed here that lost the pair is merely scanned for nothing.
            words_with_pair.setdefault(pair, set()).add(index)


def _merge_pair(word: list[Symbol], pair: tuple[Symbol, Symbol], merged_symbol: Symbol) -> list[Symbol]:
    """`word` with every occurrence of `pair`, scanned left to right, replaced by `merged_symbol`."""
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(merged_symbol)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: list[str] | None = None,
    min_frequency: int = 2,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a byte-level BPE vocabulary and its merges, as `ScratchGPTTokenizer.train` does with these settings.

    `special_tokens` are ordered as `ScratchGPTTokenizer.train` orders them (`<|endoftext|>` id 0, `<|pad|>`
    id 1, then the others; default: those two and the ChatML markers). Returns `(vocab, merges)`: token
    string -> id, and the merged pairs in the order they were learned.
    """
    if isinstance(texts, str):
        raise TypeError(
            "train_bpe(texts=...) got a single string; pass a list of documents: train_bpe([text], ...)"
        )
    specials = _ordered_special_tokens(special_tokens)
    if vocab_size < NUM_BYTES + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the minimum is {NUM_BYTES + len(specials)} "
            f"({NUM_BYTES} byte tokens + {len(specials)} special tokens)"
        )

    # Steps 1-2: the corpus as word frequencies.
    word_counts: Counter[str] = Counter()
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"train_bpe: document {index} is a {type(text).__name__}; pass strings only")
        for chunk in _cut_long_runs(text):
            word_counts.update(pre_tokenize(chunk))
    if not word_counts:
        raise ValueError("train_bpe got no text (an empty corpus): there are no pairs to learn merges from")

    # Step 3: the initial vocabulary; `tokens[i]` is the string of id i.
    tokens = list(dict.fromkeys([*specials, *sorted(BYTE_TO_CHAR.values())]))
    vocab = {token: i for i, token in enumerate(tokens)}

    # Step 4: words as lists of ids, and every adjacent pair counted.
    words = [[vocab[char] for char in word] for word in word_counts]
    counts = list(word_counts.values())
    pair_counts: Counter[Pair] = Counter()
    words_with_pair: dict[Pair, set[int]] = {}
    for index, word in enumerate(words):
        _add_pair_counts(pair_counts, words_with_pair, index, word, counts[index])

    # Steps 5-6: merge the most frequent pair (smallest ids on a tie) until the vocabulary is full.
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size and pair_counts:
        best = max(pair_counts, key=lambda pair: (pair_counts[pair], -pair[0], -pair[1]))
        if pair_counts[best] < min_frequency:
            break
        new_token = tokens[best[0]] + tokens[best[1]]
        # Two different pairs can spell the same string ("a"+"bc", "ab"+"c"): the second reuses the id.
        if new_token not in vocab:
            vocab[new_token] = len(tokens)
            tokens.append(new_token)
        merges.append((tokens[best[0]], tokens[best[1]]))
        for index in words_with_pair.pop(best):
            _add_pair_counts(pair_counts, words_with_pair, index, words[index], -counts[index])
            words[index] = _merge_pair(words[index], best, vocab[new_token])
            _add_pair_counts(pair_counts, words_with_pair, index, words[index], counts[index])
    return vocab, merges


def encode(text: str, vocab: dict[str, int], merges: list[tuple[str, str]]) -> list[int]:
    """Token ids of `text`: in each word, apply the earliest-learned merge that fits, until none does.

    Special tokens are not recognised here (the full tokenizer matches them before pre-tokenizing):
    `"<|endoftext|>"` in `text` is spelled in bytes.
    """
    rank = {pair: i for i, pair in enumerate(merges)}
    ids = []
    for word in pre_tokenize(text):
        symbols = list(word)
        while len(symbols) > 1:
            first = min(pairwise(symbols), key=lambda pair: rank.get(pair, len(rank)))
            if first not in rank:
                break
            symbols = _merge_pair(symbols, first, first[0] + first[1])
        ids.extend(vocab[symbol] for symbol in symbols)
    return ids


def decode(ids: list[int], vocab: dict[str, int]) -> str:
    """The text of token ids: concatenate the tokens' characters, map them back to bytes, decode UTF-8."""
    id_to_token = {i: token for token, i in vocab.items()}
    data = bytes(CHAR_TO_BYTE[char] for i in ids for char in id_to_token[i])
    return data.decode("utf-8", errors="replace")


def to_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], special_tokens: list[str] | None = None
) -> ScratchGPTTokenizer:
    """A fast `ScratchGPTTokenizer` from what `train_bpe` learned (pass it the same `special_tokens`)."""
    extras = [t for t in _ordered_special_tokens(special_tokens) if t not in (ENDOFTEXT_TOKEN, PAD_TOKEN)]
    return ScratchGPTTokenizer(vocab=vocab, merges=merges, extra_special_tokens=extras)
