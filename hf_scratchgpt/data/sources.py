"""Where text comes from: local files, folders, Hub datasets, a saved dataset folder, and the train/validation split.

One entry point, `load_text_dataset`, for every place text lives (a Hub id, a local file, a folder, a list
of files) that always returns a dataset with exactly one column, ``text``; errors that say what is wrong and
how to fix it (`DataError`) instead of a stack trace from deep inside pyarrow or pandas; and a cheap offline
check (`hub_is_reachable`) so a machine without the internet does not sit through `datasets`' retry loop
(~24 s per call) before falling back.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import datasets
from datasets import Dataset, DatasetDict, Features, IterableDataset, Value

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
# pyarrow's JSON reader, which `datasets` uses for .json/.jsonl, kills the interpreter (segfault, no
# exception) on a block that starts with a top-level `null`; such records are refused before it runs.
_NULL_LINE = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r]*null", re.MULTILINE)  # a UTF-8 BOM is skipped too
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


def _refuse_null_records(path: Path) -> None:
    """Raise a `DataError` for a .json/.jsonl file with a record that is ``null`` (see ``_NULL_LINE``).

    A JSON array is turned into JSON Lines by `datasets` before pyarrow reads it, so its elements count
    as lines too.
    """
    line = 1
    with path.open("rb") as f:
        while chunk := f.read(_SCAN_CHUNK_BYTES):
            if line == 1 and chunk.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                try:
                    records = json.loads(chunk + f.read())
                except ValueError:
                    return  # not JSON at all: `datasets` reports it, with the file named
                nulls = (
                    [i for i, record in enumerate(records) if record is None]
                    if isinstance(records, list)
                    else []
                )
                if nulls:
                    raise DataError(
                        f"{path}: element {nulls[0]} of the JSON array is null, not an object "
                        '(pyarrow cannot read it). Remove it, or write it as {"text": ...}.'
                    )
                return
            chunk += f.readline()  # end on a line boundary
            if match := _NULL_LINE.search(chunk):
                line += chunk.count(b"\n", 0, match.start())
                raise DataError(
                    f"{path}: line {line} is null, not a JSON object (pyarrow cannot read it). "
                    'Remove the line, or write it as {"text": ...}.'
                )
            line += chunk.count(b"\n")


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
        if builder == "json":
            for path in paths:
                _refuse_null_records(path)
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
            if any(m in str(err) for m in ("corresponds to no data", "No columns to parse")):
                raise _no_text(origin) from err
            # Anything else is the file's content (pyarrow's ArrowInvalid, pandas' ParserError, bad UTF-8).
            raise DataError(f"Could not read {origin} as {ext}: {err}") from err
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
