"""The in-tree ``transformers`` model that computes exactly what a ScratchGPT model computes, or a refusal.

Three in-tree architectures cover the two recipes, switch for switch:

* learned positions + LayerNorm + tanh-GELU MLP + biases -> ``GPT2LMHeadModel`` (see ``conversion.py``);
* rotary positions + RMSNorm + SwiGLU + per-head QK-norm, no biases -> ``Qwen3ForCausalLM``. Qwen3 normalises
  each head's queries and keys with an RMSNorm over ``head_dim`` *before* the rotation, as ScratchGPT does,
  uses the same rotate-half RoPE layout and ``theta``, and has grouped-query attention and a tied or untied head;
* the same without QK-norm -> ``LlamaForCausalLM`` (whose ``attention_bias`` / ``mlp_bias`` also cover biases).

Anything else (a squared-ReLU MLP, LayerNorm with rotary positions, QK-norm with learned positions, ...) has
no in-tree model with the same layers, and `in_tree_architecture` refuses it, naming the switch: an export
that computes something else would load fine and answer differently, which is worse than no export.
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from ...model.configuration_scratchgpt import ScratchGPTConfig
from ...model.conversion import convert_scratchgpt_to_gpt2, cpu_state_dict, load_exactly, same_named_settings
from ...model.modeling_scratchgpt import ScratchGPTForCausalLM

# The recipes that do have an exact in-tree match, for the refusal message.
RECIPES_THAT_EXPORT = (
    "GPT-2 recipe (preset 'tiny'/'gpt2': learned positions, layernorm, gelu MLP, biases, no QK-norm, "
    "num_key_value_heads == num_attention_heads) -> GPT2LMHeadModel; modern recipe (preset 'tiny-modern': "
    "rope, rmsnorm, swiglu MLP, with QK-norm and no biases -> Qwen3ForCausalLM, without QK-norm -> "
    "LlamaForCausalLM)"
)
_ROTARY_CLASSES = {"qwen3": (Qwen3Config, Qwen3ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}


class ExportRefusedError(ValueError):
    """The model has a switch that no in-tree architecture computes; the message names it."""


def _mismatches(config: ScratchGPTConfig) -> list[str]:
    """One line per switch whose value no in-tree model with the rest of this layout has."""
    problems = []
    if not isinstance(config.layer_norm_eps, float | int):
        problems.append(
            f"layer_norm_eps={config.layer_norm_eps!r}: PyTorch then picks the dtype's machine epsilon, while "
            "every in-tree model takes a fixed number"
        )
    if config.position_embedding_type == "learned":
        gpt2 = "GPT2LMHeadModel (the in-tree model with learned positions)"
        if config.norm_type != "layernorm":
            problems.append(f"norm_type={config.norm_type!r}: {gpt2} has LayerNorm only")
        if config.mlp_type != "gelu":
            problems.append(f"mlp_type={config.mlp_type!r}: {gpt2} has the tanh-GELU MLP only")
        if not config.bias:
            problems.append(f"bias=False: {gpt2} has biases in every linear layer and LayerNorm")
        if config.qk_norm:
            problems.append(f"qk_norm=True: {gpt2} has no QK-norm")
        if config.num_key_value_heads != config.num_attention_heads:
            problems.append(
                f"num_key_value_heads={config.num_key_value_heads} < num_attention_heads="
                f"{config.num_attention_heads}: {gpt2} has one key/value head per query head"
            )
        return problems
    rotary = "Llama/Qwen3 (the in-tree models with rotary positions and this block layout)"
    if config.norm_type != "rmsnorm":
        problems.append(
            f"norm_type={config.norm_type!r} with position_embedding_type='rope': {rotary} use RMSNorm"
        )
    if config.mlp_type != "swiglu":
        problems.append(
            f"mlp_type={config.mlp_type!r} with position_embedding_type='rope': {rotary} have the SwiGLU MLP"
        )
    if config.qk_norm and config.bias:
        problems.append(
            "bias=True with qk_norm=True: Qwen3 (the in-tree model with per-head QK-norm) has no MLP biases, "
            "and Llama (which has them) has no QK-norm"
        )
    return problems


def in_tree_architecture(config: ScratchGPTConfig) -> str:
    """``"gpt2"``, ``"qwen3"`` or ``"llama"``: the in-tree model type that computes exactly what ``config`` does.

    Raises:
        ExportRefusedError: naming every switch that has no in-tree equivalent.
    """
    problems = _mismatches(config)
    if problems:
        raise ExportRefusedError(
            "Cannot export this ScratchGPT model to an in-tree transformers architecture: no in-tree model "
            "computes what these settings compute, and an approximate export would answer differently: "
            + "; ".join(problems)
            + f". Exports exist for the {RECIPES_THAT_EXPORT}. This model still loads anywhere with "
            "trust_remote_code=True (its folder carries the modeling code)."
        )
    if config.position_embedding_type == "learned":
        return "gpt2"
    return "qwen3" if config.qk_norm else "llama"


def rotary_config(config: ScratchGPTConfig, model_type: str) -> Qwen3Config | LlamaConfig:
    """The Qwen3/Llama config with the shapes, epsilon, RoPE theta and token ids of a modern-recipe ``config``."""
    config_class, _ = _ROTARY_CLASSES[model_type]
    settings = dict(
        **same_named_settings(config),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=float(config.layer_norm_eps),
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        attention_bias=config.bias,
        attention_dropout=config.attention_dropout,
    )
    if model_type == "llama":
        settings["mlp_bias"] = config.bias
    return config_class(**settings)


# ScratchGPT parameter names -> Llama/Qwen3 names (applied in order to each key).
_ROTARY_RENAMES = [
    (r"^transformer\.wte\.", "model.embed_tokens."),
    (r"^transformer\.ln_f\.", "model.norm."),
    (r"^transformer\.h\.(\d+)\.", r"model.layers.\1."),
    (r"\.ln_1\.", ".input_layernorm."),
    (r"\.ln_2\.", ".post_attention_layernorm."),
    (r"\.attn\.", ".self_attn."),
]


def rotary_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ScratchGPT's tensors under their Llama/Qwen3 names (the layers match one to one)."""
    renamed = {}
    for name, tensor in state.items():
        for pattern, replacement in _ROTARY_RENAMES:
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    return renamed


def to_in_tree_model(model: ScratchGPTForCausalLM) -> PreTrainedModel:
    """A ``GPT2LMHeadModel``, ``Qwen3ForCausalLM`` or ``LlamaForCausalLM`` computing what ``model`` computes.

    Same dtype, on CPU, in eval mode. Raises `ExportRefusedError` for a config with no exact in-tree match.
    """
    model_type = in_tree_architecture(model.config)
    if model_type == "gpt2":
        return convert_scratchgpt_to_gpt2(model)
    _, model_class = _ROTARY_CLASSES[model_type]
    target = model_class(rotary_config(model.config, model_type)).to(model.dtype)
    load_exactly(target, rotary_state_dict(cpu_state_dict(model)))
    target.generation_config = GenerationConfig.from_dict(model.generation_config.to_dict())
    return target.eval()


def standard_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same tokenizer as a plain ``PreTrainedTokenizerFast`` (no remote code): the identical ``tokenizers``
    pipeline, special tokens, chat template, context length and padding side."""
    return PreTrainedTokenizerFast(
        tokenizer_object=copy.deepcopy(tokenizer.backend_tokenizer),
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token,
        extra_special_tokens=list(tokenizer.extra_special_tokens or []),
        chat_template=tokenizer.chat_template,
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        clean_up_tokenization_spaces=False,
    )


__all__ = [
    "ExportRefusedError",
    "in_tree_architecture",
    "rotary_config",
    "rotary_state_dict",
    "standard_tokenizer",
    "to_in_tree_model",
]
