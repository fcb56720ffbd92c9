"""Training helpers shared by every stage that runs ``transformers.Trainer`` on a ScratchGPT model.

Only what the Trainer does not already do lives here:

* ``ScratchGPTTrainer``: AdamW weight decay only on weight matrices (never on norms, biases or
  embeddings, as in nanoGPT / GPT-2 practice), and perplexity + bits per byte added next to every
  evaluation loss.
* ``SampleGenerationCallback``: writes a few generations from fixed prompts at every evaluation, so
  a run shows what the model says, not just a number.
* ``bf16_supported``: whether bf16 mixed precision pays off on this machine (GPU, or a CPU with
  bf16 instructions such as AVX512-BF16 / AMX).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainerControl, TrainerState
from transformers import TrainingArguments as HfTrainingArguments

logger = logging.getLogger(__name__)


def bf16_supported(use_cpu: bool = False) -> bool:
    """True on a bf16-capable GPU, or (on CPU) when the processor has native bf16 instructions."""
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: let the user opt in explicitly
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


class ScratchGPTTrainer(Trainer):
    """``Trainer`` with GPT-style weight decay and language-model metrics.

    Set ``eval_tokens_per_byte`` (tokens / UTF-8 bytes of the evaluation text) to get
    ``eval_bits_per_byte`` logged with every ``eval_loss``.
    """

    eval_tokens_per_byte: float | None = None

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return decay_parameter_names(model)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        # `evaluate()` passes its metrics dict here before returning it, so the additions show up in
        # the returned metrics, the log history, the progress bar and TensorBoard alike.
        for prefix in ("eval_", "test_"):
            loss = logs.get(f"{prefix}loss")
            if loss is None:
                continue
            logs[f"{prefix}perplexity"] = math.exp(min(loss, 50.0))
            if self.eval_tokens_per_byte:
                logs[f"{prefix}bits_per_byte"] = loss * self.eval_tokens_per_byte / math.log(2)
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
                inputs = self.tokenizer(prompt or self.tokenizer.eos_token, return_tensors="pt").to(device)
                # Stay inside the context: a learned-position model cannot see past its last position.
                room = model.config.max_position_embeddings - inputs["input_ids"].shape[1]
                max_new_tokens = min(self.max_new_tokens, room)
                output = model.generate(
                    **inputs, **self.generation_kwargs, max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # fmt: skip
                texts.append(self.tokenizer.decode(output[0], skip_special_tokens=True))
        model.train(was_training)
        return texts

    def on_train_begin(
        self, args: HfTrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        # A fresh run (not a resume) starts a fresh samples file instead of appending to an old run's.
        if state.is_world_process_zero and state.global_step == 0:
            (Path(args.output_dir) / "samples.jsonl").unlink(missing_ok=True)

    def on_evaluate(
        self, args: HfTrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ) -> None:
        if not state.is_world_process_zero or model is None:
            return
        samples = self.generate(model)
        for text in samples:
            logger.info("sample @ step %d: %r", state.global_step, text)
        with open(Path(args.output_dir) / "samples.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, "samples": samples}, ensure_ascii=False) + "\n")


__all__ = ["ScratchGPTTrainer", "SampleGenerationCallback", "bf16_supported", "decay_parameter_names"]
