"""Model cards: the Hub's README.md (YAML metadata, ``model-index``, sections) built from a run's files.

A card is rendered only from what the stages wrote: the model folder (``config.json`` or
``adapter_config.json``, the weights, ``trainer_state.json``), the stage's ``metrics.json`` (flat
JSON) and evaluation results (lm-eval's ``results.json`` layout, or any flat metrics JSON); its sections
come from `hf_scratchgpt.publish.card_sections`, which the run report uses too::

    from hf_scratchgpt.publish.cards import render_sections, write_model_card

    write_model_card("RUN/pretrain", metrics="RUN/pretrain/metrics.json",
                     eval_results=["RUN/eval/lm_eval/results.json", "RUN/eval/perplexity/metrics.json"])

    # the run report shows the same tables
    for title, markdown in render_sections(metrics, eval_results, config="RUN/pretrain/config.json"):
        ...

The metadata is built here, with `huggingface_hub.ModelCardData` / `EvalResult` (the Hub validates
``model-index`` on push) and the body with the Jinja template ``templates/model_card.md.j2``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..evaluation.harness import lm_eval_scores
from .card_sections import (
    LM_EVAL_SOURCE,
    PARITY_FILE,
    PARITY_TITLE,
    CardError,
    count_parameters,
    evaluation_sources,
    flat_scores,
    load_json,
    merge_metrics,
    parity_section,
    render_sections,
)

TEMPLATE_PATH = Path(__file__).with_name("templates") / "model_card.md.j2"
# The card's code snippets name this repo until the model is pushed; `fill_repo_id` replaces it.
REPO_PLACEHOLDER = "your-username/your-model"
LM_EVAL_URL = "https://github.com/EleutherAI/lm-evaluation-harness"

PIPELINE_TAGS = {
    "ForCausalLM": "text-generation",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}
AUTO_CLASSES = {
    "text-generation": "AutoModelForCausalLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
PEFT_PIPELINE_TAGS = {
    "CAUSAL_LM": "text-generation",
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
    "QUESTION_ANS": "question-answering",
}
_HUB_DATASET = re.compile(r"^[\w.-]+/[\w.-]+$")


def eval_results_to_model_index(eval_results: Any, task_type: str = "text-generation") -> list[EvalResult]:
    """`EvalResult` objects for the card's ``model-index``: every score of every source, values unchanged."""
    results = []
    for name, data in evaluation_sources(eval_results):
        if isinstance(data.get("results"), dict):
            configs, shots = data.get("configs", {}), data.get("n-shot", {})
            for task, metric, filter_name, value, _ in lm_eval_scores(data):
                config = configs.get(task, {})
                path = config.get("dataset_path")
                results.append(
                    EvalResult(
                        task_type=task_type,
                        dataset_type=path if isinstance(path, str) and _HUB_DATASET.match(path) else task,
                        dataset_name=task,
                        dataset_config=config.get("dataset_name"),
                        dataset_split=config.get("test_split") or config.get("validation_split"),
                        dataset_args={"num_few_shot": shots[task]} if task in shots else None,
                        metric_type=metric,
                        metric_value=value,
                        metric_config=None if filter_name == "none" else filter_name,
                        source_name=LM_EVAL_SOURCE,
                        source_url=LM_EVAL_URL,
                    )
                )
            continue
        dataset = str(data.get("dataset") or name)
        for key, value in flat_scores(data).items():
            # "task/metric" keys (a flat view of several tasks or methods) keep their task as the dataset name.
            task, _, metric = key.rpartition("/")
            results.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=dataset if _HUB_DATASET.match(dataset) else (task or name),
                    dataset_name=task or name,
                    metric_type=metric,
                    metric_value=value,
                )
            )
    return results


# --------------------------------------------------------------------------------------------
# The card
# --------------------------------------------------------------------------------------------


def _pipeline_tag(config: dict[str, Any], adapter: dict[str, Any]) -> str | None:
    if adapter:
        return PEFT_PIPELINE_TAGS.get(str(adapter.get("task_type")))
    for architecture in config.get("architectures") or []:
        for suffix, tag in PIPELINE_TAGS.items():
            if architecture.endswith(suffix):
                return tag
    return None


def _plot_loss_curve(model_dir: Path) -> str | None:
    """``loss_curves.png`` in the folder (drawn from ``trainer_state.json`` when missing); its name or None."""
    image = model_dir / "loss_curves.png"
    state = model_dir / "trainer_state.json"
    if not image.is_file() and state.is_file():
        try:
            from .plots import plot_loss_curves

            plot_loss_curves(
                json.loads(state.read_text())["log_history"], image, title="Training and validation loss"
            )
        except (ImportError, KeyError, ValueError):  # no matplotlib, or nothing logged yet
            return None
    return image.name if image.is_file() else None


def _corpus_dataset(metrics: dict[str, Any]) -> list[str] | None:
    """The Hub dataset id of a corpus described as ``"owner/name (split...)"``, as pretraining writes it."""
    match = re.match(r"^([\w.-]+/[\w.-]+) \(", str(metrics.get("corpus", "")))
    return [match.group(1)] if match else None


def build_model_card(
    model_dir: str | Path,
    *,
    metrics: Any = None,
    eval_results: Any = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    language: str | list[str] | None = "en",
    tags: list[str] | None = None,
    description: str | None = None,
) -> ModelCard:
    """A `ModelCard` for the model (or adapter) in ``model_dir``, from the stage files.

    The card is returned, not saved; the only file written is ``loss_curves.png``, drawn into the folder
    from its ``trainer_state.json`` when the folder has one and no plot yet.
    """
    model_dir = Path(model_dir)
    config_file, adapter_file = model_dir / "config.json", model_dir / "adapter_config.json"
    if not config_file.is_file() and not adapter_file.is_file():
        raise CardError(
            f"{model_dir} has neither config.json nor adapter_config.json: pass a saved model folder."
        )
    config = load_json(config_file) if config_file.is_file() else {}
    adapter = load_json(adapter_file) if adapter_file.is_file() else {}
    metrics = merge_metrics(metrics)
    repo_id = repo_id or REPO_PLACEHOLDER
    model_name = model_name or (
        repo_id.split("/")[-1] if repo_id != REPO_PLACEHOLDER else model_dir.resolve().name
    )
    pipeline_tag = _pipeline_tag(config, adapter)
    if adapter and base_model is None:
        base_model = adapter.get("base_model_name_or_path")
    if base_model and (Path(str(base_model)).is_absolute() or Path(str(base_model)).exists()):
        base_model = (
            None  # a local path (PEFT saves one) names nothing on the Hub: `scratchgpt push --base_model`
        )

    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        language=language,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        datasets=datasets if datasets is not None else _corpus_dataset(metrics),
        tags=list(dict.fromkeys([*(tags or []), "scratchgpt", *(["lora"] if adapter else [])])),
        eval_results=eval_results_to_model_index(eval_results, pipeline_tag or "text-generation") or None,
    )
    num_parameters = None if adapter else (metrics.get("num_parameters") or count_parameters(model_dir))
    sections = render_sections(
        metrics,
        eval_results,
        config or None,
        adapter_config=adapter or None,
        num_parameters=num_parameters or (count_parameters(model_dir) if adapter else None),
        loss_curve=_plot_loss_curve(model_dir),
    )
    if (model_dir / PARITY_FILE).is_file():
        sections.append((PARITY_TITLE, parity_section(load_json(model_dir / PARITY_FILE))))
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        repo_id=repo_id,
        model_name=model_name,
        sections=sections,
        is_adapter=bool(adapter),
        is_scratchgpt=config.get("model_type", "scratchgpt") == "scratchgpt",
        auto_class=AUTO_CLASSES.get(pipeline_tag or "", "AutoModel"),
        description=description,
        corpus=metrics.get("corpus"),
    )


def write_model_card(model_dir: str | Path, **kwargs: Any) -> Path:
    """Render the card (see `build_model_card` for the arguments) and save it as ``model_dir/README.md``."""
    path = Path(model_dir) / "README.md"
    build_model_card(model_dir, **kwargs).save(path)
    return path


def fill_repo_id(card_text: str, repo_id: str) -> str:
    """The card with its placeholder repo id (see `REPO_PLACEHOLDER`) replaced by the real one."""
    return card_text.replace(REPO_PLACEHOLDER, repo_id)


__all__ = [
    "PARITY_FILE",
    "PARITY_TITLE",
    "REPO_PLACEHOLDER",
    "CardError",
    "build_model_card",
    "count_parameters",
    "eval_results_to_model_index",
    "fill_repo_id",
    "load_json",
    "merge_metrics",
    "parity_section",
    "render_sections",
    "write_model_card",
]
