"""Conversion of CLIP-family checkpoints into MedVL (conversion time only; `MedVLModel.from_clip` and
`MedVLModel.from_open_clip` reach it lazily): the config a checkpoint needs, its key maps, and the checked load.

Vision towers become timm ViTs in timm's own key layout (timm's `checkpoint_filter_fn` then adapts them, e.g. a
224 px position table to a 336 px tower); text towers become `MedVLTextEncoder`s in the pre-LayerNorm layout."""

import json
from pathlib import Path

import timm
import torch
from transformers.utils import logging

from .configuration_medvl import MedVLConfig
from .temperature_medvl import TEMPERATURE_SHAPE
from .tower_init_medvl import check_tokenizer, load_tokenizer_of, module_parts
from .vision_medvl import read_weight_file

logger = logging.get_logger(__name__)

# Parts of MedVLModel a CLIP-family checkpoint fills; everything else (fusion layers) starts fresh.
CONVERTED_PARTS = ("vision_model.", "text_model.", "visual_projection.", "text_projection.", "logit_scale")
# Standard CLIP ViT sizes by (width, depth, heads): converted configs name the matching timm model when one exists.
_CLIP_VIT_SIZES = {(768, 12, 12): "base", (1024, 24, 16): "large", (1280, 32, 16): "huge"}
# HF CLIP text layer -> MedVL layer (identical parameters).
_HF_CLIP_TEXT_LAYER = {
    "self_attn.q_proj": "self_attn.q_proj",
    "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj",
    "self_attn.out_proj": "self_attn.out_proj",
    "layer_norm1": "self_attn_norm",
    "layer_norm2": "ffn_norm",
    "mlp.fc1": "fc1",
    "mlp.fc2": "fc2",
}
# HF CLIP vision layer -> timm ViT block (q, k, v are concatenated into timm's `attn.qkv`).
_HF_CLIP_VISION_LAYER = {
    "layer_norm1": "norm1",
    "self_attn.out_proj": "attn.proj",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def take(state_dict: dict[str, torch.Tensor], key: str, source) -> torch.Tensor:
    """`state_dict[key]`, or an error naming the key and the checkpoint."""
    if key not in state_dict:
        near = sorted(name for name in state_dict if name.split(".")[0] == key.split(".")[0])[:5]
        raise ValueError(
            f"{source} has no {key!r}: it is not the layout expected here (keys of that part: {near or 'none'})."
        )
    return state_dict[key]


def clip_vit_vision_config(
    width: int, depth: int, heads: int, patch_size: int, mlp_ratio: float, image_size: int, quick_gelu: bool
) -> dict:
    """`vision_config` of a CLIP ViT (class token, pre-LayerNorm, final LayerNorm, bias-free patch embedding): the
    timm model of that name when the sizes are standard (e.g. `vit_large_patch14_clip_quickgelu_336`), else a
    timm CLIP ViT with the sizes as `backbone_kwargs`."""
    size = _CLIP_VIT_SIZES.get((width, depth, heads))
    act = "_quickgelu" if quick_gelu else ""
    if size is not None and mlp_ratio == 4.0:
        for resolution in (image_size, 224):
            name = f"vit_{size}_patch{patch_size}_clip{act}_{resolution}"
            if timm.is_model(name):
                return {"backbone": name, "image_size": image_size}
    kwargs = {"patch_size": patch_size, "embed_dim": width, "depth": depth, "num_heads": heads, "mlp_ratio": mlp_ratio}
    if quick_gelu:
        kwargs["act_layer"] = "quick_gelu"
    return {"backbone": "vit_base_patch16_clip_224", "backbone_kwargs": kwargs, "image_size": image_size}


def clip_text_config(**fields) -> dict:
    """`text_config` of a CLIP-style causal text tower (pre-LayerNorm, pooled at the end token, no dropout).
    Token ids outside the vocabulary are dropped, and padding never shares the start or end token's id."""
    config = {"is_causal": True, "norm_position": "pre", "pooling": "eos", "mask_token_id": None,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **fields}
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if config.get(name) is not None and not 0 <= config[name] < config["vocab_size"]:
            config[name] = None
    if config.get("pad_token_id") is None or config["pad_token_id"] in (config.get("bos_token_id"), config["eos_token_id"]):
        config["pad_token_id"] = 0  # as the vit-l14-336 preset: the padding row must not be the pooled token's
    return config


def hf_clip_vision_to_timm(state_dict: dict, num_layers: int, source, prefix: str = "vision_model.") -> dict:
    """A transformers CLIPVisionTransformer's weights in timm's ViT key layout."""
    def get(key):
        return take(state_dict, prefix + key, source)

    mapped = {
        "cls_token": get("embeddings.class_embedding").reshape(1, 1, -1),
        "pos_embed": get("embeddings.position_embedding.weight").unsqueeze(0),
        "patch_embed.proj.weight": get("embeddings.patch_embedding.weight"),
    }
    for ours, theirs in (("norm_pre", "pre_layrnorm"), ("norm", "post_layernorm")):
        for kind in ("weight", "bias"):
            mapped[f"{ours}.{kind}"] = get(f"{theirs}.{kind}")
    for index in range(num_layers):
        layer = f"encoder.layers.{index}."
        for kind in ("weight", "bias"):
            mapped[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat(
                [get(f"{layer}self_attn.{name}_proj.{kind}") for name in "qkv"]
            )
            for theirs, ours in _HF_CLIP_VISION_LAYER.items():
                mapped[f"blocks.{index}.{ours}.{kind}"] = get(f"{layer}{theirs}.{kind}")
    return mapped


def hf_clip_text_to_medvl(state_dict: dict, num_layers: int, source, prefix: str = "text_model.") -> dict:
    """A transformers CLIPTextTransformer's weights as `MedVLTextEncoder` (pre-LayerNorm) keys."""
    def get(key):
        return take(state_dict, prefix + key, source)

    mapped = {
        "embeddings.word_embeddings.weight": get("embeddings.token_embedding.weight"),
        "embeddings.position_embeddings.weight": get("embeddings.position_embedding.weight"),
    }
    for index in range(num_layers):
        for theirs, ours in _HF_CLIP_TEXT_LAYER.items():
            for kind in ("weight", "bias"):
                mapped[f"layers.{index}.{ours}.{kind}"] = get(f"encoder.layers.{index}.{theirs}.{kind}")
    for kind in ("weight", "bias"):
        mapped[f"layers.{num_layers - 1}.final_norm.{kind}"] = get(f"final_layer_norm.{kind}")
    return mapped


def medvl_config_from_hf_clip(clip_config: dict, **overrides) -> MedVLConfig:
    """The MedVL config that holds a transformers `CLIPModel` (its `config.json` as a dict) exactly; `overrides`
    set MedVL's own fields (e.g. `fusion_type`; `vision_config` / `text_config` dicts are merged)."""
    if clip_config.get("model_type") != "clip":
        raise ValueError(f"Expected a transformers CLIPModel config (model_type 'clip'), got {clip_config.get('model_type')!r}.")
    vision, text = clip_config.get("vision_config", {}), clip_config.get("text_config", {})
    for name, tower in (("vision", vision), ("text", text)):
        if tower.get("hidden_act", "quick_gelu") not in ("quick_gelu", "gelu"):
            raise ValueError(f"CLIP {name} tower activation {tower['hidden_act']!r} has no MedVL counterpart.")
    if vision.get("layer_norm_eps", 1e-5) != 1e-5:
        raise ValueError(f"CLIP vision layer_norm_eps={vision['layer_norm_eps']}: timm's CLIP ViTs use 1e-5.")
    vision_width = vision.get("hidden_size", 768)
    text_config = clip_text_config(
        vocab_size=text.get("vocab_size", 49408), hidden_size=text.get("hidden_size", 512),
        num_hidden_layers=text.get("num_hidden_layers", 12), num_attention_heads=text.get("num_attention_heads", 8),
        intermediate_size=text.get("intermediate_size", 2048), hidden_act=text.get("hidden_act", "quick_gelu"),
        max_position_embeddings=text.get("max_position_embeddings", 77),
        # CLIP's tokenizer pads with its end token and its config's pad id (1, "\"") is not used for padding:
        # MedVL's padding row is token 0, as in the vit-l14-336 preset (attention masks exclude padding anyway).
        layer_norm_eps=text.get("layer_norm_eps", 1e-5), pad_token_id=0,
        bos_token_id=text.get("bos_token_id", 49406), eos_token_id=text.get("eos_token_id", 49407),
    )
    vision_config = clip_vit_vision_config(
        vision_width, vision.get("num_hidden_layers", 12), vision.get("num_attention_heads", 12),
        vision.get("patch_size", 32), vision.get("intermediate_size", 3072) / vision_width,
        vision.get("image_size", 224), vision.get("hidden_act", "quick_gelu") == "quick_gelu",
    )
    vision_config.update(overrides.pop("vision_config", None) or {})
    text_config.update(overrides.pop("text_config", None) or {})
    fields = {"projection_dim": clip_config.get("projection_dim", 512), "mlm_weight": 0.0,
              "logit_scale_init_value": clip_config.get("logit_scale_init_value", 2.6592), **overrides}
    if fields.get("fusion_type") == "none":
        fields.setdefault("itm_weight", 0.0)
    return MedVLConfig(vision_config=vision_config, text_config=text_config, **fields)


def dual_encoder(model):
    """The `MedVLModel` inside `model` (itself, or the `medvl` of a pretraining / question-answering model)."""
    medvl = getattr(model, "medvl", model)
    if not hasattr(medvl, "text_projection"):
        raise TypeError(f"{type(model).__name__} holds no MedVL dual encoder to convert into: use MedVLModel, "
                        "MedVLForPreTraining or MedVLForQuestionAnswering.")
    return medvl


def load_converted(model, vision_weights: dict, weights: dict, source) -> None:
    """Load timm-layout `vision_weights` into the vision backbone (through timm's own checkpoint filter) and
    `MedVLModel`-keyed `weights` into the dual encoder of `model`; a key that fits nothing, or a converted part left
    without weights, is an error. Logs what was loaded and what (in all of `model`) is newly initialised."""
    medvl = dual_encoder(model)
    medvl.vision_model.load_backbone_weights(vision_weights, source=source)
    own = medvl.state_dict()
    unexpected = sorted(key for key in weights if key not in own)
    mismatched = [f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}" for key, value in weights.items()
                  if key in own and value.shape != own[key].shape]
    if unexpected or mismatched:
        raise ValueError(f"Converted weights from {source} do not fit the MedVL model: unexpected "
                         f"{unexpected[:5]}, shape mismatches {mismatched[:5]}.")
    medvl.load_state_dict(weights, strict=False)
    loaded = set(weights) | {f"vision_model.backbone.{key}" for key in medvl.vision_model.backbone.state_dict()}
    missing = [key for key in own if key not in loaded and key.startswith(CONVERTED_PARTS)]
    if missing:
        raise ValueError(f"{source} gave no weights for {len(missing)} converted tensors, e.g. {missing[:5]}.")
    prefix = "medvl." if medvl is not model else ""
    new = [key for key in model.state_dict() if key.removeprefix(prefix) not in loaded or not key.startswith(prefix)]
    logger.warning(
        f"Converted {len(loaded)} tensors from {source} into {', '.join(part.rstrip('.') for part in CONVERTED_PARTS)}; "
        f"newly initialised (train them): {module_parts(new) or 'nothing'} ({len(new)} tensors)."
    )


def read_folder_checkpoint(folder: Path) -> tuple[dict, dict]:
    """(config.json, weights) of a transformers checkpoint folder."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} is not a transformers checkpoint folder: it has no config.json.")
    files = [folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()]
    if not files:
        raise FileNotFoundError(f"{folder} holds no model.safetensors or pytorch_model.bin.")
    return json.loads(config_file.read_text()), read_weight_file(files[0])


def convert_hf_clip(model_class, path, **overrides):
    """A `model_class` (MedVLModel or a MedVL head) holding the towers, projections and temperature of the
    transformers `CLIPModel` saved in folder `path`; its other layers (fusion, heads) are new."""
    folder = Path(path)
    clip_config, state_dict = read_folder_checkpoint(folder)
    config = medvl_config_from_hf_clip(clip_config, **overrides)
    tokenizer = load_tokenizer_of(folder)
    if tokenizer is not None:
        check_tokenizer(tokenizer, config.text_config, folder)
    model = model_class(config)
    text_layers = config.text_config.num_hidden_layers
    weights = {f"text_model.{key}": value for key, value in
               hf_clip_text_to_medvl(state_dict, text_layers, folder).items()}
    for name in ("visual_projection.weight", "text_projection.weight"):
        weights[name] = take(state_dict, name, folder)
    weights["logit_scale"] = take(state_dict, "logit_scale", folder).reshape(TEMPERATURE_SHAPE)
    vision_layers = clip_config.get("vision_config", {}).get("num_hidden_layers", 12)
    load_converted(model, hf_clip_vision_to_timm(state_dict, vision_layers, folder), weights, folder)
    return model


__all__ = ["dual_encoder", "clip_text_config", "clip_vit_vision_config", "convert_hf_clip", "load_converted",
           "medvl_config_from_hf_clip", "take"]
