"""MedVL's vision tower: a timm backbone built by name, returning patch tokens (for fusion) and a pooled embedding."""

import inspect
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


def build_backbone(config: MedVLVisionConfig) -> nn.Module:
    """The timm backbone of `config`, without classifier and without downloading anything."""
    kwargs = dict(config.backbone_kwargs or {})
    common = {"pretrained": False, "num_classes": 0, "in_chans": config.num_channels}
    try:
        return timm.create_model(config.backbone, img_size=config.image_size, **common, **kwargs)
    except TypeError as error:
        # Convolutional backbones (ConvNeXt, ResNet) take any size and have no `img_size` argument.
        if "img_size" not in str(error):
            raise
        return timm.create_model(config.backbone, **common, **kwargs)


def find_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a timm backbone: the members of its `blocks` containers (ViT's `blocks`, Swin's
    `layers[i].blocks`, ConvNeXt's `stages[i].blocks`), else the members of its `stages` / `layers`."""
    for container_names in (("blocks",), ("stages", "layers")):
        blocks = [
            block
            for name, module in backbone.named_modules()
            if name.rsplit(".", 1)[-1] in container_names and isinstance(module, (nn.Sequential, nn.ModuleList))
            for block in module
        ]
        if blocks:
            return blocks
    return []


class _CheckpointedBlockForward:
    """A timm block's forward run through the model's checkpoint function while training with gradients, so that
    `gradient_checkpointing_kwargs` apply to the vision tower as they do to the text and fusion layers."""

    def __init__(self, block: nn.Module, checkpoint_function):
        self.block = block
        self.checkpoint_function = checkpoint_function

    def __call__(self, *args, **kwargs):
        forward = type(self.block).forward.__get__(self.block)
        if self.block.training and torch.is_grad_enabled():
            return self.checkpoint_function(forward, *args, **kwargs)
        return forward(*args, **kwargs)


class MedVLAttentionPool(nn.Module):
    """Pools a feature map `(batch, num_tokens, dim)` into `(batch, dim)`: the mean token, with learned absolute
    positions added to every token, queries all of them in one multi-head attention (CLIP's ResNet pooling).
    Unlike a global average, the result depends on where in the image a feature is."""

    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        self.num_heads = max(1, dim // 64)
        if dim % self.num_heads:
            self.num_heads = 1
        self.positions = nn.Parameter(torch.zeros(num_tokens + 1, dim))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] + 1 != self.positions.shape[0]:
            raise ValueError(
                f"attention pooling was built for {self.positions.shape[0] - 1} tokens, got {tokens.shape[1]}"
            )
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.positions.to(tokens.dtype)
        batch, length, dim = tokens.shape

        def heads(x):
            return x.view(batch, -1, self.num_heads, dim // self.num_heads).transpose(1, 2)

        pooled = nn.functional.scaled_dot_product_attention(
            heads(self.query(tokens[:, :1])), heads(self.key(tokens)), heads(self.value(tokens))
        )
        return self.output(pooled.transpose(1, 2).reshape(batch, dim))


def feature_map_tokens(backbone: nn.Module, image_size: int) -> int:
    """Tokens of the final feature map of a Swin / ConvNeXt-style backbone at `image_size` px."""
    reduction = backbone.feature_info[-1]["reduction"] if getattr(backbone, "feature_info", None) else None
    if reduction is None or hasattr(backbone, "cls_token"):
        raise ValueError(
            f"vision_config.pooling='attention' needs a backbone with a final feature map (Swin, ConvNeXt); "
            f"{type(backbone).__name__} pools its own tokens: use pooling='backbone'."
        )
    side = max(1, image_size // reduction)
    return side * side


class MedVLVisionTower(nn.Module):
    """timm backbone (no classifier, never downloaded) with a uniform output.

    `forward(pixel_values)` returns `last_hidden_state` `(batch, num_tokens, hidden_size)` (all tokens a ViT
    emits, or the flattened final feature map of a Swin / ConvNeXt) and `pooler_output` `(batch, hidden_size)`
    (the backbone's own pre-logits pooling, or `MedVLAttentionPool` with `pooling="attention"`).

    The tower owns the timm contract: timm initialises the backbone, and MedVL's `_init_weights` hands every
    backbone module back here (`initialize_from_timm`) instead of applying its own scheme.
    """

    def __init__(self, config: MedVLVisionConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)
        # Buffers timm derives at construction (e.g. Swin's relative position index) are saved with the weights:
        # transformers builds models on the meta device when loading and would otherwise leave them uninitialised.
        for module in self.backbone.modules():
            module._non_persistent_buffers_set.clear()
            # A plain attribute (not a registered sub-module) through which `_init_weights` finds the tower.
            object.__setattr__(module, "_medvl_vision_tower", self)
        self.blocks = find_blocks(self.backbone)  # a plain list: the modules stay registered once, in the backbone
        if not self._on_meta():
            self._flag_initialised(self.backbone.state_dict(keep_vars=True))  # timm's own values are final
        self.hidden_size = self.backbone.num_features
        self.attention_pool = None
        if config.pooling == "attention":
            self.attention_pool = MedVLAttentionPool(
                self.hidden_size, feature_map_tokens(self.backbone, config.image_size)
            )
        self.output_format = getattr(self.backbone, "output_fmt", "NCHW")
        self.gradient_checkpointing = False
        if config.weights_path is not None and not self._on_meta():
            self.load_backbone_weights(config.weights_path)

    def _on_meta(self) -> bool:
        return next(self.backbone.parameters()).device.type == "meta"

    @staticmethod
    def _flag_initialised(tensors: dict[str, torch.Tensor]) -> None:
        for tensor in tensors.values():
            tensor._is_hf_initialized = True

    def initialize_from_timm(self) -> None:
        """Give every backbone tensor that was neither built by timm here nor loaded from a checkpoint (a model
        materialised from the meta device with missing weights) the value timm gives it, from a throw-away backbone
        built on the CPU (the global RNG is left as it was)."""
        tensors = self.backbone.state_dict(keep_vars=True)
        stale = {name: tensor for name, tensor in tensors.items()
                 if not getattr(tensor, "_is_hf_initialized", False) and tensor.device.type != "meta"}
        if not stale:
            return
        with torch.random.fork_rng(), torch.device("cpu"):
            backbone = build_backbone(self.config)
            reference = {**dict(backbone.named_parameters()), **dict(backbone.named_buffers())}
        for name, tensor in stale.items():
            tensor.copy_(reference[name])
        self._flag_initialised(stale)

    def set_block_checkpointing(self, checkpoint_function) -> None:
        """Checkpoint each backbone block with `checkpoint_function` (transformers' partial of torch's checkpoint
        with the user's kwargs), or stop checkpointing with `None`."""
        self.gradient_checkpointing = checkpoint_function is not None
        for block in self.blocks:
            if checkpoint_function is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = _CheckpointedBlockForward(block, checkpoint_function)

    def load_backbone_weights(self, weights: str | Path | dict[str, torch.Tensor], source=None) -> None:
        """Load timm weights (a local weight file, or a state dict from `source`) into the backbone, first passed
        through the backbone family's own `checkpoint_filter_fn` as `timm.create_model(pretrained=True)` does: it
        adapts what can be adapted (a ViT's absolute position table resampled to this image size, a Swin's
        relative position tables to its window size, OpenAI CLIP / open_clip layouts). A classifier head is
        ignored; anything else that does not fit raises, naming the keys."""
        source = source if source is not None else weights
        state_dict = weights if isinstance(weights, dict) else read_weight_file(weights)
        filter_fn = getattr(inspect.getmodule(type(self.backbone)), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, self.backbone)
        expected = self.backbone.state_dict()
        missing = [key for key in expected if key not in state_dict]
        # Derived buffers (made persistent above) may be absent from plain timm files: they are already correct.
        derived = {name for module_name, module in self.backbone.named_modules() for name in [
            f"{module_name}.{buffer}" if module_name else buffer for buffer, _ in module.named_buffers(recurse=False)
        ]}
        missing = [key for key in missing if key not in derived]
        if missing:
            raise ValueError(f"{source} lacks {len(missing)} backbone weights, e.g. {missing[:5]}.")
        unexpected = [key for key in state_dict if key not in expected]
        non_head = [key for key in unexpected if not key.startswith(("head", "fc.", "classifier"))]
        if non_head:
            raise ValueError(
                f"{source} has {len(non_head)} weights that {self.config.backbone!r} does not, "
                f"e.g. {non_head[:5]}: is it for another backbone?"
            )
        mismatched = [
            f"{key}: {tuple(value.shape)} vs {tuple(expected[key].shape)}"
            for key, value in state_dict.items() if key in expected and value.shape != expected[key].shape
        ]
        if mismatched:
            raise ValueError(
                f"{source} has shapes the backbone cannot take even after timm's adaptation "
                f"(checkpoint vs backbone; image size, patch size or backbone_kwargs differ?): {mismatched[:5]}."
            )
        self.backbone.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
        # Loaded weights are final: the model's `post_init` must not re-initialise them.
        for name, tensor in self.backbone.state_dict(keep_vars=True).items():
            if name in state_dict:
                tensor._is_hf_initialized = True
        logger.info(f"Loaded {len(state_dict) - len(unexpected)} backbone weights from {source}.")

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
        features = self.backbone.forward_features(pixel_values.to(next(self.backbone.parameters()).dtype))
        pooled = self.backbone.forward_head(features, pre_logits=True) if self.attention_pool is None else None
        if features.ndim == 4:
            if self.output_format == "NHWC":
                features = features.flatten(1, 2)
            else:
                features = features.flatten(2).transpose(1, 2)
        if self.attention_pool is not None:
            pooled = self.attention_pool(features)
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=pooled)


__all__ = ["MedVLAttentionPool", "MedVLVisionTower", "build_backbone", "read_weight_file"]
