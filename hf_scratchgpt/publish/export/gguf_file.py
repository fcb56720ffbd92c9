"""GGUF export (llama.cpp, Ollama, LM Studio), written with the ``gguf`` package that llama.cpp maintains.

The file is written from the in-tree model of `in_tree.to_in_tree_model` (GPT-2, Qwen3 or Llama), under
llama.cpp's architecture of the same name, with tensor names from ``gguf``'s own name map, as llama.cpp's
``convert_hf_to_gguf.py`` does:

* ``gpt2``: GPT-2's ``Conv1D`` weights are stored as (out, in) like every other linear layer;
* ``llama``: llama.cpp rotates adjacent channel pairs, Llama (and ScratchGPT) rotate the two halves of each
  head, so the query and key rows are permuted once here (the loaders undo it);
* ``qwen3``: llama.cpp rotates halves ("NeoX" RoPE) for Qwen3, so nothing is permuted.

The tokenizer goes in as byte-level BPE metadata (tokens, token types, merges, the special token ids, the
chat template) with GPT-2's pre-tokenizer, which is the one ScratchGPT's tokenizer uses. A ``Modelfile``
for ``ollama create`` is written next to the file.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from ...model.tokenization_scratchgpt import CHATML_TEMPLATE, IM_END_TOKEN
from .in_tree import standard_tokenizer

# --outtype -> (llama.cpp file type, the type of 2-D weights); norms and biases always stay float32.
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# llama.cpp's name for GPT-2's regex pre-tokenizer (ScratchGPT's ByteLevel(use_regex=True) uses the same split).
GPT2_PRE_TOKENIZER = "gpt-2"
MODELFILE_NAME = "Modelfile"


def require_gguf() -> ModuleType:
    """The ``gguf`` module, or an error that says how to install it."""
    try:
        import gguf
    except ImportError as err:
        raise ImportError(
            "Writing or reading GGUF files needs the `gguf` package (llama.cpp's GGUF library): "
            "pip install 'hf-scratchgpt[export]' or pip install gguf."
        ) from err
    return gguf


def _types(gguf, outtype: str):
    if outtype not in OUTTYPES:
        raise ValueError(f"--outtype {outtype!r} is not supported; choose one of {OUTTYPES}.")
    q = gguf.GGMLQuantizationType
    file_types = gguf.LlamaFileType
    return {
        "f32": (file_types.ALL_F32, q.F32),
        "f16": (file_types.MOSTLY_F16, q.F16),
        "bf16": (file_types.MOSTLY_BF16, q.BF16),
        "q8_0": (file_types.MOSTLY_Q8_0, q.Q8_0),
    }[outtype]


def _permute_for_llama_cpp(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a query/key projection (weight or bias) reordered from rotate-half to llama.cpp's adjacent-pair rotation."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _gguf_tensors(model: PreTrainedModel, gguf) -> dict[str, torch.Tensor]:
    """The in-tree model's tensors under GGUF names, in the layout llama.cpp reads."""
    config = model.config
    model_type = config.model_type
    arch = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == model_type)
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = config.tie_word_embeddings
    out = {}
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp (and transformers' GGUF loader) tie the head when `output.weight` is absent
        tensor = tensor.detach().float().cpu()
        if model_type == "gpt2" and name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            tensor = tensor.t()  # Conv1D (in, out) -> (out, in)
        elif model_type == "llama" and re.search(r"self_attn\.q_proj\.(weight|bias)$", name):
            tensor = _permute_for_llama_cpp(tensor, config.num_attention_heads)
        elif model_type == "llama" and re.search(r"self_attn\.k_proj\.(weight|bias)$", name):
            tensor = _permute_for_llama_cpp(tensor, config.num_key_value_heads)
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(
                f"No GGUF name for tensor {name!r} of a {model_type} model (gguf {gguf.__version__})."
            )
        out[gguf_name] = tensor.contiguous()
    return out


def _stored(name: str, tensor: torch.Tensor, weight_type, gguf) -> tuple[np.ndarray, object]:
    """(data, GGML type) for one tensor: norms, biases and the learned position table stay float32 (as
    llama.cpp's converter keeps them); a row that does not split into Q8_0 blocks falls back to float16."""
    q = gguf.GGMLQuantizationType
    data = tensor.numpy()
    if tensor.ndim <= 1 or name.startswith("position_embd") or weight_type == q.F32:
        return data.astype(np.float32), q.F32
    if weight_type == q.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0]:
        weight_type = q.F16
    return gguf.quants.quantize(data, weight_type), weight_type


def _check_byte_level(tokenizer: PreTrainedTokenizerFast) -> None:
    """GGUF's "gpt2" tokenizer model is byte-level BPE with GPT-2's split; refuse a tokenizer that is not."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if (
        spec["model"]["type"] != "BPE"
        or spec.get("normalizer")
        or pre.get("type") != "ByteLevel"
        or not pre.get("use_regex", True)
        or pre.get("add_prefix_space")
    ):
        raise ValueError(
            "GGUF export writes the tokenizer as byte-level BPE with GPT-2's pre-tokenizer (what ScratchGPTTokenizer "
            f"builds); this tokenizer has model {spec['model']['type']}, normalizer {spec.get('normalizer')} and "
            f"pre-tokenizer {pre}, which llama.cpp would tokenize differently. Export with a ScratchGPTTokenizer."
        )


def _add_tokenizer(writer, tokenizer: PreTrainedTokenizerFast, vocab_size: int, gguf) -> None:
    """Tokens, token types, merges, special token ids and chat template, as llama.cpp reads them."""
    _check_byte_level(tokenizer)
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab_size} rows; "
            "export the tokenizer the model was trained with."
        )
    token_type = gguf.TokenType
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for token_id in range(vocab_size):
        if token_id >= len(tokenizer):
            # Embedding rows past the tokenizer (a vocabulary rounded up): named, never produced.
            tokens.append(f"[PAD{token_id}]")
            types.append(token_type.UNUSED)
            continue
        tokens.append(tokenizer.convert_ids_to_tokens(token_id))
        if token_id in added:
            types.append(token_type.CONTROL if added[token_id].special else token_type.USER_DEFINED)
        else:
            types.append(token_type.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GPT2_PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # gguf's SpecialVocab reads merges, special ids and the chat template from a saved tokenizer folder.
    with tempfile.TemporaryDirectory() as folder:
        standard_tokenizer(tokenizer).save_pretrained(folder)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # The tokenizer adds no BOS/EOS (ScratchGPT's post-processor adds nothing): llama.cpp must not either.
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _add_hyperparameters(writer, config, file_type) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    if config.model_type == "gpt2":
        writer.add_feed_forward_length(config.n_inner or 4 * config.hidden_size)
        writer.add_head_count_kv(config.num_attention_heads)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)


def write_gguf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    path: str | Path,
    outtype: str = "f16",
    name: str = "",
) -> Path:
    """Write the in-tree ``model`` (from `to_in_tree_model`) and ``tokenizer`` as one GGUF file at ``path``."""
    gguf = require_gguf()
    file_type, weight_type = _types(gguf, outtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), model.config.model_type)
    writer.add_name(name or path.stem)
    _add_hyperparameters(writer, model.config, file_type)
    if weight_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, model.config.vocab_size, gguf)
    for tensor_name, tensor in _gguf_tensors(model, gguf).items():
        data, stored_type = _stored(tensor_name, tensor, weight_type, gguf)
        writer.add_tensor(tensor_name, data, raw_dtype=stored_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _ollama_template(tokenizer: PreTrainedTokenizerFast) -> str:
    """Ollama's Go template for the tokenizer's chat format: ChatML, or the raw prompt for a base model."""
    if tokenizer.chat_template == CHATML_TEMPLATE:
        return (
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n"
        )
    return "{{ .Prompt }}"


def write_modelfile(gguf_path: str | Path, tokenizer: PreTrainedTokenizerFast, context_length: int) -> Path:
    """A ``Modelfile`` next to the GGUF file: ``ollama create NAME -f Modelfile`` builds an Ollama model of it."""
    gguf_path = Path(gguf_path)
    stops = [
        token for token in (IM_END_TOKEN, tokenizer.eos_token) if token and token in tokenizer.get_vocab()
    ]
    lines = [
        f"# Ollama model built from {gguf_path.name} (written by `scratchgpt export --format gguf`).",
        f"# Build and run it: ollama create {gguf_path.stem} -f {MODELFILE_NAME} && ollama run {gguf_path.stem}",
        f"FROM ./{gguf_path.name}",
        f'TEMPLATE """{_ollama_template(tokenizer)}"""',
        *(f'PARAMETER stop "{token}"' for token in dict.fromkeys(stops)),
        f"PARAMETER num_ctx {context_length}",
    ]
    path = gguf_path.with_name(MODELFILE_NAME)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


__all__ = ["OUTTYPES", "require_gguf", "write_gguf", "write_modelfile"]
