"""The Markdown sections of a model card, shared with the run report: model, training data, training procedure,
evaluation, and export parity, each rendered only from the files the stages wrote.

    for title, markdown in render_sections(metrics, eval_results, config="RUN/pretrain/config.json"):
        ...

The inputs are read here too: a stage's ``metrics.json`` (flat JSON; a list of them is merged in order, so a
card can show the data and tokenizer stages' rows beside pretraining's), and evaluation results (lm-eval's
``results.json`` layout, or any flat metrics JSON). `hf_scratchgpt.publish.cards` puts the sections into the card.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..evaluation.harness import results_table
from ..train.stage_files import METRICS_FILE
from .markdown import format_number, is_number, markdown_table

LM_EVAL_SOURCE = "lm-evaluation-harness"

# config.json key -> row label of the architecture table (keys absent from a config are skipped).
ARCHITECTURE_ROWS = {
    "model_type": "model type",
    "architectures": "head",
    "num_hidden_layers": "layers",
    "hidden_size": "hidden size",
    "num_attention_heads": "attention heads",
    "num_key_value_heads": "key/value heads",
    "intermediate_size": "MLP size",
    "mlp_type": "MLP",
    "max_position_embeddings": "context length",
    "position_embedding_type": "positions",
    "rope_theta": "RoPE theta",
    "norm_type": "normalisation",
    "qk_norm": "QK-norm",
    "bias": "biases",
    "tie_word_embeddings": "tied input/output embeddings",
    "vocab_size": "vocabulary",
    "dtype": "saved dtype",
}
ADAPTER_ROWS = {
    "peft_type": "adapter",
    "task_type": "task",
    "r": "rank r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "target_modules": "target modules",
    "modules_to_save": "trained in full",
}
# Stage metrics -> (label, unit) of the training-procedure table, in this order.
TRAINING_ROWS = {
    "max_steps": ("optimizer steps (budget)", ""),
    "train_steps": ("optimizer steps", ""),
    "epoch": ("epochs", ""),
    "tokens_seen": ("training tokens seen", ""),
    "block_size": ("sequence length", "tokens"),
    "train_runtime": ("training time", "s"),
    "train_samples_per_second": ("throughput", "sequences/s"),
    "world_size": ("processes", ""),
    "precision": ("precision", ""),
    "train_loss": ("mean training loss", "nats/token"),
    "eval_loss": ("validation loss", "nats/token"),
    "eval_perplexity": ("validation perplexity", ""),
    "eval_bits_per_byte": ("validation bits per byte", ""),
}
# Written by the data stage (training/prepare_data.py: corpus_documents), the tokenizer stage
# (training/train_tokenizer.py: vocab_size, tokenizer_bytes_per_token) and pretraining (the others, vocab_size):
# a card shows the rows of the stage metrics it is given (`merge_metrics`).
DATA_ROWS = {
    "corpus": ("corpus", ""),
    "corpus_documents": ("documents", ""),
    "train_blocks": ("training sequences", ""),
    "eval_blocks": ("validation sequences", ""),
    "vocab_size": ("tokenizer vocabulary", "tokens"),
    "tokenizer_bytes_per_token": ("bytes per token (validation text)", ""),
}
# Keys of a flat evaluation JSON that describe the run rather than score the model.
_NOT_A_SCORE = re.compile(
    r"runtime|per_second|seconds|^num_|samples$|steps$|^epoch$|flos|^limit$|^seed$|baseline|majority_class"
)


class CardError(ValueError):
    """A card input is missing or malformed; the message names the file and the fix."""


def load_json(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object from a dict, a ``.json`` file, or an evaluation stage's folder.

    In a folder, lm-eval's ``results.json`` is read when it has lm-eval's layout, else the stage's flat
    ``metrics.json`` (other harnesses nest their results.json per method), else ``results.json``.
    """
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        results, metrics = path / "results.json", path / METRICS_FILE
        if not results.is_file() and not metrics.is_file():
            raise CardError(f"{path} holds neither results.json nor metrics.json.")
        if results.is_file() and (
            not metrics.is_file() or isinstance(load_json(results).get("results"), dict)
        ):
            return load_json(results)
        path = metrics
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CardError(f"{path} does not exist: pass the metrics/results JSON a stage wrote.") from err
    except json.JSONDecodeError as err:
        raise CardError(f"{path} is not valid JSON ({err}).") from err
    if not isinstance(data, dict):
        raise CardError(f"{path} holds a JSON {type(data).__name__}, not an object.")
    return data


def merge_metrics(metrics: Any) -> dict[str, Any]:
    """One flat dict from a dict, a path, or a list of them (later stages win on shared keys)."""
    if metrics is None:
        return {}
    if isinstance(metrics, (str, Path, Mapping)):
        return load_json(metrics)
    merged: dict[str, Any] = {}
    for item in metrics:
        merged.update(load_json(item))
    return merged


def evaluation_sources(eval_results: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, JSON) per evaluation source; a file is named by its folder (``RUN/eval/ppl/metrics.json``: ppl)."""
    if eval_results is None:
        return []
    if isinstance(eval_results, (str, Path, Mapping)):
        eval_results = [eval_results]
    out = []
    for index, item in enumerate(eval_results):
        data = load_json(item)
        if isinstance(item, Mapping):
            name = str(data.get("name") or data.get("task") or f"evaluation {index + 1}")
        else:
            path = Path(item)
            name = str(data.get("name") or data.get("task") or (path if path.is_dir() else path.parent).name)
        out.append((name, data))
    return out


def flat_scores(data: dict[str, Any]) -> dict[str, Any]:
    """The scores of a flat JSON: its numbers that are not bookkeeping; held-out ``test_*`` ones when present
    (a fine-tuning stage also reports its training and validation loss)."""
    scores = {key: value for key, value in data.items() if is_number(value) and not _NOT_A_SCORE.search(key)}
    test = {key.removeprefix("test_"): value for key, value in scores.items() if key.startswith("test_")}
    return test or scores


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = format_number(value)
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    if unit == "s" and is_number(value) and value >= 120:
        return f"{text} s ({value / 60:.1f} min)"
    return f"{text} {unit}".rstrip()


def count_parameters(model_dir: str | Path) -> int | None:
    """Parameters stored in a folder's safetensors files (tied weights are stored, and counted, once)."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), "pt") as handle:
            for name in handle.keys():
                numel = 1
                for size in handle.get_slice(name).get_shape():
                    numel *= size
                total += numel
    return total


def _model_section(
    config: dict[str, Any],
    adapter: dict[str, Any],
    num_parameters: int | None,
    non_embedding: int | None = None,
) -> str:
    parts = []
    if config:
        rows = [
            (label, _fmt(config[key]))
            for key, label in ARCHITECTURE_ROWS.items()
            if key in config
            and not (key == "rope_theta" and config.get("position_embedding_type") == "learned")
        ]
        parts.append(markdown_table(("architecture", ""), rows))
    if adapter:
        rows = [(label, _fmt(adapter[key])) for key, label in ADAPTER_ROWS.items() if adapter.get(key)]
        base = adapter.get("base_model_name_or_path")
        parts.append(
            (f"An adapter on **{base}**.\n\n" if base else "") + markdown_table(("adapter", ""), rows)
        )
    if num_parameters:
        what = "trainable adapter parameters" if adapter and not config else "parameters"
        extra = f", {non_embedding:,} outside the embeddings" if non_embedding else ""
        parts.append(f"**{num_parameters:,} {what}** ({num_parameters / 1e6:.2f} M{extra}).")
    return "\n\n".join(parts)


def _machine(metrics: dict[str, Any]) -> str | None:
    machine = metrics.get("machine")
    if isinstance(machine, dict):
        from ..train.hardware import machine_summary

        try:
            return machine_summary(machine)
        except KeyError:
            return ", ".join(f"{k}: {_fmt(v)}" for k, v in machine.items())
    return str(machine) if machine else None


def _training_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (label, _fmt(metrics[key], unit)) for key, (label, unit) in TRAINING_ROWS.items() if key in metrics
    ]
    needed = ("tokens_seen", "train_samples_per_second", "train_runtime", "block_size")
    if "tokens_seen" not in metrics and all(key in metrics for key in needed[1:]):
        estimate = metrics["train_samples_per_second"] * metrics["train_runtime"] * metrics["block_size"]
        rows.insert(0, ("training tokens seen (from throughput)", f"≈ {estimate:,.0f}"))
    if machine := _machine(metrics):
        rows.append(("machine", machine))
    return rows


def _all_metrics(metrics: dict[str, Any]) -> str:
    rows = [(f"`{key}`", _fmt(value)) for key, value in metrics.items() if not isinstance(value, dict)]
    return f"<details><summary>All stage metrics</summary>\n\n{markdown_table(('key', 'value'), rows)}\n\n</details>"


def _evaluation_tables(eval_results: Any) -> list[str]:
    tables = []
    for name, data in evaluation_sources(eval_results):
        if isinstance(data.get("results"), dict):
            tables.append(f"**{name}** ({LM_EVAL_SOURCE})\n\n{results_table(data)}")
        else:
            rows = [(f"`{key}`", _fmt(value)) for key, value in flat_scores(data).items()]
            # Baselines (random guess, majority class) go beside the scores, never into the model-index.
            rows += [
                (f"`{key}` (baseline)", _fmt(value))
                for key, value in data.items()
                if is_number(value) and re.search("baseline|majority_class", key)
            ]
            if rows:
                tables.append(f"**{name}**\n\n" + markdown_table(("metric", "value"), rows))
    return tables


def render_sections(
    metrics: Any = None,
    eval_results: Any = None,
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    adapter_config: str | Path | Mapping[str, Any] | None = None,
    num_parameters: int | None = None,
    loss_curve: str | None = None,
) -> list[tuple[str, str]]:
    """The data sections of a card or report, as (title, Markdown) pairs; empty sections are left out.

    ``metrics``: the stage metrics (dict, JSON path, or a list merged in order); ``eval_results``:
    results JSONs (lm-eval layout or flat); ``config``: ``config.json`` (path or dict) for the
    architecture table; ``loss_curve``: an image path relative to where the Markdown is written.
    """
    metrics = merge_metrics(metrics)
    config = load_json(config) if config is not None else {}
    adapter = load_json(adapter_config) if adapter_config is not None else {}
    num_parameters = num_parameters or metrics.get("num_parameters")
    non_embedding = metrics.get("non_embedding_parameters")
    sections = [("Model", _model_section(config, adapter, num_parameters, non_embedding))]

    data_rows = [
        (label, _fmt(metrics[key], unit)) for key, (label, unit) in DATA_ROWS.items() if key in metrics
    ]
    sections.append(("Training data", markdown_table(("data", ""), data_rows) if data_rows else ""))
    training_rows = _training_rows(metrics)
    procedure = [markdown_table(("training", ""), training_rows)] if training_rows else []
    if metrics:
        procedure.append(_all_metrics(metrics))
    sections.append(("Training procedure", "\n\n".join(procedure)))

    evaluation = _evaluation_tables(eval_results)
    if loss_curve:
        evaluation.append(f"![training and validation loss]({loss_curve})")
    sections.append(("Evaluation", "\n\n".join(evaluation)))
    return [(title, body) for title, body in sections if body]


# `scratchgpt verify` (hf_scratchgpt.publish.export.verify) writes its result here; the card shows it as a section.
PARITY_FILE = "parity.json"
PARITY_TITLE = "Export parity"


def parity_section(parity: Mapping[str, Any]) -> str:
    """The Markdown of `scratchgpt verify`'s result: one row per loading path, versions and machine."""
    rows = []
    for row in parity["rows"]:
        diff = "" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.3g}"
        bound = f"{row['bound']:.3g}" if row.get("bound") else ""
        result = "ok" if row["passed"] else f"**mismatch**: {row['note']}"
        rows.append(
            (
                row["path"],
                row["precision"],
                diff,
                bound,
                row["tokens_identical"],
                row["tokenizer_round_trip"],
                result,
            )
        )
    header = (
        "path",
        "weights",
        "max \\|logit diff\\|",
        "bound",
        "greedy tokens identical",
        "tokenizer round trip",
        "result",
    )
    lines = [markdown_table(header, rows, align="llrrrll")]
    versions = ", ".join(f"{name} {version}" for name, version in parity.get("versions", {}).items())
    lines += [
        "",
        f"{parity['prompts']} prompts, {parity['new_tokens']} greedy tokens each; bound = relative bound "
        f"of the weight type × the largest reference logit ({parity['reference_logit_scale']:.3g}). "
        f"Measured with {versions} on {parity.get('machine', 'an unnamed machine')}.",
    ]
    lines += [f"Not checked: {reason}." for reason in parity.get("skipped", [])]
    return "\n".join(lines)


__all__ = [
    "ADAPTER_ROWS",
    "ARCHITECTURE_ROWS",
    "DATA_ROWS",
    "LM_EVAL_SOURCE",
    "PARITY_FILE",
    "PARITY_TITLE",
    "TRAINING_ROWS",
    "CardError",
    "count_parameters",
    "evaluation_sources",
    "flat_scores",
    "load_json",
    "merge_metrics",
    "parity_section",
    "render_sections",
]
