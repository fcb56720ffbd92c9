"""Instruction following: answer held-out instructions, then score the answers against the references.

The held-out set is the one the SFT stage held out (``training/sft.py``): any instruction layout
(Alpaca, messages, prompt/completion) becomes chat messages (`to_messages`) and the same seeded
`split_train_validation` keeps the same validation rows. Answers are greedy, through the model's chat
template, and stop at the end of the assistant's turn (`hf_scratchgpt.serve.chat.generate_reply`).

ROUGE-L and exact match are computed per item, so the mean comes with a confidence interval. Why not
``evaluate.load("rouge")``: ``evaluate`` fetches the metric's script from the Hub on first use (nothing
ships in the wheel), so it fails offline; its ``rouge`` metric is a thin wrapper over the ``rouge_score``
package, which is called here directly with the same settings (``RougeScorer(["rougeL"])``, F-measure,
no stemming), giving the same numbers online and offline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy import stats

from ..finetune.instruction_data import (
    InstructionDataArguments,
    held_out_prompts,
    load_instruction_splits,
    to_messages,
)
from ..publish.markdown import markdown_table
from ..serve.chat import generate_reply


def load_held_out_instructions(
    data_args: InstructionDataArguments, seed: int, limit: int | None = None
) -> list[dict[str, Any]]:
    """The held-out conversations of the SFT stage (the same arguments and seed give the same rows: the same
    function splits them), as ``{"messages": [... up to the last user turn], "reference": answer}``; the first
    ``limit`` of them."""
    validation = load_instruction_splits(data_args, to_messages, seed)[0]["validation"]
    return held_out_prompts(validation, limit if limit is not None else len(validation))


def generate_answers(
    model: Any, tokenizer: Any, examples: Sequence[dict[str, Any]], max_new_tokens: int = 128
) -> list[dict[str, Any]]:
    """Greedy answers: ``{"prompt" (the last user turn), "output", "reference", "messages"}`` per example."""
    if tokenizer.chat_template is None:
        raise ValueError(
            "The model's tokenizer has no chat template: fine-tune it with training/sft.py first."
        )
    model.eval()
    answers = []
    for example in examples:
        output = generate_reply(
            model, tokenizer, example["messages"], max_new_tokens=max_new_tokens, temperature=0
        )
        answers.append(
            {
                "prompt": example["messages"][-1]["content"],
                "output": output,
                "reference": example["reference"],
                "messages": example["messages"],
            }
        )
    return answers


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure per item, as ``evaluate``'s ``rouge`` metric computes it (``rouge_score``)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [
        scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)
    ]


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """1.0 where the answer equals the reference, ignoring surrounding whitespace, else 0.0."""
    return [float(p.strip() == r.strip()) for p, r in zip(predictions, references, strict=True)]


def mean_with_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float | None]:
    """The mean and its Student-t confidence interval (no bounds, None, with fewer than two values)."""
    n = len(values)
    if n == 0:
        raise ValueError("No values to average.")
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": n}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def score_answers(answers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answers with their ``rouge_l`` and ``exact_match`` against the reference."""
    outputs, references = [a["output"] for a in answers], [a["reference"] for a in answers]
    scored = zip(answers, rouge_l(outputs, references), exact_match(outputs, references), strict=True)
    return [{**answer, "rouge_l": rouge, "exact_match": exact} for answer, rouge, exact in scored]


def summarize(items: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and 95% interval of every per-item score present (``rouge_l``, ``exact_match``, ``judge_score``);
    the judge's mean is over the replies that held a score, and ``unscored`` counts the others."""
    summary = {}
    for key in ("rouge_l", "exact_match", "judge_score"):
        present = [item for item in items if key in item]
        values = [float(item[key]) for item in present if item[key] is not None]
        if values:
            summary[key] = {**mean_with_interval(values), "unscored": len(present) - len(values)}
        elif present:
            summary[key] = {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "unscored": len(present)}
    return summary


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_table(summary: dict[str, dict[str, float | None]]) -> str:
    """Markdown: one row per score with its mean, 95% interval, items scored and items left unscored."""
    rows = []
    for key, s in summary.items():
        rows.append(
            (
                key,
                _number(s["mean"]),
                f"[{_number(s['ci_low'])}, {_number(s['ci_high'])}]",
                s["n"],
                s["unscored"],
            )
        )
    return markdown_table(("score", "mean", "95% CI", "n", "unscored"), rows, align="lrlrr") + "\n"
