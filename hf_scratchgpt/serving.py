"""``scratchgpt serve MODEL``: an OpenAI-compatible chat server on 127.0.0.1, built from ``transformers serve``.

    scratchgpt serve outputs/sft/merged --port 8000
    # then any OpenAI client:
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused").chat.completions.create(
        model="outputs/sft/merged", messages=[{"role": "user", "content": "Name a colour."}], stream=True)

``transformers serve`` (5.23) already speaks the API (``/v1/chat/completions`` streaming and not,
``/v1/completions``, ``/v1/models``, ``/health``) but cannot load this model: it looks the model class
up as ``getattr(transformers, config.architectures[0])``, which has no out-of-tree or remote-code
classes. This module reuses its pieces (handlers, FastAPI app, uvicorn) and changes two things:

* the model is loaded through ``AutoModelForCausalLM`` (ours is registered there; others may need
  ``--trust_remote_code``);
* a chat request is fitted to the model's context first, as ``scratchgpt chat`` does: the oldest turns
  are dropped and ``max_tokens`` is capped, since ``transformers serve`` asks for 1024 new tokens by
  default and a learned-position model cannot look past its last position.

Generation stops at the model's ``generation_config.eos_token_id`` (``<|im_end|>`` too for our chat
models). The server is pinned to one model; a request may name any model (it gets this one).
Other code (tests, the LLM judge) starts it in the background with ``start_server(model, port)``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from transformers import AutoModelForCausalLM

from .chat import plan_reply

DEFAULT_HOST = "127.0.0.1"


def build_app(
    model_path: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """The FastAPI app serving ``model_path`` (loaded now) and its model manager (``.shutdown()`` frees it)."""
    try:
        from fastapi import HTTPException
        from transformers.cli.serving import chat_completion, model_manager, server, utils
        from transformers.cli.serving.completion import CompletionHandler
        from transformers.cli.serving.response import ResponseHandler
        from transformers.cli.serving.systemone import SystemOneHandler
        from transformers.cli.serving.transcription import TranscriptionHandler
    except ImportError as error:
        raise ImportError(
            "scratchgpt serve needs the serving extras: pip install 'hf-scratchgpt[serve]' "
            "(transformers[serving]: fastapi, uvicorn, openai)."
        ) from error

    class AutoClassModelManager(model_manager.ModelManager):
        """Loads the model through ``AutoModelForCausalLM`` instead of by class name on ``transformers``, and
        lists the one model it serves (not the Hugging Face cache) on ``/v1/models``."""

        def get_gen_models(self) -> list[dict]:
            return [{"id": self.force_model, "object": "model", "owned_by": "scratchgpt", "created": 0}]

        def _load_model(self, model_id_and_revision: str, **_: Any) -> Any:
            model_id, revision = model_id_and_revision.split("@", 1)
            return AutoModelForCausalLM.from_pretrained(
                model_id, revision=revision, dtype=self.dtype, device_map=self.device,
                trust_remote_code=self.trust_remote_code, attn_implementation=self.attn_implementation,
            )  # fmt: skip

    class ContextFittingChatHandler(chat_completion.ChatCompletionHandler):
        """Chat completions whose conversation and reply always fit the model's context."""

        async def handle_request(self, body: dict, request_id: str) -> Any:
            body["model"] = self.model_manager.force_model  # pinned: whatever name the client sends
            _, model, tokenizer = self._resolve_model(body)
            messages = self.get_processor_inputs_from_messages(body["messages"], utils.Modality.LLM)
            asked = body.pop("max_completion_tokens", None) or body.pop("max_tokens", None)
            try:
                kept, _, room = plan_reply(messages, tokenizer, model.config.max_position_embeddings, asked)
            except ValueError as error:  # the last message alone is too long: the client's to fix
                raise HTTPException(status_code=400, detail=str(error)) from error
            body.update(messages=kept, max_completion_tokens=room)
            return await super().handle_request(body, request_id)

    manager = AutoClassModelManager(device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                    force_model=model_path)  # fmt: skip
    state = utils.GenerationState(continuous_batching=False, compile=False, cb_config=None)
    app = server.build_server(
        manager,
        ContextFittingChatHandler(model_manager=manager, generation_state=state),
        completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
        response_handler=ResponseHandler(model_manager=manager, generation_state=state),
        transcription_handler=TranscriptionHandler(manager, state),
        systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state),
        generation_state=state,
    )
    return app, manager


@dataclass
class ServerHandle:
    """A server running in a background thread: ``url`` is the OpenAI ``base_url`` (ends in ``/v1``)."""

    url: str
    server: Any
    thread: threading.Thread
    model_manager: Any

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.model_manager.shutdown()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def start_server(
    model_path: str,
    port: int = 0,
    host: str = DEFAULT_HOST,
    timeout: float = 120.0,
    **app_kwargs: Any,
) -> ServerHandle:
    """Serve ``model_path`` from a background thread and return once it answers.

    ``port=0`` takes a free port (read it from ``handle.url``). ``app_kwargs`` go to `build_app`
    (``device``, ``dtype``, ``trust_remote_code``). Stop it with ``handle.stop()`` or a ``with`` block.
    """
    import uvicorn

    app, manager = build_app(model_path, **app_kwargs)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    # uvicorn installs signal handlers only in the main thread; a background server must not try.
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve()), name="scratchgpt-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            manager.shutdown()
            raise RuntimeError(f"The server for {model_path} did not start on {host}:{port} (port taken?).")
        time.sleep(0.05)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    return ServerHandle(f"http://{host}:{bound_port}/v1", server, thread, manager)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="Model folder or Hub id (a chat model, e.g. the SFT output's merged/).")
    parser.add_argument("--host", default=DEFAULT_HOST, help="Listen address (default: this machine only).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda:0', ...")
    parser.add_argument(
        "--dtype", default="auto", help="'auto' (from the weights), 'float32', 'bfloat16', ..."
    )
    parser.add_argument(
        "--trust_remote_code", action="store_true", help="Load a model defined by remote code."
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app, _ = build_app(
        args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
    print(f"Serving {args.model} at http://{args.host}:{args.port}/v1 (OpenAI API; Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = ["ServerHandle", "add_arguments", "build_app", "run", "start_server"]
