"""The shapes MedVL's towers take to hold CLIP-family weights exactly: a pre-LayerNorm text stack (CLIP, open_clip)
and an MLP text projection (open_clip's `hf_proj_type="mlp"`, BiomedCLIP)."""

import torch
from torch import nn

from .configuration_medvl import MedVLConfig, MedVLTextConfig
from .layers_medvl import MedVLLayer, MedVLTextEncoder


class MedVLPreNormLayer(MedVLLayer):
    """A `MedVLLayer` with its LayerNorms before the attention and feed-forward blocks (CLIP's residual layout);
    the parameter names stay those of `MedVLLayer`. The last layer of a tower also holds the tower's final
    LayerNorm (`final_norm`), so that the text tower keeps `MedVLTextEncoder`'s forward."""

    def __init__(self, config: MedVLTextConfig, layer_idx: int, is_causal: bool, final_norm: bool):
        super().__init__(config, None, layer_idx, is_causal)
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if final_norm else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache=None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(self.self_attn_norm(hidden_states), attention_mask, None, cache)
        hidden_states = hidden_states + self.dropout(attn_output)
        ffn_output = self.fc2(self.activation(self.fc1(self.ffn_norm(hidden_states))))
        hidden_states = hidden_states + self.dropout(ffn_output)
        if self.final_norm is not None:
            hidden_states = self.final_norm(hidden_states)
        return hidden_states, attn_weights


def build_text_tower(config: MedVLTextConfig) -> MedVLTextEncoder:
    """The text tower `config` describes: BERT's post-LayerNorm stack, or with `norm_position="pre"` CLIP's
    (no LayerNorm after the embeddings, pre-LayerNorm layers, a final LayerNorm)."""
    tower = MedVLTextEncoder(config)
    if config.norm_position == "pre":
        tower.embeddings.norm = nn.Identity()
        count = len(tower.layers)
        tower.layers = nn.ModuleList(
            [MedVLPreNormLayer(config, index, tower.is_causal, index == count - 1) for index in range(count)]
        )
    return tower


def build_text_projection(config: MedVLConfig) -> nn.Module:
    """The text tower's map into the shared space: one bias-free linear layer, or open_clip's two-layer MLP."""
    width = config.text_config.hidden_size
    if config.text_projection_type == "linear":
        return nn.Linear(width, config.projection_dim, bias=False)
    hidden = (width + config.projection_dim) // 2
    return nn.Sequential(
        nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, config.projection_dim, bias=False)
    )


__all__ = ["MedVLPreNormLayer", "build_text_projection", "build_text_tower"]
