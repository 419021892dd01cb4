"""LoRA for MedVL through peft: the `--lora` option, the target modules of each part of the model, and loading a
saved adapter back onto its base.

    --lora r=16,alpha=32,dropout=0.05,targets=vision+text+fusion

Every key is optional (r=8, alpha=2r, dropout=0.05, targets: every part the model has); `targets` takes parts
joined by `+` (or by commas when it is the last key: `targets=vision,text`). The parts and their LoRA targets:
- vision: the timm backbone's blocks, by family: ViT and Swin `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`;
  ConvNeXt `mlp.fc1`, `mlp.fc2` (1x1 convolutions in the small ConvNeXts, Linear layers in the large ones; the
  depthwise convolutions stay frozen); plus the attention-pooling projections when the tower pools that way;
- text: the text tower's self-attention `q_proj`, `k_proj`, `v_proj`, `out_proj` and feed-forward `fc1`, `fc2`;
- fusion: the fusion layers' self- and cross-attention projections, `fc1`, `fc2` (and `image_projection` for the
  merged strategy).
The task head is trained in full (peft's `modules_to_save`): the classifier, the answer head, or the report decoder
with its LM head (untied from the word embeddings). Targets are given to peft as one regular expression
over module names, so the saved `adapter_config.json` stays short for a 24-block tower.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from torch import nn

import modeling_medvl
from modeling_medvl import MedVLConfig
from modeling_medvl.fusion_medvl import MedVLFusion
from modeling_medvl.layers_medvl import MedVLTextEncoder
from modeling_medvl.vision_medvl import MedVLVisionTower
from train.finetune_model import load_task_weights

PARTS = ("vision", "text", "fusion")
TIMM_FAMILIES = {"VisionTransformer": "vit", "SwinTransformer": "swin", "ConvNeXt": "convnext"}
VISION_TARGETS = {
    "vit": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    "swin": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    "convnext": ("mlp.fc1", "mlp.fc2"),
}
ATTENTION_POOL_TARGETS = ("query", "key", "value", "output")
TEXT_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")
FUSION_TARGETS = TEXT_TARGETS + (
    "cross_attn.q_proj", "cross_attn.k_proj", "cross_attn.v_proj", "cross_attn.out_proj", "image_projection",
)
HEAD_MODULES = {
    "MedVLForImageClassification": ["classifier"],
    "MedVLForQuestionAnswering": ["answer_head"],
}


def head_modules(model):
    """The modules trained in full (peft's `modules_to_save`, matched by name suffix). The report generator's head is
    its decoder (fresh from a pretraining checkpoint) and LM head, with the word embeddings untied from the LM head
    (peft copies each module to save, so tied weights would part anyway; see `lora_config_for`). The decoder is named
    by its parts: a bare "decoder" would also match the LM head's own `lm_head.decoder` projection."""
    if type(model).__name__ != "MedVLForConditionalGeneration":
        return HEAD_MODULES.get(type(model).__name__)
    names = []
    for name, child in model.decoder.named_children():
        if isinstance(child, nn.ModuleList):
            names += [f"decoder.{name}.{index}" for index in range(len(child))]
        else:
            names.append(f"decoder.{name}")
    return names + ["lm_head"]
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoraSpec:
    r: int = 8
    alpha: Optional[float] = None  # None: 2r
    dropout: float = 0.05
    targets: Optional[tuple] = None  # None: every part the model has

    @property
    def lora_alpha(self) -> float:
        return 2 * self.r if self.alpha is None else self.alpha


def parse_lora_spec(text) -> Optional[LoraSpec]:
    """`--lora` text -> LoraSpec, or None for full fine-tuning (unset, '', 'none', 'off')."""
    if text is None or text.strip().lower() in ("", "none", "off", "false"):
        return None
    spec, targets, last_key = LoraSpec(), [], None
    numbers = {"r": int, "alpha": float, "dropout": float}
    for item in (part.strip() for part in text.split(",")):
        key, eq, value = item.partition("=")
        if not eq and last_key == "targets" and item:
            targets.append(item)
            continue
        if not eq or not value:
            raise ValueError(f"--lora {text!r}: expected key=value items (r, alpha, dropout, targets), got {item!r}")
        if key not in (*numbers, "targets"):
            raise ValueError(f"--lora {text!r}: unknown key {key!r}; keys are r, alpha, dropout, targets")
        last_key = key
        if key == "targets":
            targets += value.split("+")
            continue
        try:
            setattr(spec, key, numbers[key](value))
        except ValueError:
            raise ValueError(f"--lora {text!r}: {key} must be a number, got {value!r}") from None
    if spec.r < 1:
        raise ValueError(f"--lora {text!r}: r must be >= 1")
    if not 0 <= spec.dropout < 1:
        raise ValueError(f"--lora {text!r}: dropout must be in [0, 1)")
    if targets:
        unknown = [part for part in targets if part not in PARTS]
        if unknown:
            raise ValueError(f"--lora {text!r}: unknown target part(s) {unknown}; parts are {list(PARTS)}")
        spec.targets = tuple(dict.fromkeys(targets))
    return spec


def _suffix_pattern(prefix: str, suffixes) -> str:
    """Modules under `prefix` whose name ends with one of `suffixes` (whole name components)."""
    head = re.escape(prefix) + r"\." if prefix else ""
    return head + r"(?:.*\.)?(?:" + "|".join(re.escape(suffix) for suffix in suffixes) + ")"


def part_patterns(model) -> dict:
    """{part: regex} for the parts `model` has (a model may hold several towers of a kind, e.g. two text towers)."""
    patterns = {}
    for name, module in model.named_modules():
        if isinstance(module, MedVLVisionTower):
            family = TIMM_FAMILIES.get(type(module.backbone).__name__)
            if family is None:
                raise ValueError(
                    f"LoRA has no preset for the vision backbone {type(module.backbone).__name__} "
                    f"({module.config.backbone}); presets exist for {sorted(TIMM_FAMILIES)}: leave 'vision' out of "
                    "--lora targets"
                )
            found = [_suffix_pattern(f"{name}.backbone" if name else "backbone", VISION_TARGETS[family])]
            if module.attention_pool is not None:
                found.append(_suffix_pattern(f"{name}.attention_pool" if name else "attention_pool",
                                             ATTENTION_POOL_TARGETS))
            patterns.setdefault("vision", []).extend(found)
        elif type(module) is MedVLTextEncoder:  # the report decoder subclasses it and is not the text tower
            patterns.setdefault("text", []).append(_suffix_pattern(name, TEXT_TARGETS))
        elif isinstance(module, MedVLFusion):
            patterns.setdefault("fusion", []).append(_suffix_pattern(name, FUSION_TARGETS))
    return {part: "|".join(found) for part, found in patterns.items()}


def lora_config_for(model, spec: LoraSpec) -> LoraConfig:
    """peft LoraConfig with `spec`'s target parts of `model` and its head in `modules_to_save`."""
    patterns = part_patterns(model)
    kind = type(model).__name__
    targets = spec.targets or tuple(part for part in PARTS if part in patterns)
    absent = [part for part in targets if part not in patterns]
    if absent:
        raise ValueError(f"--lora targets: {kind} has no {' / '.join(absent)} part (it has {sorted(patterns)})")
    if not targets:
        raise ValueError(f"--lora: {kind} has none of the parts {list(PARTS)}")
    if kind == "MedVLForConditionalGeneration" and model.config.tie_word_embeddings:
        raise ValueError("LoRA on MedVLForConditionalGeneration trains the decoder and LM head in full as separate "
                         "copies: build the model with tie_word_embeddings=False")
    pattern = "(?:" + "|".join(patterns[part] for part in targets) + ")"
    matched = [name for name, _ in model.named_modules() if re.fullmatch(pattern, name)]
    if not matched:
        raise ValueError(f"--lora targets {list(targets)}: no module of {kind} matches")
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.dropout,
        target_modules=pattern,
        modules_to_save=head_modules(model),
        bias="none",
    )


def apply_lora(model, spec: LoraSpec, base_model_path) -> PeftModel:
    """Wrap `model` with LoRA adapters; `base_model_path` (the folder the base weights are loaded from) is written
    into the adapter's config so that `load_finetuned_model` finds the base."""
    peft_model = get_peft_model(model, lora_config_for(model, spec))
    peft_model.peft_config["default"].base_model_name_or_path = str(Path(base_model_path).resolve())
    return peft_model


def trainable_parameters(model) -> dict:
    """Trainable and total parameter counts (peft's count for a PeftModel: the head's saved copy included)."""
    if isinstance(model, PeftModel):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total), "share": trainable / total if total else 0.0}


def model_class(config: MedVLConfig):
    names = config.architectures or []
    for name in names:
        if hasattr(modeling_medvl, name):
            return getattr(modeling_medvl, name)
    raise ValueError(f"config.architectures {names} names no MedVL model class")


def load_finetuned_model(folder, base_model=None):
    """A fine-tuned MedVL model from its folder: a full model as saved, or base + LoRA adapter (a PeftModel) when
    the folder holds an adapter; `base_model` replaces the base path recorded in the adapter (a moved run)."""
    folder = Path(folder)
    config = MedVLConfig.from_pretrained(str(folder))
    cls = model_class(config)
    if not (folder / ADAPTER_CONFIG).is_file():
        return cls.from_pretrained(str(folder)).eval()
    base_path = Path(base_model or PeftConfig.from_pretrained(str(folder)).base_model_name_or_path)
    if not (base_path / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: the adapter's base model {base_path} is not a saved model folder; pass "
                                "base_model= (the --init folder, or base_model/ of a run trained from scratch)")
    base = load_task_weights(cls, base_path, config)  # checks that the vision tower loaded
    return PeftModel.from_pretrained(base, str(folder)).eval()


__all__ = [
    "LoraSpec",
    "PARTS",
    "VISION_TARGETS",
    "TEXT_TARGETS",
    "FUSION_TARGETS",
    "apply_lora",
    "head_modules",
    "load_finetuned_model",
    "lora_config_for",
    "parse_lora_spec",
    "part_patterns",
    "trainable_parameters",
]
