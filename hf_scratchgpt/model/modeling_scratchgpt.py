"""The ScratchGPT model, written from scratch: embeddings, attention, MLP, blocks and task heads.

Read it top to bottom like nanoGPT's ``model.py``: small building blocks first, then the transformer
backbone (``ScratchGPTModel``), the language-model loss computed a chunk of tokens at a time, then the heads
that sit on top of the backbone: the causal LM, and transformers' generic sequence classification, token
classification and question answering heads.

Everything that is *not* the model itself is delegated to ``transformers`` so the model plugs into the
whole ecosystem: the attention kernel is picked through the attention interface (eager / sdpa / flash /
flex; sdpa's causal attention is written out for bf16 training on a CPU, where that is faster), the KV
cache is a ``transformers`` ``Cache``, masks come from ``create_causal_mask`` (which also handles left
padding and packed sequences), and losses come from ``self.loss_function`` (in training, the causal-LM
loss is computed without holding the logits: `causal_lm_loss_without_logits`).

This file is copied next to saved weights as remote code, so apart from ``torch`` and ``transformers``
it imports only its sibling ``configuration_scratchgpt``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationConfig, GenerationMixin
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import (
    GenericForQuestionAnswering,
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_scratchgpt import ScratchGPTConfig

logger = logging.get_logger(__name__)

# transformers 5.24 renamed the KV cache argument and output field `past_key_values` -> `cache` (generate passes
# `cache=`, masks and outputs take `cache`), and moved the update of a paged cache (continuous batching) out of
# the paged attention kernels into the model. This file runs as remote code under whatever transformers the user
# has, so it reads which side of that release it is on from create_causal_mask's signature (the same release
# changed both) instead of from a version number, and uses the running version's name everywhere.
CACHE_NAME = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
MODEL_UPDATES_PAGED_CACHE = CACHE_NAME == "cache"


def resolve_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The KV cache, whichever name it came under (``cache`` from transformers >= 5.24, else ``past_key_values``)."""
    if cache is not None and past_key_values is not None:
        raise ValueError(
            "Got the KV cache twice, as `cache` and as `past_key_values`. Pass it once: `cache=` (transformers "
            ">= 5.24) or `past_key_values=` (older releases, still accepted)."
        )
    if past_key_values is not None and CACHE_NAME == "cache":
        # As transformers' own models from 5.24: the old name still works, with a warning (generate passes `cache`).
        warnings.warn(
            "`past_key_values` is deprecated and will be removed in version 5.40.0 for ScratchGPT's `forward`. "
            "Use `cache` instead.",
            FutureWarning,
            stacklevel=3,
        )
    return cache if cache is not None else past_key_values


def is_paged_cache(cache: Cache) -> bool:
    """A continuous-batching cache (``generate_batch``), updated differently before transformers 5.24."""
    return type(cache).__name__ == "PagedAttentionCache"


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


def make_norm(config: ScratchGPTConfig, dim: int) -> nn.Module:
    """LayerNorm (GPT-2) or RMSNorm (modern recipe). RMSNorm skips the mean subtraction and the bias."""
    if config.norm_type == "rmsnorm":
        return nn.RMSNorm(dim, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps, bias=config.bias)


class ScratchGPTRotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): positions enter attention by rotating query/key channel pairs.

    Each pair of channels rotates at its own frequency, so the dot product between a query at position m
    and a key at position n depends only on m - n. Nothing is learned; ``inv_freq`` is a buffer computed
    from the config and not saved (``_init_weights`` recomputes it after ``from_pretrained``).
    """

    def __init__(self, config: ScratchGPTConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.theta = config.rope_theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        return 1.0 / (self.theta**exponents)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Angles in float32 even under bf16 autocast: large positions times small frequencies lose precision.
        with torch.autocast(device_type=x.device.type, enabled=False):
            angles = position_ids[..., None].float() * self.inv_freq.to(x.device)  # (B, T, head_dim/2)
            angles = torch.cat((angles, angles), dim=-1)  # (B, T, head_dim)
            return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90 degree turn of every channel pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape (B, heads, T, head_dim) by the angles whose cos/sin are (B, T, head_dim)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    return x * cos + rotate_half(x) * sin


def repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped-query attention: share each key/value head with ``groups`` query heads."""
    if groups == 1:
        return states
    batch, kv_heads, length, head_dim = states.shape
    states = states[:, :, None].expand(batch, kv_heads, groups, length, head_dim)
    return states.reshape(batch, kv_heads * groups, length, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention, softmax(q k^T * scale + mask) v, the reference every fused kernel must match.

    ``attention_mask`` is additive (0 where allowed, -inf where masked) and already causal.
    Returns the output as (B, T, heads, head_dim) plus the attention weights.
    """
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


# Up to this many positions, bf16 training on a CPU writes `matmul_causal_attention` out instead of calling sdpa;
# beyond it the (length x length) scores each layer keeps for its backward pass would cost too much memory.
MATMUL_ATTENTION_MAX_LENGTH = 512


def matmul_causal_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, None]:
    """sdpa's causal attention (no mask) written out, two matrix products around a softmax: bf16 training on a CPU.

    There sdpa runs a flash-attention kernel whose backward pass takes ~8x its forward; written out, the products
    are batched bf16 GEMMs and a compiled step fuses scaling, causal mask and softmax into one kernel: forward and
    backward 1.2-1.6x faster, a whole training step ~15% (benchmarks/train_throughput.py, Xeon with AMX). The softmax
    is computed in float32 inside its kernel and kept in bf16, as sdpa's is. In float32, sdpa is the faster one.
    """
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    length, key_length = query.shape[2], key.shape[2]
    causal = torch.full((length, key_length), float("-inf"), dtype=query.dtype, device=query.device)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling + causal.triu(key_length - length + 1)
    weights = F.dropout(F.softmax(scores, dim=-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


class ScratchGPTAttention(nn.Module):
    """Causal multi-head self-attention with optional grouped-query heads, QK-norm and rotary positions.

    Queries, keys and values have separate projections (GPT-2 fuses them into one ``c_attn``), so
    grouped-query attention is just smaller k/v projections and LoRA can target each one by name.
    """

    def __init__(self, config: ScratchGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # which slot of the KV cache belongs to this layer
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the sdpa/flash kernels when no explicit mask is passed
        self.attention_dropout = config.attention_dropout

        q_size = config.num_attention_heads * self.head_dim
        kv_size = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.bias)
        self.o_proj.is_residual_projection = True  # gets the depth-scaled init, see _init_weights
        # QK-norm: RMS-normalising each head's queries and keys bounds the attention logits.
        self.q_norm = nn.RMSNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else None
        self.resid_dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        # (B, T, C) -> (B, heads, T, head_dim)
        query = self.q_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
        key = self.k_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
        value = self.v_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)

        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)
        if position_embeddings is not None:  # rotary recipe
            cos, sin = position_embeddings
            query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)

        if cache is not None and not MODEL_UPDATES_PAGED_CACHE and is_paged_cache(cache):
            kwargs["cache"] = cache  # before transformers 5.24 the paged kernels update the cache themselves
        elif cache is not None:
            # The cache appends this step's keys/values and hands back everything seen so far (a paged cache
            # also fills in `kwargs` what its attention kernel needs).
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)

        output, weights = self.attention_function(query, attention_mask)(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = output.reshape(batch, length, -1).contiguous()
        return self.resid_dropout(self.o_proj(output)), weights

    def attention_function(self, query: torch.Tensor, attention_mask: torch.Tensor | None) -> Callable:
        """The configured attention kernel, or `matmul_causal_attention` where it replaces sdpa: training (gradients
        on) on a CPU in bf16, causal attention without a mask, up to MATMUL_ATTENTION_MAX_LENGTH positions."""
        implementation = self.config._attn_implementation
        if (
            implementation == "sdpa"
            and attention_mask is None
            and query.device.type == "cpu"
            and query.dtype == torch.bfloat16
            and torch.is_grad_enabled()
            and query.shape[2] <= MATMUL_ATTENTION_MAX_LENGTH
        ):
            return matmul_causal_attention
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU: 0.5 x (1 + tanh(z)) with z = sqrt(2/pi) (x + 0.044715 x^3).

    Compiled for a CPU, it is written as x sigmoid(2z), the same function (0.5 (1 + tanh z) = sigmoid(2z)): there
    the compiled sigmoid runs the MLP's activation and its gradient about 1.6x faster than the compiled tanh,
    while in eager mode PyTorch's own GELU kernel is the fastest.
    """
    if not (torch.compiler.is_compiling() and x.device.type == "cpu"):
        return F.gelu(x, approximate="tanh")
    wide = x.to(torch.promote_types(x.dtype, torch.float32))  # as the GELU kernel: bf16 computed in float32
    return (wide * torch.sigmoid(math.sqrt(8 / math.pi) * (wide + 0.044715 * wide.pow(3)))).to(x.dtype)


class ScratchGPTMLP(nn.Module):
    """The position-wise feed-forward network: expand, non-linearity, project back.

    ``gelu``: GPT-2's MLP with the tanh-approximated GELU (`gelu_tanh`). ``relu2``: squared ReLU (Primer,
    nanochat). ``swiglu``: a SiLU-gated linear unit (Llama), which needs the extra ``gate_proj``.
    """

    def __init__(self, config: ScratchGPTConfig):
        super().__init__()
        self.mlp_type = config.mlp_type
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
        self.gate_proj = (
            nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
            if config.mlp_type == "swiglu"
            else None
        )
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias)
        self.down_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp_type == "swiglu":
            hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)
        elif self.mlp_type == "relu2":
            hidden = F.relu(self.up_proj(x)).square()
        else:
            hidden = gelu_tanh(self.up_proj(x))
        return self.dropout(self.down_proj(hidden))


class ScratchGPTBlock(GradientCheckpointingLayer):
    """One transformer block, pre-norm: x + attn(norm(x)), then x + mlp(norm(x)).

    Subclassing ``GradientCheckpointingLayer`` gives activation checkpointing for free: when it is on,
    the block's activations are recomputed in the backward pass instead of stored.
    """

    def __init__(self, config: ScratchGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = make_norm(config, config.hidden_size)
        self.attn = ScratchGPTAttention(config, layer_idx)
        self.ln_2 = make_norm(config, config.hidden_size)
        self.mlp = ScratchGPTMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attn_output, _ = self.attn(
            self.ln_1(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.ln_2(hidden_states))


# ----------------------------------------------------------------------------------------------------
# The backbone
# ----------------------------------------------------------------------------------------------------


class ScratchGPTPreTrainedModel(PreTrainedModel):
    """Shared plumbing of every ScratchGPT class: config class, init scheme and what transformers may do."""

    config_class = ScratchGPTConfig
    base_model_prefix = "transformer"  # the backbone's attribute name in every head (GPT-2's name)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ScratchGPTBlock"]  # FSDP / device_map never split a block
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # `output_hidden_states` / `output_attentions` are collected by hooks on these modules.
    _can_record_outputs = {"hidden_states": ScratchGPTBlock, "attentions": ScratchGPTAttention}

    def __init__(self, config: ScratchGPTConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # The task heads below are transformers' generic ones, which build the backbone with
        # AutoModel.from_config(config) right after this. Loaded as remote code, the config is an instance of a copy
        # of ScratchGPTConfig that AutoModel has never seen (transformers imports the config file apart from the
        # modeling file, and registers only the head it was asked to load), so it is registered here.
        AutoModel.register(type(config), ScratchGPTModel, exist_ok=True)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, and residual projections scaled by 1/sqrt(2 * layers).

        Each block adds two outputs (attention and MLP) to the residual stream; shrinking the last
        projection of each keeps the stream's variance from growing with depth.
        """
        super()._init_weights(module)  # normal(0, initializer_range) linears/embeddings, unit norms
        if getattr(module, "is_residual_projection", False):
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, ScratchGPTRotaryEmbedding):
            # Non-persistent buffers come back empty from the meta device after from_pretrained.
            init.copy_(module.inv_freq, module.compute_inv_freq())


class ScratchGPTModel(ScratchGPTPreTrainedModel):
    """The transformer without a head: token (+ position) embeddings, the blocks, a final norm."""

    _input_embed_layer = "wte"

    def __init__(self, config: ScratchGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding_type == "learned"
            else None
        )
        self.rotary_emb = (
            ScratchGPTRotaryEmbedding(config) if config.position_embedding_type == "rope" else None
        )
        self.drop = nn.Dropout(config.embedding_dropout)
        self.h = nn.ModuleList(ScratchGPTBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = make_norm(config, config.hidden_size)
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        r"""``cache`` (``past_key_values`` before transformers 5.24) holds the keys/values of earlier steps."""
        cache = resolve_cache(cache, past_key_values)
        paged = cache is not None and is_paged_cache(cache)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        # A cache created here starts empty: the mask is then built as if there were none, which lets
        # create_causal_mask detect packed sequences (position_ids restarting at 0) in a plain forward.
        # Before transformers 5.24 masks knew nothing of paged caches (continuous batching prepares its own mask).
        mask_cache = None if paged and not MODEL_UPDATES_PAGED_CACHE else cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        # Positions count real tokens only: with left padding the first real token is position 0, as it
        # would be unpadded (generate and packing collators pass position_ids explicitly). Without a
        # mask, positions continue after whatever the cache already holds.
        # A paged cache holds many requests and has no single length; continuous batching passes position_ids.
        past_length = cache.get_seq_length() if cache is not None and not paged else 0
        seq_length = inputs_embeds.shape[1]
        # Only positions the caller gave can mark packed sequences (restarting at 0). Ours never do, and passing
        # them to the mask would make a compiled graph build a full mask where sdpa's is_causal suffices.
        packing_position_ids = position_ids
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_length:]
        elif position_ids is None:
            position_ids = torch.arange(past_length, past_length + seq_length, device=inputs_embeds.device)[
                None
            ]

        # Checked in eager mode only: a compiled graph cannot branch on tensor values (the cache length,
        # the largest position id) without a graph break.
        if not torch.compiler.is_compiling():
            self._check_input(position_ids, past_length, seq_length)
        hidden_states = inputs_embeds
        position_embeddings = None
        if self.wpe is not None:
            hidden_states = hidden_states + self.wpe(position_ids)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
        hidden_states = self.drop(hidden_states)

        # The cache goes in positionally: its keyword is `cache` from transformers 5.24, `past_key_values` before.
        causal_mask = create_causal_mask(
            self.config, inputs_embeds, attention_mask, mask_cache, packing_position_ids
        )
        for block in self.h:
            hidden_states = block(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.ln_f(hidden_states), **{CACHE_NAME: cache})

    def _check_input(self, position_ids: torch.Tensor, past_length: int, seq_length: int) -> None:
        """Clear errors for an empty input and for positions past the learned position table.

        The largest position id actually looked up is checked, not the row length: packed and padding-free
        batches put several sequences in one row, each with positions restarting at 0, so a row can be
        longer than the context while every position is inside it.
        """
        if seq_length == 0 and past_length == 0:
            raise ValueError(
                "ScratchGPT got an input of 0 tokens. Pass at least one token: for generate(), a prompt of one "
                "token or more (e.g. [[tokenizer.bos_token_id]]), or no input_ids at all to start from the "
                "generation config's bos_token_id."
            )
        if self.wpe is None or seq_length == 0:
            return
        largest = int(position_ids.max())
        if largest >= self.config.max_position_embeddings:
            raise ValueError(
                f"Input of {past_length + seq_length} tokens ({past_length} cached) reaches position {largest}, "
                f"past the model's context of max_position_embeddings={self.config.max_position_embeddings} "
                "learned positions (counted from 0). Truncate the input (e.g. tokenizer(..., truncation=True)) "
                "or use a rope model."
            )


# ----------------------------------------------------------------------------------------------------
# The language-model loss without the full logits
# ----------------------------------------------------------------------------------------------------

# Logits computed at once per chunk of tokens, at most: about 16 MB in float32, small enough to stay in a CPU's
# caches while softmax and its gradient run over them, large enough for efficient matrix products.
LOSS_CHUNK_LOGITS = 1 << 22
# A compiled graph unrolls the loop over chunks: more chunks than this would mostly add compile time.
LOSS_MAX_CHUNKS = 8


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of the logits ``hidden @ weight.T`` against ``targets``, a chunk of tokens at a time.

    In a small model's training step the (tokens x vocabulary) logits are the largest tensor by far (2048 tokens
    of an 8192-token vocabulary: 64 MB in float32), written and read again by the softmax, the loss and their
    gradients. Here each chunk's logits exist only while its loss is computed, and the gradients come with it:
    the gradient of cross-entropy with respect to the logits, softmax - one_hot, is known as soon as the logits
    are. So the forward pass computes the gradients autograd will ask for (``hidden``'s, ``weight``'s) too, and
    the backward pass only scales them. Matrix products run in ``dtype`` (bf16 under autocast, as autocast would
    run the LM head), softmax in float32. Targets equal to ``ignore_index`` count for nothing.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, dtype: torch.dtype):
        needs_grad_hidden, needs_grad_weight = ctx.needs_input_grad[:2]
        tokens, vocab = hidden.shape[0], weight.shape[0]
        chunk = max(tokens // LOSS_MAX_CHUNKS, LOSS_CHUNK_LOGITS // vocab, 1)
        h, w = hidden.to(dtype), weight.to(dtype)
        valid = targets != ignore_index
        targets = targets.where(valid, 0)  # any class: ignored rows are zeroed below
        h_valid = h * valid[:, None].to(dtype)  # the weight's gradient takes nothing from ignored tokens
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # Each chunk's gradients are kept as they come and joined once (the weight's summed in float32): writing
        # them into slices of preallocated tensors makes a compiled graph copy the whole tensor once per slice.
        grad_hidden_chunks = []
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_grad_weight else None
        for start in range(0, tokens, chunk):
            rows = slice(start, start + chunk)
            logits = (h[rows] @ w.T).float()
            log_norm = logits.logsumexp(-1)
            target_logits = logits.gather(1, targets[rows, None]).squeeze(1)
            total += ((log_norm - target_logits) * valid[rows]).sum()
            if needs_grad_hidden or needs_grad_weight:
                grad = logits.sub_(log_norm[:, None]).exp_().to(dtype)  # softmax, in place
                grad.scatter_add_(1, targets[rows, None], grad.new_full((grad.shape[0], 1), -1))  # - one_hot
            if needs_grad_hidden:
                grad_hidden_chunks.append((grad @ w) * valid[rows, None])
            if needs_grad_weight:
                grad_weight += grad.T @ h_valid[rows]
        grad_hidden = torch.cat(grad_hidden_chunks).to(hidden.dtype) if needs_grad_hidden else None
        if needs_grad_weight:
            grad_weight = grad_weight.to(weight.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_total,
            None if grad_weight is None else grad_weight * grad_total,
            None,
            None,
            None,
        )


def causal_lm_loss_without_logits(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.LongTensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.LongTensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """The loss ``ForCausalLMLoss`` computes from ``lm_head(hidden_states)``, without those logits.

    Same arguments and result: labels are shifted (tokens < n predict n) unless ``shift_labels`` is given, the
    sum is divided by ``num_items_in_batch`` when given (Trainer's gradient accumulation), else by the number of
    labels that are not ``ignore_index``.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1).to(hidden_states.device)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    if not torch.is_grad_enabled():  # no backward pass will follow: let the forward compute no gradients
        hidden, weight = hidden.detach(), weight.detach()
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    total = ChunkedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, dtype)
    if num_items_in_batch is None:
        return total / (targets != ignore_index).sum()
    return total / (
        num_items_in_batch.to(total.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
    )


# ----------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------


class ScratchGPTForCausalLM(ScratchGPTPreTrainedModel, GenerationMixin):
    """The language model: backbone + a linear head to vocabulary logits (tied to ``wte`` by default)."""

    # Applied only when config.tie_word_embeddings is true; then the file stores one embedding tensor.
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    # Tensor parallelism: the head splits the vocabulary like the (vocabulary-parallel) embedding it may be
    # tied to, and gathers the logits. The backbone's plan is config.base_model_tp_plan.
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: ScratchGPTConfig):
        super().__init__(config)
        self.transformer = ScratchGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        skip_logits: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""``labels`` are the input ids themselves (the loss shifts them); -100 marks ignored positions.
        ``logits_to_keep=1`` computes logits for the last position only, as ``generate`` does.
        ``skip_logits=True`` returns the loss only (``logits`` is None), computed without ever holding the
        logits (`causal_lm_loss_without_logits`). The default skips them when training with labels, as Liger
        kernels do (Trainer passes the same argument for loss-only evaluations); ``skip_logits=False`` returns
        both."""
        outputs: BaseModelOutputWithPast = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        if skip_logits is None:
            skip_logits = self.training and labels is not None
        if skip_logits and labels is None:
            raise ValueError(
                "skip_logits=True returns the loss without logits, so it needs labels: pass labels=..., or "
                "skip_logits=False to get the logits."
            )
        hidden_states = outputs.last_hidden_state
        logits = loss = None
        if skip_logits and self.loss_can_skip_logits():
            loss = causal_lm_loss_without_logits(hidden_states, self.lm_head.weight, labels, **kwargs)
        else:
            logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))
            if labels is not None:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
                )
            if skip_logits:
                logits = None
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def loss_can_skip_logits(self) -> bool:
        """Whether `causal_lm_loss_without_logits` computes what ``loss_function(lm_head(...))`` would: the head is
        a plain linear layer (no adapter, hook or sharded weight) and the loss is transformers' causal-LM loss."""
        head = self.lm_head
        return (
            type(head) is nn.Linear
            and head.bias is None
            and type(head.weight) is nn.Parameter
            and not (head._forward_hooks or head._forward_pre_hooks or hasattr(head, "_hf_hook"))
            and self.loss_function is ForCausalLMLoss
        )

    def _prepare_generated_length(
        self,
        generation_config: GenerationConfig,
        has_default_max_length: bool,
        has_default_min_length: bool,
        model_input_name: str,
        input_ids_length: int,
        inputs_tensor: torch.Tensor,
    ) -> GenerationConfig:
        """Stop generating at the end of a learned-position context instead of failing there.

        ``generate`` turns ``max_new_tokens`` into ``max_length`` here. With learned positions the sequence
        cannot outgrow the position table, so ``max_length`` is capped at it (with a warning): a request for
        more new tokens than the room left returns what fits, as transformers already does when no length
        is given. A prompt that leaves no room is an error. Rotary positions have no hard limit.
        """
        generation_config = super()._prepare_generated_length(
            generation_config,
            has_default_max_length,
            has_default_min_length,
            model_input_name,
            input_ids_length,
            inputs_tensor,
        )
        if self.config.position_embedding_type != "learned":
            return generation_config
        context = self.config.max_position_embeddings
        # From inputs_embeds, the returned ids (and max_length) leave out the prompt.
        prompt_length = inputs_tensor.shape[1] if model_input_name == "inputs_embeds" else input_ids_length
        room = context - prompt_length
        if room <= 0:
            raise ValueError(
                f"The prompt has {prompt_length} tokens, which fills the model's context of "
                f"max_position_embeddings={context} learned positions: no room is left to generate. Shorten the "
                f"prompt (e.g. keep its last {context // 2} tokens, or tokenizer(..., truncation=True, "
                "max_length=...) with tokenizer.truncation_side='left')."
            )
        requested = generation_config.max_length - input_ids_length
        if requested > room:
            logger.warning(
                f"Asked for {requested} new tokens but only {room} fit in the model's context "
                f"(max_position_embeddings={context} learned positions, prompt of {prompt_length} tokens): "
                f"generation stops at the context, after at most {room} new tokens."
            )
            generation_config.max_length = input_ids_length + room
        return generation_config


# The task heads are transformers' generic ones, as in its Llama and GPT-J. Each builds the backbone with
# `AutoModel.from_config` and keeps it under `base_model_prefix`: `transformer` here (the generic heads say `model`),
# so the weight names of every saved checkpoint stay what they were.


class ScratchGPTForSequenceClassification(GenericForSequenceClassification, ScratchGPTPreTrainedModel):
    """Classifies a whole sequence from the ``score`` of its last token that is not ``config.pad_token_id``.

    A causal model's last token is the only one that has seen the whole input, so it plays the role BERT's [CLS]
    plays; left or right padding finds the same token (a batch of several rows needs ``config.pad_token_id``).
    ``score`` is a name PEFT saves alongside LoRA adapters.
    """

    base_model_prefix = "transformer"


class ScratchGPTForTokenClassification(GenericForTokenClassification, ScratchGPTPreTrainedModel):
    """Labels every token (NER, POS tagging) from its hidden state. Each token sees only its left context.

    Dropout before the head: ``config.classifier_dropout``, else ``residual_dropout`` (read as ``hidden_dropout``).
    """

    base_model_prefix = "transformer"


class ScratchGPTForQuestionAnswering(GenericForQuestionAnswering, ScratchGPTPreTrainedModel):
    """Extractive QA: predicts the start and end token of the answer span inside the input."""

    base_model_prefix = "transformer"

    # The generic head looks for Llama's `embed_tokens`; the token embedding here keeps GPT-2's name.
    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value


__all__ = [
    "ScratchGPTPreTrainedModel",
    "ScratchGPTModel",
    "ScratchGPTForCausalLM",
    "ScratchGPTForSequenceClassification",
    "ScratchGPTForTokenClassification",
    "ScratchGPTForQuestionAnswering",
]
