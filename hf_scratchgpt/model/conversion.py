"""Exact weight conversion between OpenAI GPT-2 (``transformers.GPT2LMHeadModel``) and ScratchGPT.

The GPT-2 recipe of ScratchGPT has the same computation as GPT-2; only the layout differs:

* GPT-2 stores linear layers as ``Conv1D`` with weights shaped (in, out); ``nn.Linear`` is (out, in).
* GPT-2 fuses the query/key/value projections into one ``c_attn``; ScratchGPT keeps ``q_proj``,
  ``k_proj``, ``v_proj`` separate (needed for grouped-query attention and per-projection LoRA).

Converting in: start from OpenAI's weights. Converting out: export your own model to every runtime
that already runs GPT-2 (llama.cpp, ONNX, vLLM) without remote code.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .configuration_scratchgpt import ScratchGPTConfig
from .modeling_scratchgpt import ScratchGPTForCausalLM

# ScratchGPT settings a GPT-2 export needs; anything else has no GPT-2 equivalent.
_GPT2_RECIPE = {
    "position_embedding_type": "learned",
    "norm_type": "layernorm",
    "mlp_type": "gelu",
    "bias": True,
    "qk_norm": False,
}
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
        **_GPT2_RECIPE,
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        intermediate_size=config.n_inner or 4 * config.n_embd,
        max_position_embeddings=config.n_positions,
        layer_norm_eps=config.layer_norm_epsilon,
        embedding_dropout=config.embd_pdrop,
        attention_dropout=config.attn_pdrop,
        residual_dropout=config.resid_pdrop,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


def gpt2_config_from_scratchgpt(config: ScratchGPTConfig) -> GPT2Config:
    """The ``GPT2Config`` equivalent of a ScratchGPT config; ``ValueError`` if it is not the GPT-2 recipe."""
    mismatched = {k: getattr(config, k) for k, v in _GPT2_RECIPE.items() if getattr(config, k) != v}
    if config.num_key_value_heads != config.num_attention_heads:
        mismatched["num_key_value_heads"] = config.num_key_value_heads
    if mismatched:
        raise ValueError(
            f"Only the GPT-2 recipe converts to GPT2LMHeadModel; these settings have no GPT-2 equivalent: "
            f"{mismatched}. GPT-2 needs {_GPT2_RECIPE} and num_key_value_heads == num_attention_heads."
        )
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_embd=config.hidden_size,
        n_layer=config.num_hidden_layers,
        n_head=config.num_attention_heads,
        n_inner=config.intermediate_size,
        n_positions=config.max_position_embeddings,
        activation_function="gelu_new",
        layer_norm_epsilon=config.layer_norm_eps,
        embd_pdrop=config.embedding_dropout,
        attn_pdrop=config.attention_dropout,
        resid_pdrop=config.residual_dropout,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


def _state_dict_to_gpt2(
    state: dict[str, torch.Tensor], num_layers: int, tied: bool
) -> dict[str, torch.Tensor]:
    out = {gpt2: state[ours].t() if t else state[ours] for ours, gpt2, t in _one_to_one(num_layers)}
    for i in range(num_layers):
        prefix = f"transformer.h.{i}.attn."
        # Fuse q, k, v into GPT-2's c_attn: concatenated along the output dimension.
        out[prefix + "c_attn.weight"] = torch.cat([state[f"{prefix}{n}_proj.weight"] for n in "qkv"]).t()
        out[prefix + "c_attn.bias"] = torch.cat([state[f"{prefix}{n}_proj.bias"] for n in "qkv"])
    out["lm_head.weight"] = state["transformer.wte.weight" if tied else "lm_head.weight"]
    return out


def _state_dict_from_gpt2(
    state: dict[str, torch.Tensor], num_layers: int, tied: bool
) -> dict[str, torch.Tensor]:
    out = {ours: state[gpt2].t() if t else state[gpt2] for ours, gpt2, t in _one_to_one(num_layers)}
    for i in range(num_layers):
        prefix = f"transformer.h.{i}.attn."
        weights = state[prefix + "c_attn.weight"].t().chunk(3)
        biases = state[prefix + "c_attn.bias"].chunk(3)
        for name, weight, bias in zip("qkv", weights, biases, strict=True):
            out[f"{prefix}{name}_proj.weight"], out[f"{prefix}{name}_proj.bias"] = weight, bias
    out["lm_head.weight"] = state["transformer.wte.weight" if tied else "lm_head.weight"]
    return out


def _load_exactly(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    # strict=True: a missing or extra tensor means the mapping is wrong; never return a half-converted model.
    model.load_state_dict({k: v.contiguous().clone() for k, v in state.items()}, strict=True)
    model.tie_weights()


def convert_gpt2_to_scratchgpt(gpt2_model: GPT2LMHeadModel) -> ScratchGPTForCausalLM:
    """A ``ScratchGPTForCausalLM`` computing exactly what ``gpt2_model`` computes (same dtype, on CPU)."""
    config = scratchgpt_config_from_gpt2(gpt2_model.config)
    model = ScratchGPTForCausalLM(config).to(gpt2_model.dtype)
    state = {k: v.detach().cpu() for k, v in gpt2_model.state_dict().items()}
    _load_exactly(model, _state_dict_from_gpt2(state, config.num_hidden_layers, config.tie_word_embeddings))
    model.generation_config = gpt2_model.generation_config
    return model.eval()


def convert_scratchgpt_to_gpt2(model: ScratchGPTForCausalLM) -> GPT2LMHeadModel:
    """A ``transformers.GPT2LMHeadModel`` computing exactly what a GPT-2-recipe ScratchGPT computes."""
    config = gpt2_config_from_scratchgpt(model.config)
    gpt2 = GPT2LMHeadModel(config).to(model.dtype)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    converted = _state_dict_to_gpt2(state, config.n_layer, config.tie_word_embeddings)
    # GPT-2 also registers non-learned buffers (causal mask templates); keep the freshly built ones.
    converted.update({k: v for k, v in gpt2.state_dict().items() if k not in converted})
    _load_exactly(gpt2, converted)
    gpt2.generation_config = model.generation_config
    return gpt2.eval()


__all__ = [
    "convert_gpt2_to_scratchgpt",
    "convert_scratchgpt_to_gpt2",
    "gpt2_config_from_scratchgpt",
    "scratchgpt_config_from_gpt2",
]
