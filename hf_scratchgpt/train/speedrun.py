"""Run a pipeline of stage scripts that hand over folders, within one time budget.

The main job (``training/speedrun.py``) is a list of `Stage`\\ s: each is a script run as its own process,
reading the folders of earlier stages and writing its own ``output_dir`` with a ``metrics.json`` written last.
`run_stages` runs them in order and:

* gives each stage its share of the time left (``weight`` against the stages still to run), passed as
  ``--time_budget MINUTES`` to the stages that size themselves to it;
* with ``resume``, skips stages whose ``metrics.json`` exists and re-runs an interrupted one with its
  ``resume_args`` (e.g. ``--resume_from_checkpoint latest``);
* stops at the first failing stage, leaving earlier outputs intact, and says which stage failed and the
  command that resumes;
* records what happened (stage times, budgets, skips) in ``RUN/speedrun.json`` for the report.

The report is then built only from those files (``hf_scratchgpt.publish.report.build_report``).

Also what the main job's script needs to say its stages in a few lines each: `StageCommands` (a stage from
its command line, written as in a shell script), `split_options` (which passed-through options go to which stage),
`fetch_task_data` / `task_file` (the fine-tuning and evaluation data, from a folder or a Hub dataset id) and
`resume_command`.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from ..data import DataError
from .hardware import describe_machine
from .stage_files import METRICS_FILE

RECORD_FILE = "speedrun.json"
# 0.001 min, the smallest --time_budget three decimals show: a spent budget must leave a stage less time than
# its own measuring takes, so the stage says the budget is too small on any machine, however fast.
MIN_STAGE_SECONDS = 0.06


class StageFailed(RuntimeError):
    """A stage's process exited with an error; the message names the stage and the command that resumes."""


@dataclass
class Stage:
    """One step of the main job: a command that writes ``output_dir`` (complete once metrics.json exists)."""

    name: str
    command: list[str]
    output_dir: Path
    weight: float = 0.0  # share of the time left, for stages with a budget_flag
    budget_flag: str | None = None  # e.g. "--time_budget": the stage is told its share, in minutes
    reserve_seconds: float = 20.0  # what the stage costs at least (process start, imports), kept for it
    resume_args: list[str] = field(default_factory=list)  # added when an earlier attempt was interrupted
    skip_reason: str | None = None  # set when the stage cannot run here (e.g. its data is missing)

    @property
    def complete(self) -> bool:
        return (self.output_dir / METRICS_FILE).is_file()


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def stage_command(template: str, **values: Any) -> list[str]:
    """This Python running ``template``, a command line written as in a shell script
    (``"{training}/train_tokenizer.py --data {run}/data --seed {seed}"``): split into words as a shell
    would, then each ``{name}`` filled in from ``values``, so a path with spaces stays one word. A word
    that is only ``{name}`` takes a list value as several words, and a ``None`` value leaves out the word
    and the ``--flag`` before it (the script's default applies)."""
    words: list[str] = []
    for word in shlex.split(template):
        whole = _PLACEHOLDER.fullmatch(word)
        value = values[whole.group(1)] if whole else None
        if whole and value is None:
            if words and words[-1].startswith("--"):
                words.pop()
        elif whole and isinstance(value, list | tuple):
            words += map(str, value)
        else:
            words.append(word.format(**values))
    return [sys.executable, *words]


@dataclass
class StageCommands:
    """The main job's stages, each from its command line (`stage_command`) filled in from ``values``, plus
    ``{out}``: the stage's output folder, ``run_dir / folder`` (default: its name)."""

    run_dir: Path
    values: dict[str, Any]

    def stage(self, name: str, template: str, folder: str | None = None, **options: Any) -> Stage:
        """A `Stage` running ``template``; ``options`` are `Stage`'s, and a stage with a ``weight`` is told
        its share of the time left with ``--time_budget`` (the flag of every script that sizes itself)."""
        output_dir = self.run_dir / (folder or name)
        if options.get("weight"):
            options.setdefault("budget_flag", "--time_budget")
        return Stage(name, stage_command(template, **self.values, out=output_dir), output_dir, **options)


def split_options(argv: list[str], names: Collection[str]) -> tuple[list[str], list[str]]:
    """Separate the options called ``names`` (``--name value`` or ``--name=value``, dashes or underscores)
    from the rest, each with its value: what one stage takes from a command line passed through to two."""
    chosen, rest = [], []
    i = 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0].lstrip("-").replace("-", "_")
        takes_next = "=" not in argv[i] and i + 1 < len(argv) and not argv[i + 1].startswith("--")
        width = 2 if takes_next else 1
        (chosen if name in names else rest).extend(argv[i : i + width])
        i += width
    return chosen, rest


# Where the main job's fine-tuning and evaluation stages find their data in --task_data_dir.
TASK_DATA_FOLDERS = ("classification", "instruction", "eval")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def fetch_task_data(source: str | None) -> Path | None:
    """``--task_data_dir``: a local folder as it is, or a Hub dataset id (``owner/name``) with the same layout
    (`TASK_DATA_FOLDERS`), downloaded once into the Hub cache with ``huggingface_hub.snapshot_download``.

    Raises:
        DataError: naming the value when it is neither, or the Hub's answer when the download fails.
    """
    if source is None:
        return None
    if Path(source).is_dir():
        return Path(source)
    if Path(source).exists() or not _HUB_ID.fullmatch(source):
        raise DataError(
            f"--task_data_dir {source}: not a folder nor a Hub dataset id (owner/name). Pass a folder laid out as "
            f"../shared/data ({', '.join(f'{name}/' for name in TASK_DATA_FOLDERS)}) or the id of a dataset repo "
            "holding those folders."
        )
    try:
        folder = snapshot_download(
            repo_id=source, repo_type="dataset", allow_patterns=[f"{name}/*" for name in TASK_DATA_FOLDERS]
        )
    except (HfHubHTTPError, LocalEntryNotFoundError) as error:
        raise DataError(
            f"--task_data_dir {source}: no such local folder, and the Hub dataset could not be downloaded "
            f"({type(error).__name__}: {error}). Check the id, the network (HF_HUB_OFFLINE) and HF_TOKEN."
        ) from error
    return Path(folder)


def task_file(task_data: Path | None, relative: str) -> tuple[str, str | None]:
    """The path of a file of the task data, and the reason to skip the stages that need it (None: it is there)."""
    if task_data is None:
        return "", f"no task data: pass --task_data_dir DIR (or a Hub dataset id) with {relative}"
    path = task_data / relative
    return str(path), None if path.is_file() else f"{path} not found"


def resume_command(script: str, argv: list[str]) -> str:
    """The command that continues an interrupted run: the same options, ``--resume`` instead of ``--overwrite``."""
    kept = [argument for argument in argv if argument != "--overwrite"]
    return shlex.join(["python", script, *kept, *([] if "--resume" in kept else ["--resume"])])


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to mix a new run into an old one: resume it, or pick another folder."""
    if run_dir.is_dir() and any(run_dir.iterdir()) and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(sorted(p.name for p in run_dir.iterdir()))}). "
            "Pass --resume to continue it (complete stages are skipped), --run_dir NEW for a fresh run, or "
            "--overwrite to delete it and start over."
        )


def run_stages(
    stages: list[Stage], run_dir: Path, budget_minutes: float | None, resume: bool, resume_command: str
) -> dict[str, Any]:
    """Run ``stages`` in order within ``budget_minutes`` (None: no budget); returns the run record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "budget_minutes": budget_minutes,
        "machine": describe_machine(),
        "stages": {},
    }
    started = time.perf_counter()
    for index, stage in enumerate(stages):
        entry: dict[str, Any] = {"output_dir": str(stage.output_dir)}
        record["stages"][stage.name] = entry
        if stage.skip_reason:
            print(f"== stage {stage.name}: skipped ({stage.skip_reason})", flush=True)
            entry.update(status="skipped", reason=stage.skip_reason)
            continue
        if resume and stage.complete:
            print(f"== stage {stage.name}: already complete in {stage.output_dir}, skipped", flush=True)
            entry.update(status="reused")
            continue
        command = list(stage.command)
        if budget_minutes and stage.budget_flag:
            to_run = [s for s in stages[index:] if not s.skip_reason and not (resume and s.complete)]
            left = budget_minutes * 60 - (time.perf_counter() - started)
            left -= sum(s.reserve_seconds for s in to_run[1:])  # what the later stages need at least
            share = max(left, 0.0) * stage.weight / sum(s.weight for s in to_run if s.budget_flag)
            # Never a budget of zero (a stage refuses it): a spent budget leaves a stage its minimum, and the
            # stage says the time is too short.
            share = max(share, MIN_STAGE_SECONDS)
            entry["budget_seconds"] = share
            command += [stage.budget_flag, f"{share / 60:.3f}"]
        if resume and stage.output_dir.exists():
            command += stage.resume_args
        entry["command"] = shlex.join(command)
        print(f"== stage {stage.name}: {entry['command']}", flush=True)
        stage_start = time.perf_counter()
        returncode = subprocess.run(command).returncode
        entry["seconds"] = time.perf_counter() - stage_start
        if returncode != 0 or not stage.complete:
            entry["status"] = "failed"
            _write_record(run_dir, record, started)
            done = [s.name for s in stages[:index] if s.complete]
            problem = f"exit code {returncode}" if returncode else f"no {METRICS_FILE} in {stage.output_dir}"
            raise StageFailed(
                f"stage {stage.name!r} failed ({problem}). Earlier stages' outputs are intact "
                f"({', '.join(done) or 'none'}). Resume with:\n    {resume_command}"
            )
        entry["status"] = "done"
    _write_record(run_dir, record, started)
    return record


def _write_record(run_dir: Path, record: dict[str, Any], started: float) -> None:
    record["total_seconds"] = time.perf_counter() - started
    (run_dir / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")


__all__ = [
    "RECORD_FILE",
    "TASK_DATA_FOLDERS",
    "Stage",
    "StageFailed",
    "check_run_dir",
    "fetch_task_data",
    "StageCommands",
    "stage_command",
    "resume_command",
    "run_stages",
    "split_options",
    "task_file",
]
