"""The main job's report, built from a run folder's files alone (a model stage, an lm-eval stage, a data stage,
a skipped stage), and the publishing package free of import cycles (the card and the report once imported
each other)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from conftest import REPO, tiny_model

from hf_scratchgpt.publish.report import build_report
from hf_scratchgpt.train.hardware import describe_machine

LM_EVAL = {
    "results": {"arc_easy_local": {"alias": "arc_easy_local", "acc,none": 0.3125, "acc_stderr,none": 0.0832}},
    "n-shot": {"arc_easy_local": 0},
    "n-samples": {"arc_easy_local": {"original": 2376, "effective": 32}},
    "config": {"limit": 32},
    "random_baseline": {"arc_easy_local": 0.25},
}


def _stage(run: Path, name: str, metrics: dict, status: str = "done") -> dict:
    folder = run / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return {"output_dir": str(folder), "status": status, "seconds": 12.0}


def test_report_shows_every_stage_from_its_files(tmp_path):
    run = tmp_path / "run"
    machine = describe_machine(use_cpu=True)
    stages = {"data": _stage(run, "data", {"corpus": "stories.txt", "corpus_documents": 200})}
    pretrain = {
        "train_steps": 8,
        "eval_loss": 4.5,
        "train_loss": 4.75,
        "precision": "fp32",
        "machine": machine,
    }
    stages["pretrain"] = _stage(run, "pretrain", pretrain)
    tiny_model().save_pretrained(run / "pretrain")
    log = [{"step": 4, "loss": 5.0}, {"step": 8, "loss": 4.75}, {"step": 8, "eval_loss": 4.5}]
    (run / "pretrain" / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    (run / "pretrain" / "samples.json").write_text(json.dumps([{"prompt": "Once", "output": "Once upon"}]))
    stages["lm_eval"] = _stage(run, "lm_eval", {"arc_easy_local/acc": 0.3125})
    (run / "lm_eval" / "results.json").write_text(json.dumps(LM_EVAL))
    stages["sft"] = {"output_dir": str(run / "sft"), "status": "skipped", "reason": "no instruction data"}
    record = {"machine": machine, "budget_minutes": 15, "total_seconds": 600.0, "stages": stages}
    (run / "speedrun.json").write_text(json.dumps(record))

    text = build_report(run).read_text()

    assert "whole job took 10.0 min" in text and "sft skipped (no instruction data)" in text
    assert "| corpus_documents | 200 |" in text  # a stage without a model: its metrics table
    # lm-eval's table, as on the model cards: task, shots, metric, value, stderr, random guess, examples
    assert "| arc_easy_local | 0 | acc | 0.3125 | 0.0832 | 0.25 | 32 |" in text
    assert "At most 32 examples per task (`--limit`)" in text
    assert "![training and validation loss](loss_curves_pretrain.png)" in text
    assert (run / "loss_curves_pretrain.png").read_bytes().startswith(b"\x89PNG")
    assert "prompt `Once`:\n\n```text\nOnce upon\n```" in text
    merged = json.loads((run / "metrics.json").read_text())
    assert merged["pretrain"]["eval_loss"] == 4.5 and merged["run"]["budget_minutes"] == 15


def _imports(path: Path, package_root: Path) -> set[str]:
    """The package modules a file imports, anywhere in it (a lazy import inside a function closes a cycle
    as surely as one at the top)."""
    module = ".".join(path.relative_to(package_root.parent).with_suffix("").parts)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            target = ".".join(part for part in (base, node.module) if part)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_module_of_the_package_imports_itself_through_others():
    root = REPO / "hf_scratchgpt"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: _imports(path, root) & set(modules) - {name} for name, path in modules.items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [[start]], {start}
        while stack:
            chain = stack.pop()
            for nxt in graph[chain[-1]]:
                if nxt == goal:
                    return [*chain, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append([*chain, nxt])
        return None

    cycles = [chain for name in graph if (chain := reaches(name, name))]
    assert not cycles, f"import cycles: {cycles}"
