"""Transformer building blocks of MedVL's text tower, fusion layers and report decoder (BERT-style, post-LayerNorm)."""

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_medvl import MedVLTextConfig


def additive_attention_mask(
    key_padding_mask: torch.Tensor | None,
    query_length: int,
    key_length: int,
    is_causal: bool,
    dtype: torch.dtype,
    device: torch.device,
    past_length: int = 0,
) -> torch.Tensor | None:
    """Build a `(batch, 1, query_length, key_length)` additive mask (0 = attend, dtype-min = blocked).

    `key_padding_mask` is `(batch, key_length)` with 1 for real tokens. Queries are the last `query_length`
    positions of the keys (offset `past_length`) when causal. Both eager and SDPA attention add this same mask, so
    they agree; the dtype minimum rather than -inf keeps fully padded rows finite.
    """
    if key_padding_mask is None and not is_causal:
        return None
    blocked = torch.zeros(1, 1, query_length, key_length, dtype=torch.bool, device=device)
    if is_causal:
        query_positions = torch.arange(query_length, device=device)[:, None] + past_length
        blocked = blocked | (torch.arange(key_length, device=device)[None, :] > query_positions)
    if key_padding_mask is not None:
        blocked = blocked | (key_padding_mask[:, None, None, :] == 0)
    return torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)


def uses_flash_kernels(attn_implementation: str | None) -> bool:
    """Flash-style kernels take a 2-D padding mask and a causal flag instead of an additive 4-D mask."""
    return attn_implementation is not None and "flash" in attn_implementation


def attention_mask_for(
    attn_implementation: str | None,
    key_padding_mask: torch.Tensor | None,
    query_length: int,
    key_length: int,
    is_causal: bool,
    dtype: torch.dtype,
    device: torch.device,
    past_length: int = 0,
) -> torch.Tensor | None:
    """The mask in the form the attention implementation takes: for flash kernels the `(batch, key_length)`
    padding mask (`None` when nothing is padded; causality goes as a flag, bottom-right aligned with a cache);
    for eager and SDPA the additive `(batch, 1, query_length, key_length)` mask of `additive_attention_mask`."""
    if uses_flash_kernels(attn_implementation):
        if key_padding_mask is None or bool(key_padding_mask.all()):
            return None
        return key_padding_mask
    return additive_attention_mask(
        key_padding_mask, query_length, key_length, is_causal, dtype, device, past_length
    )


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class MedVLAttention(nn.Module):
    """Multi-head attention; self-attention, or cross-attention when `key_value_states` (width `kv_dim`) are given.
    `is_causal` reaches only flash kernels: eager and SDPA get causality inside their explicit mask."""

    def __init__(
        self, config: MedVLTextConfig, kv_dim: int | None = None, layer_idx: int | None = None, is_causal: bool = False
    ):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.is_causal = is_causal
        kv_dim = kv_dim or config.hidden_size
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(kv_dim, config.hidden_size)
        self.v_proj = nn.Linear(kv_dim, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _project(self, projection: nn.Linear, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return projection(states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(output, attention weights or None)`.

        With a `cache` (decoder generation): self-attention appends its new keys/values and attends over every
        cached position; cross-attention (an `EncoderDecoderCache`) projects the image tokens once, at the first
        step, and reuses those keys/values at every later step."""
        batch, length, _ = hidden_states.shape
        query = self._project(self.q_proj, hidden_states)
        is_cross_attention = key_value_states is not None
        layer_cache = cache
        if isinstance(cache, EncoderDecoderCache):
            layer_cache = cache.cross_attention_cache if is_cross_attention else cache.self_attention_cache
        if is_cross_attention and isinstance(cache, EncoderDecoderCache) and cache.is_updated.get(self.layer_idx):
            key = layer_cache.layers[self.layer_idx].keys
            value = layer_cache.layers[self.layer_idx].values
        else:
            source = key_value_states if is_cross_attention else hidden_states
            key, value = self._project(self.k_proj, source), self._project(self.v_proj, source)
            if layer_cache is not None and (not is_cross_attention or isinstance(cache, EncoderDecoderCache)):
                key, value = layer_cache.update(key, value, self.layer_idx)
                if is_cross_attention:
                    cache.is_updated[self.layer_idx] = True

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=self.is_causal and uses_flash_kernels(self.config._attn_implementation),
        )
        attn_output = self.out_proj(attn_output.reshape(batch, length, -1).contiguous())
        return attn_output, attn_weights


class MedVLLayer(GradientCheckpointingLayer):
    """Post-LayerNorm transformer layer: self-attention, optional cross-attention to image tokens, feed-forward.

    Weight layout follows BERT's layer one to one, so a BERT checkpoint maps onto the text tower exactly.
    """

    def __init__(
        self,
        config: MedVLTextConfig,
        cross_attention_dim: int | None = None,
        layer_idx: int | None = None,
        is_causal: bool = False,
    ):
        super().__init__()
        self.self_attn = MedVLAttention(config, layer_idx=layer_idx, is_causal=is_causal)
        self.self_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attn = None
        if cross_attention_dim is not None:
            self.cross_attn = MedVLAttention(config, kv_dim=cross_attention_dim, layer_idx=layer_idx)
            self.cross_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        query_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(hidden_states, self-attention weights or None)`.

        `query_index` `(batch, k)` computes the layer's output only at those positions, `(batch, k, hidden)`, with
        keys and values still from every position (`attention_mask` then `(batch, 1, k, length)`): exact for a
        last layer whose readers use a few positions (ITM the first token, MLM the masked ones)."""
        if query_index is None:
            attn_output, attn_weights = self.self_attn(hidden_states, attention_mask, None, cache)
        else:
            if cache is not None:
                raise ValueError("query_index computes a subset of positions and cannot extend a cache.")
            all_positions = hidden_states
            hidden_states = hidden_states.gather(1, query_index[..., None].expand(-1, -1, hidden_states.shape[-1]))
            attn_output, attn_weights = self.self_attn(hidden_states, attention_mask, all_positions)
        hidden_states = self.self_attn_norm(hidden_states + self.dropout(attn_output))
        if self.cross_attn is not None:
            if encoder_hidden_states is None:
                raise ValueError("This layer cross-attends to image tokens, but none were given.")
            cross_output, _ = self.cross_attn(hidden_states, encoder_attention_mask, encoder_hidden_states, cache)
            hidden_states = self.cross_attn_norm(hidden_states + self.dropout(cross_output))
        ffn_output = self.fc2(self.activation(self.fc1(hidden_states)))
        hidden_states = self.ffn_norm(hidden_states + self.dropout(ffn_output))
        return hidden_states, attn_weights


class MedVLTextEmbeddings(nn.Module):
    """Token + learned absolute position embeddings, LayerNorm, dropout (BERT-style)."""

    def __init__(self, config: MedVLTextConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_length: int = 0,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[1]
        if past_length + length > self.config.max_position_embeddings:
            raise ValueError(
                f"Text of {past_length + length} tokens is longer than the position table "
                f"(max_position_embeddings={self.config.max_position_embeddings}): truncate it to at most "
                f"{self.config.max_position_embeddings} tokens."
            )
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None]
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        return self.dropout(self.norm(embeddings))


class MedVLTextEncoder(nn.Module):
    """Embeddings + a stack of `MedVLLayer`s: the text tower, bidirectional or causal as its config says. The report
    decoder (`MedVLReportDecoder`) is the same stack, causal, with cross-attention to image tokens."""

    def __init__(
        self,
        config: MedVLTextConfig,
        num_layers: int | None = None,
        is_causal: bool | None = None,
        cross_attention_dim: int | None = None,
    ):
        super().__init__()
        self.config = config
        self.is_causal = config.is_causal if is_causal is None else is_causal
        self.pooling = config.pooling if self.is_causal == config.is_causal else "eos"
        self.embeddings = MedVLTextEmbeddings(config)
        num_layers = config.num_hidden_layers if num_layers is None else num_layers
        self.layers = nn.ModuleList(
            [MedVLLayer(config, cross_attention_dim, index, self.is_causal) for index in range(num_layers)]
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        token_type_ids: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """`pooler_output` pools the token states as `config.pooling` says (the last real token when causal).
        A `cache` (decoder generation) receives each layer's new self-attention keys/values (and, as an
        `EncoderDecoderCache`, the cross-attention keys/values of the image tokens, once)."""
        if token_type_ids is not None and bool((token_type_ids != 0).any()):
            # Tokenizers of BERT-style vocabularies emit all-zero segment ids for single texts: those are fine.
            raise ValueError("MedVL's text tower reads one segment per text: token_type_ids must be all 0.")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds to the text tower.")
        past_length = cache.get_seq_length() if cache is not None else 0
        batch, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if attention_mask is not None and attention_mask.shape != (batch, past_length + length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(batch, past_length + length)} "
                "to match input_ids (plus cached tokens)."
            )
        if position_ids is None and attention_mask is not None:
            # Count real tokens only, so left-padded prompts (batched generation) get the positions they have alone.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_length:]
        hidden_states = self.embeddings(input_ids, position_ids, inputs_embeds, past_length)
        mask = attention_mask_for(
            self.config._attn_implementation, attention_mask, length, past_length + length, self.is_causal,
            hidden_states.dtype, hidden_states.device, past_length,
        )
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, mask, encoder_hidden_states, None, cache)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden_states,
            pooler_output=pool_text_states(hidden_states, attention_mask, self.pooling),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class MedVLReportDecoder(MedVLTextEncoder):
    """The report generator's decoder: the text stack made causal, each layer cross-attending to the image tokens
    (width `cross_attention_dim`)."""

    def __init__(self, config: MedVLTextConfig, num_layers: int, cross_attention_dim: int):
        super().__init__(config, num_layers=num_layers, is_causal=True, cross_attention_dim=cross_attention_dim)


def pool_text_states(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """"mean" over real tokens, "cls" (first token) or "eos" (last real token)."""
    if pooling == "cls":
        return hidden_states[:, 0]
    length = hidden_states.shape[1]  # with a cache, only the newest positions are here
    mask = attention_mask[:, -length:] if attention_mask is not None else None
    if pooling == "mean":
        if mask is None:
            return hidden_states.mean(dim=1)
        weights = mask.to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if mask is None:
        return hidden_states[:, -1]
    # Index of the last 1 in each row (works for right padding; left padding ends at the last column anyway).
    positions = torch.arange(length, device=mask.device)
    last = (positions * mask.to(positions.dtype)).argmax(dim=1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]


class MedVLLMHead(nn.Module):
    """BERT-style prediction head: dense + activation + LayerNorm, then a vocabulary projection (tied to the
    token embeddings when `tie_word_embeddings`)."""

    def __init__(self, config: MedVLTextConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.activation(self.dense(hidden_states))))


__all__ = [
    "MedVLAttention",
    "MedVLLayer",
    "MedVLLMHead",
    "MedVLTextEmbeddings",
    "MedVLReportDecoder",
    "MedVLTextEncoder",
    "additive_attention_mask",
    "attention_mask_for",
    "pool_text_states",
]
