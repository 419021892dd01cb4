"""Cross-modal fusion of text token states with image patch tokens ("cross_attention" or "merged")."""

import torch
from torch import nn

from .configuration_medvl import MedVLConfig
from .layers_medvl import MedVLLayer, attention_mask_for


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
    ) -> torch.Tensor:
        if text_states.shape[0] != image_tokens.shape[0]:
            raise ValueError(
                f"Fusion pairs each text with one image, but got {text_states.shape[0]} texts and "
                f"{image_tokens.shape[0]} images."
            )
        batch, text_length = text_states.shape[:2]
        if text_attention_mask is None:
            text_attention_mask = torch.ones(batch, text_length, dtype=torch.long, device=text_states.device)
        if self.fusion_type == "cross_attention":
            mask = attention_mask_for(
                self.attn_implementation, text_attention_mask, text_length, text_length, False, text_states.dtype,
                text_states.device,
            )
            hidden_states = text_states
            for layer in self.layers:
                hidden_states = layer(hidden_states, mask, image_tokens)[0]
            return hidden_states

        image_states = self.image_norm(self.image_projection(image_tokens) + self.modality_embeddings.weight[0])
        hidden_states = torch.cat([image_states, text_states + self.modality_embeddings.weight[1]], dim=1)
        image_mask = torch.ones(batch, image_states.shape[1], dtype=text_attention_mask.dtype, device=hidden_states.device)
        joint_mask = torch.cat([image_mask, text_attention_mask], dim=1)
        length = hidden_states.shape[1]
        mask = attention_mask_for(
            self.attn_implementation, joint_mask, length, length, False, hidden_states.dtype, hidden_states.device
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)[0]
        return hidden_states[:, image_states.shape[1] :]


__all__ = ["MedVLFusion"]
