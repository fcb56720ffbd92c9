"""Benchmark: greedy generation through ``generate()``, ScratchGPT vs transformers' GPT-2, identical tokens.

    python benchmarks/generation.py                          # issue 15's shapes, batch 1 and 8, 128 new tokens
    python benchmarks/generation.py --threads 1 --rounds 9
    python benchmarks/generation.py --device cuda --shapes gpt2

ScratchGPT (GPT-2 recipe, issue 15's shapes) and ``GPT2LMHeadModel`` with the very same weights
(``hf_scratchgpt.model.conversion``), greedy decoding of ``--new_tokens`` tokens after a 16-token prompt (text when
../shared/data is there), no early stop. Contenders, interleaved in rounds in this one process (see
``hf_scratchgpt.benchmarking``):

* ``hf_gpt2``: ``GPT2LMHeadModel.generate`` as people call it (dynamic cache, eager);
* ``ours``: ``ScratchGPTForCausalLM.generate`` the same way;
* ``ours fast``: ours on the fast path, ``generate(**fast_generation_kwargs(model))`` (static cache sized to the
  context, decoding steps compiled);
* ``hf_gpt2 fast``: GPT-2 on that same path, its best setting.

Every contender's tokens are asserted equal to ``hf_gpt2``'s. Reported: tokens/s (median over rounds), the
ratios to ``hf_gpt2`` (same rounds), and the first call's seconds (the compilation, for a fast path). Results go
to benchmarks/results.json under "generation" (``--device cuda``: "generation_gpu"), with the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hf_scratchgpt.benchmarking import machine_record, seeded_gpt2_model, time_rounds, write_result
from hf_scratchgpt.model.conversion import convert_scratchgpt_to_gpt2
from hf_scratchgpt.model.fast_generation import fast_generation_kwargs
from hf_scratchgpt.publish.markdown import markdown_table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
CORPUS = HERE.parent.parent / "shared" / "data" / "pretrain" / "tinyshakespeare.txt"
SHAPES = {
    "small": dict(vocab=8192, width=384, layers=6, heads=6, context=256),  # issue 15's
    "gpt2": dict(vocab=50257, width=768, layers=12, heads=12, context=1024),  # GPT-2 124M
    "tiny": dict(vocab=512, width=64, layers=2, heads=2, context=64),  # smoke tests
}
PROMPT_TOKENS = 16


def build_models(shapes: dict[str, int], device: str) -> dict[str, torch.nn.Module]:
    """ScratchGPT (GPT-2 recipe, seeded) and GPT2LMHeadModel holding the same weights, in eval mode."""
    ours = seeded_gpt2_model(shapes).eval()
    return {"ours": ours.to(device), "hf_gpt2": convert_scratchgpt_to_gpt2(ours).to(device)}


def prompts(batch: int, vocab: int, device: str) -> torch.Tensor:
    """``batch`` different prompts of PROMPT_TOKENS tokens: Tiny Shakespeare's bytes, else random tokens."""
    if CORPUS.is_file():
        text = torch.frombuffer(
            bytearray(CORPUS.read_bytes()[: batch * 997 + PROMPT_TOKENS]), dtype=torch.uint8
        )
        rows = [text[i * 997 : i * 997 + PROMPT_TOKENS].long() for i in range(batch)]
        return torch.stack(rows).to(device)
    return torch.randint(0, vocab, (batch, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0)).to(
        device
    )


def contenders(
    models: dict[str, torch.nn.Module], prompt: torch.Tensor, new_tokens: int, backend: str
) -> dict[str, Callable[[], torch.Tensor]]:
    """The four generate() calls compared, each returning the generated ids."""
    settings = dict(
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    calls = {}
    for name in ("hf_gpt2", "ours"):
        model = models[name]
        fast = fast_generation_kwargs(model, backend=backend)
        calls[name] = lambda model=model: model.generate(prompt, **settings)
        calls[f"{name} fast"] = lambda model=model, fast=fast: model.generate(prompt, **settings, **fast)
    return calls


def measure_batch(
    models: dict[str, torch.nn.Module], batch: int, args: argparse.Namespace, vocab: int
) -> dict[str, Any]:
    """Tokens/s and ratios of every contender at one batch size, after checking they generate the same ids."""
    calls = contenders(models, prompts(batch, vocab, args.device), args.new_tokens, args.compile_backend)
    first_call_seconds, outputs = {}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        outputs[name] = call()
        first_call_seconds[name] = round(time.perf_counter() - start, 1)
    for name, output in outputs.items():
        if not torch.equal(output, outputs["hf_gpt2"]):
            differ = (output != outputs["hf_gpt2"]).nonzero()[0].tolist()
            raise AssertionError(
                f"{name} generated other tokens than hf_gpt2 (first at row, position {differ})"
            )
    timings = time_rounds(calls, args.rounds, device=args.device)
    new_tokens = batch * args.new_tokens
    return {
        "tokens_per_second": {name: round(timings.per_second(name, new_tokens)) for name in calls},
        "speedup_over_hf_gpt2": {name: round(timings.speedup(name, "hf_gpt2"), 3) for name in calls},
        "speedup_over_hf_gpt2_wall_clock": {
            name: round(timings.speedup(name, "hf_gpt2", wall=True), 3) for name in calls
        },
        "first_call_seconds": first_call_seconds,
        "identical_tokens": True,
        "clock": timings.clock,
    }


def main(argv: list[str] | None = None, results_file: Path = RESULTS) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_sizes", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8])
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median taken)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--compile_backend", default="inductor", help="torch.compile backend of the fast paths"
    )
    parser.add_argument("--no_write", action="store_true", help="print only; leave results.json alone")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES[args.shapes]
    if PROMPT_TOKENS + args.new_tokens > shapes["context"]:
        raise SystemExit(
            f"--new_tokens {args.new_tokens}: at most {shapes['context'] - PROMPT_TOKENS} fit in the "
            f"context of {shapes['context']} after the {PROMPT_TOKENS}-token prompt."
        )
    models = build_models(shapes, args.device)
    batches = {f"batch {b}": measure_batch(models, b, args, shapes["vocab"]) for b in args.batch_sizes}
    result = {
        "shapes": shapes,
        "new_tokens": args.new_tokens,
        "prompt_tokens": PROMPT_TOKENS,
        **batches,
        "rounds": args.rounds,
        "machine": machine_record(args.device),
    }

    clock = result["machine"]["clock"]
    print(
        f"greedy generation, {args.new_tokens} new tokens, tokens/s ({clock}) on {result['machine']['summary']}"
    )
    names = list(next(iter(batches.values()))["tokens_per_second"])
    rows = [
        [batch, *(f"{b['tokens_per_second'][n]:,} ({b['speedup_over_hf_gpt2'][n]:.2f}x)" for n in names)]
        for batch, b in batches.items()
    ]
    print(markdown_table(["", *names], rows))
    if not args.no_write:
        write_result(
            "generation_gpu" if args.device.startswith("cuda") else "generation", result, results_file
        )
    return result


if __name__ == "__main__":
    main()
