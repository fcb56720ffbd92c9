"""One configuration style for every script: dataclasses + ``HfArgumentParser`` + optional YAML file.

``--config FILE.yaml`` supplies defaults for any field of any of the script's dataclasses (including
``TrainingArguments``); anything given on the command line overrides the file. This is the pattern
TRL's scripts use, so a recipe is a small YAML file and every knob stays scriptable.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


def _read_yaml(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"--config {path}: no such file. Pass a YAML file such as training/configs/*.yaml."
        )
    settings = yaml.safe_load(file.read_text()) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"--config {path}: expected a mapping of field: value at the top level.")
    return settings


def parse_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse ``argv`` into instances of ``dataclass_types``, with defaults taken from ``--config``.

    Unknown keys in the YAML file or on the command line raise an error that names them.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)

    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--config", default=None, help="YAML file with defaults for any of the fields below.")
    if known.config:
        settings = _read_yaml(known.config)
        fields = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ValueError(
                f"--config {known.config}: unknown field(s) {unknown}. Valid fields: {sorted(fields)}."
            )
        parser.set_defaults(**settings)
        # A field the YAML file sets is no longer required on the command line.
        for action in parser._actions:
            if action.dest in settings:
                action.required = False
    *parsed, leftover = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    if leftover:
        parser.error(f"unrecognized arguments: {' '.join(leftover)}")
    # The parser hands back the non-dataclass `--config` in an extra namespace after the dataclasses.
    return tuple(parsed[: len(dataclass_types)])


__all__ = ["parse_args"]
