"""The from-scratch BPE of hf_scratchgpt.model.bpe learns what the `tokenizers` trainer learns, and encodes alike."""

from __future__ import annotations

import json

import pytest
from tokenizers import pre_tokenizers

from hf_scratchgpt import ScratchGPTTokenizer
from hf_scratchgpt.model.bpe import BYTE_TO_CHAR, decode, encode, pre_tokenize, to_tokenizer, train_bpe

ENGLISH = [
    "It was a bright cold day in April, and the clocks were striking thirteen. The hallway smelt of "
    "boiled cabbage and old rag mats. At one end of it a coloured poster, too large for indoor display, "
    "had been tacked to the wall.",
    "The quick brown fox jumps over the lazy dog; the lazy dog doesn't mind, it's used to the fox.",
    "She sells sea shells by the sea shore, and the shells she sells are sea shells, I'm sure. "
    "We'll see what they've said: 1984, 2001 and 42 are numbers, 3.14 is pi, and 100% is everything.",
    "Once upon a time there was a little robot who loved to read stories about other robots reading.",
] * 3

# Emoji (4-byte UTF-8), CJK, combining accents, numbers of other scripts, odd spaces, runs of
# whitespace and control characters: where byte-level spelling and the regex's \p{L}, \p{N}, \s matter.
UNICODE = [
    "Emoji 🤗🚀🤗 and CJK 你好世界 你好 and accents café naïve cafe\u0301. Ünïcödé  \t\t tabs\n\n\n   spaces   ",
    "ÅÅÅ ééé 🤗🤗 🚀🚀🚀  \u00a0\u2003 x\u200b y Ǆ ǅ ² ³ ½ Ⅻ 𝔘𝔫𝔦 ١٢٣ عربى русский текст русский",
    "a\r\nb\r\n\x00\x01\x1c\x1d\x85 \u2028 z\n\n  \n" + "x" * 600 + " " + "ab" * 300 + " 👍🏽👍🏽 🇫🇷🇫🇷",
] * 2

UNSEEN = "The cold robot read 1985 stories 🤗 by the shore, naïve and sure: it's 3.14!\n\n  你好 русский 👍🏽 done."


def reference(texts: list[str], vocab_size: int, **options) -> tuple[ScratchGPTTokenizer, dict, list]:
    """The fast tokenizer `ScratchGPTTokenizer.train` builds, with its vocabulary and merges."""
    tokenizer = ScratchGPTTokenizer.train(texts, vocab_size=vocab_size, **options)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    return tokenizer, model["vocab"], [tuple(merge) for merge in model["merges"]]


def test_byte_map_is_gpt2s() -> None:
    assert sorted(BYTE_TO_CHAR.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert len(set(BYTE_TO_CHAR.values())) == 256
    assert (BYTE_TO_CHAR[ord(" ")], BYTE_TO_CHAR[ord("\n")], BYTE_TO_CHAR[ord("A")]) == ("Ġ", "Ċ", "A")


@pytest.mark.parametrize("text", [*UNICODE, *ENGLISH[:4], UNSEEN])
def test_pre_tokenize_is_the_byte_level_pre_tokenizer(text: str) -> None:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    assert pre_tokenize(text) == [word for word, _ in byte_level.pre_tokenize_str(text)]


@pytest.mark.parametrize(
    ("texts", "vocab_size", "options"),
    [
        (ENGLISH, 400, {}),  # stops at vocab_size
        (ENGLISH, 2000, {}),  # stops when no pair is seen min_frequency (2) times
        (ENGLISH, 2000, {"min_frequency": 1}),
        (UNICODE, 600, {"min_frequency": 1}),
        (UNICODE, 600, {"special_tokens": ["<|endoftext|>", "<sep>"]}),
    ],
    ids=["english-full", "english-min-frequency", "english-all-pairs", "unicode", "unicode-own-specials"],
)
def test_merges_and_vocab_equal_the_tokenizers_trainer(
    texts: list[str], vocab_size: int, options: dict
) -> None:
    trained, expected_vocab, expected_merges = reference(texts, vocab_size, **options)
    vocab, merges = train_bpe(texts, vocab_size, **options)

    assert merges == expected_merges  # same pairs, same order
    assert vocab == expected_vocab  # same tokens, same ids
    assert len(merges) > 100
    tokenizer = to_tokenizer(vocab, merges, options.get("special_tokens"))
    assert tokenizer.encode(UNSEEN) == trained.encode(UNSEEN)
    assert tokenizer.convert_ids_to_tokens(list(range(4))) == trained.convert_ids_to_tokens(list(range(4)))
    assert tokenizer.all_special_tokens == trained.all_special_tokens


def test_the_verdict_equals_the_tokenizers_trainer(shared_data) -> None:
    text = (shared_data / "pretrain" / "the-verdict.txt").read_text(encoding="utf-8")
    _, expected_vocab, expected_merges = reference([text], 600)
    assert train_bpe([text], 600) == (expected_vocab, expected_merges)


def test_ties_go_to_the_pair_with_the_smallest_ids() -> None:
    # Every pair is seen once: "a"+"b" and "c"+"d" (ids in byte order) come before "Ġ"+"c" (Ġ is U+0120).
    vocab, merges = train_bpe(["ab cd"], 300, min_frequency=1)
    assert merges == [("a", "b"), ("c", "d"), ("Ġ", "cd")]
    assert reference(["ab cd"], 300, min_frequency=1)[2] == merges
    specials_bytes_merges = ("<|endoftext|>", "<|pad|>", "!", "ab", "cd", "Ġcd")
    assert [vocab[token] for token in specials_bytes_merges] == [0, 1, 4, 260, 261, 262]


@pytest.mark.parametrize("texts", [ENGLISH, UNICODE])
def test_encode_equals_the_trained_tokenizer_on_unseen_text(texts: list[str]) -> None:
    trained, _, _ = reference(texts, 500, min_frequency=1)
    vocab, merges = train_bpe(texts, 500, min_frequency=1)
    for text in (UNSEEN, *ENGLISH[:2], *UNICODE[:3]):
        ids = encode(text, vocab, merges)
        assert ids == trained.encode(text, add_special_tokens=False)
        assert decode(ids, vocab) == text
    assert len(encode(UNSEEN, vocab, merges)) < len(UNSEEN.encode("utf-8"))  # merges do compress


def test_bad_input_is_named() -> None:
    with pytest.raises(TypeError, match=r"single string.*train_bpe\(\[text\]"):
        train_bpe("some text", 300)
    with pytest.raises(ValueError, match="vocab_size=200 is too small: the minimum is 260"):
        train_bpe(["some text"], 200)
    with pytest.raises(TypeError, match="document 1 is a bytes; pass strings only"):
        train_bpe(["some text", b"bytes"], 300)
    with pytest.raises(ValueError, match="no text"):
        train_bpe(["", ""], 300)
