"""MedVL's vision tower: a timm backbone built by name, returning patch tokens (for fusion) and a pooled embedding."""

from pathlib import Path

import timm
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import logging

from .configuration_medvl import MedVLVisionConfig

logger = logging.get_logger(__name__)


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local state dict: `.safetensors`, or a torch pickle (`.pt`/`.pth`/`.bin`, loaded `weights_only`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weight file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints often wrap the weights.
    for key in ("state_dict", "model", "module"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    return state_dict


class MedVLVisionTower(nn.Module):
    """timm backbone (no classifier, never downloaded) with a uniform output.

    `forward(pixel_values)` returns `last_hidden_state` `(batch, num_tokens, hidden_size)` (all tokens a ViT
    emits, or the flattened final feature map of a Swin / ConvNeXt) and `pooler_output` `(batch, hidden_size)`
    (the backbone's own pre-logits pooling).
    """

    def __init__(self, config: MedVLVisionConfig):
        super().__init__()
        self.config = config
        kwargs = dict(config.backbone_kwargs or {})
        try:
            self.backbone = timm.create_model(
                config.backbone, pretrained=False, num_classes=0, in_chans=config.num_channels,
                img_size=config.image_size, **kwargs,
            )
        except TypeError as error:
            # Convolutional backbones (ConvNeXt, ResNet) take any size and have no `img_size` argument.
            if "img_size" not in str(error):
                raise
            self.backbone = timm.create_model(
                config.backbone, pretrained=False, num_classes=0, in_chans=config.num_channels, **kwargs
            )
        # Buffers timm derives at construction (e.g. Swin's relative position index) are saved with the weights:
        # transformers builds models on the meta device when loading and would otherwise leave them uninitialised.
        for module in self.backbone.modules():
            module._non_persistent_buffers_set.clear()
            module._medvl_timm_module = True  # `_init_weights` leaves these to timm / the weight file
        self.hidden_size = self.backbone.num_features
        self.output_format = getattr(self.backbone, "output_fmt", "NCHW")
        self.gradient_checkpointing = False
        first_param = next(self.backbone.parameters())
        if config.weights_path is not None and first_param.device.type != "meta":
            self.load_backbone_weights(config.weights_path)

    def load_backbone_weights(self, path: str | Path) -> None:
        """Load a local timm weight file into the backbone. A classifier head in the file is ignored; any other
        mismatch raises, naming the keys."""
        state_dict = read_weight_file(path)
        expected = self.backbone.state_dict()
        missing = [key for key in expected if key not in state_dict]
        # Derived buffers (made persistent above) may be absent from plain timm files: they are already correct.
        derived = {name for module_name, module in self.backbone.named_modules() for name in [
            f"{module_name}.{buffer}" if module_name else buffer for buffer, _ in module.named_buffers(recurse=False)
        ]}
        missing = [key for key in missing if key not in derived]
        if missing:
            raise ValueError(f"Weight file {path} lacks {len(missing)} backbone weights, e.g. {missing[:5]}.")
        unexpected = [key for key in state_dict if key not in expected]
        non_head = [key for key in unexpected if not key.startswith(("head", "fc.", "classifier"))]
        if non_head:
            raise ValueError(
                f"Weight file {path} has {len(non_head)} weights that {self.config.backbone!r} does not, "
                f"e.g. {non_head[:5]}: is it for another backbone?"
            )
        for key, value in state_dict.items():
            if key in expected and value.shape != expected[key].shape:
                raise ValueError(
                    f"Weight {key!r} in {path} has shape {tuple(value.shape)}, the backbone expects "
                    f"{tuple(expected[key].shape)} (image size or backbone_kwargs differ?)."
                )
        self.backbone.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
        logger.info(f"Loaded {len(state_dict) - len(unexpected)} backbone weights from {path}.")

    def set_grad_checkpointing(self, enable: bool) -> None:
        if hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(enable)

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}, expected (batch, {expected[0]}, {expected[1]}, "
                f"{expected[2]}): this model was configured for {self.config.image_size} px images "
                "(resize with the MedVL image processor)."
            )

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        self.check_pixel_values(pixel_values)
        # timm checkpoints through its own blocks when asked; it only does so in training mode.
        self.set_grad_checkpointing(self.gradient_checkpointing and self.training)
        features = self.backbone.forward_features(pixel_values.to(next(self.backbone.parameters()).dtype))
        pooled = self.backbone.forward_head(features, pre_logits=True)
        if features.ndim == 4:
            if self.output_format == "NHWC":
                features = features.flatten(1, 2)
            else:
                features = features.flatten(2).transpose(1, 2)
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=pooled)


__all__ = ["MedVLVisionTower", "read_weight_file"]
