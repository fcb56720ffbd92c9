"""``scratchgpt serve MODEL``: an OpenAI-compatible server for a model, safe to put on a network.

    scratchgpt serve outputs/sft/merged --port 8000                      # this machine only, no key
    SCRATCHGPT_API_KEY=... scratchgpt serve outputs/sft/merged --host 0.0.0.0   # others, with a key
    # then any OpenAI client:
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...").chat.completions.create(
        model="outputs/sft/merged", messages=[{"role": "user", "content": "Name a colour."}], stream=True)

Why a server of our own: ``transformers serve`` finds a model's class by name on the ``transformers``
package, which has no out-of-tree or remote-code classes, and reusing its internals broke on a minor
release (5.24). This one is built from public pieces only: FastAPI and uvicorn (``transformers[serving]``
installs both), ``model.generate()`` and ``TextIteratorStreamer``. Going through ``generate()`` keeps
the model's generation config (its end-of-turn ``<|im_end|>``) and whatever makes ``generate()`` faster.

* `hf_scratchgpt.serve.api`: the routes (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``,
  ``/health``), OpenAI's request/response and error schemas, the API key check;
* `hf_scratchgpt.serve.generation`: generations in threads, at most ``--max_concurrent`` at once;
* this module: the command line, loading the model (`hf_scratchgpt.serve.chat.load_chat_model`: CUDA, then MPS,
  then the CPU), and `start_server` for code that wants a server in the background (tests, the LLM judge).

A server that other machines can reach must not be open to anyone: a ``--host`` other than a loopback
address is refused unless an API key is set (``--api_key`` or the ``SCRATCHGPT_API_KEY`` environment
variable, which keeps the key out of the process list). The key travels in clear over plain HTTP: beyond a
trusted network, put a TLS proxy in front.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .chat import add_model_arguments, fast_generation_for, load_chat_model
from .generation import GenerationEngine

DEFAULT_HOST = "127.0.0.1"
API_KEY_ENV = "SCRATCHGPT_API_KEY"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (``localhost``, ``127.x.x.x``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key.

    Raises:
        ValueError: ``host`` is not a loopback address and ``api_key`` is empty.
    """
    if not api_key and not is_loopback(host):
        raise ValueError(
            f"--host {host} lets other machines reach the server, so it needs an API key: pass "
            f"--api_key KEY or set {API_KEY_ENV} (clients send it as `Authorization: Bearer KEY`), "
            f"or listen on {DEFAULT_HOST} only."
        )


def build_app(
    model_path: str,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    api_key: str | None = None,
    max_concurrent: int = 1,
    fast_generation: str = "auto",
) -> Any:
    """The FastAPI app serving ``model_path`` (loaded now) as ``model_path``; its engine is ``app.state.engine``.

    ``fast_generation`` (``--fast_generation``): compiled decoding steps without CUDA graphs, since every
    generation runs in a thread of its own (see `hf_scratchgpt.serve.generation`).
    """
    try:
        from .api import create_app
    except ImportError as error:
        raise ImportError(
            "scratchgpt serve needs the serving extras: pip install 'hf-scratchgpt[serve]' "
            "(transformers[serving]: fastapi, uvicorn)."
        ) from error
    model, tokenizer = load_chat_model(model_path, device, dtype, trust_remote_code)
    fast = fast_generation_for(fast_generation, model, cuda_graphs=False)
    return create_app(GenerationEngine(model, tokenizer, max_concurrent, fast), model_path, api_key or None)


@dataclass
class ServerHandle:
    """A server running in a background thread: ``url`` is the OpenAI ``base_url`` (ends in ``/v1``)."""

    url: str
    server: Any
    thread: threading.Thread
    engine: GenerationEngine

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

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
    (``device``, ``dtype``, ``trust_remote_code``, ``api_key``, ``max_concurrent``, ``fast_generation``). Stop it with
    ``handle.stop()`` or a ``with`` block.

    Raises:
        ValueError: a non-loopback ``host`` without ``api_key`` (see `check_exposure`).
        RuntimeError: the server did not start (the port is taken).
    """
    import uvicorn

    check_exposure(host, app_kwargs.get("api_key"))
    app = build_app(model_path, **app_kwargs)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    # uvicorn installs signal handlers only in the main thread; a background server must not try.
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve()), name="scratchgpt-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"The server for {model_path} did not start on {host}:{port} (port taken?).")
        time.sleep(0.05)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    return ServerHandle(f"http://{host}:{bound_port}/v1", server, thread, app.state.engine)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="Model folder or Hub id (a chat model, e.g. the SFT output's merged/): its name in requests.",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="Listen address (default: this machine only; any other needs an API key).",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api_key",
        default=None,
        help=f"Key clients must send (`Authorization: Bearer KEY`); default: ${API_KEY_ENV}, else none.",
    )
    parser.add_argument(
        "--max_concurrent",
        type=int,
        default=1,
        help="Generations run at once; more requests wait their turn (default 1: one already uses every core).",
    )
    add_model_arguments(parser)


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """`build_app`'s keyword arguments from the command line (the key from the environment if not given).

    Raises:
        ValueError: listening beyond this machine without a key.
    """
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    check_exposure(args.host, api_key)
    return dict(
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        api_key=api_key,
        max_concurrent=args.max_concurrent,
        fast_generation=args.fast_generation,
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        options = server_options(args)
        app = build_app(args.model, **options)
    except ValueError as error:  # exposure without a key, a device this machine lacks, --max_concurrent 0
        print(error, file=sys.stderr)
        return 2
    engine = app.state.engine
    access = "clients must send the API key" if options["api_key"] else "no API key"
    print(
        f"Serving {args.model} on {engine.model.device} at http://{args.host}:{args.port}/v1 (OpenAI API; "
        f"{access}; {engine.max_concurrent} generation(s) at once; Ctrl+C stops)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = [
    "API_KEY_ENV",
    "DEFAULT_HOST",
    "ServerHandle",
    "add_arguments",
    "build_app",
    "check_exposure",
    "is_loopback",
    "run",
    "server_options",
    "start_server",
]
