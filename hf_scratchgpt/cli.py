"""One configuration style for every script: dataclasses + ``HfArgumentParser`` + optional YAML file.

``--config FILE.yaml`` supplies defaults for any field of any of the script's dataclasses (including
``TrainingArguments``); anything given on the command line overrides the file. This is the pattern
TRL's scripts use, so a recipe is a small YAML file and every knob stays scriptable.

After parsing, every number is checked against one table of rules (``VALUE_RULES``: field name ->
rule), applied to whichever of the script's dataclasses has that field, so ``--max_steps -5`` or
``--block_size 0`` is refused up front with the flag named, in every script, instead of running
something else (``TrainingArguments`` treats any negative ``max_steps`` as "train by epochs").

Every script ends with ``if __name__ == "__main__": run_script(main)`` (the ``scratchgpt`` command calls
`run_command` too): an error this project raises on purpose (`DataError`, `DiskFullError`, a refused
argument, a ``FileExistsError`` for a used run folder, ...) is printed as ``script.py: error: <message>``,
without a traceback, and the exit status is 2 for a usage error, 1 otherwise. A failure in a model folder
named on the command line is reported as that folder being damaged (which file, and the fix). Anything
else keeps its full traceback, as does everything with ``SCRATCHGPT_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import yaml
from transformers import HfArgumentParser

from .checkpoints import DamagedModelError, damaged_model_error, looks_like_model_folder, model_folder_problem

# Set to 1 to see the full traceback of every error, the project's own messages included.
DEBUG_ENV = "SCRATCHGPT_DEBUG"
_PACKAGE_DIR = Path(__file__).resolve().parent


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


class InvalidArgumentsError(ValueError):
    """One or more parsed values make no sense; the message names every flag, its value and the rule."""


class Rule(NamedTuple):
    """A check on one field's value (given the whole dataclass instance, for rules that depend on another
    field) and what a valid value is, for the error message."""

    is_valid: Callable[[Any, Any], bool]
    expected: str


def _positive(value: Any, _: Any) -> bool:
    return value > 0


def _non_negative(value: Any, _: Any) -> bool:
    return value >= 0


def _fraction_open(value: Any, _: Any) -> bool:
    return 0 < value < 1


def _fraction_closed(value: Any, _: Any) -> bool:
    return 0 <= value <= 1


def _positive_when_strategy(strategy_field: str) -> Callable[[Any, Any], bool]:
    """Positive when ``strategy_field`` is "steps" (the only strategy that reads the value)."""

    def is_valid(value: Any, settings: Any) -> bool:
        strategy = getattr(settings, strategy_field, "steps")
        return value > 0 or getattr(strategy, "value", strategy) != "steps"  # an enum once parsed

    return is_valid


POSITIVE = Rule(_positive, "a positive number")
VALUE_RULES: dict[str, Rule] = {
    # TrainingArguments (and TRL configs, which inherit them)
    "max_steps": Rule(
        lambda v, _: v > 0 or v == -1, "a positive number of steps, or -1 to train --num_train_epochs"
    ),
    "num_train_epochs": Rule(
        lambda v, args: v > 0 or getattr(args, "max_steps", -1) > 0, "a positive number"
    ),
    "per_device_train_batch_size": POSITIVE,
    "per_device_eval_batch_size": POSITIVE,
    "gradient_accumulation_steps": POSITIVE,
    "eval_accumulation_steps": POSITIVE,
    "learning_rate": POSITIVE,
    "warmup_steps": Rule(_non_negative, "0 or more (a value below 1 is a fraction of the steps)"),
    "warmup_ratio": Rule(_fraction_closed, "a fraction in [0, 1]"),
    "weight_decay": Rule(_non_negative, "0 or more"),
    "max_grad_norm": Rule(_non_negative, "0 or more (0 turns clipping off)"),
    "label_smoothing_factor": Rule(lambda v, _: 0 <= v < 1, "a fraction in [0, 1)"),
    "logging_steps": Rule(
        _positive_when_strategy("logging_strategy"), "positive with --logging_strategy steps"
    ),
    "eval_steps": Rule(_positive_when_strategy("eval_strategy"), "positive with --eval_strategy steps"),
    "save_steps": Rule(_positive_when_strategy("save_strategy"), "positive with --save_strategy steps"),
    "save_total_limit": POSITIVE,
    "dataloader_num_workers": Rule(_non_negative, "0 or more"),
    "seed": Rule(_non_negative, "0 or more"),
    # this project's data, model and generation arguments
    "validation_fraction": Rule(_fraction_open, "a fraction strictly between 0 and 1"),
    "block_size": POSITIVE,
    "max_documents": POSITIVE,
    "max_eval_blocks": POSITIVE,
    "preprocessing_num_workers": POSITIVE,
    "tokenizer_vocab_size": POSITIVE,
    "vocab_size": POSITIVE,
    "sample_max_new_tokens": POSITIVE,
    "max_new_tokens": POSITIVE,
    "max_length": POSITIVE,
    "max_seq_length": POSITIVE,
    "lora_r": POSITIVE,
    "lora_alpha": POSITIVE,
    "lora_dropout": Rule(lambda v, _: 0 <= v < 1, "a fraction in [0, 1)"),
}


def _as_number(value: Any) -> int | float | None:
    """The numeric value of a parsed or YAML-given setting (PyYAML reads ``1e-3`` as a string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # unset, or a non-numeric value some script gives this name (e.g. "auto")


def check_values(*settings: Any) -> None:
    """Apply ``VALUE_RULES`` to every field of ``settings`` (dataclass instances or an argparse namespace)
    that has a rule; ``None`` means "not set" and passes.

    Raises:
        InvalidArgumentsError: naming every offending flag, its value and what it must be.
    """
    problems = []
    for setting in settings:
        for name, rule in VALUE_RULES.items():
            value = _as_number(getattr(setting, name, None))
            if value is not None and not rule.is_valid(value, setting):
                problems.append(f"--{name} {value:g}: must be {rule.expected}.")
    if problems:
        raise InvalidArgumentsError("Invalid arguments:\n  " + "\n  ".join(problems))


def parse_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse ``argv`` into instances of ``dataclass_types``, with defaults taken from ``--config``.

    Unknown keys in the YAML file or on the command line raise an error that names them; nonsense
    numbers raise ``InvalidArgumentsError`` (see ``VALUE_RULES``).
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
    namespace, leftover = parser.parse_known_args(args=rest)
    if leftover:
        parser.error(f"unrecognized arguments: {' '.join(leftover)}")
    # Checked before the dataclasses are built: their own __post_init__ checks name the flag less clearly.
    check_values(namespace)
    instances = []
    for cls in dataclass_types:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        instances.append(cls(**{name: value for name, value in vars(namespace).items() if name in names}))
    return tuple(instances)


def _is_projects_message(error: BaseException, script_dir: Path) -> bool:
    """Whether ``error`` is a message this project wrote for the user: a ``ValueError`` or ``OSError`` whose
    class is one of the project's (`DataError`, `DiskFullError`, ...) or that the project's own code raised
    (the innermost frame of its traceback is in this package or in the script's folder). Errors from inside
    other libraries are not: their traceback is what a bug report needs."""
    if not isinstance(error, ValueError | OSError):
        return False
    if type(error).__module__.split(".")[0] == __package__:
        return True
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return False
    raised_in = Path(frame.tb_frame.f_code.co_filename).resolve().parent
    return raised_in == script_dir or raised_in.is_relative_to(_PACKAGE_DIR)


def _damaged_folder_named_in(argv: Sequence[str]) -> DamagedModelError | None:
    """The error for the first model folder on the command line (``PATH`` or ``--flag=PATH``) that is damaged."""
    for value in argv:
        folder = value.split("=", 1)[-1] if value.startswith("--") else value
        if looks_like_model_folder(folder) and (problem := model_folder_problem(folder)):
            return damaged_model_error(folder, problem)
    return None


def run_command(main: Callable[..., Any], argv: list[str] | None = None) -> int:
    """Run a command-line entry point (``main()``, or ``main(argv)`` when ``argv`` is given) and return
    its exit status: its own ``int`` result, else 0.

    The project's error messages (see `_is_projects_message`) are printed on stderr as one line,
    ``PROG: error: MESSAGE``, with status 2 for an `InvalidArgumentsError` (a usage error, as argparse's)
    and 1 otherwise. Any other failure while a model folder named in ``argv`` (default: ``sys.argv``) is
    damaged becomes a `DamagedModelError` naming the folder, the file and the fix, printed the same way.
    Everything else propagates with its traceback, and everything does with ``SCRATCHGPT_DEBUG=1``.
    """
    code = getattr(main, "__code__", None)
    script_dir = Path(code.co_filename).resolve().parent if code else _PACKAGE_DIR
    try:
        result = main() if argv is None else main(argv)
    except Exception as error:
        if _is_projects_message(error, script_dir):
            message = error
        elif (message := _damaged_folder_named_in(sys.argv[1:] if argv is None else argv)) is None:
            raise
        if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
            if message is error:
                raise
            raise message from error
        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "scratchgpt"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2 if isinstance(message, InvalidArgumentsError) else 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def run_script(main: Callable[[], Any]) -> NoReturn:
    """``if __name__ == "__main__": run_script(main)``: exit with `run_command`'s status."""
    sys.exit(run_command(main))


__all__ = [
    "DEBUG_ENV",
    "VALUE_RULES",
    "InvalidArgumentsError",
    "Rule",
    "check_values",
    "parse_args",
    "run_command",
    "run_script",
]
