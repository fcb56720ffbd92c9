"""Generations for ``scratchgpt serve``: ``model.generate()`` in a thread, its text streamed to asyncio.

The HTTP server runs on one asyncio event loop; ``generate()`` is blocking PyTorch work. So each generation
runs in a thread of its own and hands its text to the loop through a ``TextIteratorStreamer``; the loop
only ever waits (``asyncio.to_thread``), and ``/health`` answers while a model generates.

At most ``max_concurrent`` generations run at once (an ``asyncio.Semaphore``); the rest wait their turn in
arrival order. A slot is given back by the generation's thread when ``generate()`` has returned, not when
the client goes away, so an abandoned stream cannot let one more generation start beside it; the abandoned
one is stopped at its next token (a stopping criterion watching a ``threading.Event``).

Stop strings are OpenAI's ``stop``: ``generate(stop_strings=...)`` ends the generation on the token that
completes one, and the text is cut before it. While streaming, text that could be the start of a stop
string is held back until it is known not to be one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from .chat import generation_kwargs, reply_stop_ids


@dataclass
class GenerationRequest:
    """What to generate: the prompt's token ids and OpenAI's sampling settings (``temperature=0``: greedy)."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class GenerationResult:
    """What was generated, complete once the stream has ended."""

    text: str = ""
    completion_tokens: int = 0
    finish_reason: str = "stop"  # OpenAI's: "stop" (end of turn or a stop string) or "length"


class StopWhenSet(StoppingCriteria):
    """Ends a generation at its next token once ``event`` is set (the client left, or a stop string came)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class StopStringCutter:
    """Cuts a text arriving in pieces before the first of ``stops``; `feed` returns what is safe to send."""

    def __init__(self, stops: list[str]):
        self.stops = [stop for stop in stops if stop]
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.held += piece
        found = [at for at in (self.held.find(stop) for stop in self.stops) if at >= 0]
        if found:
            self.stopped = True
            text, self.held = self.held[: min(found)], ""
            return text
        keep = self._partial_stop_length()
        text, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return text

    def flush(self) -> str:
        """The text held back at the end of the stream (it never became a stop string)."""
        text, self.held = self.held, ""
        return text

    def _partial_stop_length(self) -> int:
        """Length of the longest end of the held text that some stop string starts with."""
        longest = max((len(stop) for stop in self.stops), default=1)
        for length in range(min(len(self.held), longest - 1), 0, -1):
            if any(stop.startswith(self.held[-length:]) for stop in self.stops):
                return length
        return 0


class GenerationEngine:
    """Runs ``model.generate()`` for the server, at most ``max_concurrent`` at a time.

    ``running`` and ``waiting`` count the generations in progress and in the queue (read by ``/health``).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_concurrent: int = 1,
        fast_generation: dict[str, Any] | None = None,
    ):
        if max_concurrent < 1:
            raise ValueError(f"--max_concurrent must be at least 1, got {max_concurrent}.")
        self.model, self.tokenizer, self.max_concurrent = model, tokenizer, max_concurrent
        self.fast_generation = fast_generation  # generate()'s fast-path arguments (chat.fast_generation_for)
        self.running = self.waiting = 0
        self._slots = asyncio.Semaphore(max_concurrent)

    @property
    def context_length(self) -> int:
        return self.model.config.max_position_embeddings

    async def stream(self, request: GenerationRequest, result: GenerationResult) -> AsyncIterator[str]:
        """Yield the reply's text as it is generated; ``result`` is complete when the iteration ends.

        Raises:
            Exception: whatever ``generate()`` raised, once its thread has ended.
        """
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        # From here to the thread's start nothing awaits, so a cancelled request cannot keep the slot.
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()
        stop_now = threading.Event()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome: dict[str, Any] = {}

        def finished() -> None:  # on the event loop, once generate() has returned or raised
            self.running -= 1
            self._slots.release()
            ended.set()

        def generate() -> None:
            try:
                if request.seed is not None:
                    torch.manual_seed(request.seed)
                outcome["ids"] = self.model.generate(
                    **self._generate_kwargs(request),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopWhenSet(stop_now)]),
                )
            except Exception as error:  # handed to the request, which answers with it
                outcome["error"] = error
                streamer.end()
            finally:
                try:
                    loop.call_soon_threadsafe(finished)
                except RuntimeError:  # the server's loop has closed: nobody waits for the slot
                    pass

        threading.Thread(target=generate, name="scratchgpt-generate", daemon=True).start()
        cutter = StopStringCutter(request.stop)
        try:
            while (piece := await asyncio.to_thread(next, streamer, None)) is not None:
                text = cutter.feed(piece)
                if cutter.stopped:
                    stop_now.set()  # generate() has most likely stopped on it already
                if text:
                    result.text += text
                    yield text
                if cutter.stopped:
                    break
            if not cutter.stopped and (tail := cutter.flush()):
                result.text += tail
                yield tail
            await ended.wait()
        finally:
            stop_now.set()  # the client left mid-stream: generate no further
        if "error" in outcome:
            raise outcome["error"]
        new_ids = outcome["ids"][0, len(request.prompt_ids) :].tolist()
        result.completion_tokens = len(new_ids)
        ended_turn = bool(new_ids) and new_ids[-1] in reply_stop_ids(self.model, self.tokenizer)
        ran_out = len(new_ids) >= request.max_new_tokens and not (ended_turn or cutter.stopped)
        result.finish_reason = "length" if ran_out else "stop"

    def _generate_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = generation_kwargs(
            self.model,
            self.tokenizer,
            request.prompt_ids,
            request.max_new_tokens,
            request.temperature,
            request.top_p,
            request.top_k,
            self.fast_generation,
        )
        if request.stop:
            kwargs.update(stop_strings=request.stop, tokenizer=self.tokenizer)
        return kwargs


__all__ = ["GenerationEngine", "GenerationRequest", "GenerationResult", "StopStringCutter"]
