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
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hardware import describe_machine

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
        return (self.output_dir / "metrics.json").is_file()


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
            problem = f"exit code {returncode}" if returncode else f"no metrics.json in {stage.output_dir}"
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


__all__ = ["RECORD_FILE", "Stage", "StageFailed", "check_run_dir", "run_stages"]
