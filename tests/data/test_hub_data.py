"""Loading a Hub dataset id for real, from a local Hub look-alike (tests/fakes/hub_server.py).

huggingface_hub reads HF_ENDPOINT at import, and `make test` sets HF_HUB_OFFLINE=1 for the whole
run, so the loading code runs in a fresh Python subprocess pointed at the server, with the
offline switches removed and every cache in tmp_path. The server runs in this process and records
the requests it gets, so the tests can also check that the data really came over HTTP.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from io import BytesIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes.hub_server import LocalHub, run_client

REPO = "testuser/stories"
TRAIN = [
    {"id": 0, "story": "Once upon a time a fox met a robot.", "title": "Fox"},
    {"id": 1, "story": "The robot taught the fox to read.", "title": "Reading"},
    {"id": 2, "story": "Emoji 🤗 and CJK 你好 survive the trip.", "title": "Unicode"},
    {"id": 3, "story": "They lived happily ever after.", "title": "End"},
    {"id": 4, "story": "A fifth story, so max_documents=3 really cuts.", "title": "Extra"},
]
VALIDATION = [{"id": 10, "story": "A held-out story about a cat.", "title": "Cat"}]

# The same stories as Parquet (the Hub's usual format), text stored as large_string: streaming
# reads Parquet with HTTP Range requests.
PARQUET_REPO = "testuser/stories-parquet"
PARQUET_FILE = "data/train-00000-of-00001.parquet"

# A repo whose README declares two configs, each in its own folder.
CONFIG_REPO = "testuser/tales"
PROSE = ["Prose one.", "Prose two."]
POEMS = ["Roses are red.", "Violets are blue.", "Hub tests pass, and so should you."]
CONFIG_README = """---
configs:
- config_name: prose
  default: true
  data_files:
  - split: train
    path: prose/*.jsonl
- config_name: poems
  data_files:
  - split: train
    path: poems/*.jsonl
---
# Tales
"""


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _texts(rows: list[dict]) -> list[str]:
    return [row["story"] for row in rows]


def _parquet(rows: list[dict]) -> bytes:
    table = pa.table({"id": [r["id"] for r in rows], "story": pa.array(_texts(rows), pa.large_string())})
    buffer = BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hub_server():
    with LocalHub() as server:
        server.add_repo(
            REPO, {"data/train.jsonl": _jsonl(TRAIN), "data/validation.jsonl": _jsonl(VALIDATION)}
        )
        server.add_repo(PARQUET_REPO, {PARQUET_FILE: _parquet(TRAIN)})
        server.add_repo(
            CONFIG_REPO,
            {
                "README.md": CONFIG_README,
                "prose/part-0.jsonl": _jsonl([{"text": t} for t in PROSE]),
                "poems/part-0.jsonl": _jsonl([{"text": t} for t in POEMS]),
            },
        )
        yield server


@pytest.fixture
def hub(hub_server):
    """The module's server, with the request log of earlier tests cleared."""
    hub_server.requests.clear()
    return hub_server


def _fetched(hub: LocalHub, path: str) -> bool:
    """Whether a client downloaded ``path`` of a dataset repo (by commit sha) from the server."""
    return any(r.startswith("GET /datasets/") and r.split(" ")[1].endswith(path) for r in hub.requests)


# --------------------------------------------------------------------------------------------
# The server itself (cheap, in-process): the contract the clients rely on
# --------------------------------------------------------------------------------------------


def test_server_resolve_headers_range_and_errors(hub):
    sha = hub.commit_sha("dataset", REPO)
    url = f"{hub.url}/datasets/{REPO}/resolve/main/data/train.jsonl"
    content = _jsonl(TRAIN).encode()
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as reply:
        assert reply.headers["X-Repo-Commit"] == sha
        assert reply.headers["ETag"].strip('"') and int(reply.headers["Content-Length"]) == len(content)
        assert reply.read() == b""
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Range": "bytes=5-9"}), timeout=5
    ) as reply:
        assert reply.status == 206 and reply.read() == content[5:10]
        assert reply.headers["Content-Range"] == f"bytes 5-9/{len(content)}"
    cases = {
        url.replace("train.jsonl", "nope.jsonl"): "EntryNotFound",
        url.replace(REPO, "testuser/nope"): "RepoNotFound",
        url.replace("/main/", "/0123abc/"): "RevisionNotFound",
    }
    for bad_url, code in cases.items():
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad_url, timeout=5)
        assert err.value.code == 404 and err.value.headers["X-Error-Code"] == code
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(
            urllib.request.Request(url, headers={"Range": f"bytes={len(content)}-"}), timeout=5
        )
    assert err.value.code == 416


# --------------------------------------------------------------------------------------------
# hf_scratchgpt against the server, in a subprocess
# --------------------------------------------------------------------------------------------


def test_hub_is_reachable_while_the_server_runs_and_not_after(tmp_path):
    code = "from hf_scratchgpt.data import hub_is_reachable\nresult = hub_is_reachable(timeout=5)"
    server = LocalHub().start()
    try:
        assert run_client(server.url, code, tmp_path) is True
        assert "HEAD /" in server.requests  # the probe really reached this server
    finally:
        server.stop()
    started = time.monotonic()
    assert run_client(server.url, code, tmp_path) is False
    assert time.monotonic() - started < 30  # refused at once, not a timeout


def test_load_text_dataset_train_and_validation_splits(hub, tmp_path):
    result = run_client(
        hub.url,
        f"""
        from hf_scratchgpt.data import load_text_dataset
        train = load_text_dataset({REPO!r}, split="train", text_column="story")
        validation = load_text_dataset({REPO!r}, split="validation", text_column="story")
        result = {{
            "type": type(train).__name__,
            "columns": train.column_names,
            "train": list(train["text"]),
            "validation": list(validation["text"]),
        }}
        """,
        tmp_path,
    )
    assert result == {
        "type": "Dataset",
        "columns": ["text"],  # "story" renamed, "id" and "title" dropped
        "train": _texts(TRAIN),
        "validation": _texts(VALIDATION),
    }
    assert _fetched(hub, "data/train.jsonl")


def test_named_config_selects_its_files(hub, tmp_path):
    result = run_client(
        hub.url,
        f"""
        from hf_scratchgpt.data import load_text_dataset
        result = {{
            "poems": list(load_text_dataset({CONFIG_REPO!r}, name="poems")["text"]),
            "prose": list(load_text_dataset({CONFIG_REPO!r}, name="prose")["text"]),
            "default": list(load_text_dataset({CONFIG_REPO!r})["text"]),
        }}
        """,
        tmp_path,
    )
    assert result == {"poems": POEMS, "prose": PROSE, "default": PROSE}
    assert _fetched(hub, "README.md") and _fetched(hub, "poems/part-0.jsonl")


def test_streaming_yields_the_same_texts(hub, tmp_path):
    result = run_client(
        hub.url,
        f"""
        from hf_scratchgpt.data import load_text_dataset
        stream = load_text_dataset({REPO!r}, split="train", text_column="story", streaming=True)
        parquet = load_text_dataset({PARQUET_REPO!r}, text_column="story", streaming=True)
        result = {{
            "type": type(stream).__name__,
            "columns": stream.column_names,
            "rows": list(stream),
            "parquet_rows": list(parquet),
        }}
        """,
        tmp_path,
    )
    assert result == {
        "type": "IterableDataset",
        "columns": ["text"],
        "rows": [{"text": t} for t in _texts(TRAIN)],
        "parquet_rows": [{"text": t} for t in _texts(TRAIN)],
    }
    assert _fetched(hub, "data/train.jsonl")
    assert any(PARQUET_FILE in r and " Range: bytes=" in r for r in hub.requests), hub.requests


def test_load_corpus_takes_the_first_documents_of_a_hub_dataset(hub, tmp_path):
    result = run_client(
        hub.url,
        f"""
        from hf_scratchgpt.train.pretraining import DataArguments, load_corpus
        args = DataArguments(data={REPO!r}, text_column="story", max_documents=3)
        dataset, description = load_corpus(args)
        again, _ = load_corpus(args)  # another rank, or a rerun
        result = {{"type": type(dataset).__name__, "texts": list(dataset["text"]), "description": description,
                  "files": [f["filename"] for f in dataset.cache_files],
                  "files_again": [f["filename"] for f in again.cache_files]}}
        """,
        tmp_path,
    )
    assert result["type"] == "Dataset"
    assert result["texts"] == _texts(TRAIN)[:3]
    assert REPO in result["description"]
    # Arrow files on disk (memory-mapped), not a Python list per process; a second load reuses them.
    assert result["files"] and result["files"] == result["files_again"]


def test_missing_repo_is_a_clear_error_not_a_hang(hub, tmp_path):
    started = time.monotonic()
    result = run_client(
        hub.url,
        """
        from hf_scratchgpt.data import load_text_dataset
        try:
            load_text_dataset("testuser/does-not-exist", split="train")
            result = None
        except Exception as err:
            result = {"type": type(err).__name__, "message": str(err)}
        """,
        tmp_path,
        timeout=60,
    )
    assert time.monotonic() - started < 30  # no retry loop
    assert result["type"] == "DataError"
    assert "testuser/does-not-exist" in result["message"]
    # The server was asked (and said RepoNotFound): the error is not from a connection failure.
    assert any("testuser/does-not-exist" in r for r in hub.requests)
