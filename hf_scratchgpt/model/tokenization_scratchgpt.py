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
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER
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

# BPE training time grows with the square of the longest pre-tokenized chunk (a 400k-character line
# without spaces took 107 s). Training therefore cuts runs of non-space (or space) characters every
# this many characters; words are far shorter, so only pathological text (base64, minified code, DNA)
# is cut, and encoding is unchanged (the cut exists only in the training corpus).
MAX_TRAINING_CHUNK = 256
_LONG_RUN = re.compile(rf"\S{{{MAX_TRAINING_CHUNK}}}|\s{{{MAX_TRAINING_CHUNK}}}")
# With show_progress, a line on stderr at most this often while the corpus is read.
_PROGRESS_SECONDS = 10.0

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


class _TrainingCorpus:
    """The training texts as the BPE trainer sees them: checked, overlong runs cut, progress reported.

    Counts documents and characters on the way, so ``train`` can refuse an empty corpus afterwards.
    """

    def __init__(self, texts: Iterable[str], show_progress: bool) -> None:
        if isinstance(texts, (str, bytes)):
            raise TypeError(
                "ScratchGPTTokenizer.train(texts=...) got a single string; a string is an iterable of "
                "characters, so each character would be a document. Pass a list of strings: train([text])."
            )
        self.texts = texts
        self.show_progress = show_progress
        self.documents = 0
        self.characters = 0

    def __iter__(self) -> Iterator[str]:
        started = last_report = time.monotonic()
        for index, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"ScratchGPTTokenizer.train: document {index} is a {type(text).__name__}, not a string; "
                    "pass an iterable of strings (e.g. (row['text'] for row in dataset))."
                )
            self.documents += 1
            self.characters += len(text)
            yield from _cut_long_runs(text)
            if self.show_progress and time.monotonic() - last_report > _PROGRESS_SECONDS:
                last_report = time.monotonic()
                self._report(f"read {self.documents} documents", started)
        if self.show_progress:
            self._report(f"read all {self.documents} documents; learning merges", started)

    def _report(self, what: str, started: float) -> None:
        # stderr and flushed: the tokenizers progress bar draws nothing when stderr is not a terminal
        # (a log file), and a long training must not look like a hang there.
        seconds = time.monotonic() - started
        print(
            f"Tokenizer training: {what} ({self.characters / 1e6:.1f}M characters, {seconds:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def _cut_long_runs(text: str) -> Iterator[str]:
    """``text`` in pieces that hold no run of (non-)space characters longer than MAX_TRAINING_CHUNK."""
    start = 0
    for match in _LONG_RUN.finditer(text):
        yield text[start : match.end()]
        start = match.end()
    if start < len(text) or not text:
        yield text[start:]


def _missing_tokenizer_message(name: str, problem: str) -> str:
    return (
        f"Cannot load a ScratchGPTTokenizer from {name!r}: {problem}. For a byte-level tokenizer (one token per "
        "byte, no merges), ask for it explicitly: ScratchGPTTokenizer() in Python, or the name 'byte' for a "
        "script's --tokenizer_name_or_path."
    )


def _unreadable_json(paths: Iterable[str | None]) -> str | None:
    """The first of the tokenizer's ``.json`` files that is not valid JSON, with the parser's reason."""
    for path in paths:
        if path and str(path).endswith(".json"):
            try:
                with open(path, encoding="utf-8") as file:
                    json.load(file)
            except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
                return f"{path} is not valid JSON ({error})"
    return None


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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *args, **kwargs):
        """Load a saved tokenizer (folder or Hub id); a path that does not exist is named as such.

        Without this, a mistyped absolute or ./relative path is taken for a Hub id and fails with
        huggingface_hub's "Repo id must be in the form 'repo_name' or 'namespace/repo_name'".
        """
        name = os.fspath(pretrained_model_name_or_path)
        if name.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(name)):
            raise OSError(_missing_tokenizer_message(name, "there is no such folder"))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _from_pretrained(
        cls, resolved_vocab_files: dict[str, str | None], pretrained_model_name_or_path: Any, *args, **kwargs
    ) -> ScratchGPTTokenizer:
        """Refuse to load without a vocabulary, instead of building the 260-token byte-level one.

        The base class calls the constructor with whatever files it found; with none, the constructor's
        byte-level default would silently give different token ids than the model was trained with.
        """
        has_tokenizer_json = resolved_vocab_files.get("tokenizer_file") is not None
        has_gpt2_files = all(resolved_vocab_files.get(name) is not None for name in cls.vocab_files_names)
        if not (has_tokenizer_json or has_gpt2_files):
            if resolved_vocab_files.get("tokenizer_config_file") is not None:
                problem = (
                    "it has tokenizer_config.json but no tokenizer.json (nor vocab.json + merges.txt): the "
                    "vocabulary file is missing. Put tokenizer.json back (tokenizer.save_pretrained writes it)"
                )
            elif os.path.isdir(str(pretrained_model_name_or_path)):
                problem = "the folder holds no tokenizer.json (nor vocab.json + merges.txt)"
            else:
                problem = "there is no such folder (and no Hub repo of that name could be reached)"
            raise OSError(_missing_tokenizer_message(str(pretrained_model_name_or_path), problem))
        try:
            return super()._from_pretrained(
                resolved_vocab_files, pretrained_model_name_or_path, *args, **kwargs
            )
        except Exception as error:  # a cut-off or overwritten file fails deep inside json or tokenizers
            damaged = _unreadable_json(resolved_vocab_files.values())
            if damaged is None:
                raise
            raise OSError(
                f"Cannot load a ScratchGPTTokenizer from {str(pretrained_model_name_or_path)!r}: {damaged}; the "
                "folder is damaged (a cut-off download or save). Re-download it, or save the tokenizer again "
                "with save_pretrained."
            ) from error

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
        model_max_length: int | None = None,
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
            model_max_length: the context of the model this tokenizer will serve, stored in the tokenizer
                config. Default: none recorded (transformers' "no limit"), since a corpus does not say which
                model it feeds; `hf_scratchgpt.model.tokenizer_sync.align_model_and_tokenizer` sets the model's context
                when the two are saved together.
            show_progress: report progress: the `tokenizers` progress bar on a terminal, and a line on
                stderr every few seconds while the corpus is read (also when stderr is a log file).
            kwargs: passed to the constructor (e.g. `padding_side`, `chat_template`).

        Runs of more than `MAX_TRAINING_CHUNK` characters without a space are cut for training only, which
        keeps training time linear in the corpus size; encoding is unaffected.

        Raises:
            TypeError: if `texts` is a single string or holds something that is not a string.
            ValueError: if `vocab_size` is smaller than 256 + the number of special tokens, or the corpus
                holds no text.
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
            show_progress=show_progress and sys.stderr.isatty(),
        )
        corpus = _TrainingCorpus(texts, show_progress)
        backend.train_from_iterator(corpus, trainer=trainer)
        if corpus.characters == 0:
            raise ValueError(
                f"ScratchGPTTokenizer.train got an empty corpus ({corpus.documents} documents, no characters): "
                "there is nothing to learn merges from. Check the data source; for a tokenizer with one token "
                "per byte and no training, use ScratchGPTTokenizer()."
            )

        # Rebuild through the constructor from vocab + merges, the same path `from_pretrained` takes.
        model = json.loads(backend.to_str())["model"]
        extras = [token for token in specials if token not in (ENDOFTEXT_TOKEN, PAD_TOKEN)]
        kwargs.setdefault("extra_special_tokens", extras)
        return cls(
            vocab=model["vocab"],
            merges=model["merges"],
            model_max_length=VERY_LARGE_INTEGER if model_max_length is None else model_max_length,
            **kwargs,
        )

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
