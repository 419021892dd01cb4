"""Cross-modal fusion of text token states with image patch tokens ("cross_attention" or "merged")."""

import torch
from torch import nn

from .configuration_medvl import MedVLConfig
from .layers_medvl import MedVLLayer, attention_mask_for, uses_flash_kernels


class MedVLFusion(nn.Module):
    """Fuses text token states `(batch, text_length, text_hidden)` with image tokens `(batch, image_tokens,
    vision_hidden)` and returns fused text states `(batch, text_length, text_hidden)`.

    - `"cross_attention"`: each layer self-attends over the text, then the text tokens attend to the image tokens.
    - `"merged"`: image tokens are projected to the text width, tagged with a modality embedding, concatenated in
      front of the text tokens and processed by shared self-attention layers; the text positions are returned.
    """

    def __init__(self, config: MedVLConfig, vision_hidden_size: int):
        super().__init__()
        self.fusion_type = config.fusion_type
        text_config = config.text_config
        self.text_config = text_config
        cross_dim = vision_hidden_size if self.fusion_type == "cross_attention" else None
        # Fusion layers see the whole text (and image) at once, even after a causal text tower: their masks only
        # block padding (masks are explicit, so the text config's `is_causal` does not apply here).
        self.layers = nn.ModuleList([MedVLLayer(text_config, cross_dim) for _ in range(config.num_fusion_layers)])
        if self.fusion_type == "merged":
            self.image_projection = nn.Linear(vision_hidden_size, text_config.hidden_size)
            self.modality_embeddings = nn.Embedding(2, text_config.hidden_size)
            self.image_norm = nn.LayerNorm(text_config.hidden_size, eps=text_config.layer_norm_eps)

    @property
    def attn_implementation(self) -> str | None:
        return self.text_config._attn_implementation

    def forward(
        self,
        text_states: torch.Tensor,
        text_attention_mask: torch.Tensor | None,
        image_tokens: torch.Tensor,
        query_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused text states, `(batch, text_length, text_hidden)`; with `query_index` `(batch, k)` (text
        positions), only those positions' states `(batch, k, text_hidden)`: the last layer computes no other."""
        if text_states.shape[0] != image_tokens.shape[0]:
            raise ValueError(
                f"Fusion pairs each text with one image, but got {text_states.shape[0]} texts and "
                f"{image_tokens.shape[0]} images."
            )
        batch, text_length = text_states.shape[:2]
        if text_attention_mask is None:
            text_attention_mask = torch.ones(batch, text_length, dtype=torch.long, device=text_states.device)
        if self.fusion_type == "cross_attention":
            return self._run_layers(text_states, text_attention_mask, image_tokens, query_index)

        image_states = self.image_norm(self.image_projection(image_tokens) + self.modality_embeddings.weight[0])
        hidden_states = torch.cat([image_states, text_states + self.modality_embeddings.weight[1]], dim=1)
        image_mask = torch.ones(batch, image_states.shape[1], dtype=text_attention_mask.dtype, device=hidden_states.device)
        joint_mask = torch.cat([image_mask, text_attention_mask], dim=1)
        if query_index is None:
            return self._run_layers(hidden_states, joint_mask, None)[:, image_states.shape[1] :]
        return self._run_layers(hidden_states, joint_mask, None, query_index + image_states.shape[1])

    def _run_layers(self, hidden_states, key_padding_mask, image_tokens, query_index=None):
        length = hidden_states.shape[1]
        dtype, device = hidden_states.dtype, hidden_states.device
        mask = attention_mask_for(self.attn_implementation, key_padding_mask, length, length, False, dtype, device)
        if query_index is not None and uses_flash_kernels(self.attn_implementation) and query_index.shape[1] > 1:
            # Flash kernels unpad several queries as the last positions of the sequence: only one query is exact.
            full = self._run_layers(hidden_states, key_padding_mask, image_tokens)
            return full.gather(1, query_index[..., None].expand(-1, -1, full.shape[-1]))
        for position, layer in enumerate(self.layers):
            if query_index is not None and position == len(self.layers) - 1:
                last_mask = attention_mask_for(
                    self.attn_implementation, key_padding_mask, query_index.shape[1], length, False, dtype, device
                )
                return layer(hidden_states, last_mask, image_tokens, query_index=query_index)[0]
            hidden_states = layer(hidden_states, mask, image_tokens)[0]
        return hidden_states


__all__ = ["MedVLFusion"]
