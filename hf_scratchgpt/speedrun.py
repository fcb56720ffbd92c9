"""The main job: tokenizer -> pretraining -> evaluation -> samples -> report, in one command.

    python training/speedrun.py                     # offline: Python's own docs; online: TinyStories
    python training/speedrun.py --data-dir ../shared/data/pretrain --max_steps 300

Each stage is a function of a shared ``SpeedrunContext`` registered in ``STAGES`` (in order). Later
stages of the pipeline (fine-tuning, benchmarks, publishing) plug in with ``register_stage`` and add
their metrics and report sections to the same run folder::

    @register_stage("finetune_spam", after="evaluate")
    def finetune_spam(ctx: SpeedrunContext) -> None:
        ...
        ctx.metrics["spam_accuracy"] = accuracy
        ctx.add_section("Spam classification", markdown)

The run folder holds ``tokenizer/``, ``model/`` (model + tokenizer, loadable with the Auto classes),
``metrics.json``, ``loss_curves.png`` and ``report.md``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from .data import split_train_validation, tokenize_and_pack
from .pretraining import OFFLINE_CORPUS_NAME, DataArguments, ModelArguments, load_corpus, run_pretraining
from .report import metrics_table, plot_loss_curves
from .tokenization_scratchgpt import ScratchGPTTokenizer
from .training import ScratchGPTTrainingArguments

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny.yaml"


@dataclass
class SpeedrunArguments:
    run_dir: str = field(
        default="outputs/speedrun", metadata={"help": "Folder for everything the run writes."}
    )
    eval_blocks: int | None = field(
        default=None, metadata={"help": "Validation blocks for the reloaded-model evaluation (default: all)."}
    )
    generation_prompts: list[str] = field(
        default_factory=lambda: ["Once upon a time", "The function", "In Python,"],
        metadata={"help": "Prompts for the report's sample generations."},
    )
    generation_max_new_tokens: int = field(default=80)


@dataclass
class SpeedrunContext:
    """What the stages share: the parsed arguments, the run folder, metrics and report sections."""

    args: SpeedrunArguments
    model_args: ModelArguments
    data_args: DataArguments
    training_args: TrainingArguments
    metrics: dict[str, Any] = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.args.run_dir)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def add_section(self, title: str, markdown: str) -> None:
        self.sections.append((title, markdown))


Stage = Callable[[SpeedrunContext], None]
STAGES: dict[str, Stage] = {}


def register_stage(name: str, after: str | None = None) -> Callable[[Stage], Stage]:
    """Decorator adding a stage to the main job, at the end or right after the stage ``after``."""

    def decorator(function: Stage) -> Stage:
        if after is None:
            STAGES[name] = function
            return function
        if after not in STAGES:
            raise ValueError(
                f"register_stage({name!r}, after={after!r}): no such stage; stages: {list(STAGES)}."
            )
        items = list(STAGES.items())
        position = [key for key, _ in items].index(after) + 1
        items.insert(position, (name, function))
        STAGES.clear()
        STAGES.update(items)
        return function

    return decorator


@register_stage("tokenizer")
def train_tokenizer_stage(ctx: SpeedrunContext) -> None:
    """Train the BPE tokenizer on the training split only (validation text stays unseen)."""
    corpus, name = load_corpus(ctx.data_args)
    splits = split_train_validation(
        corpus, ctx.data_args.validation_fraction, ctx.training_args.seed, ctx.data_args.split_mode
    )
    tokenizer = ScratchGPTTokenizer.train(
        splits["train"]["text"], vocab_size=ctx.model_args.tokenizer_vocab_size, show_progress=True
    )
    tokenizer_dir = ctx.run_dir / "tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    ctx.model_args.tokenizer_name_or_path = str(tokenizer_dir)
    # Point the later stages at the corpus that was actually used (the Hub/offline choice is made once).
    if ctx.data_args.data is None and ctx.data_args.data_dir is None and name != OFFLINE_CORPUS_NAME:
        ctx.data_args.data = name.split(" ")[0]
    validation = list(splits["validation"]["text"])
    n_tokens = sum(len(ids) for ids in tokenizer(validation, verbose=False)["input_ids"])
    ctx.metrics.update(
        corpus=name,
        corpus_documents=len(corpus),
        tokenizer_vocab_size=len(tokenizer),
        tokenizer_bytes_per_token=sum(len(text.encode()) for text in validation) / max(n_tokens, 1),
    )
    ctx.add_section(
        "Tokenizer",
        f"Byte-level BPE with {len(tokenizer)} tokens trained on the training split of **{name}** "
        f"({len(corpus)} documents). On the validation text it averages "
        f"{ctx.metrics['tokenizer_bytes_per_token']:.2f} bytes per token.",
    )


@register_stage("pretrain")
def pretrain_stage(ctx: SpeedrunContext) -> None:
    """Pretrain with the Trainer; plot the loss curves from its log history."""
    ctx.training_args.output_dir = str(ctx.model_dir)
    metrics = run_pretraining(ctx.model_args, ctx.data_args, ctx.training_args)
    ctx.metrics.update({key: value for key, value in metrics.items() if key != "corpus"})
    state = json.loads((ctx.model_dir / "trainer_state.json").read_text())
    plot_loss_curves(state["log_history"], ctx.run_dir / "loss_curves.png", title="ScratchGPT pretraining")
    keys = ["num_parameters", "train_blocks", "block_size", "train_runtime", "train_loss", "eval_loss",
            "eval_perplexity", "eval_bits_per_byte"]  # fmt: skip
    ctx.add_section("Pretraining", metrics_table(ctx.metrics, keys) + "\n\n![loss curves](loss_curves.png)")


def validation_loss(model: torch.nn.Module, blocks: Any, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy of ``model`` over packed ``blocks`` (a dataset of ``input_ids``)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            ids = torch.tensor(blocks[start : start + batch_size]["input_ids"])
            logits = model(ids).logits[:, :-1]
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="sum"
            ).item()
            count += ids[:, 1:].numel()
    return total / count


@register_stage("evaluate")
def evaluate_stage(ctx: SpeedrunContext) -> None:
    """Reload the saved model with the Auto classes, as a user would, and measure it independently."""
    model = AutoModelForCausalLM.from_pretrained(ctx.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    corpus, _ = load_corpus(ctx.data_args)
    splits = split_train_validation(
        corpus, ctx.data_args.validation_fraction, ctx.training_args.seed, ctx.data_args.split_mode
    )
    blocks = tokenize_and_pack(splits["validation"], tokenizer, ctx.metrics["block_size"])
    if ctx.args.eval_blocks:
        blocks = blocks.select(range(min(ctx.args.eval_blocks, len(blocks))))
    loss = validation_loss(model, blocks)

    # Decoding speed with the KV cache (greedy, batch of one).
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    new_tokens = min(128, model.config.max_position_embeddings - prompt["input_ids"].shape[1])
    start = time.perf_counter()
    output = model.generate(**prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    tokens_per_second = (output.shape[1] - prompt["input_ids"].shape[1]) / (time.perf_counter() - start)
    ctx.metrics.update(
        reloaded_eval_loss=loss,
        reloaded_eval_perplexity=math.exp(loss),
        generation_tokens_per_second=tokens_per_second,
    )
    ctx.add_section(
        "Evaluation of the saved model",
        f"Reloaded from `{ctx.model_dir}` with `AutoModelForCausalLM` / `AutoTokenizer`: validation loss "
        f"{loss:.4f} (perplexity {math.exp(loss):.2f}) on {len(blocks)} blocks; greedy decoding with the KV "
        f"cache at {tokens_per_second:.0f} tokens/s on this machine.",
    )


@register_stage("samples")
def samples_stage(ctx: SpeedrunContext) -> None:
    """Generate from a few prompts with the reloaded model: one greedy and one sampled continuation each."""
    model = AutoModelForCausalLM.from_pretrained(ctx.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    torch.manual_seed(0)
    lines, samples = [], []
    for prompt in ctx.args.generation_prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        room = model.config.max_position_embeddings - inputs["input_ids"].shape[1]
        settings = {"max_new_tokens": min(ctx.args.generation_max_new_tokens, room)}
        for mode, extra in (("greedy", {"do_sample": False, "repetition_penalty": 1.3}),
                            ("sampled", {"do_sample": True, "temperature": 0.8, "top_k": 40})):  # fmt: skip
            output = model.generate(**inputs, **settings, **extra)
            text = tokenizer.decode(output[0], skip_special_tokens=True)
            samples.append({"prompt": prompt, "mode": mode, "text": text})
            lines.append(f"**{mode}**, prompt `{prompt}`:\n\n```text\n{text}\n```")
    (ctx.run_dir / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n")
    ctx.add_section("Samples", "\n\n".join(lines))


def write_report(ctx: SpeedrunContext) -> Path:
    """``metrics.json`` and ``report.md`` in the run folder."""
    ctx.metrics["stage_seconds"] = ctx.timings
    (ctx.run_dir / "metrics.json").write_text(json.dumps(ctx.metrics, indent=2, default=str) + "\n")
    timing = " · ".join(f"{name} {seconds:.0f}s" for name, seconds in ctx.timings.items())
    parts = [f"# ScratchGPT speedrun report\n\nStages: {timing}.\n"]
    parts += [f"## {title}\n\n{markdown}\n" for title, markdown in ctx.sections]
    report = ctx.run_dir / "report.md"
    report.write_text("\n".join(parts))
    return report


def run_speedrun(argv: list[str] | None = None) -> SpeedrunContext:
    """Parse arguments (defaults from training/configs/tiny.yaml) and run every registered stage."""
    from .cli import parse_args

    argv = list(argv or [])
    if "--config" not in argv:
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    if not any(arg.startswith("--output_dir") or arg.startswith("--output-dir") for arg in argv):
        argv += ["--output_dir", "outputs/speedrun/model"]  # replaced by <run_dir>/model below
    args, model_args, data_args, training_args = parse_args(
        (SpeedrunArguments, ModelArguments, DataArguments, ScratchGPTTrainingArguments), argv
    )
    ctx = SpeedrunContext(args, model_args, data_args, training_args)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    for name, stage in STAGES.items():
        print(f"== speedrun stage: {name}", flush=True)
        start = time.perf_counter()
        stage(ctx)
        ctx.timings[name] = time.perf_counter() - start
    report = write_report(ctx)
    print(f"== done: {report} (model in {ctx.model_dir})")
    return ctx


__all__ = ["STAGES", "SpeedrunArguments", "SpeedrunContext", "register_stage", "run_speedrun"]
