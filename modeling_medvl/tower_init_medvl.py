"""Initialise MedVL's towers from separately pretrained local checkpoints: a timm weight file for the vision
tower, a BERT-style transformers checkpoint folder for the text tower (domain vs general initialisation)."""

import json
from pathlib import Path

import torch

from transformers.utils import logging

from .configuration_medvl import MedVLTextConfig
from .layers_medvl import MedVLLMHead, MedVLTextEncoder
from .vision_medvl import MedVLVisionTower, read_weight_file

logger = logging.get_logger(__name__)

# BERT layer parameter -> MedVL layer parameter (same post-LayerNorm layout).
_BERT_LAYER_KEYS = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "output.LayerNorm": "ffn_norm",
}
# Files of which a checkpoint folder holds at least one when it has a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")
# Compared between the BERT config and MedVL's text config; any difference makes the weights unusable.
_MATCHING_FIELDS = ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act")


def read_bert_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict without a `bert.` prefix) of a folder written by `BertModel.save_pretrained`
    (or `BertForMaskedLM`, whose `cls.predictions.*` MLM head is kept)."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a transformers checkpoint folder: it has no config.json.")
    bert_config = json.loads(config_file.read_text())
    weight_files = [path / name for name in ("model.safetensors", "pytorch_model.bin") if (path / name).is_file()]
    if not weight_files:
        raise FileNotFoundError(f"{path} holds no model.safetensors or pytorch_model.bin.")
    state_dict = read_weight_file(weight_files[0])
    state_dict = {key.removeprefix("bert."): value for key, value in state_dict.items()}
    return bert_config, state_dict


def bert_to_medvl_text(
    bert_config: dict, bert_state_dict: dict[str, torch.Tensor], text_config: MedVLTextConfig, num_layers: int
) -> dict[str, torch.Tensor]:
    """Map BERT weights onto a `MedVLTextEncoder` of `num_layers` layers (its first `num_layers` BERT layers).

    BERT adds a token-type embedding to every token; MedVL has none, so type 0's vector is folded into the position
    table, which keeps the outputs identical for single-segment text. Positions beyond MedVL's table are dropped.
    """
    mismatched = {
        field: (bert_config.get(field), getattr(text_config, field))
        for field in _MATCHING_FIELDS
        if bert_config.get(field) != getattr(text_config, field)
    }
    if mismatched:
        raise ValueError(f"The BERT checkpoint does not fit the text tower (BERT, MedVL): {mismatched}.")
    if text_config.norm_position != "post":
        raise ValueError("BERT checkpoints are post-LayerNorm; the text tower is configured with norm_position="
                         f"{text_config.norm_position!r}.")
    needed = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    needed += [f"encoder.layer.{index}.{name}.{kind}" for index in range(num_layers) for name in _BERT_LAYER_KEYS
               for kind in ("weight", "bias")]
    missing = [key for key in needed if key not in bert_state_dict]
    if missing:
        raise ValueError(f"The BERT checkpoint lacks {len(missing)} weights the text tower needs, e.g. {missing[:5]}.")
    if bert_config.get("num_hidden_layers", 0) < num_layers:
        raise ValueError(
            f"The BERT checkpoint has {bert_config.get('num_hidden_layers')} layers; the text tower needs {num_layers}."
        )
    if bert_config.get("max_position_embeddings", 0) < text_config.max_position_embeddings:
        raise ValueError(
            f"The BERT checkpoint has {bert_config.get('max_position_embeddings')} positions; the text tower needs "
            f"{text_config.max_position_embeddings}."
        )
    positions = bert_state_dict["embeddings.position_embeddings.weight"][: text_config.max_position_embeddings]
    if "embeddings.token_type_embeddings.weight" in bert_state_dict:
        positions = positions + bert_state_dict["embeddings.token_type_embeddings.weight"][0]
    mapped = {
        "embeddings.word_embeddings.weight": bert_state_dict["embeddings.word_embeddings.weight"],
        "embeddings.position_embeddings.weight": positions,
        "embeddings.norm.weight": bert_state_dict["embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": bert_state_dict["embeddings.LayerNorm.bias"],
    }
    for index in range(num_layers):
        for bert_name, medvl_name in _BERT_LAYER_KEYS.items():
            for kind in ("weight", "bias"):
                mapped[f"layers.{index}.{medvl_name}.{kind}"] = bert_state_dict[
                    f"encoder.layer.{index}.{bert_name}.{kind}"
                ]
    return mapped


def bert_mlm_head_to_medvl(bert_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """`MedVLLMHead` weights from a BertForMaskedLM checkpoint's `cls.predictions` (None if it has none)."""
    prefix = "cls.predictions."
    if f"{prefix}transform.dense.weight" not in bert_state_dict:
        return None
    return {
        "dense.weight": bert_state_dict[f"{prefix}transform.dense.weight"],
        "dense.bias": bert_state_dict[f"{prefix}transform.dense.bias"],
        "norm.weight": bert_state_dict[f"{prefix}transform.LayerNorm.weight"],
        "norm.bias": bert_state_dict[f"{prefix}transform.LayerNorm.bias"],
        "decoder.bias": bert_state_dict[f"{prefix}bias"],
    }


def check_tokenizer(tokenizer, text_config: MedVLTextConfig, source) -> None:
    """A tokenizer belongs with a text tower when every id it emits has an embedding and its start / end / mask
    tokens are the ones the config names; anything else raises, naming what does not fit."""
    if len(tokenizer) > text_config.vocab_size:
        raise ValueError(f"The tokenizer of {source} has {len(tokenizer)} tokens but the text tower embeds "
                         f"{text_config.vocab_size}: they do not belong together.")

    def first(*ids):
        return next((token_id for token_id in ids if token_id is not None), None)

    theirs = {"bos_token_id": first(tokenizer.cls_token_id, tokenizer.bos_token_id),
              "eos_token_id": first(tokenizer.sep_token_id, tokenizer.eos_token_id),
              "mask_token_id": tokenizer.mask_token_id}
    wrong = {name: (value, getattr(text_config, name)) for name, value in theirs.items()
             if value is not None and getattr(text_config, name) is not None and value != getattr(text_config, name)}
    if wrong:
        raise ValueError(f"The tokenizer of {source} does not match text_config (tokenizer, config): {wrong}.")


def load_tokenizer_of(path):
    """The tokenizer saved in folder `path`, or None when it holds none."""
    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def module_parts(keys) -> list[str]:
    """The modules that `keys` (state dict keys) belong to, up to the first layer index: a short log line."""
    parts = set()
    for key in keys:
        names = []
        for name in key.split(".")[:-1]:
            if name.isdigit():
                break
            names.append(name)
        parts.add(".".join(names) or key)
    return sorted(parts)


def load_pretrained_towers(model, vision_weights=None, text_model_path=None) -> None:
    """Load a timm weight file into every vision tower of `model` and a BERT-style folder into every text stack
    (text tower, report decoder self-attention layers, MLM head); logs what was loaded and what stays new."""
    loaded = set()
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if vision_weights is not None and isinstance(module, MedVLVisionTower):
            module.load_backbone_weights(vision_weights)
            loaded.update(f"{prefix}backbone.{key}" for key in module.backbone.state_dict())
    if text_model_path is not None:
        bert_config, bert_state_dict = read_bert_checkpoint(text_model_path)
        tokenizer = load_tokenizer_of(text_model_path)
        if tokenizer is not None:
            check_tokenizer(tokenizer, model.config.text_config, text_model_path)
        for name, module in model.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(module, MedVLTextEncoder):
                mapped = bert_to_medvl_text(bert_config, bert_state_dict, module.config, len(module.layers))
                # strict=False: a decoder's cross-attention layers have no BERT counterpart.
                result = module.load_state_dict(mapped, strict=False)
                if result.unexpected_keys:
                    raise ValueError(f"BERT weights did not fit {name}: {result.unexpected_keys[:5]}")
                loaded.update(prefix + key for key in mapped)
            elif isinstance(module, MedVLLMHead) and name.rsplit(".", 1)[-1] == "mlm_head":
                head_weights = bert_mlm_head_to_medvl(bert_state_dict)
                if head_weights is not None:
                    module.load_state_dict(head_weights, strict=False)
                    loaded.update(prefix + key for key in head_weights)
    new = [key for key in model.state_dict() if key not in loaded]
    sources = ", ".join(str(source) for source in (vision_weights, text_model_path) if source is not None)
    logger.warning(
        f"Loaded {len(loaded)} tensors from {sources or 'nothing'}; newly initialised (train them): "
        f"{module_parts(new) or 'nothing'} ({len(new)} tensors)."
    )


__all__ = ["TOKENIZER_FILES", "bert_mlm_head_to_medvl", "bert_to_medvl_text", "check_tokenizer",
           "load_pretrained_towers", "load_tokenizer_of", "module_parts", "read_bert_checkpoint"]
