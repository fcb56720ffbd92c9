"""Zero/few-shot evaluation with lm-evaluation-harness, on local task files as well as its Hub tasks.

A task is named in one of four ways (see `resolve_tasks`):

* a bundled task, ``hellaswag_local``, ``arc_easy_local``, ``arc_challenge_local``, ``boolq_local``,
  ``winogrande_local``, whose file is found in ``data_dir`` under its usual name (`BUNDLED_TASKS`);
* ``NAME=FILE``: a bundled task, or ``multiple_choice`` / ``lambada``, or any new name, read from FILE;
* a path to a JSON/JSON-lines file, whose schema is recognised from its first record
  (``{query, choices, gold}``, ``{context, continuation}``, Winogrande's or HellaSwag's);
* anything else is one of lm-eval's own tasks (``arc_easy``, ``lambada_openai``, ...), which need the Hub.

The task YAMLs in ``tasks/`` are templates without a data file: for each run a two-line YAML that
includes the template and names the file is written to a temporary folder and handed to lm-eval's
``TaskManager(include_path=...)``, so the harness does all the prompting, scoring and aggregation.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..publish.markdown import format_number, is_number, markdown_table
from ..train.arguments import ValidatedArguments

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

# Bundled task name -> (template in TASKS_DIR, the file's name in a data folder such as ../shared/data/eval).
BUNDLED_TASKS: dict[str, tuple[str, str]] = {
    "hellaswag_local": ("hellaswag.yaml", "hellaswag_1k.jsonl"),
    "arc_easy_local": ("arc.yaml", "arc_easy.jsonl"),
    "arc_challenge_local": ("arc.yaml", "arc_challenge.jsonl"),
    "boolq_local": ("boolq.yaml", "boolq.jsonl"),
    "winogrande_local": ("winogrande.yaml", "winogrande.jsonl"),
}
GENERIC_TEMPLATES = {"multiple_choice": "multiple_choice.yaml", "lambada": "lambada.yaml"}

# Fields of a file's first record -> the template that reads that schema (first match wins).
SCHEMAS: list[tuple[frozenset[str], str]] = [
    (frozenset({"context_options", "continuation", "gold"}), "winogrande.yaml"),
    (frozenset({"ctx_a", "ctx_b", "activity_label", "endings", "label"}), "hellaswag.yaml"),
    (frozenset({"query", "choices", "gold"}), "multiple_choice.yaml"),
    (frozenset({"context", "continuation"}), "lambada.yaml"),
]
DATA_SUFFIXES = (".json", ".jsonl")


class TaskError(ValueError):
    """A task name, file or schema the harness cannot use; the message says what to pass instead."""


@dataclass(frozen=True)
class LocalTask:
    """An lm-eval task over a local file: its name in the results, its YAML template, its data and any
    further task settings (e.g. ``num_fewshot``, ``description``, ``fewshot_split``)."""

    name: str
    template: str
    data_file: Path
    settings: dict[str, Any] = field(default_factory=dict)


def first_record(path: Path) -> dict[str, Any]:
    """The first record of a JSON-lines file or of a JSON file holding a list of records (either suffix)."""
    text = path.read_text(encoding="utf-8")
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    try:
        record = json.loads(first_line)
    except json.JSONDecodeError:  # a JSON list spread over lines
        records = json.loads(text)
        record = records[0] if isinstance(records, list) and records else None
    if isinstance(record, list):  # a JSON list on one line
        record = record[0] if record else None
    if not isinstance(record, dict):
        raise TaskError(f"{path}: expected JSON records (one object per line in a .jsonl file).")
    return record


def detect_template(path: Path) -> str:
    """The task template whose schema the file's first record has."""
    fields = set(first_record(path))
    for required, template in SCHEMAS:
        if required <= fields:
            return template
    known = "; ".join("{" + ", ".join(sorted(required)) + "}" for required, _ in SCHEMAS)
    raise TaskError(f"{path}: fields {sorted(fields)} match no known schema. Use one of: {known}.")


def _file_task_name(path: Path) -> str:
    return re.sub(r"\W+", "_", path.stem).strip("_").lower() + "_file"


def _existing_file(path: str | Path, task: str) -> Path:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise TaskError(f"task {task!r}: data file {file} does not exist.")
    return file


def resolve_tasks(specs: list[str], data_dir: str | Path | None = None) -> tuple[list[LocalTask], list[str]]:
    """Split task specs (see the module docstring) into local tasks and lm-eval's own task names."""
    local: list[LocalTask] = []
    standard: list[str] = []
    for spec in (spec.strip() for spec in specs):
        if not spec:
            continue
        if "=" in spec:
            name, path = (part.strip() for part in spec.split("=", 1))
            file = _existing_file(path, name)
            if name in BUNDLED_TASKS:
                template = BUNDLED_TASKS[name][0]
            elif name in GENERIC_TEMPLATES:
                template, name = GENERIC_TEMPLATES[name], _file_task_name(file)
            else:
                template = detect_template(file)
            local.append(LocalTask(name, template, file))
        elif spec in BUNDLED_TASKS:
            template, file_name = BUNDLED_TASKS[spec]
            if data_dir is None:
                raise TaskError(
                    f"task {spec!r} reads a local file: pass --data_dir DIR holding {file_name} "
                    f"(e.g. ../shared/data/eval) or give the file as {spec}=PATH."
                )
            local.append(LocalTask(spec, template, _existing_file(Path(data_dir) / file_name, spec)))
        elif spec.endswith(DATA_SUFFIXES) or Path(spec).expanduser().is_file():
            file = _existing_file(spec, spec)
            local.append(LocalTask(_file_task_name(file), detect_template(file), file))
        else:
            standard.append(spec)
    names = [task.name for task in local] + standard
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TaskError(f"task name(s) {duplicates} given twice: rename one with NAME=FILE.")
    return local, standard


def write_task_yamls(tasks: list[LocalTask], directory: str | Path) -> None:
    """Write one YAML per task that includes its template and points lm-eval's json loader at its file."""
    for task in tasks:
        config = {
            "include": str(TASKS_DIR / task.template),
            "task": task.name,
            "dataset_kwargs": {"data_files": {"test": str(task.data_file)}},
            **task.settings,
        }
        (Path(directory) / f"{task.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class ModelLoadingArguments(ValidatedArguments):
    """How every evaluation script loads the model it scores (`load_model`, `load_lm`): the same flags."""

    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if any)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Load model code shipped with the model (without this package)."}
    )


@dataclass
class PromptingArguments(ModelLoadingArguments):
    """`ModelLoadingArguments`, and how lm-eval prompts the model (`evaluate_tasks`): the same flags in
    eval/run_lm_eval.py and eval/classification.py."""

    apply_chat_template: bool = field(
        default=False, metadata={"help": "Prompt an instruction model through its chat template."}
    )
    seed: int = field(default=1234, metadata={"help": "Seed of lm-eval's few-shot sampling."})


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    name_or_path: str,
    auto_class: type = AutoModelForCausalLM,
    *,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model folder or Hub id (through ``auto_class``) and its tokenizer, on ``device`` (default: cuda if
    there is one), in eval mode."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    model = auto_class.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return model.to(device or default_device()).eval(), tokenizer


def load_lm(
    model: Any,
    *,
    tokenizer: Any = None,
    batch_size: int | str = 1,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
) -> Any:
    """lm-eval's ``HFLM`` around a model folder, Hub id or loaded model (anything else is returned as is)."""
    from lm_eval.api.model import LM
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, LM):
        return model
    return HFLM(
        pretrained=model,
        backend="causal",  # every model here is a causal LM; lm-eval only guesses for types it has not listed
        tokenizer=tokenizer,
        device=device or default_device(),
        batch_size=batch_size,
        trust_remote_code=trust_remote_code,
        max_length=max_length,
    )


def evaluate_tasks(
    model: Any,
    tasks: list[str | LocalTask],
    *,
    tokenizer: Any = None,
    data_dir: str | Path | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 1,
    device: str | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
    apply_chat_template: bool = False,
    seed: int = 1234,
) -> dict[str, Any]:
    """Run lm-eval's ``simple_evaluate`` and return its result dict, per-sample records included.

    Args:
        model: a model folder or Hub id, a loaded ``PreTrainedModel`` (then pass ``tokenizer``), or
            any ``lm_eval.api.model.LM``.
        tasks: task specs (see the module docstring) or ready-made `LocalTask`s.
        data_dir: the folder bundled tasks find their files in.
        max_length: context length for the harness (default: the model's ``max_position_embeddings``);
            longer requests are truncated from the left, as lm-eval always does.
        apply_chat_template: wrap each prompt (few-shot examples as earlier turns) in the model's chat
            template, for instruction-tuned models; the answer is scored as the assistant's reply.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    local, standard = resolve_tasks([spec for spec in tasks if isinstance(spec, str)], data_dir)
    local += [task for task in tasks if isinstance(task, LocalTask)]
    if not local and not standard:
        raise TaskError("no task given: pass --tasks with at least one task.")
    model = load_lm(
        model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        device=device,
        trust_remote_code=trust_remote_code,
        max_length=max_length,
    )
    with tempfile.TemporaryDirectory(prefix="scratchgpt-tasks-") as include_path:
        write_task_yamls(local, include_path)
        # Indexing lm-eval's thousands of built-in YAMLs takes seconds: only when one is asked for.
        manager = TaskManager(include_path=include_path, include_defaults=bool(standard))
        return simple_evaluate(
            model=model,
            tasks=[task.name for task in local] + standard,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=True,
            apply_chat_template=apply_chat_template,
            bootstrap_iters=1000,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )


def random_baselines(results: dict[str, Any]) -> dict[str, float | None]:
    """Accuracy of guessing uniformly at random, per task: the mean of 1/(number of choices) over the
    scored documents of a multiple-choice task; None for other kinds of task."""
    baselines: dict[str, float | None] = {}
    for task, samples in results.get("samples", {}).items():
        output_type = results["configs"][task].get("output_type")
        if output_type == "multiple_choice" and samples:
            baselines[task] = sum(1 / len(sample["arguments"]) for sample in samples) / len(samples)
        else:
            baselines[task] = None
    return baselines


class LmEvalScore(NamedTuple):
    """One score of lm-eval's ``results`` section: ``results[task]["acc,none"]`` is task, metric and filter."""

    task: str
    metric: str
    filter: str
    value: float
    stderr: float | None


def lm_eval_scores(results: dict[str, Any]) -> Iterator[LmEvalScore]:
    """Every score in lm-eval's ``results`` section (of `evaluate_tasks`' result or a saved results.json), with
    its standard error where lm-eval computed one. Keys are ``"metric,filter"`` (``"acc,none"``), the error
    under ``"metric_stderr,filter"``; comma-less keys (``"alias"``, ``"sample_len"``) are bookkeeping."""
    for task, scores in results["results"].items():
        for key, value in scores.items():
            metric, comma, filter_name = key.partition(",")
            if not comma or not is_number(value) or metric.endswith("_stderr"):
                continue
            stderr = scores.get(f"{metric}_stderr,{filter_name}")
            yield LmEvalScore(task, metric, filter_name, value, stderr if is_number(stderr) else None)


def flat_metrics(results: dict[str, Any]) -> dict[str, float | None]:
    """``{"task/metric": value, "task/random_baseline": value}``: the flat view for metrics.json."""
    flat: dict[str, float | None] = {f"{s.task}/{s.metric}": float(s.value) for s in lm_eval_scores(results)}
    for task, baseline in random_baselines(results).items():
        flat[f"{task}/random_baseline"] = baseline
    return flat


def results_table(results: dict[str, Any]) -> str:
    """Markdown of lm-eval's results (as `evaluate_tasks` returns them, or a saved results.json): one row per
    task and metric, the random-guess accuracy beside every accuracy, the number of scored examples, and a
    note when lm-eval's ``--limit`` cut the tasks short. The model card and the run report show this table."""
    chance = results.get("random_baseline") or random_baselines(results)
    shots, samples = results.get("n-shot", {}), results.get("n-samples", {})
    rows = []
    for task, metric, filter_name, value, stderr in lm_eval_scores(results):
        guess = chance.get(task) if metric.startswith("acc") else None
        rows.append(
            (
                task,
                shots.get(task, ""),
                metric if filter_name == "none" else f"{metric} ({filter_name})",
                format_number(value),
                "" if stderr is None else format_number(stderr),
                format_number(guess) if is_number(guess) else "",
                samples.get(task, {}).get("effective", ""),
            )
        )
    header = ("task", "shots", "metric", "value", "± stderr", "random guess", "examples")
    table = markdown_table(header, rows, align="lrlrrrr")
    limit = (results.get("config") or {}).get("limit")
    if not limit:
        return table
    # lm-eval's --limit: a count, or a fraction of each task when below 1.
    share = f"{limit:.0%} of the examples" if limit < 1 else f"At most {format_number(limit)} examples"
    return f"{table}\n\n{share} per task (`--limit`): a quick check, not a full benchmark."


def save_results(results: dict[str, Any], output_dir: str | Path) -> dict[str, float | None]:
    """Write ``results.json`` (lm-eval's layout plus ``random_baseline``), ``samples_TASK.jsonl`` and
    ``results.md``; return the flat metrics for the caller's metrics.json."""
    from lm_eval.utils import handle_non_serializable

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    summary = {key: value for key, value in results.items() if key != "samples"}
    summary["random_baseline"] = random_baselines(results)
    (output / "results.json").write_text(json.dumps(summary, indent=2, default=handle_non_serializable))
    for task, samples in results.get("samples", {}).items():
        with (output / f"samples_{task}.jsonl").open("w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps(sample, default=handle_non_serializable) + "\n")
    (output / "results.md").write_text(results_table(summary) + "\n")
    return flat_metrics(results)
