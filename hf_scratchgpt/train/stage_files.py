"""The JSON files a stage writes into its output folder, written one way by every script.

A stage of the main job (``hf_scratchgpt.train.speedrun``) is complete once its ``metrics.json`` exists, so every
script writes that file last, with `write_metrics`. It is written atomically (a temporary file renamed into
place): a process killed while writing leaves no ``metrics.json`` or a whole one, never half a file that
reads as "done". ``Trainer.save_metrics`` cannot serve here: it writes ``{split}_results.json``, only on the
trainer's numbers, while a stage's metrics also describe its data and outputs (and some stages have no
trainer). Other JSON outputs (``samples.json``, ``results.json``) go through `write_json` the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented UTF-8 JSON (text left readable: no ``\\u`` escapes), atomically;
    the parent folder is created if needed. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def write_metrics(output_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write a stage's ``metrics.json`` (its last file: see the module docstring). Returns its path."""
    return write_json(Path(output_dir) / METRICS_FILE, metrics)


def forget_metrics(output_dir: str | os.PathLike) -> None:
    """Remove a previous run's ``metrics.json``, so the stage reads as complete only once it is rewritten."""
    (Path(output_dir) / METRICS_FILE).unlink(missing_ok=True)


__all__ = ["METRICS_FILE", "forget_metrics", "write_json", "write_metrics"]
