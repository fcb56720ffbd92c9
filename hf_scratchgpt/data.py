"""The data half of the pretraining pipeline: text in, fixed-length blocks of token ids out.

    load_text_dataset  ->  split_train_validation  ->  tokenize_and_pack  ->  Trainer

Every step takes and returns a `datasets` object, so a stage can be cached, inspected or swapped
for the user's own. `datasets` does the loading, mapping and caching; this module only adds what
it lacks for language-model pretraining:

* one entry point for every place text lives (a Hub id, a local file, a folder, a list of files)
  that always returns a dataset with exactly one column, ``text``;
* errors that say what is wrong and how to fix it (`DataError`), instead of a stack trace from
  deep inside pyarrow or pandas;
* a cheap offline check (`hub_is_reachable`) so a machine without the internet does not sit
  through `datasets`' retry loop (~24 s per call) before falling back;
* a default corpus that ships with CPython, so the whole pipeline runs with no download at all;
* nanoGPT-style packing: documents are joined with an end-of-text token and cut into blocks
  of exactly ``block_size`` tokens, cached on disk so a second run does not re-tokenize;
* the numbers needed to report bits per byte, a tokenizer-independent loss.

Example::

    ds = load_text_dataset("../shared/data/pretrain/tinyshakespeare.txt")
    splits = split_train_validation(ds, 0.1, mode="tail")
    train = tokenize_and_pack(splits["train"], tokenizer, block_size=256)
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import json
import math
import os
import sysconfig
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, IterableDataset, Value

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "DataError",
    "PackingStats",
    "bits_per_byte",
    "count_utf8_bytes",
    "default_corpus_texts",
    "hub_is_reachable",
    "load_default_dataset",
    "load_text_dataset",
    "packing_stats",
    "split_train_validation",
    "tokenize_and_pack",
]

TxtMode = Literal["document", "line", "separator"]
AnyDataset = Dataset | IterableDataset

# File extension -> (datasets packaged builder, extra builder arguments).
# CSV/TSV: na_filter=False keeps texts such as "NA" or "null" as text instead of missing values.
# TSV is read without quote handling: by convention a TSV field holds no tab or newline, and
# pandas' default CSV quoting would silently glue together rows whose text starts with '"'.
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".txt": ("text", {}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {"na_filter": False}),
    ".tsv": ("csv", {"sep": "\t", "quoting": 3, "na_filter": False}),  # 3 == csv.QUOTE_NONE
    ".parquet": ("parquet", {}),
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_BUILDERS)

# Bump when the tokenize/pack output format changes, so old cache files are not reused.
_CACHE_VERSION = "scratchgpt-pack-v1"
# Rows per batch for datasets.map: big enough to amortise Python overhead, small enough that a
# batch of long documents still fits comfortably in memory.
_MAP_BATCH_SIZE = 1000
# Characters read per step when splitting .txt files on a separator (bounded memory for
# multi-gigabyte corpora such as TinyStories).
_READ_CHUNK_CHARS = 1 << 22
# Bytes read per step when checking a .txt file for invalid UTF-8.
_SCAN_CHUNK_BYTES = 1 << 24
_TRUE_VALUES = {"1", "true", "yes", "on"}
_INPUT_IDS_FEATURES = Features({"input_ids": datasets.List(Value("int32"))})
_TEXT_FEATURES = Features({"text": Value("string")})


class DataError(ValueError):
    """A problem with the user's data or settings; the message says what to change."""


# --------------------------------------------------------------------------------------------
# Offline detection
# --------------------------------------------------------------------------------------------

# Probe results per endpoint, for the life of the process: the network does not come and go
# between two datasets of one training run, and each probe costs up to `timeout` seconds.
_REACHABLE: dict[str, bool] = {}


def _offline_by_env() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE_VALUES
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _hub_endpoint() -> str:
    # Read at call time (huggingface_hub reads it at import), so tests and users can point it
    # at a mirror without re-importing anything.
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


def _probe(url: str, timeout: float) -> bool:
    """One HEAD request; any HTTP answer, even an error status, means the host is reachable."""
    answered = threading.Event()

    def head() -> None:
        try:
            # urllib honours the *_proxy environment variables, as the Hub client does.
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
            answered.set()
        except urllib.error.HTTPError:
            answered.set()
        except (OSError, ValueError):
            pass

    # A daemon thread bounds the whole probe, DNS included: socket timeouts do not cover name
    # resolution, which can hang for many seconds on a badly configured machine.
    thread = threading.Thread(target=head, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def hub_is_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``, default huggingface.co) can be reached.

    False at once when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set to a true value;
    otherwise one HEAD request that gives up after ``timeout`` seconds. The answer is cached per
    endpoint for the rest of the process.
    """
    if _offline_by_env():
        return False
    endpoint = _hub_endpoint()
    if endpoint not in _REACHABLE:
        _REACHABLE[endpoint] = _probe(endpoint, timeout)
    return _REACHABLE[endpoint]


# --------------------------------------------------------------------------------------------
# Embedded default corpus
# --------------------------------------------------------------------------------------------


def _stdlib_docstrings() -> list[str]:
    """One document per standard-library source file: its long docstrings, in source order.

    Read with `ast` (nothing is imported or executed). Tests, idlelib and third-party packages are
    skipped; docstrings under 200 characters are mostly signatures and are dropped too.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for path in sorted([*stdlib.glob("*.py"), *stdlib.glob("*/*.py")]):
        if {"test", "tests", "idlelib", "site-packages"} & set(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        docstrings = [ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds)]
        long_ones = [doc for doc in docstrings if doc and len(doc) >= 200]
        if long_ones:
            documents.append("\n\n".join(long_ones))
    return documents


def default_corpus_texts() -> list[str]:
    """English text that ships with CPython, for running the pipeline with no download at all.

    First the ``help()`` topics (``pydoc_data.topics``: the Language Reference, one document per
    topic, sorted by name), then the long docstrings of the standard library (one document per
    source file, sorted by path). On CPython 3.11 that is 79 + 305 = 384 documents and 1.6 million
    characters: enough for a small model to learn English words and Python prose in minutes.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # some Linux distributions package pydoc_data separately
        raise DataError(
            "The default corpus needs CPython's `pydoc_data` module, which this Python lacks "
            "(on Debian/Ubuntu it is in the libpython3.x-stdlib package). Pass a text file or "
            "a dataset id to load_text_dataset instead."
        ) from err
    return [topics[name] for name in sorted(topics)] + _stdlib_docstrings()


def load_default_dataset() -> Dataset:
    """The default corpus (`default_corpus_texts`) as a `Dataset` with one column, ``text``."""
    return Dataset.from_dict({"text": default_corpus_texts()}, features=_TEXT_FEATURES)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _first_invalid_utf8_offset(path: Path) -> int | None:
    """Byte offset of the first byte that is not valid UTF-8, or None if the file is clean."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = 0  # bytes of the file handed to the decoder before the current chunk
    with path.open("rb") as f:
        while True:
            chunk = f.read(_SCAN_CHUNK_BYTES)
            final = not chunk
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as err:
                # err.start counts from the start of (bytes the decoder still buffers + chunk);
                # the buffer holds at most the first bytes of one unfinished character.
                pending = len(err.object) - len(chunk)
                return consumed - pending + err.start
            if final:
                return None
            consumed += len(chunk)


def _warn_if_not_utf8(path: Path) -> None:
    offset = _first_invalid_utf8_offset(path)
    if offset is not None:
        # Replacing one bad byte costs one character; crashing an hour into tokenizing a
        # corpus costs the hour. So: replace, and say where, so the user can fix the file.
        warnings.warn(
            f"{path}: byte offset {offset} is not valid UTF-8; undecodable bytes are replaced "
            "with U+FFFD. Re-encode the file as UTF-8 to silence this warning.",
            UnicodeWarning,
            stacklevel=4,
        )


def _iter_separated_documents(paths: list[str], separator: str) -> Iterator[dict[str, str]]:
    """Yield the documents between separators, reading each file in bounded chunks."""
    for path in paths:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            buffer = ""
            while chunk := f.read(_READ_CHUNK_CHARS):
                # Only look for a separator where one can newly appear: in the new chunk or
                # straddling its start. Re-scanning the whole buffer would be quadratic for a
                # long document.
                search_from = max(0, len(buffer) - len(separator) + 1)
                buffer += chunk
                if buffer.find(separator, search_from) == -1:
                    continue
                *documents, buffer = buffer.split(separator)
                for document in documents:
                    if document := document.strip():
                        yield {"text": document}
            if buffer := buffer.strip():
                yield {"text": buffer}


def _file_signature(paths: list[Path]) -> str:
    """A key that changes when any file changes (path, size, modification time)."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return _sha256(json.dumps(stats))


def _sha256(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:24]


def _resolve_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Turn a file, a folder or a list of either into the ordered list of data files."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise DataError("load_text_dataset got an empty list of paths: pass at least one file.")
    files: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if not path.exists():
            raise DataError(f"No such file or folder: {path}. Check the path (relative to {Path.cwd()}).")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in _BUILDERS
                # Skip hidden files and folders (.git, .cache, editor swap files).
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise DataError(
                    f"The folder {path} holds no supported data files. Supported extensions: "
                    f"{', '.join(SUPPORTED_EXTENSIONS)}."
                )
            files.extend(found)
        elif path.suffix.lower() in _BUILDERS:
            files.append(path)
        else:
            raise DataError(
                f"Unsupported file type {path.suffix or '(no extension)'!r} for {path}. Supported "
                f"extensions: {', '.join(SUPPORTED_EXTENSIONS)}; or load it yourself and pass a "
                "`datasets.Dataset` with a 'text' column."
            )
    # An empty file holds no documents, and some builders (json, csv) crash on one rather than
    # returning nothing; skip it. If nothing is left, that is the "no text" error.
    non_empty = [p for p in files if p.stat().st_size > 0]
    if not non_empty:
        raise _no_text(
            str(source) if isinstance(source, (str, os.PathLike)) else str([str(s) for s in items])
        )
    return non_empty


def _looks_like_local_path(source: str) -> bool:
    """A missing path that cannot be a Hub id ("name" or "owner/name") is reported as missing."""
    return (
        source.startswith((".", "/", "~", "\\"))
        or os.path.isabs(source)
        or source.count("/") > 1
        or "\\" in source
        or Path(source).suffix.lower() in _BUILDERS
    )


def _columns(dataset: AnyDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    # Some streaming datasets only learn their columns from the first example.
    first = next(iter(dataset), None)
    return list(first) if first is not None else []


def _is_nonempty_batch(batch: dict[str, list]) -> list[bool]:
    return [text is not None and text.strip() != "" for text in batch["text"]]


def _to_text_column(dataset: AnyDataset, text_column: str, origin: str) -> AnyDataset:
    """Keep only ``text_column``, renamed to ``text``, as strings."""
    columns = _columns(dataset)
    if not columns:  # e.g. a JSON file holding only []
        raise _no_text(origin)
    if text_column not in columns:
        raise DataError(
            f"{origin} has no column {text_column!r}; its columns are {columns}. "
            "Pass text_column= with the one that holds the text."
        )
    dataset = dataset.select_columns([text_column])
    if text_column != "text":
        dataset = dataset.rename_column(text_column, "text")
    feature = dataset.features["text"] if dataset.features is not None else None
    if feature == Value("null"):  # e.g. a CSV file with a header and no rows
        raise _no_text(origin)
    if feature is not None and feature != Value("string"):
        if not (isinstance(feature, Value) and feature.dtype == "large_string"):
            raise DataError(
                f"Column {text_column!r} of {origin} holds {feature}, not text. "
                "Pass text_column= with a column of strings."
            )
        # Parquet often stores large_string; one type everywhere lets sources be concatenated.
        dataset = dataset.cast(_TEXT_FEATURES)
    return dataset


def _load_files(
    files: list[Path],
    *,
    text_column: str,
    txt_mode: TxtMode,
    separator: str,
    streaming: bool,
    cache_dir: str | None,
    num_proc: int | None,
    load_kwargs: dict[str, Any],
) -> AnyDataset:
    # Consecutive files of one kind load together (one builder call, one cache entry); the
    # parts are concatenated in the given order, so a folder's sorted order is kept.
    runs: list[tuple[str, list[Path]]] = []
    for path in files:
        ext = path.suffix.lower()
        if runs and runs[-1][0] == ext:
            runs[-1][1].append(path)
        else:
            runs.append((ext, [path]))

    parts: list[AnyDataset] = []
    for ext, paths in runs:
        origin = str(paths[0]) if len(paths) == 1 else f"{len(paths)} {ext} files starting with {paths[0]}"
        builder, builder_kwargs = _BUILDERS[ext]
        if ext == ".txt":
            for path in paths:
                _warn_if_not_utf8(path)
            if txt_mode == "separator":
                gen_kwargs = {"paths": [str(p) for p in paths], "separator": separator}
                if streaming:
                    part = IterableDataset.from_generator(
                        _iter_separated_documents, features=_TEXT_FEATURES, gen_kwargs=gen_kwargs
                    )
                else:
                    try:
                        part = Dataset.from_generator(
                            _iter_separated_documents,
                            features=_TEXT_FEATURES,
                            gen_kwargs=gen_kwargs,
                            cache_dir=cache_dir,
                            num_proc=num_proc,
                            # datasets would hash only the path strings: add size and mtime so
                            # an edited file is not served from a stale cache.
                            fingerprint=_sha256(_CACHE_VERSION, _file_signature(paths), separator),
                        )
                    except ValueError as err:
                        # datasets refuses to build a dataset from a generator that yields nothing.
                        if "corresponds to no data" not in str(err):
                            raise
                        raise _no_text(origin) from err
                parts.append(part)
                continue
            if txt_mode not in ("document", "line"):
                raise DataError(f"txt_mode must be 'document', 'line' or 'separator', not {txt_mode!r}.")
            builder_kwargs = {"sample_by": txt_mode, "encoding": "utf-8-sig", "encoding_errors": "replace"}
        try:
            part = datasets.load_dataset(
                builder,
                data_files=[str(p) for p in paths],
                split="train",
                streaming=streaming,
                cache_dir=cache_dir,
                **({"num_proc": num_proc} if num_proc and num_proc > 1 and not streaming else {}),
                **{**builder_kwargs, **load_kwargs},  # the user's arguments win
            )
        except datasets.exceptions.DatasetGenerationError as err:
            raise DataError(f"Could not read {origin} as {ext}: {err.__cause__ or err}") from err
        except ValueError as err:
            # How datasets (and pandas, streaming) say the files held no rows at all.
            if not any(m in str(err) for m in ("corresponds to no data", "No columns to parse")):
                raise
            raise _no_text(origin) from err
        parts.append(_to_text_column(part, text_column, origin))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _load_hub(
    source: str,
    *,
    name: str | None,
    split: str,
    text_column: str,
    streaming: bool,
    cache_dir: str | None,
    load_kwargs: dict[str, Any],
) -> AnyDataset:
    # With HF_*_OFFLINE set, datasets looks only in its local cache and fails fast, so it is
    # safe to try. Without it, datasets would retry an unreachable Hub for ~24 s: probe first.
    if not _offline_by_env() and not hub_is_reachable():
        raise DataError(
            f"{source!r} is not a local file or folder, and the Hub ({_hub_endpoint()}) is not "
            "reachable. Pass a local path, or set HF_HUB_OFFLINE=1 to use a copy already in "
            "the datasets cache."
        )
    try:
        dataset = datasets.load_dataset(
            source, name, split=split, streaming=streaming, cache_dir=cache_dir, **load_kwargs
        )
    except (OSError, ValueError) as err:  # not found, not cached while offline, bad config/split
        raise DataError(
            f"{source!r} is not a local file or folder, and loading it as a Hub dataset "
            f"(name={name!r}, split={split!r}) failed: {err}"
        ) from err
    return _to_text_column(dataset, text_column, f"Hub dataset {source!r}")


def load_text_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    name: str | None = None,
    split: str = "train",
    text_column: str = "text",
    txt_mode: TxtMode = "document",
    separator: str = "<|endoftext|>",
    streaming: bool = False,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    **load_kwargs: Any,
) -> Dataset | IterableDataset:
    """Load text from anywhere as a dataset with exactly one column, ``text``.

    Args:
        source: a local file (``.txt``, ``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``),
            a folder (every supported file in it and its subfolders, sorted by path), a list of
            files/folders (in the given order), or a Hub dataset id. The Hub is only tried when
            ``source`` does not exist locally.
        name, split: the Hub dataset's configuration and split (local files are one split).
        text_column: column that holds the text in structured files or Hub datasets; it is
            renamed to ``text`` and every other column is dropped.
        txt_mode: how a ``.txt`` file becomes documents: ``"document"`` (the whole file is one),
            ``"line"`` (each non-empty line is one) or ``"separator"`` (split on ``separator``,
            each piece stripped).
        separator: the document separator for ``txt_mode="separator"``.
        streaming: return an `IterableDataset` that reads lazily, for corpora larger than
            memory.
        cache_dir: where `datasets` keeps its Arrow cache (default: its own, ~/.cache/huggingface).
        num_proc: worker processes for building a non-streaming dataset from many files.
        **load_kwargs: passed to `datasets.load_dataset` (e.g. ``column_names`` for a CSV
            without a header, ``revision`` for a Hub dataset).

    Documents that are empty or only whitespace are dropped. Bytes of a ``.txt`` file that are
    not UTF-8 are replaced with U+FFFD, with a `UnicodeWarning` naming the file and offset.

    Raises:
        DataError: missing path, unsupported file type, missing text column, no text at all,
            or a Hub dataset that cannot be loaded.
    """
    cache_dir = str(cache_dir) if cache_dir is not None else None
    is_single = isinstance(source, (str, os.PathLike))
    if is_single and not Path(source).expanduser().exists() and not _looks_like_local_path(str(source)):
        dataset = _load_hub(
            str(source),
            name=name,
            split=split,
            text_column=text_column,
            streaming=streaming,
            cache_dir=cache_dir,
            load_kwargs=load_kwargs,
        )
        origin = f"Hub dataset {source!r}"
    else:
        files = _resolve_files(source)
        dataset = _load_files(
            files,
            text_column=text_column,
            txt_mode=txt_mode,
            separator=separator,
            streaming=streaming,
            cache_dir=cache_dir,
            num_proc=num_proc,
            load_kwargs=load_kwargs,
        )
        origin = str(source) if is_single else f"{[str(s) for s in source]}"

    # Empty documents would only add a lone end-of-text token each; drop them everywhere.
    if isinstance(dataset, IterableDataset):
        dataset = dataset.filter(_is_nonempty_batch, batched=True)
        is_empty = next(iter(dataset), None) is None  # opens the first file only
    else:
        dataset = dataset.filter(
            _is_nonempty_batch,
            batched=True,
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            desc="Dropping empty documents",
        )
        is_empty = len(dataset) == 0
    if is_empty:
        raise _no_text(origin)
    return dataset


def _no_text(origin: str) -> DataError:
    return DataError(
        f"No text in {origin}: it has no documents, or every document is empty or whitespace. "
        "Check the content, and txt_mode / text_column."
    )


# --------------------------------------------------------------------------------------------
# Train / validation split
# --------------------------------------------------------------------------------------------


def split_train_validation(
    dataset: Dataset,
    validation_fraction: float = 0.1,
    seed: int = 42,
    mode: Literal["random", "tail"] = "random",
) -> DatasetDict:
    """Split a text dataset into ``train`` and ``validation``.

    ``mode="random"``: a shuffled split of the documents with a fixed ``seed``
    (`Dataset.train_test_split`); the validation split gets ``ceil(fraction * rows)`` documents.

    ``mode="tail"``: contiguous, as nanoGPT splits Shakespeare: the first ``1 - fraction`` for
    training and the rest for validation, so no validation text sits between training text.
    A one-document dataset is split by characters (a single row cannot be split by rows);
    a larger one by rows, in order; both at ``floor((1 - fraction) * n)``.

    Raises:
        DataError: a fraction outside (0, 1), an empty side, or a random split of one document.
    """
    if isinstance(dataset, IterableDataset):
        raise DataError(
            "A streaming dataset has no length to split by fraction: use .take(n)/.skip(n), or "
            "load it with streaming=False."
        )
    if not 0.0 < validation_fraction < 1.0:
        raise DataError(
            f"validation_fraction must be between 0 and 1 (exclusive), got {validation_fraction}."
        )
    n_rows = len(dataset)

    if mode == "random":
        n_validation = math.ceil(validation_fraction * n_rows)
        if n_rows < 2 or n_validation >= n_rows:
            raise DataError(
                f"Cannot split {n_rows} document(s) at random with validation_fraction="
                f"{validation_fraction}: one side would be empty. Use mode='tail' (splits a single "
                "document by characters) or load more documents (e.g. txt_mode='line')."
            )
        parts = dataset.train_test_split(test_size=n_validation, seed=seed, shuffle=True)
        return DatasetDict(train=parts["train"], validation=parts["test"])

    if mode != "tail":
        raise DataError(f"mode must be 'random' or 'tail', not {mode!r}.")
    if n_rows == 1:
        text = dataset[0]["text"]
        cut = int(len(text) * (1.0 - validation_fraction))
        if cut == 0 or cut == len(text):
            raise DataError(
                f"The one document has {len(text)} characters: too few for a {validation_fraction} "
                "validation split with text on both sides."
            )
        # Any other columns are copied to both halves, so the halves keep the input's schema.
        row = dataset[0]
        train = Dataset.from_dict(
            {**{k: [v] for k, v in row.items()}, "text": [text[:cut]]}, dataset.features
        )
        validation = Dataset.from_dict(
            {**{k: [v] for k, v in row.items()}, "text": [text[cut:]]}, dataset.features
        )
        return DatasetDict(train=train, validation=validation)
    cut = int(n_rows * (1.0 - validation_fraction))
    if cut == 0 or cut == n_rows:
        raise DataError(
            f"Cannot split {n_rows} document(s) with validation_fraction={validation_fraction}: "
            "one side would be empty. Change the fraction or load more documents."
        )
    return DatasetDict(train=dataset.select(range(cut)), validation=dataset.select(range(cut, n_rows)))


# --------------------------------------------------------------------------------------------
# Tokenize and pack
# --------------------------------------------------------------------------------------------
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


def _iter_blocks(tokenized: IterableDataset, block_size: int) -> Iterator[dict[str, list[int]]]:
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
        raise _too_short(n_tokens, block_size)


def _too_short(n_tokens: int, block_size: int) -> DataError:
    return DataError(
        f"The corpus has {n_tokens} tokens, but one block needs block_size={block_size} tokens. "
        f"Use a smaller block_size (at most {n_tokens}) or more text."
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
    return dataset.map(
        _tokenize_batch,
        batched=True,
        batch_size=_MAP_BATCH_SIZE,
        remove_columns=dataset.column_names,
        fn_kwargs={"tokenizer": tokenizer, "eos_token_id": eos_token_id},
        features=_INPUT_IDS_FEATURES,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        cache_file_name=str(directory / f"tokenized-{key}.arrow") if directory else None,
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
            gen_kwargs={"tokenized": tokenized, "block_size": block_size},
        )

    tokenized = _tokenize(dataset, tokenizer, add_eos=add_eos, num_proc=num_proc, cache_dir=cache_dir)
    n_tokens = _count_tokens(tokenized)
    if n_tokens < block_size:
        raise _too_short(n_tokens, block_size)
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


# --------------------------------------------------------------------------------------------
# Bits per byte
# --------------------------------------------------------------------------------------------


def count_utf8_bytes(dataset: Dataset | IterableDataset, text_column: str = "text") -> int:
    """Total UTF-8 bytes of ``text_column`` over all rows (computed by Arrow, no decoding)."""
    total = 0
    for batch in dataset.select_columns([text_column]).with_format("arrow").iter(batch_size=10_000):
        total += pc.sum(pc.binary_length(batch.column(text_column))).as_py() or 0
    return total


@dataclass(frozen=True)
class PackingStats:
    """What `tokenize_and_pack` made of a text dataset, for bits-per-byte and reports.

    ``n_bytes_packed`` is the UTF-8 size of the text inside the blocks: all the text minus what
    the dropped final tokens decode to (exact for byte-level BPE up to a character split by
    the cut). EOS tokens count as tokens and as zero bytes.
    """

    n_documents: int
    n_bytes: int
    n_tokens: int
    n_blocks: int
    n_tokens_packed: int
    n_bytes_packed: int


def packing_stats(
    dataset: Dataset,
    tokenizer: Any,
    block_size: int,
    *,
    add_eos: bool = True,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> PackingStats:
    """Sizes of ``dataset`` before and after packing; reuses `tokenize_and_pack`'s token cache.

    For validation bits per byte::

        stats = packing_stats(splits["validation"], tokenizer, block_size)
        bpb = bits_per_byte(mean_eval_loss, stats.n_tokens_packed, stats.n_bytes_packed)
    """
    _check_block_size(block_size)
    if isinstance(dataset, IterableDataset):
        raise DataError("packing_stats needs a finite Dataset (streaming=False) to count it.")
    tokenized = _tokenize(dataset, tokenizer, add_eos=add_eos, num_proc=num_proc, cache_dir=cache_dir)
    n_tokens = _count_tokens(tokenized)
    n_blocks = n_tokens // block_size
    n_bytes = count_utf8_bytes(dataset)

    # The dropped remainder is the last (n_tokens % block_size) tokens of the stream: fewer
    # than one block, so gathering them walks back over only a few documents.
    n_dropped = n_tokens - n_blocks * block_size
    tail: list[int] = []
    row = len(tokenized) - 1
    while len(tail) < n_dropped:
        tail = tokenized[row]["input_ids"] + tail
        row -= 1
    dropped_text = tokenizer.decode(
        tail[len(tail) - n_dropped :], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return PackingStats(
        n_documents=len(dataset),
        n_bytes=n_bytes,
        n_tokens=n_tokens,
        n_blocks=n_blocks,
        n_tokens_packed=n_blocks * block_size,
        n_bytes_packed=n_bytes - len(dropped_text.encode("utf-8")),
    )


def bits_per_byte(mean_loss_nats_per_token: float, n_tokens: int, n_bytes: int) -> float:
    """Convert a mean cross-entropy (nats per token) to bits per UTF-8 byte of text.

    ``loss * n_tokens`` is the total nats the model paid for the text; dividing by ``ln 2``
    gives bits and by ``n_bytes`` makes it per byte, which compares models with different
    tokenizers. Pass the tokens and bytes of the same text (see `packing_stats`).
    """
    if n_bytes <= 0:
        raise DataError(f"n_bytes must be positive, got {n_bytes}.")
    if n_tokens < 0:
        raise DataError(f"n_tokens must be non-negative, got {n_tokens}.")
    return mean_loss_nats_per_token * n_tokens / (math.log(2) * n_bytes)
