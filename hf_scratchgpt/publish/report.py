"""The main job's report, built only from the files its stages wrote: loss curves, tables, samples.

``build_report(run_dir)`` reads ``RUN/speedrun.json`` (stage times and budgets) and each stage folder's
``metrics.json`` (plus ``trainer_state.json`` and ``samples.json`` where a stage wrote them), and writes
``RUN/report.md``, a loss-curve PNG per training stage and ``RUN/metrics.json`` (every stage's metrics in one
file). A stage that saved a model is shown with the same sections as its model card
(``hf_scratchgpt.publish.card_sections``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..train.hardware import machine_summary
from ..train.stage_files import METRICS_FILE, write_metrics
from .card_sections import render_sections
from .markdown import metrics_table
from .plots import loss_curves, plot_loss_curves


def _read_json(path: Path) -> Any:
    """The file's JSON (samples.json holds a list), or None where the stage did not write it."""
    return json.loads(path.read_text()) if path.is_file() else None


def _run_section(record: dict[str, Any], pretrain: dict[str, Any] | None) -> str:
    machine = (pretrain or {}).get("machine") or record["machine"]
    budget = record.get("budget_minutes")
    lines = [f"- **Machine**: {machine_summary(machine)}, torch {machine['torch']}"]
    if pretrain:
        if pretrain.get("device"):
            lines.append(f"- **Device**: {pretrain['device']}")
        lines.append(f"- **Precision**: {pretrain['precision']}")
    lines.append(
        f"- **Time budget**: {budget:g} min; whole job took {record['total_seconds'] / 60:.1f} min"
        if budget
        else f"- **Time budget**: none; whole job took {record['total_seconds'] / 60:.1f} min"
    )
    stage_times = []
    for name, entry in record["stages"].items():
        if entry["status"] == "done":
            share = f" (share {entry['budget_seconds']:.0f} s)" if "budget_seconds" in entry else ""
            stage_times.append(f"{name} {entry['seconds']:.0f} s{share}")
        else:
            stage_times.append(
                f"{name} {entry['status']}" + (f" ({entry['reason']})" if entry.get("reason") else "")
            )
    lines.append(f"- **Stages**: {' · '.join(stage_times)}")
    return "\n".join(lines)


def _model_sections(metrics: dict[str, Any], stage_dir: Path, run_dir: Path, name: str) -> str:
    """A stage that saved a model: the size rule (when a budget chose it), then the model card's sections."""
    lines = [f"**Warning**: {warning}\n" for warning in _quality_warnings(metrics)]
    budget = metrics.get("budget") or {}
    if budget.get("size_rule"):
        lines.append(f"**Model size chosen by**: {budget['size_rule']}.\n")
    if budget.get("planned_steps"):
        lines.append(
            f"**Schedule**: about {budget['planned_steps']:,} steps planned at the measured "
            f"{budget['seconds_per_step']:.3f} s/step; {metrics['train_steps']:,} trained"
            + (f" ({metrics['epoch']:.1f} epochs)" if "epoch" in metrics else "")
            + ", warmup and decay following the clock to the deadline.\n"
        )
    loss_curve = None
    state = _read_json(stage_dir / "trainer_state.json")
    if state and loss_curves(state["log_history"])["train"]:
        loss_curve = f"loss_curves_{name}.png"
        plot_loss_curves(state["log_history"], run_dir / loss_curve, title=f"ScratchGPT {name}")
    config = stage_dir / "config.json"
    for title, markdown in render_sections(
        metrics, config=config if config.is_file() else None, loss_curve=loss_curve
    ):
        lines.append(f"### {title}\n\n{markdown}\n")
    if loss_curve:
        lines.append(
            "(Validation points on the curve use an evenly spaced subset of the validation blocks when "
            "`max_eval_blocks` is set; the validation loss in the table uses all of them.)"
        )
    return "\n".join(lines)


def _quality_warnings(metrics: dict[str, Any]) -> list[str]:
    """Why a pretrained model may be worthless: a budget too small to train it, a loss at chance."""
    warnings = []
    budget = metrics.get("budget") or {}
    if budget.get("too_small"):
        more = budget["sufficient_budget_minutes"] - budget["time_budget_minutes"]
        warnings.append(
            f"pretraining's time ({budget['time_budget_minutes']:g} min) was too short to train a model clearly "
            f"better than chance on this machine (said before training started); it needed about "
            f"{budget['sufficient_budget_minutes']:g} min: raise --time_budget by at least {more:.2g} min"
        )
    if metrics.get("better_than_chance") is False:
        warnings.append(
            f"validation loss {metrics['eval_loss']:.3f} is no better than chance (ln {metrics['vocab_size']} "
            f"= {metrics['chance_loss']:.3f}): this model has learned nothing useful"
        )
    return warnings


def _samples_section(samples: list[dict[str, Any]]) -> str:
    parts = []
    for sample in samples:
        mode = f"**{sample['mode']}**, " if sample.get("mode") else ""
        parts.append(f"{mode}prompt `{sample['prompt']}`:\n\n```text\n{sample['output']}\n```")
    return "\n\n".join(parts)


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.md``, ``loss_curves.png`` and the merged ``metrics.json`` of a main-job run folder."""
    run_dir = Path(run_dir)
    record = _read_json(run_dir / "speedrun.json")
    if record is None:
        raise FileNotFoundError(
            f"{run_dir / 'speedrun.json'} is missing: is {run_dir} a main-job run folder?"
        )
    all_metrics: dict[str, Any] = {"run": record}
    sections: list[tuple[str, str]] = []
    pretrain = None
    for name, entry in record["stages"].items():
        stage_dir = Path(entry["output_dir"])
        metrics = _read_json(stage_dir / METRICS_FILE)
        if metrics is None:
            continue
        all_metrics[name] = metrics
        if name == "pretrain":
            pretrain = metrics
        if (stage_dir / "config.json").is_file():
            sections.append(
                (name.replace("_", " ").capitalize(), _model_sections(metrics, stage_dir, run_dir, name))
            )
        elif (stage_dir / "results.json").is_file():  # an evaluation: the model card's tables
            tables = render_sections(eval_results=stage_dir)
            sections.append((name.replace("_", " ").capitalize(), "\n\n".join(body for _, body in tables)))
        else:
            shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "corpus"}
            sections.append((name.replace("_", " ").capitalize(), metrics_table(shown)))
        samples = _read_json(stage_dir / "samples.json")
        if samples:
            sections.append((f"{name.replace('_', ' ').capitalize()}: samples", _samples_section(samples)))
    write_metrics(run_dir, all_metrics)
    parts = ["# ScratchGPT main-job report\n", _run_section(record, pretrain) + "\n"]
    parts += [f"## {title}\n\n{markdown}\n" for title, markdown in sections]
    report = run_dir / "report.md"
    report.write_text("\n".join(parts))
    return report


__all__ = ["build_report"]
