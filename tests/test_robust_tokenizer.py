"""Bad tokenizer input gets a clear error, never a silent byte-level tokenizer; long lines train in linear time."""

from __future__ import annotations

import random
import time

import pytest
from conftest import TRAINING_TEXT
from transformers import AutoTokenizer

from hf_scratchgpt import ScratchGPTTokenizer
from hf_scratchgpt.model.tokenization_scratchgpt import MAX_TRAINING_CHUNK


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
