"""Conversion of open_clip checkpoints into MedVL (conversion time only; `MedVLModel.from_open_clip` reaches it
lazily). open_clip itself is optional: only a built-in model name needs it installed, to read that model's config.

Supported towers: OpenAI-style ViTs (`visual.conv1`...) and timm trunks (`visual.trunk.*`, a bias-free linear
projection) for images; OpenAI-style causal text transformers and transformers BERT-style models (`text.transformer.*`,
BiomedCLIP's layout) for text. Anything else raises, naming the option MedVL cannot hold."""

import json
from pathlib import Path

import torch
from transformers.utils import logging

from .configuration_medvl import MedVLConfig, MedVLTextConfig
from .temperature_medvl import TEMPERATURE_SHAPE
from .tower_init_medvl import bert_to_medvl_text, check_tokenizer
from .vision_medvl import read_weight_file
from .weight_conversion_medvl import (
    clip_text_config, clip_vit_vision_config, load_converted, take,
)

logger = logging.get_logger(__name__)

_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# open_clip layer -> MedVL text layer (q, k, v come out of `attn.in_proj_*`).
_OPEN_CLIP_TEXT_LAYER = {"attn.out_proj": "self_attn.out_proj", "ln_1": "self_attn_norm", "ln_2": "ffn_norm",
                         "mlp.c_fc": "fc1", "mlp.c_proj": "fc2"}
_HF_POOLERS = {"cls_last_hidden_state_pooler": "cls", "mean_pooler": "mean"}
# Options of open_clip's own towers whose non-default values change the computation in a way MedVL cannot hold.
_VISION_DEFAULTS = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
                    "pool_type": "tok", "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                    "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}
_TEXT_DEFAULTS = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "proj_bias": False,
                  "proj_type": "linear", "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                  "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}


def read_open_clip(path, model_name: str | None, model_config: dict | None) -> tuple[dict, dict, Path]:
    """(open_clip model config, state dict, weight file) of a weight file or an open_clip Hub-layout folder."""
    path = Path(path)
    if path.is_dir():
        config_file = path / "open_clip_config.json"
        if model_config is None and model_name is None:
            if not config_file.is_file():
                raise FileNotFoundError(f"{path} has no open_clip_config.json: pass model_name or model_config.")
            model_config = json.loads(config_file.read_text()).get("model_cfg")
        files = [path / name for name in _WEIGHT_FILES if (path / name).is_file()]
        if not files:
            raise FileNotFoundError(f"{path} holds none of {_WEIGHT_FILES}.")
        path = files[0]
    if model_config is None:
        if model_name is None:
            raise ValueError("An open_clip weight file needs model_name (e.g. 'ViT-B-16') or model_config.")
        try:
            # By name at call time: open_clip is optional, and this file travels as remote code (no import statement).
            open_clip = __import__("open_clip")
        except ImportError as error:
            raise ImportError(f"Reading open_clip's config of {model_name!r} needs open_clip installed "
                              "(pip install open_clip_torch), or pass model_config.") from error
        model_config = open_clip.get_model_config(model_name)
        if model_config is None:
            raise ValueError(f"open_clip knows no model {model_name!r}.")
    state_dict = {key.removeprefix("module."): value for key, value in read_weight_file(path).items()}
    if "logit_bias" in state_dict:
        raise ValueError(f"{path} is a SigLIP-style model (it has logit_bias): MedVL's contrastive loss has none.")
    return model_config, state_dict, path


def _reject(tower: str, config: dict, defaults: dict) -> None:
    odd = {key: config[key] for key, default in defaults.items() if config.get(key, default) != default}
    if odd:
        raise ValueError(f"open_clip {tower} options MedVL cannot hold: {odd}.")


def vision_part(vision_cfg: dict, quick_gelu: bool, state_dict: dict, source) -> tuple[dict, dict, torch.Tensor]:
    """(vision_config, timm-layout backbone weights, visual projection weight)."""
    image_size = vision_cfg.get("image_size", 224)
    if vision_cfg.get("timm_model_name"):
        pool, proj = vision_cfg.get("timm_pool", "avg"), vision_cfg.get("timm_proj", "linear")
        if pool in ("abs_attn", "rot_attn") or proj != "linear" or vision_cfg.get("timm_proj_bias"):
            raise ValueError(f"open_clip timm tower with timm_pool={pool!r}, timm_proj={proj!r}, timm_proj_bias="
                             f"{vision_cfg.get('timm_proj_bias', False)}: MedVL holds a bias-free linear projection.")
        config = {"backbone": vision_cfg["timm_model_name"], "image_size": image_size}
        if pool:
            config["backbone_kwargs"] = {"global_pool": pool}
        trunk = {key.removeprefix("visual.trunk."): value for key, value in state_dict.items()
                 if key.startswith("visual.trunk.")}
        return config, trunk, take(state_dict, "visual.head.proj.weight", source)
    if isinstance(vision_cfg.get("layers", 12), (list, tuple)):
        raise ValueError("open_clip ModifiedResNet image towers are not supported: MedVL's vision tower is timm's.")
    _reject("vision", vision_cfg, _VISION_DEFAULTS)
    width = vision_cfg.get("width", 768)
    config = clip_vit_vision_config(
        width, vision_cfg.get("layers", 12), width // vision_cfg.get("head_width", 64), vision_cfg.get("patch_size", 16),
        vision_cfg.get("mlp_ratio", 4.0), image_size, quick_gelu,
    )
    # OpenAI layout: timm's checkpoint filter recognises `visual.*` and maps it itself.
    visual = {key: value for key, value in state_dict.items() if key.startswith("visual.")}
    return config, visual, take(state_dict, "visual.proj", source).t()


def openai_text_part(text_cfg: dict, quick_gelu: bool, state_dict: dict, prefix: str, source) -> tuple[dict, dict]:
    """(text_config, MedVL-keyed weights) of open_clip's own causal text transformer."""
    _reject("text", text_cfg, _TEXT_DEFAULTS)
    pool = text_cfg.get("pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        raise ValueError(f"open_clip text pool_type={pool!r}: MedVL's causal tower pools at the end token.")
    width, layers, vocab = text_cfg.get("width", 512), text_cfg.get("layers", 12), text_cfg.get("vocab_size", 49408)
    config = clip_text_config(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=text_cfg.get("heads", 8),
        intermediate_size=int(width * text_cfg.get("mlp_ratio", 4.0)),
        hidden_act="quick_gelu" if quick_gelu else "gelu", max_position_embeddings=text_cfg.get("context_length", 77),
        layer_norm_eps=1e-5, pad_token_id=text_cfg.get("pad_id", 0), bos_token_id=vocab - 2,
        eos_token_id=text_cfg.get("eos_id", vocab - 1) if pool == "eos" else vocab - 1,
    )

    def get(key):
        return take(state_dict, prefix + key, source)

    weights = {"text_model.embeddings.word_embeddings.weight": get("token_embedding.weight"),
               "text_model.embeddings.position_embeddings.weight": get("positional_embedding"),
               "text_projection.weight": get("text_projection").t()}
    for index in range(layers):
        theirs, ours = f"transformer.resblocks.{index}.", f"text_model.layers.{index}."
        for kind in ("weight", "bias"):
            for name, value in zip("qkv", get(f"{theirs}attn.in_proj_{kind}").chunk(3)):
                weights[f"{ours}self_attn.{name}_proj.{kind}"] = value
            for their_name, our_name in _OPEN_CLIP_TEXT_LAYER.items():
                weights[f"{ours}{our_name}.{kind}"] = get(f"{theirs}{their_name}.{kind}")
    for kind in ("weight", "bias"):
        weights[f"text_model.layers.{layers - 1}.final_norm.{kind}"] = get(f"ln_final.{kind}")
    return config, weights


def _local_pretrained(loader, name: str | None):
    """`loader.from_pretrained(name)` from a local folder or the local Hugging Face cache only, or None."""
    if not name:
        return None
    try:
        return loader.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None


def hf_text_part(text_cfg: dict, embed_dim: int, state_dict: dict, source) -> tuple[dict, dict, dict]:
    """(text_config, MedVL-keyed weights, MedVLConfig fields) of an open_clip hf-text tower (a BERT-style model)."""
    from transformers import AutoConfig, AutoTokenizer

    name = text_cfg["hf_model_name"]
    hf_config = _local_pretrained(AutoConfig, name)
    if hf_config is None:
        raise FileNotFoundError(
            f"The text tower's transformers config {name!r} is neither a local folder nor in the local Hugging Face "
            f"cache: download it once (huggingface_hub.snapshot_download({name!r})) or set model_config's "
            "text_cfg.hf_model_name to a local folder."
        )
    if hf_config.model_type != "bert":
        raise ValueError(f"The hf text tower is a {hf_config.model_type!r} model: MedVL holds BERT-style towers.")
    pooler = text_cfg.get("hf_pooler_type", "mean_pooler")
    if pooler not in _HF_POOLERS:
        raise ValueError(f"open_clip hf_pooler_type={pooler!r} has no MedVL pooling (supported: {sorted(_HF_POOLERS)}).")
    bert = hf_config.to_dict()
    tokenizer_name = text_cfg.get("hf_tokenizer_name") or name
    tokenizer = _local_pretrained(AutoTokenizer, tokenizer_name)
    ids = {"bos_token_id": None, "eos_token_id": None, "mask_token_id": None}
    if tokenizer is not None:
        ids = {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
               "mask_token_id": tokenizer.mask_token_id}
    config = {field: bert[field] for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                               "intermediate_size", "hidden_act", "layer_norm_eps")}
    config.update(ids, pad_token_id=bert.get("pad_token_id", 0), pooling=_HF_POOLERS[pooler],
                  max_position_embeddings=min(bert["max_position_embeddings"], 256),
                  hidden_dropout_prob=bert["hidden_dropout_prob"],
                  attention_probs_dropout_prob=bert["attention_probs_dropout_prob"])
    bert_weights = {key.removeprefix("text.transformer."): value for key, value in state_dict.items()
                    if key.startswith("text.transformer.")}
    text_config = MedVLTextConfig(**config)
    if tokenizer is not None:
        check_tokenizer(tokenizer, text_config, tokenizer_name)
    mapped = bert_to_medvl_text(bert, bert_weights, text_config, config["num_hidden_layers"])
    weights = {f"text_model.{key}": value for key, value in mapped.items()}
    proj = text_cfg.get("hf_proj_type", "mlp")
    fields = {"text_projection_type": "mlp" if proj == "mlp" else "linear",
              "mlm_weight": 1.0 if ids["mask_token_id"] is not None else 0.0}
    if proj == "mlp":
        weights["text_projection.0.weight"] = take(state_dict, "text.proj.0.weight", source)
        weights["text_projection.2.weight"] = take(state_dict, "text.proj.2.weight", source)
    elif proj == "linear":
        weights["text_projection.weight"] = take(state_dict, "text.proj.weight", source)
    elif config["hidden_size"] == embed_dim:  # open_clip leaves the text states unprojected
        weights["text_projection.weight"] = torch.eye(embed_dim)
    else:
        raise ValueError(f"open_clip hf_proj_type={proj!r} with width {config['hidden_size']} != embed_dim {embed_dim}.")
    return config, weights, fields


def convert_open_clip(model_class, path, model_name=None, model_config=None, **overrides):
    """A `model_class` holding an open_clip model's towers, projections and temperature exactly."""
    model_config, state_dict, source = read_open_clip(path, model_name, model_config)
    quick_gelu = bool(model_config.get("quick_gelu", False))
    vision_cfg, text_cfg = model_config.get("vision_cfg", {}), model_config.get("text_cfg", {})
    vision_config, vision_weights, visual_projection = vision_part(vision_cfg, quick_gelu, state_dict, source)
    fields = {"mlm_weight": 0.0}
    if text_cfg.get("hf_model_name"):
        text_config, weights, fields = hf_text_part(text_cfg, model_config["embed_dim"], state_dict, source)
    else:
        prefix = "text." if "text.token_embedding.weight" in state_dict else ""
        text_config, weights = openai_text_part(text_cfg, quick_gelu, state_dict, prefix, source)
    weights["visual_projection.weight"] = visual_projection
    weights["logit_scale"] = take(state_dict, "logit_scale", source).reshape(TEMPERATURE_SHAPE)
    vision_config.update(overrides.pop("vision_config", None) or {})
    text_config.update(overrides.pop("text_config", None) or {})
    fields = {**fields, "projection_dim": model_config["embed_dim"], **overrides}
    if fields.get("fusion_type") == "none":
        fields.setdefault("itm_weight", 0.0)
    config = MedVLConfig(vision_config=vision_config, text_config=text_config, **fields)
    model = model_class(config)
    load_converted(model, vision_weights, weights, source)
    return model


__all__ = ["convert_open_clip", "read_open_clip"]
