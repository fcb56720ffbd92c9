"""Exact weight conversion between OpenAI GPT-2 (``transformers.GPT2LMHeadModel``) and ScratchGPT.

The GPT-2 recipe of ScratchGPT has the same computation as GPT-2; only the layout differs:

* GPT-2 stores linear layers as ``Conv1D`` with weights shaped (in, out); ``nn.Linear`` is (out, in).
* GPT-2 fuses the query/key/value projections into one ``c_attn``; ScratchGPT keeps ``q_proj``,
  ``k_proj``, ``v_proj`` separate (needed for grouped-query attention and per-projection LoRA).

Converting in: start from OpenAI's weights. Converting out: export your own model to every runtime
that already runs GPT-2 (llama.cpp, ONNX, vLLM) without remote code.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedConfig

from .configuration_scratchgpt import GPT2_NAMES, GPT2_RECIPE, ScratchGPTConfig
from .modeling_scratchgpt import ScratchGPTForCausalLM

# ScratchGPT settings a GPT-2 export needs; anything else has no GPT-2 equivalent. (GPT-2 ties its head by default;
# an untied one converts too.)
_GPT2_LAYERS = {name: value for name, value in GPT2_RECIPE.items() if name != "tie_word_embeddings"}
# GPT-2's name -> ScratchGPT's, for the settings the two configs name differently.
_GPT2_RENAMED_SETTINGS = {
    **GPT2_NAMES,
    "layer_norm_epsilon": "layer_norm_eps",
    "embd_pdrop": "embedding_dropout",
    "attn_pdrop": "attention_dropout",
    "resid_pdrop": "residual_dropout",
}
# Settings with the same name and meaning in ScratchGPT's config and in GPT-2's, Llama's and Qwen3's.
SAME_NAMED_SETTINGS = (
    "vocab_size",
    "initializer_range",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)
# Tensors that map one-to-one: (ScratchGPT name, GPT-2 name, stored transposed?). Inside each block
# ("h.{i}." prefix); GPT-2's Conv1D keeps weights as (in, out) where nn.Linear has (out, in).
_BLOCK_TENSORS = [
    ("ln_1.weight", "ln_1.weight", False),
    ("ln_1.bias", "ln_1.bias", False),
    ("ln_2.weight", "ln_2.weight", False),
    ("ln_2.bias", "ln_2.bias", False),
    ("attn.o_proj.weight", "attn.c_proj.weight", True),
    ("attn.o_proj.bias", "attn.c_proj.bias", False),
    ("mlp.up_proj.weight", "mlp.c_fc.weight", True),
    ("mlp.up_proj.bias", "mlp.c_fc.bias", False),
    ("mlp.down_proj.weight", "mlp.c_proj.weight", True),
    ("mlp.down_proj.bias", "mlp.c_proj.bias", False),
]
_MODEL_TENSORS = [(name, name, False) for name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")]


def _one_to_one(num_layers: int) -> list[tuple[str, str, bool]]:
    """Every one-to-one tensor of a model with ``num_layers`` blocks, with full names."""
    pairs = [(f"transformer.{ours}", f"transformer.{gpt2}", t) for ours, gpt2, t in _MODEL_TENSORS]
    for i in range(num_layers):
        prefix = f"transformer.h.{i}."
        pairs += [(prefix + ours, prefix + gpt2, t) for ours, gpt2, t in _BLOCK_TENSORS]
    return pairs


def same_named_settings(config: PreTrainedConfig) -> dict[str, Any]:
    """The `SAME_NAMED_SETTINGS` of ``config``, to pass as they are to another model type's config."""
    return {name: getattr(config, name) for name in SAME_NAMED_SETTINGS}


def _check_gpt2_config(config: GPT2Config) -> None:
    unsupported = {
        "activation_function": (config.activation_function, "gelu_new"),
        "scale_attn_weights": (config.scale_attn_weights, True),
        "scale_attn_by_inverse_layer_idx": (config.scale_attn_by_inverse_layer_idx, False),
        "reorder_and_upcast_attn": (config.reorder_and_upcast_attn, False),
        "add_cross_attention": (config.add_cross_attention, False),
    }
    for field, (value, needed) in unsupported.items():
        if value != needed:
            raise ValueError(
                f"Cannot convert a GPT-2 model with {field}={value!r}; only {needed!r} is supported."
            )


def scratchgpt_config_from_gpt2(config: GPT2Config) -> ScratchGPTConfig:
    """The ScratchGPT config (GPT-2 recipe) with the same shapes and settings as a ``GPT2Config``."""
    _check_gpt2_config(config)
    return ScratchGPTConfig(
        **_GPT2_LAYERS,
        **same_named_settings(config),
        # n_inner=None (GPT-2's 4 * n_embd) leaves intermediate_size to ScratchGPT's default, the same for gelu.
        **{ours: getattr(config, gpt2) for gpt2, ours in _GPT2_RENAMED_SETTINGS.items()},
    )


def gpt2_config_from_scratchgpt(config: ScratchGPTConfig) -> GPT2Config:
    """The ``GPT2Config`` equivalent of a ScratchGPT config; ``ValueError`` if it is not the GPT-2 recipe."""
    mismatched = {k: getattr(config, k) for k, v in _GPT2_LAYERS.items() if getattr(config, k) != v}
    if config.num_key_value_heads != config.num_attention_heads:
        mismatched["num_key_value_heads"] = config.num_key_value_heads
    if mismatched:
        raise ValueError(
            f"Only the GPT-2 recipe converts to GPT2LMHeadModel; these settings have no GPT-2 equivalent: "
            f"{mismatched}. GPT-2 needs {_GPT2_LAYERS} and num_key_value_heads == num_attention_heads."
        )
    return GPT2Config(
        **same_named_settings(config),
        **{gpt2: getattr(config, ours) for gpt2, ours in _GPT2_RENAMED_SETTINGS.items()},
        activation_function="gelu_new",
    )


def _converted_state_dict(
    state: dict[str, torch.Tensor], num_layers: int, tied: bool, to_gpt2: bool
) -> dict[str, torch.Tensor]:
    """ScratchGPT's tensors under GPT-2's names and layout (``to_gpt2``), or GPT-2's under ScratchGPT's."""
    out = {}
    for ours, gpt2, transposed in _one_to_one(num_layers):
        source, target = (ours, gpt2) if to_gpt2 else (gpt2, ours)
        out[target] = state[source].t() if transposed else state[source]
    out["lm_head.weight"] = state["transformer.wte.weight" if tied else "lm_head.weight"]
    for i in range(num_layers):
        prefix = f"transformer.h.{i}.attn."
        if to_gpt2:  # fuse q, k, v into GPT-2's c_attn: concatenated along the output dimension
            out[prefix + "c_attn.weight"] = torch.cat([state[f"{prefix}{n}_proj.weight"] for n in "qkv"]).t()
            out[prefix + "c_attn.bias"] = torch.cat([state[f"{prefix}{n}_proj.bias"] for n in "qkv"])
        else:  # split it
            weights = state[prefix + "c_attn.weight"].t().chunk(3)
            biases = state[prefix + "c_attn.bias"].chunk(3)
            for name, weight, bias in zip("qkv", weights, biases, strict=True):
                out[f"{prefix}{name}_proj.weight"], out[f"{prefix}{name}_proj.bias"] = weight, bias
    return out


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors, detached, on the CPU: the input of a conversion."""
    return {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def load_exactly(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load converted tensors into ``model`` and tie its weights as its config says."""
    # strict=True: a missing or extra tensor means the mapping is wrong; never return a half-converted model.
    model.load_state_dict({k: v.contiguous().clone() for k, v in state.items()}, strict=True)
    model.tie_weights()


def convert_gpt2_to_scratchgpt(gpt2_model: GPT2LMHeadModel) -> ScratchGPTForCausalLM:
    """A ``ScratchGPTForCausalLM`` computing exactly what ``gpt2_model`` computes (same dtype, on CPU)."""
    config = scratchgpt_config_from_gpt2(gpt2_model.config)
    model = ScratchGPTForCausalLM(config).to(gpt2_model.dtype)
    tensors = cpu_state_dict(gpt2_model)
    layers, tied = config.num_hidden_layers, config.tie_word_embeddings
    load_exactly(model, _converted_state_dict(tensors, layers, tied, to_gpt2=False))
    model.generation_config = gpt2_model.generation_config
    return model.eval()


def convert_scratchgpt_to_gpt2(model: ScratchGPTForCausalLM) -> GPT2LMHeadModel:
    """A ``transformers.GPT2LMHeadModel`` computing exactly what a GPT-2-recipe ScratchGPT computes."""
    config = gpt2_config_from_scratchgpt(model.config)
    gpt2 = GPT2LMHeadModel(config).to(model.dtype)
    tensors = cpu_state_dict(model)
    converted = _converted_state_dict(tensors, config.n_layer, config.tie_word_embeddings, to_gpt2=True)
    # GPT-2 also registers non-learned buffers (causal mask templates); keep the freshly built ones.
    converted.update({k: v for k, v in gpt2.state_dict().items() if k not in converted})
    load_exactly(gpt2, converted)
    gpt2.generation_config = model.generation_config
    return gpt2.eval()


__all__ = [
    "convert_gpt2_to_scratchgpt",
    "convert_scratchgpt_to_gpt2",
    "gpt2_config_from_scratchgpt",
    "scratchgpt_config_from_gpt2",
]
