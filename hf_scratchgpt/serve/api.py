"""The OpenAI-compatible HTTP API of ``scratchgpt serve``: FastAPI routes over a `GenerationEngine`.

Requests and replies follow OpenAI's schema, so any OpenAI client works against it:

* ``POST /v1/chat/completions``: the conversation goes through the model's chat template and is fitted to
  its context (`hf_scratchgpt.serve.chat.plan_reply`: the oldest turns are dropped, ``max_tokens`` is capped);
  a message too long on its own is a 400 naming the context. ``stream: true`` answers in server-sent events
  (``data: {chunk}`` lines, then ``data: [DONE]``), with a last ``usage`` chunk when
  ``stream_options.include_usage`` asks for one; otherwise one JSON reply with ``usage``.
* ``POST /v1/completions``: plain text continuation of ``prompt`` (``max_tokens`` defaults to 16, as OpenAI's).
* ``GET /v1/models``: the one model served, under the name it was served as (the path or Hub id given on the
  command line; its last part, e.g. ``merged``, is accepted in requests too). Any other name is a 404.
* ``GET /health``: ``{"status": "ok", "generations_running": n, "generations_waiting": m}``, without a key.

Sampling takes OpenAI's ``temperature`` (0: greedy), ``top_p``, ``max_tokens`` / ``max_completion_tokens``,
``stop`` and ``seed`` (repeatable while generations do not overlap: ``--max_concurrent 1``, the default),
and ``top_k``; other fields are ignored, as OpenAI-compatible servers do, and ``n`` must be 1.

With an API key, every ``/v1`` route wants ``Authorization: Bearer KEY`` (what OpenAI clients send for
``api_key=KEY``) and answers 401 otherwise. Every error, validation errors included, is a JSON body in
OpenAI's error schema: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from .chat import plan_reply
from .generation import GenerationEngine, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered in OpenAI's schema with HTTP ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.body = status, {"message": message, "type": type, "param": param, "code": code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body}, status_code=self.status)


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """The fields both endpoints share (OpenAI's names; ``top_k`` as vLLM and ``transformers`` take it)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)  # one choice per request
    stream: bool = False
    stream_options: StreamOptions | None = None

    def generation(self, prompt_ids: list[int], max_new_tokens: int) -> GenerationRequest:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationRequest(
            prompt_ids, max_new_tokens, self.temperature, self.top_p, self.top_k, self.seed, stop
        )


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def for_template(self) -> dict[str, str]:
        """The message as chat templates take it: text content; OpenAI's ``developer`` is a system prompt."""
        parts = self.content if isinstance(self.content, list) else [self.content or ""]
        text = "".join(part if isinstance(part, str) else part.text for part in parts)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(min_length=1)  # a list holds one prompt: one choice per request


def served_names(model_id: str) -> set[str]:
    """The names a request may use for the model served as ``model_id``: it, and its folder's name."""
    return {model_id, model_id.rstrip("/"), Path(model_id.rstrip("/")).name}


def bearer_key_checker(api_key: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 unless the request carries ``Authorization: Bearer <api_key>``."""

    def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise APIError(
                401,
                "Missing API key: send `Authorization: Bearer KEY` (OpenAI clients: api_key=KEY).",
                code="invalid_api_key",
            )
        if not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    return check


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def usage(request: GenerationRequest, result: GenerationResult) -> dict[str, int]:
    prompt = len(request.prompt_ids)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": result.completion_tokens,
        "total_tokens": prompt + result.completion_tokens,
    }


def create_app(engine: GenerationEngine, model_id: str, api_key: str | None = None) -> FastAPI:
    """The server's app for ``engine``'s model, served under the name ``model_id``; ``app.state.engine``."""
    app = FastAPI(title="scratchgpt serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer_key_checker(api_key))])
    tokenizer, created = engine.tokenizer, int(time.time())
    model_card = {"id": model_id, "object": "model", "created": created, "owned_by": "scratchgpt"}

    def check_model(name: str) -> None:
        if name not in served_names(model_id):
            raise APIError(
                404,
                f"The model `{name}` does not exist: this server serves `{model_id}` "
                "(GET /v1/models lists it).",
                param="model",
                code="model_not_found",
            )

    async def answer(
        body: SamplingRequest, request: GenerationRequest, chunk: Callable[[str | None, str | None], dict]
    ) -> Any:
        """Run ``request``; stream ``chunk(text, finish_reason)`` events, or return the whole reply."""
        if not body.stream:
            result = GenerationResult()
            async for _ in engine.stream(request, result):
                pass
            return result

        async def events() -> AsyncIterator[str]:
            result = GenerationResult()
            try:
                async for text in engine.stream(request, result):
                    yield sse(chunk(text, None))
                yield sse(chunk(None, result.finish_reason))
                if body.stream_options and body.stream_options.include_usage:
                    yield sse(chunk(None, None) | {"choices": [], "usage": usage(request, result)})
            except Exception as error:  # the status line has gone out: the error goes in the stream
                logger.exception("Generation failed")
                yield sse({"error": APIError(500, f"Generation failed: {error}", "server_error").body})
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "generations_running": engine.running, "generations_waiting": engine.waiting}

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card]}

    @api.get("/models/{name:path}")
    async def show_model(name: str) -> dict[str, Any]:
        check_model(name)
        return model_card

    @api.post("/chat/completions")
    async def chat_completions(body: ChatRequest) -> Any:
        check_model(body.model)
        if tokenizer.chat_template is None:
            raise APIError(
                400,
                f"`{model_id}` has no chat template: use /v1/completions, or fine-tune it "
                "into a chat model with training/sft.py.",
                param="messages",
            )
        messages = [message.for_template() for message in body.messages]
        asked = body.max_completion_tokens or body.max_tokens
        try:
            _, prompt_ids, room = plan_reply(messages, tokenizer, engine.context_length, asked, "max_tokens")
        except ValueError as error:  # the last message alone does not fit: the client's to fix
            raise APIError(400, str(error), param="messages", code="context_length_exceeded") from error
        request, reply_id = body.generation(prompt_ids, room), f"chatcmpl-{uuid.uuid4().hex}"
        head = {"id": reply_id, "created": int(time.time()), "model": model_id}
        sent_role = False

        def chunk(text: str | None, finish_reason: str | None) -> dict[str, Any]:
            nonlocal sent_role
            delta = {} if text is None else {"content": text} | ({} if sent_role else {"role": "assistant"})
            sent_role = sent_role or text is not None
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return head | {"object": "chat.completion.chunk", "choices": [choice]}

        result = await answer(body, request, chunk)
        if not isinstance(result, GenerationResult):
            return result
        message = {"role": "assistant", "content": result.text}
        choice = {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
        return head | {"object": "chat.completion", "choices": [choice], "usage": usage(request, result)}

    @api.post("/completions")
    async def completions(body: CompletionRequest) -> Any:
        check_model(body.model)
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise APIError(
                400, "`prompt` must be one text (this server answers one prompt per request).", param="prompt"
            )
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        prompt_ids = tokenizer(prompt)["input_ids"]
        room = min(body.max_tokens or 16, engine.context_length - len(prompt_ids))
        if room < 1:
            raise APIError(
                400,
                f"The prompt has {len(prompt_ids)} tokens, leaving no room in the model's "
                f"context of {engine.context_length}: shorten it.",
                param="prompt",
                code="context_length_exceeded",
            )
        request, head = (
            body.generation(prompt_ids, room),
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model_id,
            },
        )

        def chunk(text: str | None, finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
            return head | {"choices": [choice]}

        result = await answer(body, request, chunk)
        if not isinstance(result, GenerationResult):
            return result
        return chunk(result.text, result.finish_reason) | {"usage": usage(request, result)}

    app.include_router(api)

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"] if part != "body") or None
        return APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param).response()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:  # unknown route, wrong method
        return APIError(error.status_code, str(error.detail)).response()

    @app.exception_handler(Exception)
    async def server_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("Request failed")
        return APIError(500, f"The server failed: {error}", "server_error").response()

    return app


__all__ = ["APIError", "create_app", "served_names"]
