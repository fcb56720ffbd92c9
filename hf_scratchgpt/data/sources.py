"""Where text comes from: local files, folders, Hub datasets.

One entry point, `load_text_dataset`, for every place text lives (a Hub id, a local file, a folder, a list
of files) that always returns a dataset with exactly one column, ``text``; errors that say what is wrong and
how to fix it (`DataError`) instead of a stack trace from deep inside pyarrow or pandas; and a cheap offline
check (`hub_is_reachable`) so a machine without the internet does not sit through `datasets`' retry loop
(~24 s per call) before falling back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import datasets
from datasets import Dataset, Features, IterableDataset, Value

from ..model.tokenization_scratchgpt import ENDOFTEXT_TOKEN
from .files import (
    FILE_BUILDERS,
    NO_DATA_SIGNS,
    SUPPORTED_EXTENSIONS,
    DataError,
    check_utf8_text,
    read_error,
    refuse_null_records,
)

TxtMode = Literal["document", "line", "separator"]
AnyDataset = Dataset | IterableDataset

# Bump when the tokenize/pack output format changes, so old cache files are not reused.
_CACHE_VERSION = "scratchgpt-pack-v1"
# Rows per batch for datasets.map: big enough to amortise Python overhead, small enough that a
# batch of long documents still fits comfortably in memory.
_MAP_BATCH_SIZE = 1000
# Characters read per step when splitting .txt files on a separator (bounded memory for
# multi-gigabyte corpora such as TinyStories).
_READ_CHUNK_CHARS = 1 << 22
_TRUE_VALUES = {"1", "true", "yes", "on"}
_TEXT_FEATURES = Features({"text": Value("string")})


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
            files.extend(_data_files_in(path))
        elif path.suffix.lower() in FILE_BUILDERS:
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


def _data_files_in(folder: Path) -> list[Path]:
    """The supported files in ``folder`` and its subfolders, sorted; the others are named in a warning.

    Hidden files and folders (.git, .cache, editor swap files) are passed over without a word.

    Raises:
        DataError: no supported file at all, naming the files that were there.
    """
    visible = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    found = [p for p in visible if p.suffix.lower() in FILE_BUILDERS]
    skipped = [str(p.relative_to(folder)) for p in visible if p.suffix.lower() not in FILE_BUILDERS]
    shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
    supported = f"Supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}."
    if not found:
        held = f"only {shown}" if skipped else "no files"
        raise DataError(f"The folder {folder} holds no supported data files ({held}). {supported}")
    if skipped:
        warnings.warn(
            f"{folder}: skipping {len(skipped)} file(s) of an unsupported type: {shown}. {supported} "
            "Convert them, or move them out of the folder to silence this warning.",
            UserWarning,
            stacklevel=5,
        )
    return found


def _looks_like_local_path(source: str) -> bool:
    """A missing path that cannot be a Hub id ("name" or "owner/name") is reported as missing."""
    return (
        source.startswith((".", "/", "~", "\\"))
        or os.path.isabs(source)
        or source.count("/") > 1
        or "\\" in source
        or Path(source).suffix.lower() in FILE_BUILDERS
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
        builder, builder_kwargs = FILE_BUILDERS[ext]
        if builder == "json":
            for path in paths:
                refuse_null_records(path)
        if ext == ".txt":
            for path in paths:
                check_utf8_text(path)
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
            raise read_error(paths, err, origin) from err
        except ValueError as err:
            if any(sign in str(err) for sign in NO_DATA_SIGNS):
                raise _no_text(origin) from err
            # Anything else is the file's content (pyarrow's ArrowInvalid, pandas' ParserError, bad UTF-8).
            raise read_error(paths, err, origin) from err
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
    separator: str = ENDOFTEXT_TOKEN,
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
    # What the Hub and the local files are read with alike.
    common = {
        "text_column": text_column,
        "streaming": streaming,
        "cache_dir": cache_dir,
        "load_kwargs": load_kwargs,
    }
    is_single = isinstance(source, (str, os.PathLike))
    if is_single and not Path(source).expanduser().exists() and not _looks_like_local_path(str(source)):
        dataset = _load_hub(str(source), name=name, split=split, **common)
        origin = f"Hub dataset {source!r}"
    else:
        files = _resolve_files(source)
        dataset = _load_files(files, txt_mode=txt_mode, separator=separator, num_proc=num_proc, **common)
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
