"""Byte-level BPE tokenizer for ScratchGPT, as a native transformers 5 tokenizer class.

`ScratchGPTTokenizer` is a `TokenizersBackend` (the v5 name of `PreTrainedTokenizerFast`) that wraps a
GPT-2 style byte-level BPE from the `tokenizers` library. Because every string is first mapped to its UTF-8
bytes, and every byte has its own token, encoding is lossless: `tok.decode(tok.encode(s)) == s` for any
Unicode string. Three ways to get one:

* `ScratchGPTTokenizer.train(texts, vocab_size=...)` learns a new vocabulary (special tokens get ids 0..k-1);
* `ScratchGPTTokenizer.from_gpt2_files(vocab_file, merges_file)` reads OpenAI's GPT-2 files and tokenizes
  exactly like GPT-2 (same ids);
* `ScratchGPTTokenizer.from_pretrained(path)` reloads what `save_pretrained` wrote.

This file is copied next to saved weights and imported as remote code (`trust_remote_code=True`), so it must
stay self-contained: it may import only the standard library, `tokenizers` and `transformers`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers.tokenization_utils_tokenizers import TokenizersBackend

__all__ = ["ScratchGPTTokenizer"]

# --- Special tokens -----------------------------------------------------------------------------------------
# End of text doubles as BOS and EOS, as in GPT-2: documents are separated by a single token.
ENDOFTEXT_TOKEN = "<|endoftext|>"
# Padding gets its own token. If pad == eos, collators mask the pad id out of the loss and therefore also
# every real EOS, so a fine-tuned model never learns to stop.
PAD_TOKEN = "<|pad|>"
# ChatML role markers.
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
CHAT_TOKENS = [IM_START_TOKEN, IM_END_TOKEN]

# Order matters: `train` gives these ids 0, 1, 2, 3.
DEFAULT_SPECIAL_TOKENS = [ENDOFTEXT_TOKEN, PAD_TOKEN, IM_START_TOKEN, IM_END_TOKEN]

DEFAULT_VOCAB_SIZE = 8192
DEFAULT_MODEL_MAX_LENGTH = 1024

# Number of byte tokens: byte-level BPE always starts from one token per byte value.
NUM_BYTES = 256

# ChatML. The assistant's text and its closing <|im_end|> are wrapped in {% generation %} so that
# `apply_chat_template(..., return_assistant_tokens_mask=True)` (and TRL's `assistant_only_loss`) can tell
# which tokens the model should learn to produce. The newline after <|im_end|> stays outside: the model
# stops at <|im_end|>, it never generates that newline. `'\n'` in a Jinja string literal is a newline.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _byte_level_pipeline(model: BPE, add_prefix_space: bool = False) -> Tokenizer:
    """Wrap a BPE model in GPT-2's byte-level pre-tokenizer, decoder and post-processor."""
    tokenizer = Tokenizer(model)
    # use_regex=True is GPT-2's split pattern ('s|'t|...| ?\p{L}+| ?\p{N}+|...), then bytes -> printable chars.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps the leading space inside a token's character span. Offsets then tile the text
    # with no gaps, which `char_to_token` (used for the assistant-tokens mask) relies on.
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False)
    return tokenizer


def _bpe_model(vocab: dict[str, int], merges: list[tuple[str, str]]) -> BPE:
    # No unk token, no byte fallback: byte-level BPE can spell everything with its 256 byte tokens.
    return BPE(
        vocab=vocab,
        merges=merges,
        dropout=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
    )


def _byte_alphabet_vocab(special_tokens: list[str]) -> dict[str, int]:
    """Special tokens first, then one token per byte (in byte-to-unicode order): a vocab with no merges."""
    vocab = {token: i for i, token in enumerate(special_tokens)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    return vocab


def _normalise_merges(merges: Iterable[Any]) -> list[tuple[str, str]]:
    """Accept merges as "a b" strings (merges.txt, old tokenizer.json) or pairs (new tokenizer.json)."""
    pairs = []
    for merge in merges:
        if isinstance(merge, str):
            left, right = merge.split(" ")
            pairs.append((left, right))
        else:
            left, right = merge
            pairs.append((left, right))
    return pairs


def _ordered_special_tokens(special_tokens: list[str] | None) -> list[str]:
    """The special tokens for `train`, deduplicated, end-of-text first and a pad token always present."""
    tokens = list(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
    ordered = [ENDOFTEXT_TOKEN, PAD_TOKEN]
    for token in tokens:
        if token not in ordered:
            ordered.append(token)
    return ordered


class ScratchGPTTokenizer(TokenizersBackend):
    """GPT-2 style byte-level BPE tokenizer with a distinct pad token, left padding and a ChatML template.

    Args:
        vocab: token -> id, or a path to a GPT-2 `vocab.json`. When neither `vocab` nor a serialized tokenizer
            is given, a merge-free byte-level vocabulary (special tokens + 256 bytes) is built.
        merges: BPE merges as `(left, right)` pairs or `"left right"` strings, or a path to `merges.txt`.
        bos_token, eos_token: default `<|endoftext|>`.
        pad_token: default `<|pad|>`; GPT-2 files use `<|endoftext|>` (see `from_gpt2_files`).
        unk_token: default `None`: byte-level BPE has no unknown input.
        add_prefix_space: GPT-2 behaviour is `False` (a leading word is tokenized without a space).
        model_max_length: the longest sequence the model accepts (default 1024).
        padding_side: `"left"`, what batched generation with a decoder-only model needs.
        chat_template: default ChatML when the vocabulary contains `<|im_start|>` and `<|im_end|>`.
    """

    # Same file names as GPT-2, so `from_pretrained` on a folder with only vocab.json + merges.txt works.
    # A folder written by `save_pretrained` holds tokenizer.json, which transformers prefers.
    vocab_files_names = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
    model_input_names = ["input_ids", "attention_mask"]
    # Tells `convert_to_native_format` to hand us vocab/merges (and the post-processor) from tokenizer.json.
    model = BPE

    def __init__(
        self,
        vocab: str | dict[str, int] | None = None,
        merges: str | list[str] | list[tuple[str, str]] | None = None,
        bos_token: AddedToken | str | None = ENDOFTEXT_TOKEN,
        eos_token: AddedToken | str | None = ENDOFTEXT_TOKEN,
        pad_token: AddedToken | str | None = PAD_TOKEN,
        unk_token: AddedToken | str | None = None,
        add_prefix_space: bool = False,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        padding_side: str = "left",
        clean_up_tokenization_spaces: bool = False,
        chat_template: str | dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.add_prefix_space = add_prefix_space
        # A serialized backend (tokenizer_object / tokenizer.json path) is loaded by TokenizersBackend itself;
        # otherwise we build the backend here, as transformers' GPT2Tokenizer does.
        has_backend = kwargs.get("tokenizer_object") is not None or (
            isinstance(kwargs.get("tokenizer_file"), str) and os.path.isfile(kwargs["tokenizer_file"])
        )
        if not has_backend:
            if isinstance(vocab, str):
                if not isinstance(merges, str):
                    raise ValueError(
                        "When `vocab` is a path to vocab.json, `merges` must be a path to merges.txt"
                    )
                vocab, merges = BPE.read_file(vocab, merges)
            elif isinstance(merges, str):
                # `vocab` in memory but merges as a merges.txt path: drop its "#version" header line only
                # ("#" is itself a byte token, so other lines starting with "#" are real merges).
                with open(merges, encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
                merges = [
                    line
                    for i, line in enumerate(lines)
                    if line and not (i == 0 and line.startswith("#version"))
                ]
            if vocab is None:
                named = [str(t) for t in (eos_token, bos_token, pad_token, unk_token) if t is not None]
                vocab = _byte_alphabet_vocab(_ordered_special_tokens(named + DEFAULT_SPECIAL_TOKENS))
                merges = []
                # The chat markers are in this vocab; they must also be special tokens, or the text
                # "<|im_start|>" would be pre-tokenized into bytes instead of matching the token.
                kwargs.setdefault("extra_special_tokens", CHAT_TOKENS)
            self._tokenizer = _byte_level_pipeline(
                _bpe_model(dict(vocab), _normalise_merges(merges or [])), add_prefix_space
            )

        if chat_template is None:
            chat_template = self._default_chat_template(vocab, kwargs)

        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            unk_token=unk_token,
            add_prefix_space=add_prefix_space,
            model_max_length=model_max_length,
            padding_side=padding_side,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            chat_template=chat_template,
            **kwargs,
        )

    @staticmethod
    def _default_chat_template(vocab: dict[str, int] | None, kwargs: dict[str, Any]) -> str | None:
        """ChatML, but only when the role markers exist as tokens: otherwise they would be spelled in bytes."""
        known: set[str] = set(vocab or {})
        known.update(str(t) for t in kwargs.get("extra_special_tokens") or [])
        tokenizer_object = kwargs.get("tokenizer_object")
        if tokenizer_object is not None:
            known.update(tokenizer_object.get_vocab(with_added_tokens=True))
        return CHATML_TEMPLATE if all(token in known for token in CHAT_TOKENS) else None

    # --- Constructors -----------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        special_tokens: list[str] | None = None,
        min_frequency: int = 2,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> ScratchGPTTokenizer:
        """Train a new byte-level BPE tokenizer on `texts`.

        Args:
            texts: the training corpus, one string per document (any iterable, consumed once).
            vocab_size: final vocabulary size, special tokens and the 256 byte tokens included. Exactly
                `256 + len(special_tokens)` gives a byte-level tokenizer with no merges (one token per byte).
                The vocabulary can end up smaller when the corpus has too few pairs seen `min_frequency` times.
            special_tokens: the special tokens, which get ids 0..k-1 in this order. Defaults to
                `<|endoftext|>`, `<|pad|>`, `<|im_start|>`, `<|im_end|>`. `<|endoftext|>` (id 0) and `<|pad|>`
                (id 1) are always included; further tokens become `extra_special_tokens`.
            min_frequency: a pair must be seen at least this often to be merged.
            model_max_length: stored in the tokenizer config.
            show_progress: show the `tokenizers` progress bar.
            kwargs: passed to the constructor (e.g. `padding_side`, `chat_template`).

        Raises:
            ValueError: if `vocab_size` is smaller than 256 + the number of special tokens.
        """
        specials = _ordered_special_tokens(special_tokens)
        minimum = NUM_BYTES + len(specials)
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the minimum is {minimum} "
                f"({NUM_BYTES} byte tokens + {len(specials)} special tokens)"
            )

        backend = _byte_level_pipeline(BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            # Seed the vocabulary with all 256 bytes, not only those in the corpus: that is what makes
            # every string encodable, whatever the training data.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        backend.train_from_iterator(texts, trainer=trainer)

        # Rebuild through the constructor from vocab + merges, the same path `from_pretrained` takes.
        model = json.loads(backend.to_str())["model"]
        extras = [token for token in specials if token not in (ENDOFTEXT_TOKEN, PAD_TOKEN)]
        kwargs.setdefault("extra_special_tokens", extras)
        return cls(vocab=model["vocab"], merges=model["merges"], model_max_length=model_max_length, **kwargs)

    @classmethod
    def from_gpt2_files(
        cls,
        vocab_file: str | os.PathLike[str],
        merges_file: str | os.PathLike[str],
        add_chat_tokens: bool = False,
        **kwargs: Any,
    ) -> ScratchGPTTokenizer:
        """Load OpenAI GPT-2 `vocab.json` + `merges.txt`; the result tokenizes exactly like GPT-2.

        `<|endoftext|>` keeps its id from the file (50256 for GPT-2) and the vocabulary is not grown: the pad
        token is `<|endoftext|>` and there is no chat template, unless `add_chat_tokens=True` (appends
        `<|im_start|>`/`<|im_end|>` after the file's ids, for fine-tuning a chat model) or `kwargs` override
        `pad_token`.
        """
        vocab, merges = BPE.read_file(os.fspath(vocab_file), os.fspath(merges_file))
        if ENDOFTEXT_TOKEN not in vocab:
            raise ValueError(f"{vocab_file} has no {ENDOFTEXT_TOKEN} token; is it a GPT-2 vocab.json?")
        # GPT-2 has no pad token. Adding `<|pad|>` would create id 50257, beyond the pretrained embedding
        # matrix. Padding with `<|endoftext|>` is harmless for inference: the attention mask hides padded
        # positions. (For SFT on GPT-2 weights, pass a distinct pad_token and resize the embeddings.)
        kwargs.setdefault("pad_token", ENDOFTEXT_TOKEN)
        # GPT2Tokenizer uses end-of-text as unk too; keep that for identical behaviour.
        kwargs.setdefault("unk_token", ENDOFTEXT_TOKEN)
        if add_chat_tokens:
            extras = list(kwargs.get("extra_special_tokens") or [])
            kwargs["extra_special_tokens"] = extras + [t for t in CHAT_TOKENS if t not in extras]
        return cls(vocab=vocab, merges=merges, **kwargs)
