"""Reading the user's data files: what `datasets` and pyarrow would accept silently or report without a path.

Every check here names the file and says what to do, as a `DataError`:

* `check_utf8_text`: a ``.txt`` that is mostly not UTF-8 (binary data, another encoding) is refused; a few
  stray bytes are replaced with U+FFFD, with a warning giving the first offset and the count;
* `refuse_null_records`: a JSON record that is ``null`` crashes pyarrow's reader (the interpreter dies), so
  it is refused before that reader runs;
* `json_syntax_error`: where a ``.json`` / ``.jsonl`` file stops being JSON (line and column), for the
  message, instead of pyarrow's "position 82" with no file name;
* `load_data_file`: one file through a `datasets` builder, its failures (empty, no rows, malformed) named;
* `FILE_BUILDERS` / `file_builder`: the one table of which builder reads which file type, with its options,
  used by every loader of local files (pretraining text, instruction data, labelled text).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset


class DataError(ValueError):
    """A problem with the user's data or settings; the message says what to change."""


# File extension -> (the `datasets` packaged builder that reads it, the options it needs).
# CSV/TSV: na_filter=False keeps texts such as "NA" or "null" as text instead of missing values.
# TSV is read without quote handling: by convention a TSV field holds no tab or newline, and pandas'
# default CSV quoting would silently glue together rows whose text starts with '"' (an SMS message may).
FILE_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".txt": ("text", {}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {"na_filter": False}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE, "na_filter": False}),
    ".parquet": ("parquet", {}),
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(FILE_BUILDERS)
# The file types that hold records with named columns: every supported type but plain text.
RECORD_EXTENSIONS: tuple[str, ...] = tuple(
    ext for ext, (builder, _) in FILE_BUILDERS.items() if builder != "text"
)


def file_builder(
    path: str | os.PathLike, label: str, extensions: Sequence[str] = SUPPORTED_EXTENSIONS
) -> tuple[str, dict[str, Any]]:
    """The builder that reads ``path`` (by its extension) and its options, from `FILE_BUILDERS`.

    Raises:
        DataError: the extension is not one of ``extensions``; the message names ``label`` and those allowed.
    """
    extension = Path(path).suffix.lower()
    if extension not in extensions:
        raise DataError(
            f"{label}: unsupported file type {extension or '(no extension)'!r}; use one of {', '.join(extensions)}."
        )
    return FILE_BUILDERS[extension]


# Bytes read per step when checking a .txt file for invalid UTF-8.
_SCAN_CHUNK_BYTES = 1 << 24
# Above this share of undecodable bytes a .txt file is refused rather than read with replacements. Real
# text with stray bytes stays far below it (a cp1252 English file: its curly quotes and dashes, ~0.1-0.5%
# of the bytes); binary data or random bytes are ~50% undecodable; Latin-1 French or German text is 1-4%,
# and reading it as UTF-8 would turn every accented letter into U+FFFD: refused too, with the fix (iconv).
UNDECODABLE_SHARE_LIMIT = 0.01
# What the "surrogateescape" error handler decodes an undecodable byte to: one character per bad byte.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# pyarrow's JSON reader, which `datasets` uses for .json/.jsonl, kills the interpreter (segfault, no
# exception) on a block that starts with a top-level `null`; such records are refused before it runs.
_NULL_LINE = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r]*null", re.MULTILINE)  # a UTF-8 BOM is skipped too
# How `datasets` (and pandas, streaming) say that a file held no rows at all.
NO_DATA_SIGNS = ("corresponds to no data", "No columns to parse")


def first_invalid_utf8_offset(path: Path) -> int | None:
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


def count_undecodable_bytes(path: Path) -> tuple[int, int]:
    """How many bytes of ``path`` are not valid UTF-8, and how many bytes it has."""
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    bad = total = 0
    with path.open("rb") as f:
        while chunk := f.read(_SCAN_CHUNK_BYTES):
            total += len(chunk)
            bad += _ESCAPED_BYTE.subn("", decoder.decode(chunk))[1]
    bad += _ESCAPED_BYTE.subn("", decoder.decode(b"", final=True))[1]
    return bad, total


def check_utf8_text(path: Path) -> None:
    """Refuse a text file that is mostly not UTF-8; warn about one with a few undecodable bytes.

    Raises:
        DataError: more than `UNDECODABLE_SHARE_LIMIT` of the bytes are not UTF-8, naming the file and share.
    """
    offset = first_invalid_utf8_offset(path)
    if offset is None:
        return
    bad, total = count_undecodable_bytes(path)
    if bad > UNDECODABLE_SHARE_LIMIT * total:
        raise DataError(
            f"{path}: {bad / total:.1%} of its bytes ({bad:,} of {total:,}, the first at byte offset {offset}) "
            "are not valid UTF-8: it is binary data or text in another encoding, and training on it would "
            "teach the model U+FFFD replacement characters. Re-encode it as UTF-8 (e.g. iconv -f latin1 -t "
            f"utf-8 FILE > FILE.utf8.txt) or remove it from the data; up to {UNDECODABLE_SHARE_LIMIT:.0%} "
            "undecodable bytes are replaced with a warning."
        )
    # Replacing a few bad bytes costs a few characters; crashing an hour into tokenizing a corpus costs
    # the hour. So: replace, and say where, so the user can fix the file.
    warnings.warn(
        f"{path}: byte offset {offset} is not valid UTF-8 ({bad:,} undecodable byte(s) of {total:,}); they are "
        "replaced with U+FFFD. Re-encode the file as UTF-8 to silence this warning.",
        UnicodeWarning,
        stacklevel=4,
    )


def refuse_null_records(path: Path) -> None:
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


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def json_syntax_error(path: Path) -> str | None:
    """Where a ``.json`` / ``.jsonl`` file stops being JSON (``"line 3, column 5: Expecting value"``), or None.

    The file is read as JSON Lines when its first non-empty line is a JSON value by itself, else as one JSON
    document (a list of records, or one record spread over several lines). Reads the whole file: meant for
    the error path, after a loader has failed.
    """
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first and _parses(first):
        for number, line in enumerate(lines, start=1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number}, column {error.colno}: {error.msg}"
        return None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return f"line {error.lineno}, column {error.colno}: {error.msg}"
    return None


def read_error(paths: Sequence[Path], error: BaseException, label: str | None = None) -> DataError:
    """A `DataError` for files a loader failed on: the first that is malformed JSON, with its line and column;
    else all of them (``label``: how to name them) and the loader's reason."""
    for path in paths:
        if path.suffix.lower() in (".json", ".jsonl") and (where := json_syntax_error(path)):
            return DataError(
                f"{path}: not valid JSON at {where}. Fix the file there: a JSON list of records, or one JSON "
                "object per line (.jsonl)."
            )
    return DataError(f"Could not read {label or ', '.join(map(str, paths))}: {error.__cause__ or error}")


def load_data_file(
    path: str | os.PathLike, builder: str, label: str | None = None, **options: Any
) -> Dataset:
    """One local file read by the `datasets` builder ``builder`` (``json``, ``csv``, ...), as one split.

    ``label`` is how messages name the file (default: its path), e.g. ``"--test_file t.tsv (the test split)"``.

    Raises:
        DataError: the file is empty, holds no rows, or cannot be read (for JSON: the line and column).
    """
    path = Path(path)
    label = label or str(path)
    no_rows = DataError(f"{label} holds no records: the file is empty or has a header but no rows.")
    if path.stat().st_size == 0:
        raise no_rows
    if builder == "json":
        refuse_null_records(path)
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except datasets.exceptions.DatasetGenerationError as error:
        raise read_error([path], error, label) from error
    except ValueError as error:
        if any(sign in str(error) for sign in NO_DATA_SIGNS):
            raise no_rows from error
        raise read_error([path], error, label) from error
    if len(dataset) == 0:
        raise no_rows
    return dataset


__all__ = [
    "DataError",
    "FILE_BUILDERS",
    "RECORD_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "UNDECODABLE_SHARE_LIMIT",
    "check_utf8_text",
    "count_undecodable_bytes",
    "file_builder",
    "first_invalid_utf8_offset",
    "json_syntax_error",
    "load_data_file",
    "read_error",
    "refuse_null_records",
]
