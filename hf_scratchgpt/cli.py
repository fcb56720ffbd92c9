"""The ``scratchgpt`` console script: one entry point, one subcommand per module.

    scratchgpt chat MODEL                talk to a model in the terminal
    scratchgpt serve MODEL               an OpenAI-compatible server on 127.0.0.1
    scratchgpt push MODEL_DIR REPO_ID    upload a model folder to the Hub in one commit
    scratchgpt export MODEL OUTPUT       in-tree transformers (no remote code), GGUF or ONNX files
    scratchgpt verify MODEL [EXPORTED]   check every export computes what the model does

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and ``run(args) -> int``.
Only the module of the subcommand being run is imported, so ``scratchgpt push`` does not load a server.
Errors are reported as the scripts report them (`hf_scratchgpt.train.arguments.run_command`): the project's messages
as one line, a damaged model folder named, a traceback with ``SCRATCHGPT_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .train.arguments import run_command

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "chat": (
        "hf_scratchgpt.serve.chat",
        "Chat with a model in the terminal (streams, stops at the end of a turn).",
    ),
    "serve": (
        "hf_scratchgpt.serve.server",
        "Serve a model with an OpenAI-compatible API (127.0.0.1 by default; other hosts need an API key).",
    ),
    "push": (
        "hf_scratchgpt.publish.hub",
        "Upload a model folder (weights, tokenizer, code, card) to the Hub.",
    ),
    "export": (
        "hf_scratchgpt.publish.export",
        "Export to in-tree transformers (no remote code), GGUF or ONNX.",
    ),
    "verify": (
        "hf_scratchgpt.publish.export.verify",
        "Check that every export computes what the model does.",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """The ``scratchgpt`` console entry point: run a subcommand, return its exit status."""
    return run_command(_run_subcommand, list(sys.argv[1:] if argv is None else argv))


def _run_subcommand(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scratchgpt", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints usage and exits (or --help)
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"scratchgpt {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
