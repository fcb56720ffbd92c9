"""Instruction data in the shapes TRL trains on.

Instruction data comes in a few common layouts; TRL's trainers want conversations (lists of
``{"role", "content"}`` messages) so that the model's chat template decides how a turn is spelled:

* Alpaca (``instruction``, optional ``input``, ``output``), as in the "LLMs from scratch" book and
  ``tatsu-lab/alpaca``  -> ``messages`` [user, assistant];
* chat ``messages`` (TRL's conversational language-modeling format)  -> kept as they are;
* ``prompt`` / ``completion`` pairs, as strings or as message lists  -> ``messages``;
* preference rows (``chosen`` / ``rejected``, with an Alpaca ``instruction`` or a ``prompt``)
  -> TRL's conversational preference format ``prompt`` [user], ``chosen`` [assistant],
  ``rejected`` [assistant], for ``DPOTrainer``.

One conversation format for SFT means one loss rule: ``assistant_only_loss`` with the ChatML
template's ``{% generation %}`` markers trains exactly the assistant turns (and their ``<|im_end|>``).

A record that lacks a field its layout needs (an Alpaca row with no ``output``, a preference row with no
``rejected``) is an error naming the file, the record and the field: JSON loaders fill a missing key with
``null``, and a conversion would otherwise train the answer "None". With ``skip_invalid_records`` such
records are left out instead (the scripts count them in metrics.json).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from ..data.files import RECORD_EXTENSIONS, SUPPORTED_EXTENSIONS, DataError, file_builder, load_data_file
from ..data.splits import split_train_validation
from ..train.arguments import ValidatedArguments

logger = logging.getLogger(__name__)

Message = dict[str, str]


def alpaca_user_text(example: dict[str, Any]) -> str:
    """The user's turn of an Alpaca row: the instruction, then the input (if any) after a blank line."""
    instruction = str(example["instruction"]).strip()
    extra = str(example.get("input") or "").strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


def _as_messages(turn: Any, role: str) -> list[Message]:
    """A prompt or completion given as a string or as a list of messages, as a list of messages."""
    if isinstance(turn, str):
        return [{"role": role, "content": turn}]
    return [{"role": m["role"], "content": m["content"]} for m in turn]


def _with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def alpaca_to_messages(example: dict[str, Any], system_prompt: str | None = None) -> dict[str, list[Message]]:
    """``{"instruction", "input", "output"}`` -> ``{"messages": [system?, user, assistant]}``."""
    messages = [
        {"role": "user", "content": alpaca_user_text(example)},
        {"role": "assistant", "content": str(example["output"]).strip()},
    ]
    return {"messages": _with_system(messages, system_prompt)}


def prompt_completion_to_messages(
    example: dict[str, Any], system_prompt: str | None = None
) -> dict[str, list[Message]]:
    """``{"prompt", "completion"}`` (strings or message lists) -> ``{"messages": [..., assistant]}``."""
    messages = _as_messages(example["prompt"], "user") + _as_messages(example["completion"], "assistant")
    return {"messages": _with_system(messages, system_prompt)}


def preference_to_dpo(example: dict[str, Any], system_prompt: str | None = None) -> dict[str, list[Message]]:
    """A preference row -> TRL's conversational preference format (``prompt``, ``chosen``, ``rejected``).

    The prompt is the row's Alpaca instruction (+ input) or its ``prompt`` (string or messages).
    """
    if "instruction" in example:
        prompt = [{"role": "user", "content": alpaca_user_text(example)}]
    else:
        prompt = _as_messages(example["prompt"], "user")
    return {
        "prompt": _with_system(prompt, system_prompt),
        "chosen": _as_messages(example["chosen"], "assistant"),
        "rejected": _as_messages(example["rejected"], "assistant"),
    }


def detect_format(columns: list[str]) -> str:
    """Which instruction layout ``columns`` hold: ``messages``, ``alpaca``, ``prompt_completion`` or ``preference``.

    Raises:
        DataError: none of the layouts fits, naming the columns each one needs.
    """
    present = set(columns)
    if {"chosen", "rejected"} <= present and present & {"instruction", "prompt"}:
        return "preference"
    if "messages" in present:
        return "messages"
    if {"instruction", "output"} <= present:
        return "alpaca"
    if {"prompt", "completion"} <= present:
        return "prompt_completion"
    raise DataError(
        f"Cannot tell the instruction format of columns {sorted(present)}. Expected one of: "
        "'messages' (chat), 'instruction' + 'output' (+ optional 'input') (Alpaca), "
        "'prompt' + 'completion', or 'chosen' + 'rejected' with 'instruction' or 'prompt' (preference)."
    )


def _example_to_messages(example: dict[str, Any], layout: str, system_prompt: str | None) -> dict[str, Any]:
    if layout == "messages":
        return {"messages": _with_system(example["messages"], system_prompt)}
    if "output" in example:  # Alpaca, or a preference row that also has the reference answer
        return alpaca_to_messages(example, system_prompt)
    if layout == "preference":  # train on the chosen answers
        pair = {"prompt": preference_to_dpo(example)["prompt"], "completion": example["chosen"]}
        return prompt_completion_to_messages(pair, system_prompt)
    return prompt_completion_to_messages(example, system_prompt)


def _required_fields(columns: list[str], layout: str, for_dpo: bool) -> list[str]:
    """The fields every record must fill for what its conversion reads (see `_example_to_messages`)."""
    if layout == "messages":
        return ["messages"]
    if "output" in columns and not for_dpo:  # Alpaca, or preference rows trained on their reference answer
        return ["instruction", "output"]
    if layout == "preference":
        prompt = "instruction" if "instruction" in columns else "prompt"
        return [prompt, "chosen", "rejected"] if for_dpo else [prompt, "chosen"]
    return ["prompt", "completion"]


def _is_missing(value: Any) -> bool:
    return not value.strip() if isinstance(value, str) else value is None or value == []


def _drop_or_refuse_incomplete(
    dataset: Dataset, layout: str, source: str, skip: bool, for_dpo: bool = False
) -> Dataset:
    """``dataset`` without its records that lack a required field (``skip``), or a `DataError` naming the
    first such record: ``source``, its index (from 0), the field and the record itself."""
    fields = _required_fields(dataset.column_names, layout, for_dpo)
    problems: dict[int, str] = {}
    for name in fields:
        for index, value in enumerate(dataset[name]):
            if index not in problems and _is_missing(value):
                problems[index] = f"an empty {name!r}" if isinstance(value, str) else f"no {name!r}"
    if not problems:
        return dataset
    first = min(problems)
    if skip:
        logger.warning(
            "%s: skipped %d of %d records that lack a required field (%s); the first is record %d.",
            source,
            len(problems),
            len(dataset),
            ", ".join(fields),
            first,
        )
        return dataset.select([i for i in range(len(dataset)) if i not in problems])
    record = {key: value for key, value in dataset[first].items() if value is not None}
    more = f" {len(problems) - 1} more record(s) lack a required field too." if len(problems) > 1 else ""
    raise DataError(
        f"{source}: record {first} has {problems[first]} (records count from 0; a {layout} record needs "
        f"{', '.join(map(repr, fields))}): {str(record)[:200]}.{more} Fix the data, or pass "
        "--skip_invalid_records true to leave such records out (metrics.json counts them)."
    )


def _convert_complete_records(
    dataset: Dataset,
    layout: str,
    convert: Callable[[dict[str, Any]], dict[str, Any]],
    source: str,
    skip: bool,
    for_dpo: bool = False,
) -> Dataset:
    """Every record through ``convert`` (its columns replaced by what it returns), once the records that lack
    a required field are refused or dropped (`_drop_or_refuse_incomplete`)."""
    dataset = _drop_or_refuse_incomplete(dataset, layout, source, skip, for_dpo)
    target = "prompt/chosen/rejected" if for_dpo else "messages"
    return dataset.map(convert, remove_columns=dataset.column_names, desc=f"{layout} -> {target}")


def to_messages(
    dataset: Dataset,
    system_prompt: str | None = None,
    *,
    source: str = "the instruction data",
    skip_invalid_records: bool = False,
) -> Dataset:
    """Any SFT layout (Alpaca, prompt/completion, messages, or a preference set's answers) as ``messages``.

    ``source`` names the data in errors (the file or Hub id). A record lacking a field its layout needs is
    a `DataError`, or with ``skip_invalid_records`` left out (``len(dataset) - len(result)`` of them).
    """
    layout = detect_format(dataset.column_names)
    convert = partial(_example_to_messages, layout=layout, system_prompt=system_prompt)
    return _convert_complete_records(dataset, layout, convert, source, skip_invalid_records)


def to_preference(
    dataset: Dataset,
    system_prompt: str | None = None,
    *,
    source: str = "the preference data",
    skip_invalid_records: bool = False,
) -> Dataset:
    """A preference dataset in TRL's conversational preference format (``prompt``, ``chosen``, ``rejected``).

    ``source`` and ``skip_invalid_records``: as in `to_messages`.

    Raises:
        DataError: the dataset has no ``chosen`` / ``rejected`` columns, or a record lacks one of them.
    """
    if detect_format(dataset.column_names) != "preference":
        raise DataError(
            f"DPO needs preference data: columns 'chosen' and 'rejected' plus 'instruction' or 'prompt'; "
            f"{source} has {dataset.column_names}. The book's file is instruction-data-with-preference.json."
        )
    convert = partial(preference_to_dpo, system_prompt=system_prompt)
    return _convert_complete_records(
        dataset, "preference", convert, source, skip_invalid_records, for_dpo=True
    )


def load_instruction_dataset(
    source: str | os.PathLike, split: str = "train", config: str | None = None
) -> Dataset:
    """Rows from a local ``.json`` (a list or JSON lines), ``.jsonl``, ``.csv``, ``.tsv``, ``.parquet`` file, or a
    Hub id.

    Raises:
        DataError: a local path that does not exist, has an extension no builder reads, holds no records
            or is malformed (for JSON: the line and column).
    """
    path = Path(source)
    if path.suffix.lower() in SUPPORTED_EXTENSIONS or path.exists():
        if not path.is_file():
            raise DataError(
                f"Instruction data {source} is not a file: pass a {', '.join(RECORD_EXTENSIONS)} file or a Hub id."
            )
        builder, options = file_builder(path, f"Instruction data {source}", RECORD_EXTENSIONS)
        return load_data_file(path, builder, **options)
    return load_dataset(str(source), name=config, split=split)


@dataclass
class InstructionDataArguments(ValidatedArguments):
    """Which instruction data to train on and how to hold some out (the SFT stage's evaluation takes the same,
    so the same flags hold out the same rows)."""

    dataset_name: str = field(
        metadata={
            "help": "Hub dataset id or local .json/.jsonl/.csv/.tsv/.parquet file (Alpaca, messages, "
            "prompt/completion, or chosen/rejected for DPO)."
        }
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on (Hub datasets)."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of the rows held out for eval loss and sample answers."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message put before every prompt."}
    )
    skip_invalid_records: bool = field(
        default=False,
        metadata={
            "help": "Leave out records that lack a required field (e.g. an Alpaca 'output') instead of "
            "stopping; metrics.json counts them."
        },
    )


def load_instruction_splits(
    data_args: InstructionDataArguments, convert: Callable[..., Dataset], seed: int
) -> tuple[DatasetDict, int]:
    """The instruction data in the trainer's format (``convert``: `to_messages` for SFT, `to_preference` for
    DPO), split into ``train`` and ``validation`` (eval loss and samples); and how many records were left out
    as invalid (``--skip_invalid_records``)."""
    records = load_instruction_dataset(
        data_args.dataset_name, split=data_args.dataset_train_split, config=data_args.dataset_config
    )
    dataset = convert(
        records,
        system_prompt=data_args.system_prompt,
        source=data_args.dataset_name,
        skip_invalid_records=data_args.skip_invalid_records,
    )
    skipped = len(records) - len(dataset)
    return split_train_validation(dataset, data_args.validation_fraction, seed=seed), skipped


def held_out_prompts(dataset: Dataset, count: int) -> list[dict[str, Any]]:
    """The first ``count`` rows of a ``messages`` or preference (``prompt``/``chosen``) dataset as a prompt
    (the turns before the answer) and the reference answer, for sample generations."""
    examples = []
    for row in dataset.select(range(min(count, len(dataset)))):
        if "messages" in row:
            messages = row["messages"]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            examples.append({"messages": messages[:last], "reference": messages[last]["content"]})
        else:
            examples.append({"messages": row["prompt"], "reference": row["chosen"][-1]["content"]})
    return examples


__all__ = [
    "InstructionDataArguments",
    "alpaca_to_messages",
    "alpaca_user_text",
    "detect_format",
    "held_out_prompts",
    "load_instruction_dataset",
    "load_instruction_splits",
    "preference_to_dpo",
    "prompt_completion_to_messages",
    "to_messages",
    "to_preference",
]
