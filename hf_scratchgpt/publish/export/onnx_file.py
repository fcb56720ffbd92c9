"""ONNX export: the in-tree model's logits for a whole sequence as one graph, run with ``onnxruntime``.

``torch.onnx.export`` (the dynamo exporter, which needs ``onnx`` and ``onnxscript``) traces the GPT-2 / Qwen3 /
Llama model of `in_tree.to_in_tree_model` with eager attention and no KV cache, with the sequence length
dynamic up to the model's context. The plain fast tokenizer and the config are saved next to
``model.onnx``, so the folder is all a runtime (onnxruntime, onnxruntime-web, Transformers.js-style
pipelines) needs. Without a KV cache each generated token reruns the sequence: a graph for checking
and embedding, not a fast generator.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from .in_tree import standard_tokenizer

ONNX_FILE = "model.onnx"


class _LogitsOnly(torch.nn.Module):
    """``input_ids`` (batch, sequence) -> ``logits`` (batch, sequence, vocabulary): the graph's one signature."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def write_onnx(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, output: str | Path) -> Path:
    """Export the in-tree ``model`` to ``output/model.onnx`` with the tokenizer and config beside it."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"--format onnx needs {' and '.join(missing)} (torch's ONNX exporter): pip install onnx onnxscript "
            "(and onnxruntime to run the graph, e.g. in `scratchgpt verify`)."
        )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    model.set_attn_implementation("eager")  # plain matmul/softmax ops that every ONNX runtime has
    context = model.config.max_position_embeddings
    example = torch.zeros((1, min(8, context)), dtype=torch.long)
    sequence = torch.export.Dim("sequence", min=1, max=context)
    path = output / ONNX_FILE
    torch.onnx.export(
        _LogitsOnly(model).eval(),
        (example,),
        str(path),
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_shapes=({1: sequence},),
        dynamo=True,
    )
    model.config.save_pretrained(output)
    standard_tokenizer(tokenizer).save_pretrained(output)
    return path


@functools.cache
def _session(path: str):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def onnx_logits(path: str | Path, ids: list[int]) -> torch.Tensor:
    """The logits (sequence, vocabulary) the ONNX graph at ``path`` gives for one sequence of token ids."""
    input_ids = np.asarray([ids], dtype=np.int64)
    return torch.from_numpy(_session(str(path)).run(["logits"], {"input_ids": input_ids})[0][0])


__all__ = ["ONNX_FILE", "onnx_logits", "write_onnx"]
