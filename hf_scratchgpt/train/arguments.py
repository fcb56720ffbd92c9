"""One configuration style for every script: dataclasses parsed by ``trl.TrlParser``, with an optional YAML file.

``--config FILE.yaml`` supplies defaults for any field of any of the script's dataclasses (including
``TrainingArguments``); anything given on the command line overrides the file. This is the pattern
TRL's scripts use, so a recipe is a small YAML file and every knob stays scriptable.

Every number is checked against one table of rules (``VALUE_RULES``: field name -> rule) when its dataclass
is built: the project's dataclasses run it from ``__post_init__`` (`ValidatedArguments`), and the parser
runs it for any other dataclass it is given. So ``--max_steps -5`` or ``--block_size 0`` is refused up front
with the flag named, in every script, instead of running something else (``TrainingArguments`` treats any
negative ``max_steps`` as "train by epochs").

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

from trl import TrlParser

from .checkpoints import DamagedModelError, damaged_model_error, looks_like_model_folder, model_folder_problem

# Set to 1 to see the full traceback of every error, the project's own messages included.
DEBUG_ENV = "SCRATCHGPT_DEBUG"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


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
FRACTION_BELOW_ONE = Rule(lambda v, _: 0 <= v < 1, "a fraction in [0, 1)")
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
    "label_smoothing_factor": FRACTION_BELOW_ONE,
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
    "lora_dropout": FRACTION_BELOW_ONE,
    "muon_learning_rate": POSITIVE,
    "muon_momentum": FRACTION_BELOW_ONE,
    "budget_probe_steps": Rule(lambda v, _: v >= 2, "2 or more (the first step is not timed)"),
    "eval_limit": POSITIVE,
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


def check_choice(flag: str, value: Any, allowed: Sequence[str]) -> None:
    """Refuse a word-valued setting outside ``allowed`` (``None``, unset, passes), naming the flag and the
    allowed values, where a library would otherwise treat any unknown word as its default."""
    if value is not None and value not in allowed:
        raise InvalidArgumentsError(f"--{flag} {value}: must be one of {', '.join(allowed)}.")


class ValidatedArguments:
    """Mixin for an arguments dataclass: its numbers are checked against `VALUE_RULES` when it is built.

    The check runs in ``__post_init__``, before any parent class's own (``TrainingArguments`` would turn
    ``--eval_steps 0`` into ``--logging_steps`` without a word), so a nonsense value is refused naming the
    flag whether the dataclass comes from a command line, a YAML file or Python. Put it first among the
    bases: ``class SFTArguments(ValidatedArguments, PrecisionArguments, SFTConfig)``.
    """

    def __post_init__(self) -> None:
        check_values(self)
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()


class ArgumentParser(TrlParser):
    """``trl.TrlParser``: ``--config FILE.yaml`` (also ``--config=FILE.yaml``) gives defaults for any field of
    the dataclasses (and an ``env:`` mapping of environment variables), the command line overrides them.

    Added: a missing config file or an unknown field in it is named with the valid fields; an unknown flag is
    argparse's usage error; the numbers of a dataclass that does not check itself (one without
    `ValidatedArguments`, e.g. a library's) are checked against `VALUE_RULES` before it is built.
    """

    def __init__(self, dataclass_types: Sequence[type]) -> None:
        super().__init__(dataclass_types)
        # Listed in --help; TrlParser takes `--config FILE` out of the arguments before argparse sees them.
        self.add_argument(
            "--config",
            default=argparse.SUPPRESS,
            metavar="FILE.yaml",
            help="YAML file with defaults for any of the fields below.",
        )
        self.config_file: str | None = None
        self._unchecked_fields = {
            field.name
            for cls in dataclass_types
            if not issubclass(cls, ValidatedArguments)
            for field in dataclasses.fields(cls)
        }

    def parse_args_and_config(self, args: Sequence[str] | None = None, **kwargs: Any) -> tuple[Any, ...]:
        args = [
            part
            for arg in (sys.argv[1:] if args is None else args)
            for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])
        ]
        if "--config" in args:
            if args.index("--config") == len(args) - 1:
                self.error("argument --config: expected one argument (a YAML file)")
            self.config_file = args[args.index("--config") + 1]
            if not Path(self.config_file).is_file():
                raise FileNotFoundError(
                    f"--config {self.config_file}: no such file. Pass a YAML file such as training/configs/*.yaml."
                )
        return super().parse_args_and_config(args, **kwargs)

    def set_defaults_with_config(self, **settings: Any) -> list[str]:
        unknown = super().set_defaults_with_config(**settings)
        if unknown:
            fields = sorted(action.dest for action in self._actions if action.dest not in ("help", "config"))
            names = sorted(flag.removeprefix("--") for flag in unknown[::2])  # ["--name", "value", ...]
            raise ValueError(
                f"--config {self.config_file}: unknown field(s) {names}. Valid fields: {fields}."
            )
        return unknown

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        unchecked = {name: value for name, value in vars(parsed).items() if name in self._unchecked_fields}
        check_values(argparse.Namespace(**unchecked))
        return parsed, rest


def parse_args(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse ``argv`` (default: the command line) into instances of ``dataclass_types``, with defaults taken
    from ``--config FILE.yaml`` (see `ArgumentParser`).

    Unknown keys in the YAML file or on the command line raise an error that names them; nonsense numbers
    raise `InvalidArgumentsError` naming every offending flag of a dataclass (see ``VALUE_RULES``).
    """
    parser = ArgumentParser(dataclass_types)
    *instances, leftover = parser.parse_args_and_config(argv, return_remaining_strings=True)
    if leftover:
        parser.error(f"unrecognized arguments: {' '.join(leftover)}")
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
    "ArgumentParser",
    "DEBUG_ENV",
    "VALUE_RULES",
    "InvalidArgumentsError",
    "Rule",
    "ValidatedArguments",
    "check_choice",
    "check_values",
    "parse_args",
    "run_command",
    "run_script",
]
