"""ScratchGPTConfig: every hyper-parameter of the from-scratch GPT, plus named presets.

One config describes both recipes the model supports:

* the GPT-2 recipe (the default): learned absolute positions, LayerNorm, a 4x GELU MLP, biases
  everywhere and the output head tied to the token embedding. With these settings the weights
  line up one-to-one with OpenAI's GPT-2, so checkpoints convert exactly.
* the modern recipe (``"tiny-modern"``): rotary positions, RMSNorm, SwiGLU (or ReLU^2), QK-norm,
  grouped-query attention, no biases and an untied head, as in Llama-style models.

This file is copied next to saved weights as remote code, so it imports only ``transformers``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from typing import Any

from transformers import GenerationConfig, PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The switches a user can flip, with the values each one allows. Validation reads this table, so
# the error message always lists exactly what is accepted.
ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "position_embedding_type": ("learned", "rope"),
    "norm_type": ("layernorm", "rmsnorm"),
    "mlp_type": ("gelu", "swiglu", "relu2"),
}

# Where each Auto class finds its ScratchGPT class inside a saved directory (remote code).
AUTO_MAP: dict[str, str] = {
    "AutoConfig": "configuration_scratchgpt.ScratchGPTConfig",
    "AutoModel": "modeling_scratchgpt.ScratchGPTModel",
    "AutoModelForCausalLM": "modeling_scratchgpt.ScratchGPTForCausalLM",
    "AutoModelForSequenceClassification": "modeling_scratchgpt.ScratchGPTForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_scratchgpt.ScratchGPTForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_scratchgpt.ScratchGPTForQuestionAnswering",
}

# Presets: "tiny" is small enough to train on a laptop CPU in minutes; the gpt2* presets are the exact
# shapes of OpenAI's released checkpoints (124M, 350M, 774M, 1558M parameters).
GPT2_RECIPE: dict[str, Any] = {
    "position_embedding_type": "learned",
    "norm_type": "layernorm",
    "mlp_type": "gelu",
    "bias": True,
    "qk_norm": False,
    "tie_word_embeddings": True,
}
_MODERN_RECIPE: dict[str, Any] = {
    "position_embedding_type": "rope",
    "norm_type": "rmsnorm",
    "mlp_type": "swiglu",
    "bias": False,
    "qk_norm": True,
    "tie_word_embeddings": False,
}
_GPT2_SHAPES: dict[str, Any] = {"vocab_size": 50257, "max_position_embeddings": 1024}
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **GPT2_RECIPE,
        "vocab_size": 4096,
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
    },
    "tiny-modern": {
        **_MODERN_RECIPE,
        "vocab_size": 4096,
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    },
    "gpt2": {
        **GPT2_RECIPE,
        **_GPT2_SHAPES,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
    },
    "gpt2-medium": {
        **GPT2_RECIPE,
        **_GPT2_SHAPES,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
    },
    "gpt2-large": {
        **GPT2_RECIPE,
        **_GPT2_SHAPES,
        "hidden_size": 1280,
        "num_hidden_layers": 36,
        "num_attention_heads": 20,
    },
    "gpt2-xl": {
        **GPT2_RECIPE,
        **_GPT2_SHAPES,
        "hidden_size": 1600,
        "num_hidden_layers": 48,
        "num_attention_heads": 25,
    },
}


# nanoGPT / GPT-2 names of our fields, accepted everywhere (and suggested for misspellings).
GPT2_NAMES: dict[str, str] = {
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_positions": "max_position_embeddings",
    "n_inner": "intermediate_size",
}
# The normalisation epsilon under the names GPT-2, Llama and other configs give it: tools that set "the norm
# epsilon" on any config (transformers' test helpers, exporters) set ours through these.
EPSILON_NAMES: dict[str, str] = {
    "layer_norm_epsilon": "layer_norm_eps",
    "rms_norm_eps": "layer_norm_eps",
    "norm_eps": "layer_norm_eps",
    "norm_epsilon": "layer_norm_eps",
}


class ScratchGPTConfig(PreTrainedConfig):
    r"""Configuration of a ScratchGPT model.

    The field names are the standard transformers ones (``hidden_size``, ``num_hidden_layers``, ...), so
    Trainer, PEFT, TRL, lm-eval and ``DynamicCache(config=...)`` read them directly. nanoGPT / GPT-2 names
    (``n_embd``, ``n_layer``, ``n_head``, ``n_positions``, ``n_inner``, ``layer_norm_epsilon``) are accepted as
    aliases.

    Args:
        vocab_size: number of tokens in the vocabulary (rows of the embedding matrix).
        hidden_size: width of the residual stream (GPT-2's ``n_embd``).
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: number of query heads.
        num_key_value_heads: number of key/value heads; fewer than query heads gives grouped-query
            attention (GQA), 1 gives multi-query attention. Defaults to ``num_attention_heads``.
        intermediate_size: hidden width of the MLP. Defaults to ``4 * hidden_size`` (GPT-2) for the
            ``gelu``/``relu2`` MLPs and to ``8/3 * hidden_size`` rounded up to a multiple of 64 for
            ``swiglu``, which keeps the parameter count of a 4x MLP.
        max_position_embeddings: the context length. With learned positions it is a hard limit.
        position_embedding_type: ``"learned"`` (GPT-2 absolute positions) or ``"rope"`` (rotary).
        rope_theta: base of the rotary frequencies.
        norm_type: ``"layernorm"`` or ``"rmsnorm"``.
        mlp_type: ``"gelu"`` (tanh-approximated GELU, as GPT-2), ``"swiglu"`` or ``"relu2"`` (squared ReLU).
        qk_norm: normalise queries and keys per head before attention (stabilises training).
        bias: biases in the linear layers and LayerNorms.
        layer_norm_eps: epsilon of the normalisation layers.
        embedding_dropout / attention_dropout / residual_dropout: dropout probabilities (GPT-2's
            ``embd_pdrop`` / ``attn_pdrop`` / ``resid_pdrop``).
        classifier_dropout: dropout before the token-classification head (default: ``residual_dropout``).
        initializer_range: standard deviation of the normal weight init (0.02 as GPT-2).
        tie_word_embeddings: share the output head with the token embedding.
    """

    model_type = "scratchgpt"
    keys_to_ignore_at_inference = [
        "cache",
        "past_key_values",
    ]  # the KV cache's name from transformers 5.24, and before
    # `hidden_dropout`: the name transformers' generic token-classification head reads its dropout under.
    attribute_map = {**GPT2_NAMES, **EPSILON_NAMES, "hidden_dropout": "residual_dropout"}
    # FSDP wraps by these module names (the backbone is called `transformer`, its blocks `h`).
    base_model_fsdp_plan = {"wte": "free_full_weight", "h.*": "free_full_weight", "ln_f": "keep_full_weight"}

    vocab_size: int = 50257
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = 1024
    position_embedding_type: str = "learned"
    rope_theta: float = 10000.0
    norm_type: str = "layernorm"
    mlp_type: str = "gelu"
    qk_norm: bool = False
    bias: bool = True
    layer_norm_eps: float = 1e-5
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        # Aliases (GPT-2 names, other configs' epsilon names) arrive as extra kwargs; apply them before deriving the defaults that depend on them.
        for alias, field in self.attribute_map.items():
            if alias in kwargs:
                setattr(self, field, kwargs.pop(alias))
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.intermediate_size is None:
            if self.mlp_type == "swiglu":
                self.intermediate_size = 64 * -(-(8 * self.hidden_size // 3) // 64)
            else:
                self.intermediate_size = 4 * self.hidden_size
        _check_unknown_keys(type(self), kwargs)
        super().__post_init__(**kwargs)
        # Name every head in auto_map (save_pretrained only records the class being saved), so a
        # saved directory or Hub repo loads any head with trust_remote_code and no package installed.
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self._check()

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def base_model_tp_plan(self) -> dict[str, str]:
        """Tensor-parallel plan of the backbone (``from_pretrained(..., tp_plan="auto")``), for this recipe's modules.

        Attention heads and the MLP's hidden units are split across ranks (Megatron style: column-wise in,
        row-wise out, one all-reduce per sub-layer). The token embedding is vocabulary-parallel
        (``embedding_rowwise``: each rank holds a slice of the rows); a tied ``lm_head`` (sharded column-wise,
        see ``ScratchGPTForCausalLM._tp_plan``) splits the same dimension, so the shared tensor stays one.
        A property, not a class table, because ``gate_proj`` exists only in the SwiGLU MLP.
        """
        plan = {
            "wte": "embedding_rowwise",
            "h.*.attn.q_proj": "colwise",
            "h.*.attn.k_proj": "colwise",
            "h.*.attn.v_proj": "colwise",
            "h.*.attn.o_proj": "rowwise",
            "h.*.mlp.up_proj": "colwise",
            "h.*.mlp.down_proj": "rowwise",
        }
        if self.mlp_type == "swiglu":
            plan["h.*.mlp.gate_proj"] = "colwise"
        return plan

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> ScratchGPTConfig:
        """Build a config from a saved ``config.json`` (what ``from_pretrained`` and ``AutoConfig`` call).

        A saved config must name its ``vocab_size``: the class default (GPT-2's 50257) would otherwise build an
        embedding of the wrong size, and loading would fail later on a shape mismatch that never names the
        field. Code that builds configs (``ScratchGPTConfig(...)``, presets) keeps the default.
        """
        if "vocab_size" not in config_dict:
            raise ValueError(
                "The ScratchGPT config (config.json) has no `vocab_size`. Add it: the number of rows of the "
                "token embedding, i.e. the size of the tokenizer the model was trained with (len(tokenizer))."
            )
        return super().from_dict(config_dict, **kwargs)

    def _check(self) -> None:
        """Reject inconsistent settings with a message that names the field and what it accepts."""
        for field, allowed in ALLOWED_VALUES.items():
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(
                    f"ScratchGPTConfig.{field}={value!r} is not supported; allowed values: {allowed}."
                )
        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"ScratchGPTConfig.{field} must be a positive integer, got {getattr(self, field)}."
                )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ScratchGPTConfig.hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads} (each head gets hidden_size / heads dims)."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"ScratchGPTConfig.num_attention_heads={self.num_attention_heads} must be divisible by "
                f"num_key_value_heads={self.num_key_value_heads} (each key/value head serves a whole group of "
                "query heads)."
            )
        if self.position_embedding_type == "rope" and self.head_dim % 2:
            raise ValueError(
                f"ScratchGPTConfig: rotary positions need an even head dimension, got hidden_size / "
                f"num_attention_heads = {self.head_dim}."
            )
        for field in ("embedding_dropout", "attention_dropout", "residual_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"ScratchGPTConfig.{field} must be in [0, 1), got {getattr(self, field)}.")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ScratchGPTConfig:
        """Build a config from a named preset, then apply ``overrides``.

        Overrides take any config field or its GPT-2 alias, e.g.
        ``ScratchGPTConfig.from_preset("tiny", n_layer=2, vocab_size=512)``.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown ScratchGPT preset {name!r}; available presets: {sorted(PRESETS)}.")
        settings = copy.deepcopy(PRESETS[name])
        for key, value in overrides.items():
            settings[cls.attribute_map.get(key, key)] = value
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = [key for key in settings if key not in fields and key not in _PASSTHROUGH]
        if unknown:
            raise ValueError(
                f"Unknown ScratchGPTConfig field(s) {unknown}; valid fields: {sorted(fields)} "
                f"(aliases: {sorted(cls.attribute_map)})."
            )
        return cls(**settings)


# Keyword arguments that PreTrainedConfig accepts without declaring them as fields.
_PASSTHROUGH = {"num_labels", "attn_implementation", "output_attentions"}

# Keys that transformers (and the tools around it) write into or pass through a config besides the declared
# fields: they are never reported as unknown. Generation parameters (old configs carry them) are added below.
_TRANSFORMERS_KEYS = {
    *_PASSTHROUGH,
    "model_type",
    "auto_map",
    "transformers_version",
    "name_or_path",
    "_name_or_path",
    "_commit_hash",
    "torch_dtype",
    "dtype",
    "experts_implementation",
    "_attn_implementation_autoset",
    "quantization_config",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "finetuning_task",
    "sep_token_id",
    "decoder_start_token_id",
    "is_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "pruned_heads",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "rope_scaling",
    "per_layer_config",
    "distributed_config",
    "_attn_implementation_internal",
    "_experts_implementation_internal",
    *GenerationConfig().to_dict(),
}
# Names from "LLMs from scratch" (GPT_CONFIG_124M) and GPT-2's config that mean one of our fields, for the
# error message: a difflib close match does not find these.
_OTHER_NAMES = {
    "context_length": "max_position_embeddings",
    "n_ctx": "max_position_embeddings",
    "emb_dim": "hidden_size",
    "n_heads": "num_attention_heads",
    "n_layers": "num_hidden_layers",
    "drop_rate": "embedding_dropout, attention_dropout and residual_dropout",
    "qkv_bias": "bias",
}


# How alike (difflib ratio) an unknown key must be to one of our fields to be refused as a misspelling. High
# enough that names other tools set on any config (``batch_norm_eps``, ``post_norm_eps``: 0.71 and 0.67 to
# ``layer_norm_eps``) only warn, low enough to catch ``n_layers`` (0.93) or ``num_heads`` (0.80).
TYPO_SIMILARITY = 0.8


def _check_unknown_keys(config_class: type[ScratchGPTConfig], kwargs: dict[str, Any]) -> None:
    """Name config keys that no field reads: an error when one looks like a misspelt field, else a warning.

    ``n_layers`` for ``n_layer`` would otherwise be kept as an unused attribute while the model silently gets
    the default depth. Keys transformers itself writes (``architectures``, ``auto_map``, ``dtype``, generation
    parameters, ...) are known and never reported; other keys the ecosystem adds are kept with a warning.
    """
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = [key for key in kwargs if key not in fields | _TRANSFORMERS_KEYS]
    # Candidates for a misspelling: ScratchGPT's own fields and their GPT-2 aliases.
    own = (fields - {field.name for field in dataclasses.fields(PreTrainedConfig)}) | set(GPT2_NAMES)
    typos = {}
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(own), n=1, cutoff=TYPO_SIMILARITY)
        if key in _OTHER_NAMES or close:
            match = _OTHER_NAMES.get(key) or config_class.attribute_map.get(close[0], close[0])
            typos[key] = match
    if typos:
        suggestions = ", ".join(f"{key!r} (did you mean {match!r}?)" for key, match in typos.items())
        raise ValueError(
            f"Unknown ScratchGPTConfig field(s) {suggestions}: the value would be ignored and the model built "
            "with the default instead. Rename the key (in config.json, or the keyword argument)."
        )
    if unknown:
        logger.warning(
            f"ScratchGPTConfig: key(s) {unknown} are not ScratchGPT fields; they are kept on the config but no "
            f"part of the model reads them. ScratchGPT fields: {sorted(own)}."
        )


__all__ = ["ScratchGPTConfig", "PRESETS", "ALLOWED_VALUES"]
