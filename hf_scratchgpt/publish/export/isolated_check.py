"""Run a model through plain ``transformers`` in a process where ``hf_scratchgpt`` cannot be imported.

``scratchgpt verify`` runs this file as a script (``python isolated_check.py REQUEST.json RESULT.pt``), so what
it measures is what a user without the package gets: the saved folder's remote code
(``trust_remote_code=True``), an ``hf`` export (``AutoModelForCausalLM``, no remote code), or a GGUF file
through transformers' GGUF loader. It imports only the standard library, ``torch``, ``transformers`` and
``gguf`` (`verify` imports `measure` from it for the in-process paths); the request names the paths, the prompts (token ids) and the texts for the tokenizer round trip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def gguf_config(path: Path):
    """The transformers config of a GGUF file, with what transformers 5.24's GGUF reader leaves out put back.

    Its reader maps ``gpt2.context_length`` to an unused ``n_ctx`` (GPT-2's position table stays 1024 rows),
    ignores ``qwen3.attention.key_length`` (Qwen3's ``head_dim`` stays 128) and has no key for Llama's biases;
    each is read here from the file's own metadata or tensor names.
    """
    from gguf import GGUFReader

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    if arch == "gpt2":
        config.n_positions = reader.fields["gpt2.context_length"].contents()
    elif arch == "qwen3" and "qwen3.attention.key_length" in reader.fields:
        config.head_dim = reader.fields["qwen3.attention.key_length"].contents()
    elif arch == "llama":
        names = {tensor.name for tensor in reader.tensors}
        config.attention_bias = "blk.0.attn_q.bias" in names
        config.mlp_bias = "blk.0.ffn_up.bias" in names
    return config


def load(kind: str, path: Path) -> tuple[Any, Any]:
    """(model in float32 and eval mode, tokenizer) for one path."""
    if kind == "gguf":
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, config=gguf_config(path), dtype=torch.float32
        )
        return model.eval(), tokenizer
    remote = kind == "remote_code"
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=remote, dtype=torch.float32)
    return model.eval(), tokenizer


@torch.no_grad()
def measure(model: Any, tokenizer: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Logits for every prompt position, greedy continuations, and the tokenizer on the round-trip texts."""
    logits, greedy = [], []
    for ids in request["prompts"]:
        input_ids = torch.tensor([ids])
        logits.append(model(input_ids).logits[0].float())
        generated = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=request["max_new_tokens"],
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        greedy.append(generated[0, len(ids) :].tolist())
    encoded = [
        tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] for text in request["texts"]
    ]
    decoded = [tokenizer.decode(ids) for ids in request["text_ids"]]
    return {
        "logits": logits,
        "greedy": greedy,
        "encoded": encoded,
        "decoded": decoded,
        "model_class": type(model).__name__,
        "tokenizer_class": type(tokenizer).__name__,
    }


def main(request_file: str, result_file: str) -> None:
    request = json.loads(Path(request_file).read_text(encoding="utf-8"))
    results = {}
    for entry in request["paths"]:
        try:
            model, tokenizer = load(entry["kind"], Path(entry["path"]))
            results[entry["label"]] = measure(model, tokenizer, request)
        except Exception as err:  # one path failing to load is a result to report, not the end of the check
            results[entry["label"]] = {"error": f"{type(err).__name__}: {err}"}
    torch.save(results, result_file)


if __name__ == "__main__":
    sys.modules["hf_scratchgpt"] = None  # as on a machine without the package: any import of it fails
    main(*sys.argv[1:3])
