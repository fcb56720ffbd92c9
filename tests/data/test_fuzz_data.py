"""Fuzzing the data loaders: whatever bytes a file holds, `load_text_dataset` either returns a dataset with
one column of non-empty strings, ``text``, or raises a `DataError` that names the file. Never a stack
trace from deep inside pyarrow, pandas or `datasets`.

Few examples per format (the loaders cost a fraction of a second each), derandomized so a failure
reproduces on every run; the seeds of interesting inputs are pinned with ``@example``.
"""

from __future__ import annotations

import io
import itertools
import json
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hf_scratchgpt.data import DataError, load_text_dataset

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EXTENSIONS = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")
_names = itertools.count()  # a new file name per example: `datasets` caches by path

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["text", "a", ""]), inner, max_size=3)
    ),
    max_leaves=6,
)
# CSV/TSV fields full of the characters that break parsers: separators, quotes, newlines, "NA".
cells = st.text(alphabet='ab ,\t"\n\r\\;é', max_size=8) | st.sampled_from(["NA", "null", "", '"', "text"])


def check_load(tmp_path, suffix: str, content: bytes) -> None:
    """The property: a dataset of non-empty strings in one `text` column, or a DataError naming the file."""
    path = tmp_path / f"data{next(_names)}{suffix}"
    path.write_bytes(content)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnicodeWarning)  # a .txt with bad UTF-8 loads, with a warning
            dataset = load_text_dataset(str(path), cache_dir=str(tmp_path / "cache"))
    except DataError as error:
        assert str(path) in str(error), f"the error does not name the file: {error}"
        return
    assert dataset.column_names == ["text"]
    texts = dataset["text"]
    assert texts and all(isinstance(text, str) and text.strip() for text in texts)


@pytest.mark.parametrize("suffix", EXTENSIONS)
@FUZZ
@given(content=st.binary(max_size=200))
@example(content=b"")
@example(content=b"\xff\xfe\x00garbage")
@example(content=b"\xef\xbb\xbf null\n")
def test_random_bytes(tmp_path, suffix, content):
    check_load(tmp_path, suffix, content)


@FUZZ
@given(rows=st.lists(json_values, max_size=5), broken=st.booleans())
@example(rows=[{"text": "hello"}, {"text": 3}], broken=False)
@example(rows=[{"text": None}], broken=False)
@example(rows=[{"a": "no text column"}], broken=False)
@example(rows=[{"text": "ok"}], broken=True)
@example(rows=[None, {"text": "a"}], broken=False)  # a `null` line used to crash the interpreter (pyarrow)
def test_random_json_lines(tmp_path, rows, broken):
    lines = [json.dumps(row) for row in rows] + (['{"text": "cut off'] if broken else [])
    check_load(tmp_path, ".jsonl", "\n".join(lines).encode())


@FUZZ
@given(value=json_values)
@example(value=[{"text": "hello"}, {"text": ["a"]}])
@example(value={"text": ["a", "b"]})
@example(value=[None, {}, True])  # used to crash the interpreter (pyarrow)
def test_random_json_documents(tmp_path, value):
    check_load(tmp_path, ".json", json.dumps(value).encode())


@pytest.mark.parametrize("suffix, separator", [(".csv", ","), (".tsv", "\t")])
@FUZZ
@given(
    header=st.lists(st.sampled_from(["text", "a", "b", ""]), min_size=1, max_size=3),
    rows=st.lists(st.lists(cells, min_size=1, max_size=4), max_size=5),
)
@example(header=["text"], rows=[['"unclosed'], ["b"]])
@example(header=["text", "text"], rows=[["a", "b"]])
@example(header=["a"], rows=[["x", "y", "z"]])
def test_random_csv(tmp_path, suffix, separator, header, rows):
    content = "\n".join(separator.join(row) for row in [header, *rows])
    check_load(tmp_path, suffix, content.encode())


parquet_columns = st.sampled_from(
    [
        pa.array(["a", "b"]),
        pa.array(["", "  "]),
        pa.array([None, "x"]),
        pa.array([1, 2]),
        pa.array([["a"], ["b"]]),
        pa.array([None, None], type=pa.null()),
        pa.array(["x", "y"], type=pa.large_string()),
        pa.array([b"\x00", b"\xff"]),
    ]
)


@FUZZ
@given(name=st.sampled_from(["text", "other"]), column=parquet_columns, cut=st.integers(0, 400))
@example(name="text", column=pa.array([1, 2]), cut=0)
def test_parquet_with_wrong_columns_or_cut_short(tmp_path, name, column, cut):
    buffer = io.BytesIO()
    pq.write_table(pa.table({name: column}), buffer)
    content = buffer.getvalue()
    check_load(tmp_path, ".parquet", content[: len(content) - cut])  # cut > 0: a truncated file
