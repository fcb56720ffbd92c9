"""The train/validation split of a text dataset: shuffled documents, or nanoGPT's contiguous tail."""

from __future__ import annotations

import math
from typing import Literal

from datasets import Dataset, DatasetDict, IterableDataset

from .files import DataError


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
