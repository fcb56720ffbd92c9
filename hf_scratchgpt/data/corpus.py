"""The built-in corpus: English text that ships with CPython, so the pipeline runs with no download at all."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

from datasets import Dataset

from .files import DataError
from .sources import _TEXT_FEATURES


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
