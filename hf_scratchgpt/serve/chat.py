"""``scratchgpt chat MODEL``: talk to a chat model in the terminal, and the reply function behind it.

    scratchgpt chat outputs/sft/merged --system "You are a helpful assistant." --temperature 0.7
    echo "Name a colour." | scratchgpt chat outputs/sft/merged        # no terminal needed: reads stdin lines

``generate_reply`` is the whole of it: the conversation goes through the model's chat template, the
oldest turns are dropped until the prompt and the reply fit the context window (a learned-position
model cannot look past its last position), and generation stops at the end of the assistant's turn
(``<|im_end|>``) as well as at ``<|endoftext|>``. Tokens are printed as they come (``TextStreamer``).
Typing ``/clear`` forgets the conversation, ``/exit`` (or end of input) leaves.

The pieces are shared with ``scratchgpt serve`` (`hf_scratchgpt.serve.server`): `load_chat_model` puts the model
on the best device (CUDA, then MPS, then the CPU) in a precision that device runs well, `plan_reply` fits
a conversation to the context, and `generation_kwargs` is the one ``model.generate()`` call both make, so
whatever speeds ``generate()`` up speeds both up: ``--fast_generation`` (`fast_generation_for`) puts it on its
static-cache, compiled path (`hf_scratchgpt.model.fast_generation`), by default on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, TextStreamer
from transformers.generation.streamers import BaseStreamer

from ..model.fast_generation import fast_generation_kwargs
from ..model.tokenizer_sync import stop_token_ids
from ..train.hardware import native_bf16

Message = dict[str, str]
DTYPES = ("auto", "float32", "bfloat16", "float16")
FAST_GENERATION = ("auto", "on", "off")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if present, then Apple's MPS, then the CPU; anything else is checked and kept.

    Raises:
        ValueError: ``device`` is not a device name, or names an accelerator this machine does not have.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device!r} is not a device: use auto, cpu, cuda, cuda:1, mps.") from error
    present = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not present.get(chosen.type, True):
        raise ValueError(
            f"--device {device}: this machine has no {chosen.type.upper()} device; use --device auto."
        )
    return chosen


def load_chat_model(
    model_path: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, Any]:
    """The model (in eval mode, on `resolve_device`'s device) and tokenizer of a folder or Hub id.

    ``dtype="auto"`` keeps the precision the weights were saved in, except on a CPU that only emulates
    it: half-precision weights run in float32 there (bf16 emulated on an AVX2 CPU is ~100x slower).

    Raises:
        ValueError: unknown ``dtype`` or ``device``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    target = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        trust_remote_code=trust_remote_code,
    )
    slow_on_cpu = model.dtype == torch.float16 or (
        model.dtype == torch.bfloat16 and not native_bf16(use_cpu=True)
    )
    if dtype == "auto" and target.type == "cpu" and slow_on_cpu:
        model = model.float()
    return model.to(target).eval(), tokenizer


def fit_to_context(
    messages: list[Message],
    tokenizer: Any,
    context_length: int,
    reply_room: int,
    reply_limit_name: str = "--max_new_tokens",
) -> tuple[list[Message], list[int]]:
    """Drop the oldest turns (never the system prompt, never the last message) until the prompt leaves
    ``reply_room`` tokens of the ``context_length`` free. Returns the kept messages and their prompt ids.

    Raises:
        ValueError: the system prompt and the last message alone do not fit (the message names
            ``reply_limit_name``, the setting that asks for the reply's length).
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    while True:
        kept = system + turns
        prompt_ids = tokenizer.apply_chat_template(kept, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        if len(prompt_ids) + reply_room <= context_length:
            return kept, prompt_ids
        if len(turns) <= 1:
            raise ValueError(
                f"The message needs {len(prompt_ids)} tokens (system prompt included) plus {reply_room} for "
                f"the reply, more than the model's context of {context_length}: shorten it or lower "
                f"{reply_limit_name}."
            )
        # Drop the oldest turn, and the assistant answers that would then open the conversation.
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] == "assistant":
            turns = turns[1:]


def plan_reply(
    messages: list[Message],
    tokenizer: Any,
    context_length: int,
    max_new_tokens: int | None = None,
    reply_limit_name: str = "--max_new_tokens",
) -> tuple[list[Message], list[int], int]:
    """Fit a conversation and its reply into the context: returns the kept messages, their prompt ids and
    how many new tokens the reply may have (``max_new_tokens``, or up to the end of the context if None).

    The reply is promised at least ``min(max_new_tokens, context_length // 4)`` tokens: older turns are
    dropped to make that room (see `fit_to_context`).
    """
    wanted = context_length if max_new_tokens is None else max_new_tokens
    room = min(wanted, context_length // 4)
    kept, prompt_ids = fit_to_context(messages, tokenizer, context_length, room, reply_limit_name)
    return kept, prompt_ids, min(wanted, context_length - len(prompt_ids))


def reply_stop_ids(model: PreTrainedModel, tokenizer: Any) -> list[int]:
    """The token ids a reply ends at: the generation config's and the tokenizer's (``<|endoftext|>``,
    ``<|im_end|>``), so a folder saved before its generation config knew ``<|im_end|>`` still ends its turns."""
    configured = model.generation_config.eos_token_id
    configured = (
        [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    )
    return configured + [i for i in stop_token_ids(tokenizer) if i not in configured]


def generation_kwargs(
    model: PreTrainedModel,
    tokenizer: Any,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    top_k: int | None = None,
    fast_generation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The arguments of ``model.generate()`` for one reply to ``prompt_ids``, ending at `reply_stop_ids`.

    ``temperature=0`` decodes greedily; ``top_k=None`` keeps the model's generation config's;
    ``fast_generation``: `fast_generation_for`'s arguments, added as they are.
    """
    stop_ids = reply_stop_ids(model, tokenizer)
    input_ids = torch.tensor([prompt_ids], device=model.device)
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        sampling |= {} if top_k is None else {"top_k": top_k}
    return dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0],
        **sampling,
        **(fast_generation or {}),
    )


def fast_generation_for(
    choice: str, model: PreTrainedModel, cuda_graphs: bool = True
) -> dict[str, Any] | None:
    """``generate()``'s arguments for ``--fast_generation`` (one of FAST_GENERATION), or None for its plain path.

    ``auto`` is on where the compiled decoding steps pay off from the first reply (a GPU, where they are also
    replayed as CUDA graphs unless ``cuda_graphs=False``) and off on a CPU, where the first reply would wait for
    the compilation (~5-13 s) for ~1.3x the tokens/s after (benchmarks/generation.py).

    Raises:
        ValueError: ``choice`` is not one of FAST_GENERATION.
    """
    if choice not in FAST_GENERATION:
        raise ValueError(f"--fast_generation {choice!r} is not one of {', '.join(FAST_GENERATION)}.")
    if choice == "off" or (choice == "auto" and model.device.type != "cuda"):
        return None
    return fast_generation_kwargs(model, cuda_graphs=cuda_graphs)


def continue_text(
    model: PreTrainedModel, tokenizer: Any, prompt: str, max_new_tokens: int, **sampling: Any
) -> str:
    """``prompt`` and the model's continuation of it, decoded without special tokens: the one way a plain
    text prompt is continued (training's samples, the sample stage). At most ``max_new_tokens`` new tokens,
    and never past the context (a learned-position model cannot see past its last position); an empty
    prompt starts from the end-of-text token. ``sampling``: ``generate()``'s settings (``do_sample``,
    ``temperature``, ``top_k``, ...).

    Raises:
        ValueError: the prompt fills the context, leaving no room to generate; the message gives both lengths.
    """
    inputs = tokenizer(prompt or tokenizer.eos_token, return_tensors="pt").to(model.device)
    length, context = inputs["input_ids"].shape[1], model.config.max_position_embeddings
    if length >= context:
        raise ValueError(
            f"The prompt {prompt[:40]!r} is {length} tokens, filling the model's context of {context} tokens: "
            "no room to generate. Shorten it."
        )
    output = model.generate(
        **inputs,
        **sampling,
        max_new_tokens=min(max_new_tokens, context - length),
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0], skip_special_tokens=True)


def generate_reply(
    model: PreTrainedModel,
    tokenizer: Any,
    messages: list[Message],
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_k: int = 50,
    top_p: float = 1.0,
    streamer: BaseStreamer | None = None,
    fast_generation: dict[str, Any] | None = None,
) -> str:
    """The assistant's next turn after ``messages``, without its end-of-turn token.

    ``temperature=0`` decodes greedily. Older turns are dropped when the conversation and the reply
    would not fit the context (see `plan_reply`). ``fast_generation``: see `generation_kwargs`.
    """
    _, prompt_ids, room = plan_reply(
        messages, tokenizer, model.config.max_position_embeddings, max_new_tokens
    )
    kwargs = generation_kwargs(model, tokenizer, prompt_ids, room, temperature, top_p, top_k, fast_generation)
    output = model.generate(**kwargs, streamer=streamer)
    return tokenizer.decode(output[0, len(prompt_ids) :], skip_special_tokens=True).strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="Model folder or Hub id (with a chat template, e.g. the SFT output).")
    parser.add_argument("--system", default=None, help="System prompt that opens the conversation.")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily.")
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=None, help="Seed for sampling (reproducible replies).")
    add_model_arguments(parser)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `load_chat_model`, shared by ``scratchgpt chat`` and ``scratchgpt serve``."""
    parser.add_argument(
        "--device", default="auto", help="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda:1', ..."
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="'auto': the weights' own, float32 on a CPU that emulates it.",
    )
    parser.add_argument(
        "--trust_remote_code", action="store_true", help="Load a model defined by remote code."
    )
    parser.add_argument(
        "--fast_generation",
        default="auto",
        choices=FAST_GENERATION,
        help="Static KV cache and compiled decoding steps; 'auto': on a GPU only (on a CPU the first reply "
        "waits for the compilation).",
    )


def run(args: argparse.Namespace) -> int:
    try:
        model, tokenizer = load_chat_model(args.model, args.device, args.dtype, args.trust_remote_code)
    except ValueError as error:  # a device this machine lacks
        print(error, file=sys.stderr)
        return 2
    if tokenizer.chat_template is None:
        print(f"{args.model} has no chat template: fine-tune it with training/sft.py first.", file=sys.stderr)
        return 2
    if args.seed is not None:
        torch.manual_seed(args.seed)
    fast_generation = fast_generation_for(args.fast_generation, model)
    interactive = sys.stdin.isatty()
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    if interactive:
        print("Type a message; /clear forgets the conversation, /exit leaves.")
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/clear":
            messages = list(system)
            continue
        messages.append({"role": "user", "content": text})
        try:
            plan_reply(messages, tokenizer, model.config.max_position_embeddings, args.max_new_tokens)
        except ValueError as error:  # this message alone does not fit: say so and forget it
            print(error, file=sys.stderr)
            messages.pop()
            continue
        print("assistant> ", end="", flush=True)
        reply = generate_reply(
            model,
            tokenizer,
            messages,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
            fast_generation=fast_generation,
        )
        messages.append({"role": "assistant", "content": reply})


__all__ = [
    "add_arguments",
    "add_model_arguments",
    "continue_text",
    "fast_generation_for",
    "fit_to_context",
    "generate_reply",
    "generation_kwargs",
    "load_chat_model",
    "plan_reply",
    "reply_stop_ids",
    "resolve_device",
    "run",
]
