"""The data half of the pipeline: text in, fixed-length blocks of token ids out, and the numbers to score them.

    load_text_dataset  ->  split_train_validation  ->  tokenize_and_pack  ->  Trainer  ->  score_blocks

Every step takes and returns a `datasets` object, so a stage can be cached, inspected or swapped for the
user's own. `datasets` does the loading, mapping and caching; this package only adds what it lacks for
language-model pretraining, along its seams:

* `sources`: one entry point for every place text lives (Hub id, file, folder), clear `DataError`s and a
  cheap offline check;
* `files`: checks on the user's files (not UTF-8, malformed JSON, empty) that name the file and the fix;
* `splits`: the train/validation split;
* `corpus`: a default corpus that ships with CPython, so the whole pipeline runs with no download;
* `packing`: nanoGPT-style packing into blocks, cached on disk so reruns and other ranks reuse it;
* `metrics`: loss and bits per byte over the UTF-8 bytes of the very tokens scored.

Example::

    ds = load_text_dataset("../shared/data/pretrain/tinyshakespeare.txt")
    splits = split_train_validation(ds, 0.1, mode="tail")
    train = tokenize_and_pack(splits["train"], tokenizer, block_size=256)
"""

from .corpus import default_corpus_texts, load_default_dataset
from .files import SUPPORTED_EXTENSIONS, DataError
from .metrics import language_model_scores, score_blocks, token_byte_lengths
from .packing import tokenize_and_pack
from .sources import hub_is_reachable, load_text_dataset
from .splits import split_train_validation

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "DataError",
    "default_corpus_texts",
    "hub_is_reachable",
    "language_model_scores",
    "load_default_dataset",
    "load_text_dataset",
    "score_blocks",
    "split_train_validation",
    "token_byte_lengths",
    "tokenize_and_pack",
]
