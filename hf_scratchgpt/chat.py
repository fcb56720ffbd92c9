"""``scratchgpt chat MODEL``: talk to a chat model in the terminal, and the reply function behind it.

    scratchgpt chat outputs/sft/merged --system "You are a helpful assistant." --temperature 0.7
    echo "Name a colour." | scratchgpt chat outputs/sft/merged        # no terminal needed: reads stdin lines

``generate_reply`` is the whole of it: the conversation goes through the model's chat template, the
oldest turns are dropped until the prompt and the reply fit the context window (a learned-position
model cannot look past its last position), and generation stops at the end of the assistant's turn
(``<|im_end|>``) as well as at ``<|endoftext|>``. Tokens are printed as they come (``TextStreamer``).
Typing ``/clear`` forgets the conversation, ``/exit`` (or end of input) leaves.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, TextStreamer
from transformers.generation.streamers import BaseStreamer

from .alignment import stop_token_ids

Message = dict[str, str]


def fit_to_context(
    messages: list[Message], tokenizer: Any, context_length: int, reply_room: int
) -> tuple[list[Message], list[int]]:
    """Drop the oldest turns (never the system prompt, never the last message) until the prompt leaves
    ``reply_room`` tokens of the ``context_length`` free. Returns the kept messages and their prompt ids.

    Raises:
        ValueError: the system prompt and the last message alone do not fit.
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
                "--max_new_tokens."
            )
        # Drop the oldest turn, and the assistant answers that would then open the conversation.
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] == "assistant":
            turns = turns[1:]


def plan_reply(
    messages: list[Message], tokenizer: Any, context_length: int, max_new_tokens: int | None = None
) -> tuple[list[Message], list[int], int]:
    """Fit a conversation and its reply into the context: returns the kept messages, their prompt ids and
    how many new tokens the reply may have (``max_new_tokens``, or up to the end of the context if None).

    The reply is promised at least ``min(max_new_tokens, context_length // 4)`` tokens: older turns are
    dropped to make that room (see `fit_to_context`).
    """
    wanted = context_length if max_new_tokens is None else max_new_tokens
    kept, prompt_ids = fit_to_context(messages, tokenizer, context_length, min(wanted, context_length // 4))
    return kept, prompt_ids, min(wanted, context_length - len(prompt_ids))


def generate_reply(
    model: PreTrainedModel,
    tokenizer: Any,
    messages: list[Message],
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_k: int = 50,
    top_p: float = 1.0,
    streamer: BaseStreamer | None = None,
) -> str:
    """The assistant's next turn after ``messages``, without its end-of-turn token.

    ``temperature=0`` decodes greedily. Older turns are dropped when the conversation and the reply
    would not fit the context (see `plan_reply`).
    """
    _, prompt_ids, room = plan_reply(
        messages, tokenizer, model.config.max_position_embeddings, max_new_tokens
    )
    input_ids = torch.tensor([prompt_ids], device=model.device)
    sampling = (
        dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p) if temperature > 0 else {}
    )
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=room,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        streamer=streamer,
        **({"do_sample": False} | sampling),
    )
    return tokenizer.decode(output[0, len(prompt_ids) :], skip_special_tokens=True).strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="Model folder or Hub id (with a chat template, e.g. the SFT output).")
    parser.add_argument("--system", default=None, help="System prompt that opens the conversation.")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily.")
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=None, help="Seed for sampling (reproducible replies).")
    parser.add_argument(
        "--trust_remote_code", action="store_true", help="Load a model defined by remote code."
    )


def run(args: argparse.Namespace) -> int:
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    if tokenizer.chat_template is None:
        print(f"{args.model} has no chat template: fine-tune it with training/sft.py first.", file=sys.stderr)
        return 2
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=args.trust_remote_code).eval()
    if args.seed is not None:
        torch.manual_seed(args.seed)
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
            model, tokenizer, messages,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
        )  # fmt: skip
        messages.append({"role": "assistant", "content": reply})


__all__ = ["add_arguments", "fit_to_context", "generate_reply", "plan_reply", "run"]
