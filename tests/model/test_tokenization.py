"""Tests for the ScratchGPT byte-level BPE tokenizer (hf_scratchgpt/model/tokenization_scratchgpt.py).

Everything runs offline on tiny corpora: the whole file takes a few seconds.

Bad tokenizer input gets a clear error, never a silent byte-level tokenizer; long lines train in linear time.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from itertools import groupby

import pytest
from conftest import TRAINING_TEXT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedConfig
from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from hf_scratchgpt import ScratchGPTTokenizer
from hf_scratchgpt.model.tokenization_scratchgpt import MAX_TRAINING_CHUNK

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]

# Varied enough to learn a few hundred merges with min_frequency=2.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
    "Hello world! Hello there, how are you doing today? I am doing well, thank you.",
    "def hello_world():\n    print('hello world')\n    return 42\n",
    "Numbers like 12345 and 3.14159 appear in text; so do dates such as 2024-05-17.",
    "Byte-level BPE handles émojis 🎉🚀, 中文字符 and русский текст without unknown tokens.",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n",
] * 20

EXAMPLES = [
    "",
    "Hello, world!",
    "hello world",
    "   leading spaces and trailing   ",
    "trailing newlines\n\n\n",
    "\r\nWindows\r\nline endings\r\n",
    "tabs\tand\x0bvertical\x0ctabs",
    "emoji 🎉 family 👩\u200d👩\u200d👧\u200d👦 flags 🇫🇷",
    "中文字符 日本語のテキスト 한국어",
    "control \x00\x01\x1b[31m\x7f chars",
    "combining e\u0301 vs \u00e9, BOM \ufeff, nbsp\u00a0, ideographic space\u3000",
    "a" * 1000,
    " " * 300,
    "\n" * 50,
    "<|endoftext|>special<|pad|>tokens<|im_start|>in<|im_end|>text",
    "<|endoftext|",  # almost a special token
    "\U0010ffff\U0001f600 astral plane",
]

CHAT = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
    {"role": "assistant", "content": "Why did the chicken cross the road?"},
]


@pytest.fixture(scope="module")
def tok() -> ScratchGPTTokenizer:
    return ScratchGPTTokenizer.train(CORPUS, vocab_size=400)


# --- Lossless round trip --------------------------------------------------------------------------------------

# Every Unicode scalar value (surrogates cannot be encoded to UTF-8, so they are not strings a tokenizer sees).
_chars = st.characters(exclude_categories=("Cs",))
_texts = st.one_of(
    st.text(_chars, max_size=200),
    # long runs of one character (exercises BPE on repetitive words)
    st.builds(lambda c, n: c * n, _chars, st.integers(0, 400)),
    # whitespace runs: GPT-2's regex treats trailing whitespace specially
    st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2028\u3000"), max_size=100),
    # special token text glued to ordinary text, emoji, CJK and control characters
    st.lists(
        st.sampled_from([*SPECIALS, "hello", " world", "🎉", "世界", "\x00", "\n", " ", "<|", "|>"]),
        max_size=30,
    ).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_texts)
def test_round_trip_property(tok: ScratchGPTTokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("text", EXAMPLES)
def test_round_trip_examples(tok: ScratchGPTTokenizer, text: str) -> None:
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    # Batched decode goes through the same path.
    assert tok.batch_decode([ids, ids]) == [text, text]


def test_no_special_tokens_added_by_encode(tok: ScratchGPTTokenizer) -> None:
    ids = tok.encode("hello world")
    assert ids == tok.encode("hello world", add_special_tokens=False)
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids
    assert tok.encode("") == []


def test_special_token_text_maps_to_its_id(tok: ScratchGPTTokenizer) -> None:
    ids = tok.encode("a<|endoftext|>b<|im_end|>")
    assert tok.eos_token_id in ids and tok.convert_tokens_to_ids("<|im_end|>") in ids
    # skip_special_tokens removes them, and only them.
    assert tok.decode(ids, skip_special_tokens=True) == "ab"


# --- Training -------------------------------------------------------------------------------------------------


def test_special_tokens_come_first(tok: ScratchGPTTokenizer) -> None:
    assert tok.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3]
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.eos_token_id == tok.bos_token_id == 0
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 1
    assert tok.pad_token_id != tok.eos_token_id
    assert sorted(tok.all_special_ids) == [0, 1, 2, 3]
    # Each special token is one token, not spelled in bytes.
    for token in SPECIALS:
        assert len(tok.encode(token)) == 1


def test_vocab_size_honoured(tok: ScratchGPTTokenizer) -> None:
    assert len(tok) == 400
    assert tok.vocab_size == 400
    assert sorted(tok.get_vocab().values()) == list(range(400))


def test_merges_are_learned(tok: ScratchGPTTokenizer) -> None:
    for word in [" the", "hello", " world", " Hello"]:
        assert len(tok.encode(word)) < len(word.encode("utf-8")), word


def test_byte_level_without_merges() -> None:
    byte_tok = ScratchGPTTokenizer.train(CORPUS, vocab_size=256 + len(SPECIALS))
    assert len(byte_tok) == 260
    assert json.loads(byte_tok.backend_tokenizer.to_str())["model"]["merges"] == []
    for text in EXAMPLES:
        if any(special in text for special in SPECIALS):
            continue
        ids = byte_tok.encode(text)
        # One token per UTF-8 byte, and no two bytes share a token.
        assert len(ids) == len(text.encode("utf-8"))
        assert byte_tok.decode(ids) == text
    # The vocabulary is exactly the special tokens plus GPT-2's 256 byte symbols.
    assert set(byte_tok.get_vocab()) == set(SPECIALS) | set(pre_tokenizers.ByteLevel.alphabet())


def test_vocab_size_too_small_raises() -> None:
    with pytest.raises(ValueError, match=r"vocab_size=259 .*minimum is 260"):
        ScratchGPTTokenizer.train(CORPUS, vocab_size=259)
    # The minimum follows the number of special tokens (end-of-text and pad are always there).
    with pytest.raises(ValueError, match=r"minimum is 258"):
        ScratchGPTTokenizer.train(CORPUS, vocab_size=100, special_tokens=["<|endoftext|>"])


def test_custom_special_tokens() -> None:
    custom = ScratchGPTTokenizer.train(CORPUS, vocab_size=300, special_tokens=["<|user|>", "<|endoftext|>"])
    # end-of-text is moved first and the pad token is added.
    assert custom.convert_tokens_to_ids(["<|endoftext|>", "<|pad|>", "<|user|>"]) == [0, 1, 2]
    assert len(custom.encode("<|user|>")) == 1
    # Without the ChatML markers there is no default chat template.
    assert custom.chat_template is None


def test_default_constructor_is_byte_level() -> None:
    default = ScratchGPTTokenizer()
    assert default.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3]
    assert len(default) == 260
    for text in EXAMPLES:
        assert default.decode(default.encode(text)) == text
    assert len(default.encode("hé🎉")) == 1 + 2 + 4


# --- Padding --------------------------------------------------------------------------------------------------


def test_left_padding(tok: ScratchGPTTokenizer) -> None:
    assert tok.padding_side == "left"
    # train() records no context by default: a corpus does not say which model it feeds (the model's
    # context is written in when the two are saved together, see hf_scratchgpt.model.tokenizer_sync).
    assert tok.model_max_length == VERY_LARGE_INTEGER
    batch = tok(["a", "longer text"], padding=True)
    short, long = batch["input_ids"]
    n_pad = len(long) - len(tok.encode("a"))
    assert n_pad > 0
    assert short == [tok.pad_token_id] * n_pad + tok.encode("a")
    assert long == tok.encode("longer text")
    assert batch["attention_mask"][0] == [0] * n_pad + [1] * (len(long) - n_pad)
    assert batch["attention_mask"][1] == [1] * len(long)
    # A later unpadded call is not padded (padding state on the backend is per call).
    assert tok("a")["input_ids"] == tok.encode("a")


# --- Chat template --------------------------------------------------------------------------------------------


def test_chat_template_renders_chatml(tok: ScratchGPTTokenizer) -> None:
    rendered = tok.apply_chat_template(CHAT[:3], tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    # Role markers are single special tokens in the tokenized chat.
    # In transformers 5 `tokenize=True` returns a BatchEncoding by default (return_dict=True).
    ids = tok.apply_chat_template(CHAT, tokenize=True)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == len(CHAT)
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == len(CHAT)


def test_assistant_tokens_mask(tok: ScratchGPTTokenizer) -> None:
    out = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    # The masked tokens form one run per assistant turn, each exactly its content + <|im_end|>.
    runs = []
    position = 0
    for flag, group in groupby(mask):
        length = len(list(group))
        if flag:
            runs.append(tok.decode(ids[position : position + length]))
        position += length
    expected = [m["content"] + "<|im_end|>" for m in CHAT if m["role"] == "assistant"]
    assert runs == expected
    assert sum(mask) == sum(len(tok.encode(text)) for text in expected)


# --- Save / load ----------------------------------------------------------------------------------------------


def _assert_same_tokenizer(loaded, original: ScratchGPTTokenizer) -> None:
    for text in EXAMPLES:
        assert loaded.encode(text) == original.encode(text), text
        assert loaded.decode(loaded.encode(text)) == text
    assert loaded.padding_side == "left"
    assert loaded.model_max_length == original.model_max_length
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(loaded, name) == getattr(original, name), name
    assert loaded.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3]
    assert len(loaded) == len(original)
    assert loaded.chat_template == original.chat_template
    assert loaded.apply_chat_template(CHAT)["input_ids"] == original.apply_chat_template(CHAT)["input_ids"]
    assert loaded(["a", "longer text"], padding=True) == original(["a", "longer text"], padding=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScratchGPTTokenizer, str]:
    original = ScratchGPTTokenizer.train(CORPUS, vocab_size=400, model_max_length=512)
    # Pad once before saving, as a training script would: the backend's padding state gets serialized.
    original(["a", "longer text"], padding=True)
    path = str(tmp_path_factory.mktemp("tok"))
    original.save_pretrained(path)
    return original, path


def test_saved_files(saved: tuple[ScratchGPTTokenizer, str]) -> None:
    _, path = saved
    files = set(os.listdir(path))
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= files
    with open(os.path.join(path, "tokenizer_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["tokenizer_class"] == "ScratchGPTTokenizer"
    assert config["padding_side"] == "left"
    assert config["model_max_length"] == 512
    assert config["pad_token"] == "<|pad|>"
    assert config["eos_token"] == config["bos_token"] == "<|endoftext|>"
    assert config["clean_up_tokenization_spaces"] is False


def test_from_pretrained_round_trip(saved: tuple[ScratchGPTTokenizer, str]) -> None:
    original, path = saved
    loaded = ScratchGPTTokenizer.from_pretrained(path)
    assert type(loaded) is ScratchGPTTokenizer
    _assert_same_tokenizer(loaded, original)
    assert loaded.model_max_length == 512
    # The serialized padding state does not make ordinary calls pad.
    assert loaded("a")["input_ids"] == original.encode("a")


class _TokenizerTestConfig(PreTrainedConfig):
    model_type = "scratchgpt_tokenizer_test"


def test_auto_tokenizer_round_trip(saved: tuple[ScratchGPTTokenizer, str]) -> None:
    original, path = saved
    # Importing hf_scratchgpt registers the class; register it here too in case that is not (yet) so.
    if tokenizer_class_from_name("ScratchGPTTokenizer") is not ScratchGPTTokenizer:
        AutoTokenizer.register(_TokenizerTestConfig, tokenizer_class=ScratchGPTTokenizer, exist_ok=True)
    loaded = AutoTokenizer.from_pretrained(path)
    assert type(loaded) is ScratchGPTTokenizer
    _assert_same_tokenizer(loaded, original)


_REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_scratchgpt"] = None  # any import of the package now fails: the file must stand alone
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
    texts = json.loads(sys.argv[2])
    print(json.dumps({
        "class": type(tok).__name__,
        "module": type(tok).__module__,
        "ids": [tok.encode(t) for t in texts],
        "decoded": [tok.decode(tok.encode(t)) for t in texts],
        "padding_side": tok.padding_side,
        "model_max_length": tok.model_max_length,
        "pad_token_id": tok.pad_token_id,
    }))
    """
)


def test_loads_as_remote_code_in_fresh_process(
    tok: ScratchGPTTokenizer, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What register_for_auto_class("AutoTokenizer") does, undone after the test.
    monkeypatch.setattr(ScratchGPTTokenizer, "_auto_class", "AutoTokenizer")
    path = tmp_path / "remote"
    tok.save_pretrained(path)
    assert (path / "tokenization_scratchgpt.py").is_file()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    texts = EXAMPLES[:8]
    result = subprocess.run(
        [sys.executable, "-c", _REMOTE_CODE_SCRIPT, str(path), json.dumps(texts)],
        env=env,
        cwd=tmp_path,  # not the repo root, so the package is not importable from the working directory
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["class"] == "ScratchGPTTokenizer"
    assert report["module"].startswith("transformers_modules.")
    assert report["ids"] == [tok.encode(t) for t in texts]
    assert report["decoded"] == texts
    assert report["padding_side"] == "left"
    assert report["model_max_length"] == tok.model_max_length
    assert report["pad_token_id"] == 1


# --- GPT-2 files ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """A small vocab.json/merges.txt in OpenAI's format: bytes + merges, <|endoftext|> as the last id."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    assert list(vocab.values()) == list(range(len(vocab)))
    vocab["<|endoftext|>"] = len(vocab)
    path = tmp_path_factory.mktemp("gpt2")
    vocab_file, merges_file = str(path / "vocab.json"), str(path / "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(merges_file, "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
        handle.writelines(f"{left} {right}\n" for left, right in model["merges"])
    return vocab_file, merges_file, len(vocab)


def test_from_gpt2_files_matches_gpt2_tokenizer(gpt2_files: tuple[str, str, int]) -> None:
    vocab_file, merges_file, n_vocab = gpt2_files
    ours = ScratchGPTTokenizer.from_gpt2_files(vocab_file, merges_file)
    reference = GPT2Tokenizer.from_pretrained(os.path.dirname(vocab_file))
    assert len(reference) == n_vocab
    for text in EXAMPLES + [" Hello world", "The dog's bone, they'll say; we've 2024 items!"]:
        assert ours.encode(text) == reference.encode(text), text
        assert ours.decode(ours.encode(text)) == text
    # No tokens added: ids and vocabulary size are the file's.
    assert len(ours) == n_vocab
    assert ours.eos_token_id == ours.bos_token_id == n_vocab - 1
    assert ours.pad_token == "<|endoftext|>" and ours.pad_token_id == n_vocab - 1
    assert ours.chat_template is None
    assert ours.padding_side == "left"


def test_from_gpt2_files_with_chat_tokens(gpt2_files: tuple[str, str, int]) -> None:
    vocab_file, merges_file, n_vocab = gpt2_files
    chat = ScratchGPTTokenizer.from_gpt2_files(vocab_file, merges_file, add_chat_tokens=True)
    # The markers are appended after the file's ids, so pretrained ids do not move.
    assert chat.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [n_vocab, n_vocab + 1]
    assert chat.eos_token_id == n_vocab - 1
    assert chat.apply_chat_template(CHAT, tokenize=False).startswith("<|im_start|>system\n")


def test_missing_tokenizer_folder_is_an_error_that_names_it_and_the_byte_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative name, as typed on a command line (also a valid Hub id)
    with pytest.raises(OSError, match="no_such_dir") as error:
        ScratchGPTTokenizer.from_pretrained("no_such_dir")
    assert "ScratchGPTTokenizer()" in str(error.value) and "'byte'" in str(error.value)
    for typo in (str(tmp_path / "no_such_dir"), "./no_such_dir"):  # paths, not Hub ids
        with pytest.raises(OSError, match=r"no_such_dir': there is no such folder\. .*'byte'"):
            ScratchGPTTokenizer.from_pretrained(typo)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="holds no tokenizer.json"):
        ScratchGPTTokenizer.from_pretrained(str(tmp_path / "empty"))


def test_model_folder_without_tokenizer_json_does_not_load_other_ids(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).encode("Once upon") == tokenizer.encode("Once upon")
    (tmp_path / "tokenizer.json").unlink()
    for load in (ScratchGPTTokenizer.from_pretrained, AutoTokenizer.from_pretrained):
        with pytest.raises(OSError, match="no tokenizer.json"):
            load(tmp_path)


@pytest.mark.parametrize(
    "texts, error, message",
    [
        ([], ValueError, "empty corpus"),
        (iter(["", ""]), ValueError, "empty corpus"),
        ("a whole corpus in one string", TypeError, "Pass a list of strings"),
        (["fine", None], TypeError, "document 1 is a NoneType"),
    ],
)
def test_train_refuses_corpora_that_would_give_a_bytes_only_tokenizer(texts, error, message):
    with pytest.raises(error, match=message):
        ScratchGPTTokenizer.train(texts, vocab_size=300)


def test_a_long_line_without_whitespace_trains_in_linear_time_and_round_trips(capfd):
    rng = random.Random(0)
    words = ["once", "upon", "a", "time", "robot", "story", "read", "fox", "dog", "lazy", "the", "end"]
    line = "".join(rng.choice(words) for _ in range(90_000))  # ~300 KB of letters: one pre-tokenized chunk
    assert len(line) > 300_000 and " " not in line
    started = time.monotonic()
    # Before long runs were cut for training this took ~40 s (time grows with the square of the run).
    tokenizer = ScratchGPTTokenizer.train([line, "and some normal text"], vocab_size=600, show_progress=True)
    assert time.monotonic() - started < 15
    assert len(tokenizer) == 600  # merges were learned from the long line
    assert tokenizer.decode(tokenizer.encode(line)) == line
    sample = line[:5000] + " mixed " + "x" * (3 * MAX_TRAINING_CHUNK) + "\n" * 600
    assert tokenizer.decode(tokenizer.encode(sample)) == sample
    # show_progress reports on stderr even when it is not a terminal (a pipeline's log file).
    assert "Tokenizer training: read all 2 documents" in capfd.readouterr().err


def test_ordinary_training_is_unchanged_by_the_long_run_cut():
    # No run reaches MAX_TRAINING_CHUNK in ordinary text, so the corpus reaches the trainer unchanged.
    reference = ScratchGPTTokenizer.train(TRAINING_TEXT, vocab_size=300)
    assert reference.encode("The quick brown fox 🤗") == ScratchGPTTokenizer.train(
        list(TRAINING_TEXT), vocab_size=300
    ).encode("The quick brown fox 🤗")
