"""Talking to a model: the chat REPL and the OpenAI-compatible server, over the public ``generate()`` API.

* `chat`: ``scratchgpt chat`` and the reply function every stage uses for samples;
* `server`, `api`, `generation`: ``scratchgpt serve`` (FastAPI app, request schema, streamed generation).
"""
