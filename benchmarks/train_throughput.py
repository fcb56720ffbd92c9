"""Benchmark: training throughput of ScratchGPT vs transformers' GPT-2 vs a plain nanoGPT-style model.

    python benchmarks/train_throughput.py --threads 1       # issue 15's shapes, every setting this machine has
    python benchmarks/train_throughput.py --settings bf16+compile --models ours,ours_plain_loss,nanogpt
    python benchmarks/train_throughput.py --device cuda --shapes gpt2 --settings bf16+compile  # GPU: GPT-2 124M, MFU

Three models with the same shapes and the GPT-2 recipe (learned positions, LayerNorm, GELU, tied head, dropout
0), all starting from the same weights: ``ScratchGPTForCausalLM`` as Trainer trains it (its loss without
logits, Trainer's default AdamW, which is fused), ``GPT2LMHeadModel`` (sdpa attention, the same AdamW) and
``NanoGPT`` below, written the way nanoGPT's ``model.py`` is (fused qkv projection, sdpa, cross-entropy over the
full logits, its own AdamW set-up: fused on a GPU only). One step is forward + backward + AdamW step on a batch
of text (Tiny Shakespeare bytes when ../shared/data is there, else random tokens), the same batches in the same
order for every model. Each model runs in every setting: fp32 and bf16 autocast (where this machine has bf16
natively), eager and ``torch.compile``; all of them interleaved in rounds in this one process (see
``hf_scratchgpt.benchmarking``: on a CPU with one thread, times are the process's CPU time). Last, ScratchGPT
through ``ScratchGPTTrainer`` with its default arguments in its best setting, each Trainer step followed by one
plain-loop step, for the Trainer's overhead. ``--models`` can add ABLATIONS, to say where a difference comes from.

Reported: tokens/s (median over rounds) per model and setting, ours' speedup over each other model, best setting
against best setting (same rounds; by the wall clock too), the loss after the last step of each (same start, same
batches: the curves must agree), the compile seconds, and with a known peak (``--peak_tflops``, or an
H100/H200/A100 by name) the model FLOPs utilisation. Results go to benchmarks/results.json under
"train_throughput" (``--device cuda``: "train_throughput_gpu"), with the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_scratchgpt.benchmarking import (
    benchmark_clock,
    machine_record,
    median_ratio,
    seeded_gpt2_model,
    synchronize,
    time_rounds,
    write_result,
)
from hf_scratchgpt.model.conversion import convert_scratchgpt_to_gpt2
from hf_scratchgpt.publish.markdown import markdown_table
from hf_scratchgpt.train.hardware import native_bf16
from hf_scratchgpt.train.trainer import ScratchGPTTrainer, ScratchGPTTrainingArguments

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
CORPUS = HERE.parent.parent / "shared" / "data" / "pretrain" / "tinyshakespeare.txt"
SHAPES = {
    "small": dict(vocab=8192, width=384, layers=6, heads=6, context=256, batch=8),  # issue 15's
    "gpt2": dict(vocab=50257, width=768, layers=12, heads=12, context=1024, batch=16),  # GPT-2 124M
    "tiny": dict(vocab=512, width=64, layers=2, heads=2, context=32, batch=2),  # smoke tests
}
MODELS = ("ours", "nanogpt", "hf_gpt2")
# For attributing a speedup: ours with the loss over full logits, nanoGPT with the fused AdamW ours gets.
ABLATIONS = ("ours_plain_loss", "nanogpt_fused_adamw")
SETTINGS = ("fp32", "fp32+compile", "bf16", "bf16+compile")
LEARNING_RATE = 6e-4
# Peak dense bf16 tensor throughput (FLOP/s) of GPUs, by a word of their name, for the MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


# ----------------------------------------------------------------------------------------------------
# The reference: a GPT the way nanoGPT's model.py writes it
# ----------------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)  # query, key and value in one projection
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(batch, length, width))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT: learned positions, pre-norm blocks, weight-tied head, loss on the full logits. (nanoGPT's
    GPT-2 init is ScratchGPT's: `build_model` starts it from ScratchGPT's initial weights.)"""

    def __init__(self, vocab: int, width: int, layers: int, heads: int, context: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def configure_optimizers(self, device: str) -> torch.optim.Optimizer:
        """nanoGPT's AdamW: weight decay on matrices only, betas (0.9, 0.95), fused on CUDA only."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(0.9, 0.95), fused=device.startswith("cuda"))


# ----------------------------------------------------------------------------------------------------
# Models, steps and data
# ----------------------------------------------------------------------------------------------------


def build_model(name: str, shapes: dict[str, int], device: str) -> nn.Module:
    """One of MODELS (or ABLATIONS) at ``shapes``, in training mode. All start from the same weights (ScratchGPT's
    seeded GPT-2 init, converted), so with the same batches their loss curves compare step by step."""
    ours = seeded_gpt2_model(shapes)
    if name.startswith("nanogpt"):
        model = NanoGPT(*(shapes[k] for k in ("vocab", "width", "layers", "heads", "context")))
        model.load_state_dict(nanogpt_weights(ours.state_dict(), shapes["layers"]))
    elif name == "hf_gpt2":
        model = convert_scratchgpt_to_gpt2(ours)
    else:
        model = ours
    return model.to(device).train()


def nanogpt_weights(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """ScratchGPT's GPT-2-recipe weights under nanoGPT's names (query, key and value joined in ``c_attn``)."""
    weights = {f"{name}.weight": state[f"transformer.{name}.weight"] for name in ("wte", "wpe", "ln_f")}
    weights.update({"ln_f.bias": state["transformer.ln_f.bias"], "lm_head.weight": state["lm_head.weight"]})
    renames = {
        "ln_1": "ln_1",
        "ln_2": "ln_2",
        "attn.o_proj": "attn.c_proj",
        "mlp.up_proj": "mlp.c_fc",
        "mlp.down_proj": "mlp.c_proj",
    }
    for i in range(layers):
        ours, theirs = f"transformer.h.{i}.", f"h.{i}."
        for kind in ("weight", "bias"):
            for name, nano_name in renames.items():
                weights[f"{theirs}{nano_name}.{kind}"] = state[f"{ours}{name}.{kind}"]
            qkv = [state[f"{ours}attn.{x}_proj.{kind}"] for x in "qkv"]
            weights[f"{theirs}attn.c_attn.{kind}"] = torch.cat(qkv)
    return weights


def trainer_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The AdamW ``Trainer`` builds with its default arguments (fused AdamW from torch 2.8), decay on matrices."""
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to="none")
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}]
    return optimizer_cls(groups, **{**kwargs, "lr": LEARNING_RATE, "betas": (0.9, 0.95)})


def training_step(
    name: str, model: nn.Module, optimizer: torch.optim.Optimizer, bf16: bool, device: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """forward + backward + optimizer step on a (batch, context + 1) block of tokens; returns the loss."""
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)
    extra = {"skip_logits": False} if name == "ours_plain_loss" else {}

    def step(block: torch.Tensor) -> torch.Tensor:
        with autocast:
            if name.startswith("nanogpt"):
                loss = model(block[:, :-1], block[:, 1:])
            else:  # labels are the inputs: the model shifts them
                loss = model(input_ids=block[:, :-1], labels=block[:, :-1], **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def load_tokens(vocab: int) -> torch.Tensor:
    """Real text as token ids: Tiny Shakespeare's bytes (ids < 256 of any vocabulary), else random tokens."""
    if CORPUS.is_file():
        return torch.frombuffer(bytearray(CORPUS.read_bytes()), dtype=torch.uint8).long()
    return torch.randint(0, vocab, (1 << 20,), generator=torch.Generator().manual_seed(0))


class Batches:
    """The same sequence of batches for every contender: batch i of each is the same text."""

    def __init__(self, tokens: torch.Tensor, batch: int, context: int, device: str):
        self.tokens, self.batch, self.context, self.device = tokens, batch, context, device

    def __getitem__(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(index)
        starts = torch.randint(0, len(self.tokens) - self.context - 1, (self.batch,), generator=generator)
        return torch.stack([self.tokens[s : s + self.context + 1] for s in starts.tolist()]).to(self.device)


# ----------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------


class Contender:
    """One model in one setting: its step, the batches it has seen, its losses and its compile time."""

    def __init__(
        self, name: str, setting: str, shapes: dict[str, int], batches: Batches, args: argparse.Namespace
    ):
        self.name, self.setting, self.batches, self.device = name, setting, batches, args.device
        self.compile_backend = args.compile_backend if "compile" in setting else None
        self.model = build_model(name, shapes, self.device)
        if self.compile_backend:
            self.model.compile(backend=self.compile_backend)
        nanogpt_adamw = name == "nanogpt"
        self.optimizer = (
            self.model.configure_optimizers(self.device) if nanogpt_adamw else trainer_optimizer(self.model)
        )
        self.step_fn = training_step(name, self.model, self.optimizer, "bf16" in setting, self.device)
        self.steps, self.losses = 0, []

    def __call__(self) -> None:
        self.losses.append(self.step_fn(self.batches[self.steps]))
        self.steps += 1

    def warm_up(self, steps: int) -> float:
        """Seconds of the first ``steps`` steps (the compilation, for a compiled model)."""
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self()
        synchronize(self.device)
        return time.perf_counter() - start


class InterleavedPlainSteps(TrainerCallback):
    """Times each Trainer step and, right after it, one plain-loop step of the same model in the same setting,
    so both see the same load; the Trainer's time runs from the end of the plain step to its next step's end
    (both by `benchmark_clock`)."""

    def __init__(self, plain: Contender, warmup: int):
        self.plain, self.warmup = plain, warmup
        self.clock = benchmark_clock(plain.device)[1]
        self.trainer_seconds: list[float] = []
        self.plain_seconds: list[float] = []
        self.mark = 0.0

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        if state.global_step == 0:
            self.mark = self.clock()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        synchronize(self.plain.device)
        trainer_seconds = self.clock() - self.mark
        start = self.clock()
        self.plain()
        synchronize(self.plain.device)
        if state.global_step > self.warmup:
            self.trainer_seconds.append(trainer_seconds)
            self.plain_seconds.append(self.clock() - start)
        self.mark = self.clock()


def trainer_overhead(plain: Contender, shapes: dict[str, int], warmup: int, steps: int) -> dict[str, Any]:
    """Tokens/s of ScratchGPT through ScratchGPTTrainer (default arguments, the precision and compile of the
    ``plain`` loop's setting), against that plain loop in the same rounds."""
    setting, batches, device = plain.setting, plain.batches, plain.device
    blocks = [batches[i][j, :-1].tolist() for i in range(warmup + steps) for j in range(shapes["batch"])]
    args = ScratchGPTTrainingArguments(
        output_dir=tempfile.mkdtemp(),
        max_steps=warmup + steps,
        per_device_train_batch_size=shapes["batch"],
        learning_rate=LEARNING_RATE,
        adam_beta2=0.95,
        weight_decay=0.1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        precision="bf16" if "bf16" in setting else "fp32",
        use_cpu=device == "cpu",
        torch_compile=plain.compile_backend is not None,
        torch_compile_backend=plain.compile_backend,
    )
    clock = InterleavedPlainSteps(plain, warmup)
    trainer = ScratchGPTTrainer(
        model=build_model("ours", shapes, device),
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": blocks, "labels": blocks}),
        callbacks=[clock],
    )
    trainer.train()
    tokens = shapes["batch"] * shapes["context"]
    return {
        "setting": setting,
        "optim": args.optim,
        "trainer_tokens_per_second": round(tokens / statistics.median(clock.trainer_seconds)),
        "plain_loop_tokens_per_second": round(tokens / statistics.median(clock.plain_seconds)),
        "trainer_to_plain_loop": round(median_ratio(clock.plain_seconds, clock.trainer_seconds), 3),
    }


def settings_for(device: str, requested: list[str] | None) -> list[str]:
    """fp32 and bf16 (where the hardware has it natively), each eager and compiled, or those requested."""
    available = [s for s in SETTINGS if "bf16" not in s or native_bf16(use_cpu=device == "cpu")]
    unknown = [s for s in requested or [] if s not in available]
    if unknown:
        raise SystemExit(
            f"--settings {','.join(unknown)}: not available here; choose from {','.join(available)}."
        )
    return requested or available


def flops_per_token(shapes: dict[str, int]) -> float:
    """Training FLOPs per token (PaLM appendix B, as nanoGPT's estimate_mfu): 6 x parameters (the position table
    left out) + 12 x layers x width x context for attention."""
    width, layers = shapes["width"], shapes["layers"]
    parameters = shapes["vocab"] * width + layers * (12 * width * width + 13 * width) + 2 * width
    return 6 * parameters + 12 * layers * width * shapes["context"]


def peak_flops(device: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for word, peak in PEAK_BF16_FLOPS.items() if word in name), None)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every model in every setting, interleaved; then ours through the Trainer in its best setting."""
    shapes = SHAPES[args.shapes]
    settings = settings_for(args.device, args.settings)
    batches = Batches(load_tokens(shapes["vocab"]), shapes["batch"], shapes["context"], args.device)
    contenders = {f"{m} {s}": Contender(m, s, shapes, batches, args) for s in settings for m in args.models}
    compile_seconds = {key: round(c.warm_up(args.warmup), 1) for key, c in contenders.items()}
    timings = time_rounds(contenders, args.rounds, args.steps_per_round, args.device)
    tokens = shapes["batch"] * shapes["context"]
    throughput = {key: timings.per_second(key, tokens) for key in contenders}
    best = {m: max((k for k in contenders if k.startswith(m + " ")), key=throughput.get) for m in args.models}
    result: dict[str, Any] = {
        "shapes": shapes,
        "tokens_per_second": {key: round(value) for key, value in throughput.items()},
        "tokens_per_second_wall_clock": {
            key: round(timings.per_second(key, tokens, wall=True)) for key in contenders
        },
        "best_setting": {m: key.split(" ", 1)[1] for m, key in best.items()},
        "optimizer": {m: optimizer_name(contenders[key].optimizer) for m, key in best.items()},
        "final_loss": {key: round(float(c.losses[-1]), 4) for key, c in contenders.items()},
        "compile_seconds": {key: s for key, s in compile_seconds.items() if "compile" in key},
    }
    if "ours" in best:
        others = [m for m in args.models if m != "ours"]
        result["speedup_of_ours_best_settings"] = {
            m: round(timings.speedup(best["ours"], best[m]), 3) for m in others
        }
        result["speedup_of_ours_best_settings_wall_clock"] = {
            m: round(timings.speedup(best["ours"], best[m], wall=True), 3) for m in others
        }
    if peak := peak_flops(args.device, args.peak_tflops):
        result["mfu"] = {
            # Three significant figures: a tiny smoke-test model's MFU is far below 0.1%.
            key: float(f"{value * flops_per_token(shapes) / peak:.3g}")
            for key, value in throughput.items()
        }
    if args.trainer_steps and "ours" in best:
        result["trainer"] = trainer_overhead(
            contenders[best["ours"]], shapes, args.warmup, args.trainer_steps
        )
    return {**result, "rounds": args.rounds, "steps_per_round": args.steps_per_round, "clock": timings.clock}


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    return type(optimizer).__name__ + (" fused" if optimizer.defaults.get("fused") else "")


def report(result: dict[str, Any], models: list[str]) -> str:
    """The table of tokens/s per setting and the speedups, as printed."""
    settings = sorted({key.split(" ", 1)[1] for key in result["tokens_per_second"]}, key=SETTINGS.index)
    mfu = result.get("mfu")
    rows = [
        [s, *(f"{result['tokens_per_second'][f'{m} {s}']:,}" for m in models)]
        + ([f"{mfu[f'ours {s}']:.1%}"] if mfu and "ours" in models else [])
        for s in settings
    ]
    lines = [
        f"training tokens/s ({result['clock']}) on {result['machine']['summary']}, shapes {result['shapes']}",
        markdown_table(["setting", *models] + (["MFU ours"] if mfu else []), rows),
    ]
    for m, speedup in result.get("speedup_of_ours_best_settings", {}).items():
        wall = result["speedup_of_ours_best_settings_wall_clock"][m]
        lines.append(
            f"ours ({result['best_setting']['ours']}) / {m} ({result['best_setting'][m]}): "
            f"{speedup:.2f}x (wall clock {wall:.2f}x)"
        )
    if trainer := result.get("trainer"):
        lines.append(
            f"ours through ScratchGPTTrainer / plain loop ({trainer['setting']}): "
            f"{trainer['trainer_to_plain_loop']:.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, results_file: Path = RESULTS) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--settings", type=lambda s: s.split(","), help=f"some of {','.join(SETTINGS)} (default: all)"
    )
    parser.add_argument(
        "--models",
        type=lambda s: s.split(","),
        default=list(MODELS),
        help=f"some of {','.join(MODELS + ABLATIONS)}",
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median taken)")
    parser.add_argument("--steps_per_round", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation)")
    parser.add_argument("--trainer_steps", type=int, default=10, help="timed Trainer steps (0: no Trainer)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--compile_backend", default="inductor", help="torch.compile backend of the +compile settings"
    )
    parser.add_argument("--peak_tflops", type=float, help="the device's peak bf16 TFLOP/s, for the MFU")
    parser.add_argument("--no_write", action="store_true", help="print only; leave results.json alone")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS + ABLATIONS]
    if unknown:
        parser.error(f"--models {','.join(unknown)}: choose from {','.join(MODELS + ABLATIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {**measure(args), "machine": machine_record(args.device)}
    print(report(result, args.models))
    if not args.no_write:
        key = "train_throughput_gpu" if args.device.startswith("cuda") else "train_throughput"
        write_result(key, result, results_file)
    return result


if __name__ == "__main__":
    main()
