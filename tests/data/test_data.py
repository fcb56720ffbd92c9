"""Tests for hf_scratchgpt.data: loading, errors, splitting, packing, caching, offline checks.

Every file is written by the test into tmp_path with known content, so each assertion compares
against text we chose. The tokenizers are built here (never the project's own), so these tests
only depend on `tokenizers`/`transformers`. Run offline: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1.
"""

from __future__ import annotations

import http.server
import json
import math
import re
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SHARED_DATA
from datasets import Dataset, IterableDataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hf_scratchgpt import ScratchGPTConfig, ScratchGPTForCausalLM, ScratchGPTTokenizer
from hf_scratchgpt.data import (
    SUPPORTED_EXTENSIONS,
    DataError,
    default_corpus_texts,
    hub_is_reachable,
    load_default_dataset,
    load_text_dataset,
    score_blocks,
    split_train_validation,
    token_byte_lengths,
    tokenize_and_pack,
)
from hf_scratchgpt.data import files as files_module
from hf_scratchgpt.data import packing as packing_module
from hf_scratchgpt.data import sources as data_module

EOS = "<|endoftext|>"


# ------------------------------------------------------------------------------------------
# Tokenizers built here
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_tokenizer() -> PreTrainedTokenizerFast:
    """One id per letter-word: "a b c" -> [1, 2, 3]; EOS is 0. Makes packing hand-checkable."""
    vocab = {EOS: 0, **{chr(ord("a") + i): i + 1 for i in range(26)}, "[UNK]": 27}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, unk_token="[UNK]")


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A real byte-level BPE, trained in a few milliseconds on a few sentences."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["The cat sat on the mat.", "A dog ran in the park.", "Once upon a time there was a fox."]
    tok.train_from_iterator(corpus * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)


def texts_of(dataset: Dataset | IterableDataset) -> list[str]:
    return [row["text"] for row in dataset]


def blocks_of(dataset: Dataset | IterableDataset) -> list[list[int]]:
    return [list(row["input_ids"]) for row in dataset]


# ------------------------------------------------------------------------------------------
# Loading every format
# ------------------------------------------------------------------------------------------


def write_formats(root: Path) -> dict[str, tuple[Path, dict, list[str]]]:
    """One file per format: name -> (path, load_text_dataset kwargs, expected texts)."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, dict, list[str]]] = {}

    doc = "First paragraph.\n\nSecond paragraph, same document.\n"
    (root / "doc.txt").write_text(doc, encoding="utf-8")
    files["txt-document"] = (root / "doc.txt", {"txt_mode": "document"}, [doc])

    (root / "lines.txt").write_text("first line\n\n   \nsecond line\nthird é line\n", encoding="utf-8")
    files["txt-line"] = (
        root / "lines.txt",
        {"txt_mode": "line"},
        ["first line", "second line", "third é line"],
    )

    sep_text = f"doc one{EOS}\n  doc two \n{EOS}{EOS}\n\ndoc three\nstill three\n"
    (root / "sep.txt").write_text(sep_text, encoding="utf-8")
    files["txt-separator"] = (
        root / "sep.txt",
        {"txt_mode": "separator"},
        ["doc one", "doc two", "doc three\nstill three"],
    )

    rows = [{"id": 1, "content": "jsonl one"}, {"id": 2, "content": "jsonl two"}]
    (root / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    files["jsonl"] = (root / "rows.jsonl", {"text_column": "content"}, ["jsonl one", "jsonl two"])

    array = [{"text": "json one", "label": 0}, {"text": "json two", "label": 1}]
    (root / "array.json").write_text(json.dumps(array), encoding="utf-8")
    files["json"] = (root / "array.json", {}, ["json one", "json two"])

    (root / "table.csv").write_text(
        'label,text\n0,"a, quoted ""csv"" text"\n1,NA\n2,plain\n', encoding="utf-8"
    )
    files["csv"] = (root / "table.csv", {}, ['a, quoted "csv" text', "NA", "plain"])

    (root / "table.tsv").write_text(
        'label\tsentence\n1\t"starts with a quote\n0\tsecond row\n', encoding="utf-8"
    )
    files["tsv"] = (root / "table.tsv", {"text_column": "sentence"}, ['"starts with a quote', "second row"])

    pq.write_table(pa.table({"body": ["parquet one", "parquet two"], "n": [1, 2]}), root / "rows.parquet")
    files["parquet"] = (root / "rows.parquet", {"text_column": "body"}, ["parquet one", "parquet two"])
    return files


FORMATS = ["txt-document", "txt-line", "txt-separator", "jsonl", "json", "csv", "tsv", "parquet"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_each_format_gives_exact_texts(tmp_path: Path, fmt: str) -> None:
    path, kwargs, expected = write_formats(tmp_path / "files")[fmt]
    dataset = load_text_dataset(path, cache_dir=tmp_path / "cache", **kwargs)
    assert isinstance(dataset, Dataset)
    assert dataset.column_names == ["text"]
    assert texts_of(dataset) == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_gives_the_same_texts(tmp_path: Path, fmt: str) -> None:
    path, kwargs, expected = write_formats(tmp_path / "files")[fmt]
    dataset = load_text_dataset(path, streaming=True, **kwargs)
    assert isinstance(dataset, IterableDataset)
    assert texts_of(dataset) == expected
    assert texts_of(dataset) == expected  # a second pass starts over


def test_separator_split_across_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny read chunks put the separator across chunk boundaries at every possible offset.
    path = tmp_path / "sep.txt"
    path.write_text(f"alpha{EOS}beta gamma{EOS}{EOS} delta \n{EOS}", encoding="utf-8")
    for chunk in (1, 2, 3, 5, 7, 13, 64):
        monkeypatch.setattr(data_module, "_READ_CHUNK_CHARS", chunk)
        dataset = load_text_dataset(path, txt_mode="separator", streaming=True)
        assert texts_of(dataset) == ["alpha", "beta gamma", "delta"], chunk


def test_folder_loads_supported_files_sorted_recursively(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("from b", encoding="utf-8")
    (folder / "a.jsonl").write_text('{"text": "from a 1"}\n{"text": "from a 2"}\n', encoding="utf-8")
    (folder / "sub" / "c.txt").write_text("from sub/c", encoding="utf-8")
    (folder / "README.md").write_text("not data", encoding="utf-8")
    (folder / ".hidden.txt").write_text("hidden, skipped", encoding="utf-8")
    dataset = load_text_dataset(folder, cache_dir=tmp_path / "cache")
    assert texts_of(dataset) == ["from a 1", "from a 2", "from b", "from sub/c"]
    assert texts_of(load_text_dataset(folder, streaming=True)) == texts_of(dataset)


def test_list_of_paths_keeps_the_given_order(tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_text("list one", encoding="utf-8")
    two = tmp_path / "two.jsonl"
    two.write_text('{"text": "list two"}\n', encoding="utf-8")
    three = tmp_path / "three.txt"
    three.write_text("list three", encoding="utf-8")
    dataset = load_text_dataset([three, one, two], cache_dir=tmp_path / "cache")
    assert texts_of(dataset) == ["list three", "list one", "list two"]
    # text_column applies to every structured file in the list; one without it is named.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no column 'text'") as err:
        load_text_dataset([one, bad], cache_dir=tmp_path / "cache")
    assert str(bad) in str(err.value)


def test_multiple_txt_files_in_separator_mode(tmp_path: Path) -> None:
    (tmp_path / "x1.txt").write_text(f"one{EOS}two", encoding="utf-8")
    (tmp_path / "x2.txt").write_text(f"three{EOS}", encoding="utf-8")
    paths = [tmp_path / "x1.txt", tmp_path / "x2.txt"]
    dataset = load_text_dataset(paths, txt_mode="separator", cache_dir=tmp_path / "cache")
    assert texts_of(dataset) == ["one", "two", "three"]


def test_edited_file_is_not_served_from_a_stale_cache(tmp_path: Path) -> None:
    path = tmp_path / "sep.txt"
    cache = tmp_path / "cache"
    path.write_text(f"old one{EOS}old two", encoding="utf-8")
    assert texts_of(load_text_dataset(path, txt_mode="separator", cache_dir=cache)) == ["old one", "old two"]
    time.sleep(0.01)  # a new modification time even on coarse clocks
    path.write_text(f"new one{EOS}new two{EOS}new three", encoding="utf-8")
    assert texts_of(load_text_dataset(path, txt_mode="separator", cache_dir=cache)) == [
        "new one",
        "new two",
        "new three",
    ]


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "train.txt"
    with pytest.raises(DataError, match="No such file or folder") as err:
        load_text_dataset(missing)
    assert str(missing) in str(err.value)
    with pytest.raises(DataError) as err:
        load_text_dataset([tmp_path / "nope.jsonl"])
    assert str(tmp_path / "nope.jsonl") in str(err.value)


def test_folder_without_supported_files_lists_extensions(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# notes", encoding="utf-8")
    with pytest.raises(DataError, match=r"no supported data files \(only notes.md\)") as err:
        load_text_dataset(tmp_path)
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_a_folders_unsupported_files_are_named_in_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "story.txt").write_text("Once upon a time.", encoding="utf-8")
    (folder / "weights.bin").write_bytes(b"\x00\x01")
    (folder / "sub" / "notes.md").write_text("# notes", encoding="utf-8")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref", encoding="utf-8")  # hidden: passed over without a word
    with pytest.warns(
        UserWarning, match=r"skipping 2 file\(s\) of an unsupported type: sub/notes.md, weights.bin\."
    ) as record:
        dataset = load_text_dataset(folder, cache_dir=tmp_path / "cache")
    assert str(folder) in str(record[0].message) and "HEAD" not in str(record[0].message)
    assert texts_of(dataset) == ["Once upon a time."]
    (folder / "story.txt").unlink()
    with pytest.raises(DataError, match=r"no supported data files \(only sub/notes.md, weights.bin\)"):
        load_text_dataset(folder, cache_dir=tmp_path / "cache")


def test_unsupported_extension_lists_allowed_ones(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# notes", encoding="utf-8")
    with pytest.raises(DataError, match=r"Unsupported file type '\.md'") as err:
        load_text_dataset(path)
    assert str(path) in str(err.value)
    assert ".txt" in str(err.value) and ".parquet" in str(err.value)


@pytest.mark.parametrize("txt_mode", ["document", "line", "separator"])
def test_empty_text_file_names_the_source(tmp_path: Path, txt_mode: str) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("\n  \n\t\n" if txt_mode != "separator" else f"  {EOS}\n{EOS} ", encoding="utf-8")
    with pytest.raises(DataError, match="No text in") as err:
        load_text_dataset(path, txt_mode=txt_mode, cache_dir=tmp_path / "cache")
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="No text in"):
        load_text_dataset(path, txt_mode=txt_mode, streaming=True)


@pytest.mark.parametrize(
    "name, content",
    [("zero.jsonl", ""), ("blank.jsonl", "\n\n"), ("header.csv", "text\n"), ("list.json", "[]")],
)
def test_structured_file_without_rows_names_the_source(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    for streaming in (False, True):
        with pytest.raises(DataError, match="No text in") as err:
            load_text_dataset(path, streaming=streaming, cache_dir=tmp_path / "cache")
        assert str(path) in str(err.value)


def test_missing_text_column_lists_existing_columns(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"body": "x", "id": 1}\n', encoding="utf-8")
    for streaming in (False, True):
        with pytest.raises(DataError, match="no column 'text'") as err:
            load_text_dataset(path, streaming=streaming, cache_dir=tmp_path / "cache")
        assert "'body'" in str(err.value) and "'id'" in str(err.value)
        assert str(path) in str(err.value)


def test_non_string_text_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": 3}\n{"text": 4}\n', encoding="utf-8")
    with pytest.raises(DataError, match="not text"):
        load_text_dataset(path, cache_dir=tmp_path / "cache")


def test_undecodable_bytes_warn_with_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    tail = " world. " * 40  # 320 bytes: 2 bad bytes of 329 are 0.6%, under the 1% refusal limit
    path.write_bytes("héllo ".encode() + b"\xff\xfe" + tail.encode())  # "héllo " is 7 bytes
    with pytest.warns(UnicodeWarning, match=r"byte offset 7 .*\(2 undecodable byte\(s\) of 329\)") as record:
        dataset = load_text_dataset(path, cache_dir=tmp_path / "cache")
    assert str(path) in str(record[0].message)
    assert texts_of(dataset) == ["héllo \ufffd\ufffd" + tail]
    with pytest.warns(UnicodeWarning, match="byte offset 7 "):
        separated = load_text_dataset(path, txt_mode="separator", streaming=True)
    assert texts_of(separated) == [("héllo \ufffd\ufffd" + tail).strip()]


def test_a_txt_of_random_bytes_is_refused_naming_the_share_of_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.txt"
    path.write_bytes(
        torch.randint(0, 256, (4000,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
    )
    bad, total = files_module.count_undecodable_bytes(path)
    assert total == 4000 and 0.3 < bad / total < 0.6  # about half of random bytes are not UTF-8
    with pytest.raises(
        DataError, match=rf"{re.escape(str(path))}: {bad / total:.1%} of its bytes \({bad:,} of 4,000"
    ):
        load_text_dataset(path, cache_dir=tmp_path / "cache")
    # Latin-1 text: one byte per accented letter, none of them UTF-8: refused, with the fix.
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(("Le café était très bon, déjà prêt. " * 20).encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: \d+\.\d% of its bytes .* iconv -f latin1 -t utf-8"):
        load_text_dataset(latin1, cache_dir=tmp_path / "cache")


def test_undecodable_bytes_are_counted_exactly_across_scan_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Multi-byte characters straddle the chunk boundaries; a truncated character at the end is bad too.
    content = "aé€b".encode() + b"\x80\xff" + "ü".encode() + "é".encode()[:1]
    path = tmp_path / "x.txt"
    path.write_bytes(content)
    for chunk in range(1, len(content) + 2):
        monkeypatch.setattr(files_module, "_SCAN_CHUNK_BYTES", chunk)
        assert files_module.count_undecodable_bytes(path) == (3, len(content)), chunk


def test_invalid_utf8_offset_is_exact_across_scan_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Multi-byte characters straddle the scan's chunk boundaries; the offset must not move.
    content = "aé€b".encode() + b"\x80" + "ü".encode()  # a(1) é(2) €(3) b(1) -> bad byte at 7
    path = tmp_path / "x.txt"
    path.write_bytes(content)
    for chunk in range(1, len(content) + 2):
        monkeypatch.setattr(files_module, "_SCAN_CHUNK_BYTES", chunk)
        assert files_module.first_invalid_utf8_offset(path) == 7, chunk
    path.write_bytes("aé€b".encode() + "é".encode()[:1])  # truncated character at the end
    assert files_module.first_invalid_utf8_offset(path) == 7
    path.write_bytes("clean é € text".encode())
    assert files_module.first_invalid_utf8_offset(path) is None


def test_hub_id_offline_fails_fast_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError, match="nobody/no-such-dataset"):
        load_text_dataset("nobody/no-such-dataset")
    assert time.perf_counter() - start < 5


def test_hub_id_with_unreachable_hub_does_not_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(data_module, "_REACHABLE", {})
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.perf_counter()
    with pytest.raises(DataError, match="not reachable") as err:
        load_text_dataset("nobody/no-such-dataset")
    assert "nobody/no-such-dataset" in str(err.value)
    assert time.perf_counter() - start < 3


# ------------------------------------------------------------------------------------------
# Offline detection
# ------------------------------------------------------------------------------------------


def closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hub_is_unreachable_at_once_when_offline_env_is_set(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv(var, "1")

    def no_probe(*args: object) -> bool:
        raise AssertionError("must not touch the network when offline is set")

    monkeypatch.setattr(data_module, "_probe", no_probe)
    start = time.perf_counter()
    assert hub_is_reachable() is False
    assert time.perf_counter() - start < 0.05


def test_hub_probe_false_for_closed_port_true_for_a_server_and_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(data_module, "_REACHABLE", {})

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.perf_counter()
    assert hub_is_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 1.5

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(404)  # any answer means "reachable"
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert hub_is_reachable(timeout=2.0) is True
    finally:
        server.shutdown()
        server.server_close()
    # Cached for the process: the server is gone, the answer stays.
    assert hub_is_reachable(timeout=2.0) is True


# ------------------------------------------------------------------------------------------
# Default corpus
# ------------------------------------------------------------------------------------------


def test_default_corpus_is_nonempty_english_in_stable_order() -> None:
    from pydoc_data.topics import topics

    texts = default_corpus_texts()
    assert texts[: len(topics)] == [topics[k] for k in sorted(topics)]
    assert texts == default_corpus_texts()  # deterministic
    assert len(texts) > 300 and all(t.strip() for t in texts)
    assert any("Return" in t for t in texts[len(topics) :])  # standard-library docstrings follow
    total = sum(len(t) for t in texts)
    assert 1_000_000 < total < 10_000_000  # ~1.6M characters on CPython 3.11
    words = " ".join(texts).lower().split()
    for common in ("the", "is", "and", "of"):
        assert words.count(common) > 100, common
    dataset = load_default_dataset()
    assert dataset.column_names == ["text"] and texts_of(dataset) == texts


# ------------------------------------------------------------------------------------------
# Train / validation split
# ------------------------------------------------------------------------------------------


def test_tail_split_of_one_document_splits_the_characters() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    splits = split_train_validation(Dataset.from_dict({"text": [text]}), 0.1, mode="tail")
    train, validation = splits["train"][0]["text"], splits["validation"][0]["text"]
    assert train + validation == text
    assert (len(train), len(validation)) == (900, 100)


def test_tail_split_of_many_rows_keeps_order() -> None:
    rows = [f"doc {i}" for i in range(10)]
    splits = split_train_validation(Dataset.from_dict({"text": rows}), 0.2, mode="tail")
    assert texts_of(splits["train"]) == rows[:8]
    assert texts_of(splits["validation"]) == rows[8:]


def test_random_split_is_seeded_disjoint_and_sized() -> None:
    rows = [f"doc {i}" for i in range(20)]
    dataset = Dataset.from_dict({"text": rows})
    first = split_train_validation(dataset, 0.1, seed=42)
    again = split_train_validation(dataset, 0.1, seed=42)
    other = split_train_validation(dataset, 0.1, seed=7)
    assert (len(first["train"]), len(first["validation"])) == (18, 2)
    assert texts_of(first["validation"]) == texts_of(again["validation"])
    assert texts_of(first["train"]) == texts_of(again["train"])
    assert texts_of(first["validation"]) != texts_of(other["validation"])
    assert not set(texts_of(first["train"])) & set(texts_of(first["validation"]))
    assert sorted(texts_of(first["train"]) + texts_of(first["validation"])) == sorted(rows)
    assert texts_of(first["train"]) != rows[:18]  # actually shuffled


def test_split_errors() -> None:
    one = Dataset.from_dict({"text": ["a single document"]})
    with pytest.raises(DataError, match="mode='tail'"):
        split_train_validation(one, 0.1, mode="random")
    with pytest.raises(DataError, match="between 0 and 1"):
        split_train_validation(one, 0.0, mode="tail")
    with pytest.raises(DataError, match="between 0 and 1"):
        split_train_validation(one, 1.0, mode="tail")
    with pytest.raises(DataError, match="too few"):
        split_train_validation(Dataset.from_dict({"text": ["x"]}), 0.1, mode="tail")  # 1 char
    with pytest.raises(DataError, match="empty"):
        split_train_validation(Dataset.from_dict({"text": ["a", "b"]}), 0.6, mode="tail")  # 0 train rows
    with pytest.raises(DataError, match="empty"):
        split_train_validation(Dataset.from_dict({"text": ["a", "b"]}), 0.6, mode="random")
    # The smallest splits that work: one row / one character on the validation side.
    assert texts_of(
        split_train_validation(Dataset.from_dict({"text": ["a", "b", "c"]}), 0.1, mode="tail")["validation"]
    ) == ["c"]
    assert (
        split_train_validation(Dataset.from_dict({"text": ["ab"]}), 0.1, mode="tail")["validation"][0]["text"]
        == "b"
    )
    with pytest.raises(DataError, match="streaming"):
        split_train_validation(IterableDataset.from_generator(lambda: iter([{"text": "a"}])), 0.1)


# ------------------------------------------------------------------------------------------
# Tokenize and pack
# ------------------------------------------------------------------------------------------

DOCS = ["a b c", "d e", "f g h i"]
# a b c EOS d e EOS f g h i EOS = [1,2,3,0, 4,5,0, 6,7,8,9,0]: 12 tokens; blocks of 5 keep 10.
EXPECTED_BLOCKS_5 = [[1, 2, 3, 0, 4], [5, 0, 6, 7, 8]]


def test_packing_boundaries_are_exact(tmp_path: Path, word_tokenizer) -> None:
    packed = tokenize_and_pack(Dataset.from_dict({"text": DOCS}), word_tokenizer, 5, cache_dir=tmp_path)
    assert packed.column_names == ["input_ids"]
    assert blocks_of(packed) == EXPECTED_BLOCKS_5
    packed4 = tokenize_and_pack(Dataset.from_dict({"text": DOCS}), word_tokenizer, 4, cache_dir=tmp_path)
    assert blocks_of(packed4) == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]  # nothing left over
    no_eos = tokenize_and_pack(
        Dataset.from_dict({"text": DOCS}), word_tokenizer, 4, add_eos=False, cache_dir=tmp_path
    )
    assert blocks_of(no_eos) == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_packing_carries_across_map_batches(tmp_path: Path, word_tokenizer, monkeypatch) -> None:
    # One document per batch: the unfinished block must carry over, not be dropped per batch.
    monkeypatch.setattr(packing_module, "_MAP_BATCH_SIZE", 1)
    packed = tokenize_and_pack(Dataset.from_dict({"text": DOCS}), word_tokenizer, 5, cache_dir=tmp_path)
    assert blocks_of(packed) == EXPECTED_BLOCKS_5


def test_packing_streaming_matches_map_style(word_tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(packing_module, "_MAP_BATCH_SIZE", 2)
    stream = IterableDataset.from_generator(lambda: ({"text": t} for t in DOCS))
    packed = tokenize_and_pack(stream, word_tokenizer, 5)
    assert isinstance(packed, IterableDataset)
    assert blocks_of(packed) == EXPECTED_BLOCKS_5
    assert blocks_of(packed) == EXPECTED_BLOCKS_5  # a second epoch starts with no carry


def test_packing_with_two_processes_matches_one(tmp_path: Path, bpe_tokenizer) -> None:
    docs = [f"The cat number {i} sat on the mat." for i in range(40)]
    one = tokenize_and_pack(Dataset.from_dict({"text": docs}), bpe_tokenizer, 16, cache_dir=tmp_path / "a")
    two = tokenize_and_pack(
        Dataset.from_dict({"text": docs}), bpe_tokenizer, 16, num_proc=2, cache_dir=tmp_path / "b"
    )
    assert blocks_of(one) == blocks_of(two)


def test_packing_with_bpe_equals_concatenated_documents(tmp_path: Path, bpe_tokenizer) -> None:
    docs = ["The cat sat on the mat.", "A dog ran.", "Once upon a time there was a fox in the park."]
    block_size = 7
    stream: list[int] = []
    for doc in docs:
        stream += bpe_tokenizer(doc, add_special_tokens=False)["input_ids"] + [bpe_tokenizer.eos_token_id]
    n_full = len(stream) // block_size * block_size
    expected = [stream[i : i + block_size] for i in range(0, n_full, block_size)]
    packed = tokenize_and_pack(
        Dataset.from_dict({"text": docs}), bpe_tokenizer, block_size, cache_dir=tmp_path
    )
    assert blocks_of(packed) == expected
    assert len(stream) % block_size != 0  # the test really drops a remainder
    assert all(len(b) == block_size for b in blocks_of(packed))


def test_second_call_loads_from_cache_without_tokenizing(tmp_path: Path, bpe_tokenizer, monkeypatch) -> None:
    docs = ["The cat sat on the mat.", "A dog ran in the park.", "Once upon a time."]
    cache = tmp_path / "cache"
    first = tokenize_and_pack(Dataset.from_dict({"text": docs}), bpe_tokenizer, 4, cache_dir=cache)
    written = sorted(p.name for p in cache.glob("*.arrow"))
    assert any(n.startswith("tokenized-") for n in written) and any(n.startswith("packed-") for n in written)

    calls = []

    def no_tokenizing(self, *args, **kwargs):
        calls.append(args)
        raise AssertionError("re-tokenized although the cache holds the result")

    monkeypatch.setattr(type(bpe_tokenizer), "__call__", no_tokenizing)
    # A fresh, equal dataset object: the cache key is its content, not its identity.
    second = tokenize_and_pack(Dataset.from_dict({"text": docs}), bpe_tokenizer, 4, cache_dir=cache)
    assert blocks_of(second) == blocks_of(first)
    assert all(Path(f["filename"]).parent == cache for f in second.cache_files)
    # A new block size re-packs, but reuses the cached tokens.
    assert len(
        blocks_of(tokenize_and_pack(Dataset.from_dict({"text": docs}), bpe_tokenizer, 3, cache_dir=cache))
    )
    assert sorted(p.name for p in cache.glob("tokenized-*.arrow")) == [n for n in written if "tokenized" in n]
    assert calls == []
    # Different text is a different key: it must tokenize (and so hit the trap).
    with pytest.raises(AssertionError, match="re-tokenized"):
        tokenize_and_pack(Dataset.from_dict({"text": docs + ["new"]}), bpe_tokenizer, 4, cache_dir=cache)


def test_file_backed_dataset_is_cached_too(tmp_path: Path, bpe_tokenizer, monkeypatch) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("The cat sat.\nThe dog ran.\nA fox.\n", encoding="utf-8")
    cache = tmp_path / "cache"
    first = tokenize_and_pack(load_text_dataset(path, txt_mode="line", cache_dir=cache), bpe_tokenizer, 4)
    monkeypatch.setattr(type(bpe_tokenizer), "__call__", lambda *a, **k: pytest.fail("re-tokenized"))
    second = tokenize_and_pack(load_text_dataset(path, txt_mode="line", cache_dir=cache), bpe_tokenizer, 4)
    assert blocks_of(second) == blocks_of(first) and len(first) > 0


def test_corpus_shorter_than_one_block(tmp_path: Path, word_tokenizer) -> None:
    # "a b c" + EOS = 4 tokens
    with pytest.raises(DataError, match=r"4 tokens.*block_size=8.*smaller block_size \(at most 4\)"):
        tokenize_and_pack(Dataset.from_dict({"text": ["a b c"]}), word_tokenizer, 8, cache_dir=tmp_path)
    stream = IterableDataset.from_generator(lambda: iter([{"text": "a b c"}]))
    with pytest.raises(DataError, match="4 tokens"):
        list(tokenize_and_pack(stream, word_tokenizer, 8))


def test_a_split_shorter_than_one_block_is_named_with_what_to_do(tmp_path: Path, word_tokenizer) -> None:
    short = Dataset.from_dict({"text": ["a b c"]})  # 4 tokens with the EOS
    with pytest.raises(
        DataError, match=r"The validation split has 4 tokens, but one block needs --block_size 8"
    ) as err:
        tokenize_and_pack(short, word_tokenizer, 8, cache_dir=tmp_path, split="validation")
    assert "a larger --validation_fraction or more text" in str(err.value) and "at most 4" in str(err.value)
    stream = IterableDataset.from_generator(lambda: iter([{"text": "a b c"}]))
    with pytest.raises(DataError, match=r"The train split has 4 tokens.*\(more text\)"):
        list(tokenize_and_pack(stream, word_tokenizer, 8, split="train"))
    # Without split=, no guess: a loaded file's split name ("train") is inherited by both halves of a split.
    path = tmp_path / "lines.txt"
    path.write_text("a b c\na b\na\nb c\n", encoding="utf-8")
    validation = split_train_validation(load_text_dataset(path, txt_mode="line"), 0.5, mode="tail")[
        "validation"
    ]
    with pytest.raises(DataError, match=r"^The corpus has \d tokens"):
        tokenize_and_pack(validation, word_tokenizer, 64, cache_dir=tmp_path)


def test_tokenizer_without_eos_and_bad_inputs(tmp_path: Path) -> None:
    tok = Tokenizer(models.WordLevel(vocab={"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    no_eos = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    dataset = Dataset.from_dict({"text": ["a a a a"]})
    with pytest.raises(DataError, match="no eos_token"):
        tokenize_and_pack(dataset, no_eos, 2, cache_dir=tmp_path)
    assert blocks_of(tokenize_and_pack(dataset, no_eos, 2, add_eos=False, cache_dir=tmp_path)) == [
        [0, 0],
        [0, 0],
    ]
    with pytest.raises(DataError, match="no 'text' column"):
        tokenize_and_pack(Dataset.from_dict({"body": ["a"]}), no_eos, 1, add_eos=False, cache_dir=tmp_path)
    with pytest.raises(DataError, match="positive integer"):
        tokenize_and_pack(dataset, no_eos, 0, add_eos=False, cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# Bits per byte
# ------------------------------------------------------------------------------------------


def test_token_byte_lengths_count_bytes_and_skip_special_tokens() -> None:
    tok = ScratchGPTTokenizer.train(["héllo wörld, café €uro"] * 30, vocab_size=300)
    lengths = token_byte_lengths(tok)
    assert all(lengths[i] == 0 for i in tok.all_special_ids)
    text = "héllo café €"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    # A token holding part of a multi-byte character still counts its own bytes.
    assert int(lengths[tok.convert_tokens_to_ids("Ã")]) == 1


def test_score_blocks_bits_per_byte_is_loss_over_the_scored_bytes() -> None:
    tok = ScratchGPTTokenizer.train(["The cat sat on the mat. A dog ran."] * 30, vocab_size=300)
    torch.manual_seed(0)
    config = ScratchGPTConfig.from_preset(
        "tiny",
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
    )
    model = ScratchGPTForCausalLM(config)
    eos = tok.eos_token_id
    stream = [*tok("The cat sat.")["input_ids"], eos, *tok("A dog ran on the mat.")["input_ids"], eos]
    blocks = Dataset.from_dict({"input_ids": [stream[:8], stream[8:16]]})
    result = score_blocks(model, blocks, token_byte_lengths(tok), batch_size=1)
    # By hand: every target except EOS, its loss and its bytes.
    nats, n_bytes, n_tokens = 0.0, 0, 0
    for block in blocks["input_ids"]:
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([block])).logits[0, :-1].float(), -1)
        for position, target in enumerate(block[1:]):
            if target != eos:
                nats -= float(log_probs[position, target])
                n_bytes += len(tok.decode([target]).encode())
                n_tokens += 1
    assert result["tokens"] == n_tokens and result["bytes"] == n_bytes
    assert result["loss"] == pytest.approx(nats / n_tokens, rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)


# ------------------------------------------------------------------------------------------
# Real data from ../shared/data (skipped when absent, e.g. a fresh clone)
# ------------------------------------------------------------------------------------------


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_tinystories_separator_mode_gives_five_stories(tmp_path: Path) -> None:
    path = shared("pretrain/tinystories_tiny.txt")
    dataset = load_text_dataset(path, txt_mode="separator", cache_dir=tmp_path)
    stories = texts_of(dataset)
    assert len(stories) == 5
    assert all(s and s == s.strip() and EOS not in s for s in stories)
    assert stories[0].startswith("Once upon a time")


def test_the_verdict_end_to_end(tmp_path: Path, bpe_tokenizer) -> None:
    path = shared("pretrain/the-verdict.txt")
    dataset = load_text_dataset(path, cache_dir=tmp_path)
    assert len(dataset) == 1
    splits = split_train_validation(dataset, 0.1, mode="tail")
    assert splits["train"][0]["text"] + splits["validation"][0]["text"] == path.read_text(
        encoding="utf-8-sig"
    )
    packed = tokenize_and_pack(splits["validation"], bpe_tokenizer, 64, cache_dir=tmp_path)
    n_tokens = len(bpe_tokenizer(splits["validation"][0]["text"], add_special_tokens=False)["input_ids"]) + 1
    assert len(packed) == n_tokens // 64 > 0


def test_a_streamed_file_packs_into_the_same_blocks_as_the_in_memory_path(
    tmp_path: Path, bpe_tokenizer
) -> None:
    path = tmp_path / "lines.txt"
    path.write_text(
        "\n".join(f"The cat number {i} sat on the mat." for i in range(60)) + "\n", encoding="utf-8"
    )
    in_memory = tokenize_and_pack(
        load_text_dataset(path, txt_mode="line", cache_dir=tmp_path), bpe_tokenizer, 16
    )
    streamed = tokenize_and_pack(load_text_dataset(path, txt_mode="line", streaming=True), bpe_tokenizer, 16)
    assert isinstance(streamed, IterableDataset)
    assert blocks_of(streamed) == blocks_of(in_memory) and len(blocks_of(in_memory)) > 10
