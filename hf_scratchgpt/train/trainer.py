"""Training helpers shared by every stage that runs ``transformers.Trainer`` on a ScratchGPT model.

Only what the Trainer does not already do lives here:

* ``ScratchGPTTrainer``: AdamW weight decay only on weight matrices (never on norms, biases or
  embeddings, as in nanoGPT / GPT-2 practice), perplexity + bits per byte added next to every
  evaluation loss, and saves that lose nothing (``hf_scratchgpt.train.checkpoints``): model folders replaced
  atomically, ``--resume_from_checkpoint latest|true|PATH``, no silent overwrite of another run, and
  "no space left on <path>" for a full disk.
* ``SampleGenerationCallback``: writes a few generations from fixed prompts at every evaluation, so
  a run shows what the model says, not just a number.
* ``ScratchGPTTrainingArguments``: ``TrainingArguments`` plus ``--precision auto|bf16|fp16|fp32``, decided
  from the hardware (``hf_scratchgpt.train.hardware``) before the parent class hands it to Accelerate, and
  ``--overwrite_output_dir``.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainerControl, TrainerState
from transformers import TrainingArguments as HfTrainingArguments

from ..compat import reset_accelerator_state
from ..model.tokenizer_sync import align_model_and_tokenizer
from ..serve.chat import continue_text
from .arguments import ValidatedArguments
from .checkpoints import (
    atomic_model_save,
    disk_full_error,
    ensure_output_dir_is_free,
    finish_interrupted_save,
    is_disk_full,
    latest_complete_checkpoint,
    resolve_resume_checkpoint,
    resume_requested,
    resumes_latest,
)
from .hardware import (
    PRECISIONS,
    PrecisionError,
    describe_machine,
    machine_summary,
    resolve_precision,
    uses_gpu,
)

logger = logging.getLogger(__name__)
# Accelerate's name for each precision, for the environment variable it reads.
_ACCELERATE_MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}
_DECIDED_MARKER = "SCRATCHGPT_PRECISION_DECIDED"
_ANNOUNCED: dict[str, bool] = {}  # the choice is printed once per process


@dataclass
class PrecisionArguments:
    """Mixin for any ``TrainingArguments`` subclass (TRL's ``SFTConfig``, ``DPOConfig`` too): the mixed
    precision is decided from the hardware before the parent's ``__post_init__`` hands it to Accelerate.

    ``--precision auto`` (default) picks bf16 where the hardware has it natively, fp16 on a GPU without
    bf16, fp32 otherwise. ``--bf16 true`` / ``--fp16 true`` (the parent's flags) count as an explicit
    request, like ``--precision bf16``: kept if this machine can run it, else a clear error. Use it first
    among the bases: ``class MyConfig(PrecisionArguments, SFTConfig)``.
    """

    precision: str = field(
        default="auto", metadata={"help": f"One of {PRECISIONS}: auto picks what this machine runs natively."}
    )

    def __post_init__(self) -> None:
        flags = [name for name in ("bf16", "fp16") if getattr(self, name)]
        if len(flags) > 1 or (flags and self.precision not in ("auto", flags[0])):
            raise PrecisionError(
                f"Conflicting precision flags: --precision {self.precision} with --{' --'.join(flags)} true. "
                "Pass only --precision (auto, bf16, fp16 or fp32)."
            )
        requested = flags[0] if flags else self.precision
        # An accelerate config's mixed_precision (exported by `accelerate launch`) is a request too,
        # unless it is the value an earlier decision in this process (or its parent) wrote.
        launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        if requested == "auto" and launcher in ("bf16", "fp16") and not os.environ.get(_DECIDED_MARKER):
            requested = launcher
        self.precision_requested = requested  # "auto" lets a script measure and switch (switch_precision)
        self._set_precision_flags(resolve_precision(requested, use_cpu=self.use_cpu))
        if self.process_index_from_env() == 0 and not _ANNOUNCED.get(self.precision):
            print(
                f"precision: {self.precision} (asked for {requested}) on {machine_summary(describe_machine(self.use_cpu))}"
            )
            _ANNOUNCED[self.precision] = True
        super().__post_init__()

    def _set_precision_flags(self, precision: str) -> None:
        self.precision = precision
        self.bf16, self.fp16 = precision == "bf16", precision == "fp16"
        if self.bf16 and not uses_gpu(self.use_cpu):
            self.use_cpu = True  # the parent accepts CPU bf16 only when told the run is on the CPU
        # The parent reads this variable before its own flags, and Accelerate reads it again.
        os.environ["ACCELERATE_MIXED_PRECISION"] = _ACCELERATE_MIXED_PRECISION[precision]
        os.environ[_DECIDED_MARKER] = "1"

    def switch_precision(self, precision: str) -> None:
        """Change the precision of arguments that no ``Trainer`` has used yet (a Trainer's Accelerator reads
        ``mixed_precision`` when it is built). For a script that measured both and keeps the faster."""
        self._set_precision_flags(precision)
        self.mixed_precision = _ACCELERATE_MIXED_PRECISION[precision]
        # Accelerate keeps one process-wide AcceleratorState and refuses a second precision: forget it.
        reset_accelerator_state()

    def enable_compile(self, backend: str = "inductor") -> None:
        """``--torch_compile true`` decided after parsing, for arguments no ``Trainer`` has used yet (its
        Accelerator reads the compile settings when it is built)."""
        self.torch_compile = True
        self.torch_compile_backend = self.torch_compile_backend or backend
        reset_accelerator_state()  # probes' Trainers left a process-wide state built without compilation

    @staticmethod
    def process_index_from_env() -> int:
        """This process's rank as the launchers export it (before any process group exists)."""
        return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


@dataclass
class OutputDirArguments:
    """Mixin for any ``TrainingArguments`` subclass: how a run treats what is already in ``output_dir``.

    ``ScratchGPTTrainer.train`` refuses an ``output_dir`` holding another run's checkpoints or model
    unless the run resumes (``--resume_from_checkpoint latest|true|PATH``) or ``--overwrite_output_dir``
    is set (then the old checkpoints are deleted first). transformers 5 has no ``overwrite_output_dir``.
    """

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the model and delete the checkpoints another run left in output_dir "
            "(without it, such a folder is refused unless the run resumes from it)."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "'latest' (or 'true'): the newest complete checkpoint-N in output_dir, skipping "
            "half-written ones, or a fresh start if there is none; or the path of a checkpoint folder."
        },
    )


@dataclass
class ScratchGPTTrainingArguments(
    ValidatedArguments, PrecisionArguments, OutputDirArguments, HfTrainingArguments
):
    """``TrainingArguments`` with its numbers checked when built (`ValidatedArguments`), ``--precision``
    decided from the hardware (see `PrecisionArguments`), ``--overwrite_output_dir`` and
    ``--resume_from_checkpoint latest`` (see `OutputDirArguments`). ``--torch_compile`` left unset (None)
    lets training/pretrain.py decide (``hf_scratchgpt.train.budget_plan.compile_pays_off``)."""

    torch_compile: bool | None = field(
        default=None,
        metadata={
            "help": "Compile the model with torch.compile. Unset, training/pretrain.py compiles where it measured "
            "faster: a GPU, or bf16 on a CPU, for 5 minutes of training or more (timed on a few steps).",
            # As transformers' own flag: a bare --torch_compile means true.
            "nargs": "?",
            "const": True,
        },
    )


def check_output_dir(args: HfTrainingArguments) -> None:
    """Fail fast, before any data is loaded, where ``ScratchGPTTrainer.train`` would fail late.

    Call it right after parsing, with the arguments whose ``resume_from_checkpoint`` will be passed to
    ``train()``. A fresh run must not land on another run's checkpoints or model unless
    ``args.overwrite_output_dir`` (see `ensure_output_dir_is_free`); a resume from a PATH must name a
    complete checkpoint.

    Raises:
        OutputDirNotEmptyError, CheckpointError: naming the folder and the fixes.
    """
    _check_output_dir(args, args.resume_from_checkpoint)


def _check_output_dir(args: HfTrainingArguments, resume_from_checkpoint: str | bool | None) -> None:
    if not resume_requested(resume_from_checkpoint):
        overwrite = getattr(args, "overwrite_output_dir", False)
        ensure_output_dir_is_free(args.output_dir, overwrite, is_main_process=args.should_save)
    elif not resumes_latest(resume_from_checkpoint):
        resolve_resume_checkpoint(args.output_dir, resume_from_checkpoint)  # raises if it cannot resume


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get weight decay: weight matrices of linear layers only.

    Norm gains, biases and embedding tables are left alone: decaying them pulls them towards
    zero without regularising anything useful (and a tied output head shares the embedding).
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [
        name
        for name, param in model.named_parameters()
        if param.ndim >= 2 and id(param) not in embedding_params and param.requires_grad
    ]


class SafeSavesMixin:
    """Saves that lose nothing, for any ``Trainer`` (TRL's too): ``class X(SafeSavesMixin, SFTTrainer)``.

    ``train`` takes ``--resume_from_checkpoint latest|true|PATH`` and refuses to start a fresh run over
    another run's work; every model save (final and checkpoints) is atomic, with the tokenizer aligned to
    the model; a full disk is reported as "no space left on <path>". See `hf_scratchgpt.train.checkpoints`.
    """

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """``Trainer.train`` that takes ``--resume_from_checkpoint latest|true|PATH`` as given on a command
        line (see `resolve_resume_checkpoint`), and refuses to start a fresh run over another run's work
        (see `ensure_output_dir_is_free`) unless ``overwrite_output_dir`` is set."""
        if self.args.should_save:
            finish_interrupted_save(self.args.output_dir)
        _check_output_dir(self.args, resume_from_checkpoint)
        checkpoint = resolve_resume_checkpoint(self.args.output_dir, resume_from_checkpoint)
        return super().train(checkpoint, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save model, tokenizer and code files as one unit: all of the new model, or the old one untouched.

        The Trainer's final ``save_model()`` and every checkpoint come through here. The model is
        written to a staging folder and moved in (see `atomic_model_save`); a tokenizer is aligned with
        the model first (context length, special ids, stop tokens: see `align_model_and_tokenizer`).
        """
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if isinstance(self.processing_class, PreTrainedTokenizerBase):
            align_model_and_tokenizer(self.accelerator.unwrap_model(self.model), self.processing_class)
        if not self.args.should_save:  # other ranks only join the collectives of a sharded save
            super()._save(output_dir, state_dict)
            return
        with atomic_model_save(output_dir) as staging:
            super()._save(staging, state_dict)

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """A checkpoint cut short by a full disk is removed (it frees space and can never be resumed
        from) and reported as "no space left on <path>", naming the last complete checkpoint."""
        run_dir = Path(self._get_output_dir(trial=trial))
        checkpoint = run_dir / f"checkpoint-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
        except Exception as error:
            if not is_disk_full(error):
                raise
            if self.args.should_save:
                shutil.rmtree(checkpoint, ignore_errors=True)
            last = latest_complete_checkpoint(run_dir)
            usable = (
                f"The last complete checkpoint, {last}, is usable."
                if last
                else "No earlier checkpoint exists."
            )
            raise disk_full_error(checkpoint, checkpoint.name, usable) from error


class ScratchGPTTrainer(SafeSavesMixin, Trainer):
    """``Trainer`` with GPT-style weight decay, saves that lose nothing (see `SafeSavesMixin`), loss-only
    evaluations that never build the logits, and, for a language model, the perplexity next to every evaluation
    loss. Works for every head (classifiers too).

    Training needs no switch for speed: ScratchGPT's causal LM computes its training loss without the logits by
    itself (``skip_logits``), the default ``--optim`` is fused AdamW, ``--precision auto`` picks bf16 where the
    hardware runs it natively, and ``--torch_compile true`` compiles the model.
    """

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return decay_parameter_names(model)

    def prediction_step(self, model: nn.Module, inputs: dict, prediction_loss_only: bool, ignore_keys=None):
        # An evaluation without compute_metrics only needs the loss: a model that can skip the logits (as Trainer
        # asks Liger-patched models to) then never holds the (tokens x vocabulary) matrix.
        if prediction_loss_only and self.forward_takes(model, "skip_logits"):
            inputs = {**inputs, "skip_logits": True}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def forward_takes(self, model: nn.Module, argument: str) -> bool:
        """Whether the model's own forward, under any DDP, compile or PEFT wrapper, has a parameter ``argument``."""
        model = self.accelerator.unwrap_model(model, keep_torch_compile=False)
        if hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        return argument in inspect.signature(model.forward).parameters

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        # `evaluate()` passes its metrics dict here before returning it, so the addition shows up in
        # the returned metrics, the log history, the progress bar and TensorBoard alike.
        if self.model.can_generate():  # a next-token loss: perplexity means something
            for prefix in ("eval_", "test_"):
                if f"{prefix}loss" in logs:
                    logs[f"{prefix}perplexity"] = math.exp(min(logs[f"{prefix}loss"], 50.0))
        super().log(logs, *args, **kwargs)


class SampleGenerationCallback(TrainerCallback):
    """Generate from fixed prompts after each evaluation; log them and append to ``samples.jsonl``."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        max_new_tokens: int = 64,
        temperature: float = 0.8,
        top_k: int = 50,
        seed: int = 0,
    ):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.generation_kwargs = dict(do_sample=True, temperature=temperature, top_k=top_k)
        self.seed = seed

    def generate(self, model: nn.Module) -> list[str]:
        """Continuations of every prompt (the prompt included), sampled with a fixed seed."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        texts = []
        # A fixed generator seed: samples at different steps differ only because the model changed.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(self.seed)
            for prompt in self.prompts:
                texts.append(
                    continue_text(
                        model, self.tokenizer, prompt, self.max_new_tokens, **self.generation_kwargs
                    )
                )
        model.train(was_training)
        return texts

    def drop_prompts_past_context(self, context: int) -> None:
        """Skip, with a warning naming them, prompts that leave no room to generate in ``context`` tokens.

        Found before step 1 instead of killing the run at its first evaluation.
        """
        kept = []
        for prompt in self.prompts:
            length = len(self.tokenizer(prompt or self.tokenizer.eos_token)["input_ids"])
            if length < context:
                kept.append(prompt)
                continue
            shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            logger.warning(
                "Sample prompt %r is %d tokens, at or past the model's context of %d tokens: no room to "
                "generate, so it is skipped. Use prompts shorter than %d tokens.",
                shown,
                length,
                context,
                context,
            )
        self.prompts = kept

    def on_train_begin(
        self, args: HfTrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ) -> None:
        if model is not None:
            self.drop_prompts_past_context(model.config.max_position_embeddings)
        # A fresh run (not a resume) starts a fresh samples file instead of appending to an old run's.
        if state.is_world_process_zero and state.global_step == 0:
            (Path(args.output_dir) / "samples.jsonl").unlink(missing_ok=True)

    def on_evaluate(
        self, args: HfTrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ) -> None:
        if not state.is_world_process_zero or model is None or not self.prompts:
            return
        samples = self.generate(model)
        for text in samples:
            logger.info("sample @ step %d: %r", state.global_step, text)
        with open(Path(args.output_dir) / "samples.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, "samples": samples}, ensure_ascii=False) + "\n")


__all__ = [
    "OutputDirArguments",
    "PrecisionArguments",
    "SafeSavesMixin",
    "SampleGenerationCallback",
    "ScratchGPTTrainer",
    "ScratchGPTTrainingArguments",
    "check_output_dir",
    "decay_parameter_names",
]
