"""MedVL configuration: one explicit config (vision + text sub-configs) as the single source of truth."""

import copy

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

CONTRASTIVE_TARGETS = ("pair", "label_aware")
FUSION_TYPES = ("cross_attention", "merged", "none")
NORM_POSITIONS = ("post", "pre")
PROJECTION_TYPES = ("linear", "mlp")
MAX_TEXT_POSITIONS = 256
TEXT_POOLINGS = ("mean", "cls", "eos")


@strict
class MedVLVisionConfig(PreTrainedConfig):
    r"""
    Vision tower of MedVL: a timm backbone built by name with `pretrained=False`.

    Args:
        backbone (`str`, defaults to `"vit_base_patch16_224"`):
            timm model name (e.g. `"swin_base_patch4_window12_384"`, `"vit_large_patch14_clip_336"`,
            `"convnext_base"`). The classifier head is removed (`num_classes=0`).
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `embed_dim`, `depth`, `window_size`).
        image_size (`int`, defaults to 224):
            Side of the square input images, in pixels. Passed to timm as `img_size` for backbones that take it;
            inputs of any other size are rejected.
        num_channels (`int`, defaults to 3):
            Channels of `pixel_values`.
        weights_path (`str`, *optional*):
            Local timm weight file (`.safetensors`, `.pt`, `.pth`, `.bin`) loaded into the backbone when the model is
            built from the config. Ignored when loading a MedVL checkpoint (its own weights win).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the initialiser for layers MedVL adds on top of the backbone.
        pooling (`str`, defaults to `"backbone"`): How the image embedding is pooled from the final tokens.
            `"backbone"`: the backbone's own pre-logits pooling (a ViT's class token; global average for a Swin or
            ConvNeXt). `"attention"`: a learned query attends over the final feature map with learned absolute
            positions (as CLIP's ResNets pool), for Swin / ConvNeXt towers, whose global average cannot tell a
            finding on the left from the same finding on the right.
    """

    model_type = "medvl_vision"
    base_config_key = "vision_config"

    backbone: str = "vit_base_patch16_224"
    backbone_kwargs: dict | None = None
    image_size: int = 224
    num_channels: int = 3
    weights_path: str | None = None
    initializer_range: float = 0.02
    pooling: str = "backbone"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_fields()

    def to_dict(self) -> dict:
        # `weights_path` only seeds a model built from this config; a saved model holds its own weights, and
        # config.json must not carry a path of the machine it was saved on.
        output = super().to_dict()
        output["weights_path"] = None
        return output

    def check_fields(self):
        """Reject impossible vision settings at config time (a plain `ValueError`, raised from `__init__`)."""
        if self.image_size <= 0:
            raise ValueError(f"vision_config.image_size must be positive, got {self.image_size}.")
        if self.num_channels <= 0:
            raise ValueError(f"vision_config.num_channels must be positive, got {self.num_channels}.")
        if self.pooling not in ("backbone", "attention"):
            raise ValueError(f"vision_config.pooling must be 'backbone' or 'attention', got {self.pooling!r}.")
        reserved = {"pretrained", "num_classes", "img_size", "in_chans"} & set(self.backbone_kwargs or {})
        if reserved:
            raise ValueError(
                f"vision_config.backbone_kwargs may not set {sorted(reserved)}: MedVL sets them from "
                "image_size / num_channels and always builds the backbone without a classifier or download."
            )


@strict
class MedVLTextConfig(PreTrainedConfig):
    r"""
    Text tower of MedVL: a BERT-style (post-LayerNorm) transformer encoder, bidirectional or causal.

    Args:
        vocab_size (`int`, defaults to 30522): Size of the token vocabulary.
        hidden_size (`int`, defaults to 768): Width of the token states.
        num_hidden_layers (`int`, defaults to 12): Number of self-attention layers of the text tower.
        num_attention_heads (`int`, defaults to 12): Attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072): Width of the feed-forward layers.
        hidden_act (`str`, defaults to `"gelu"`): Activation of the feed-forward layers.
        hidden_dropout_prob (`float`, defaults to 0.1): Dropout on embeddings and residual branches.
        attention_probs_dropout_prob (`float`, defaults to 0.1): Dropout on attention probabilities.
        max_position_embeddings (`int`, defaults to 256): Length of the position table; longer inputs raise.
        layer_norm_eps (`float`, defaults to 1e-12): LayerNorm epsilon.
        is_causal (`bool`, defaults to `False`):
            `False`: bidirectional BERT-style encoder, usable for MLM.
            `True`: causal CLIP-style encoder.
        pooling (`str`, *optional*): How the text embedding for ITC is taken from the token states:
            `"mean"` (over non-padding tokens; the default of a bidirectional tower), `"cls"` (the first token,
            as BERT), or `"eos"` (the last non-padding token; the default, and the only choice, of a causal tower).
            A freshly initialised tower pooled at [CLS] gives near-identical embeddings for all reports, which stalls
            contrastive learning; the mean is informative from the first step.
        pad_token_id (`int`, defaults to 0): Padding token.
        bos_token_id (`int`, *optional*): Start token ([CLS] / <|startoftext|>); also starts generated reports.
        eos_token_id (`int`, *optional*): End token ([SEP] / <|endoftext|>); ends generated reports.
        mask_token_id (`int`, *optional*): [MASK] token used by masked language modelling.
        initializer_range (`float`, defaults to 0.02): Standard deviation of the weight initialiser.
        norm_position (`str`, defaults to `"post"`): Where the tower's LayerNorms sit. `"post"`: after each residual
            sum and after the embeddings (BERT). `"pre"`: before each attention and feed-forward block, none after the
            embeddings, one after the last layer (CLIP / open_clip text towers, with `hidden_act="quick_gelu"` for
            OpenAI's weights).
    """

    model_type = "medvl_text"
    base_config_key = "text_config"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = MAX_TEXT_POSITIONS
    layer_norm_eps: float = 1e-12
    is_causal: bool = False
    pooling: str | None = None
    pad_token_id: int | None = 0
    bos_token_id: int | None = 101
    eos_token_id: int | None = 102
    mask_token_id: int | None = 103
    initializer_range: float = 0.02
    norm_position: str = "post"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.pooling is None:
            self.pooling = "eos" if self.is_causal else "mean"
        self.check_fields()

    def check_fields(self):
        """Reject impossible text settings at config time (a plain `ValueError`, raised from `__init__`)."""
        if self.pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_config.pooling must be one of {TEXT_POOLINGS}, got {self.pooling!r}.")
        if self.norm_position not in NORM_POSITIONS:
            raise ValueError(f"text_config.norm_position must be one of {NORM_POSITIONS}, got {self.norm_position!r}.")
        if self.is_causal and self.pooling != "eos":
            raise ValueError(
                f"text_config.pooling={self.pooling!r} with a causal tower: only the last token ('eos') has seen "
                "the whole text."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"text_config.hidden_size ({self.hidden_size}) must be a multiple of "
                f"text_config.num_attention_heads ({self.num_attention_heads})."
            )
        if not 0 < self.max_position_embeddings <= MAX_TEXT_POSITIONS:
            raise ValueError(
                f"text_config.max_position_embeddings must be in 1..{MAX_TEXT_POSITIONS}, "
                f"got {self.max_position_embeddings}."
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id"):
            token_id = getattr(self, name)
            if token_id is not None and not 0 <= token_id < self.vocab_size:
                raise ValueError(f"text_config.{name}={token_id} is outside the vocabulary (size {self.vocab_size}).")
        if self.pad_token_id is not None and self.pad_token_id in (self.bos_token_id, self.eos_token_id):
            raise ValueError(
                f"text_config.pad_token_id={self.pad_token_id} is also the start or end token: the padding "
                "embedding is all zeros and never trained, so that token (where a causal tower pools) would be "
                "zero too. Give padding its own id (CLIP-style vocabularies: 0)."
            )


@strict
class MedVLConfig(PreTrainedConfig):
    r"""
    Configuration of a MedVL model: vision tower, text tower, shared projection space, fusion layers and the
    pretraining objective.

    Args:
        vision_config (`dict` or `MedVLVisionConfig`, *optional*): The vision tower.
        text_config (`dict` or `MedVLTextConfig`, *optional*): The text tower (also sizes fusion and decoder layers).
        projection_dim (`int`, defaults to 512): Width of the shared image-text embedding space (ITC).
        fusion_type (`str`, defaults to `"cross_attention"`):
            `"cross_attention"`: text tokens attend to image patch tokens in `num_fusion_layers` layers.
            `"merged"`: image and text tokens are concatenated and go through shared self-attention layers.
            `"none"`: no cross-modal layers (dual encoder only; ITM unavailable).
        num_fusion_layers (`int`, defaults to 2): Fusion layers (unused when `fusion_type="none"`).
        num_decoder_layers (`int`, defaults to 2):
            Layers of the report decoder of `MedVLForConditionalGeneration` (causal self-attention plus
            cross-attention to image tokens, sized like the text tower).
        logit_scale_init_value (`float`, defaults to 2.6592): Initial log inverse temperature (log(1/0.07)).
        logit_scale_max (`float`, defaults to 100.0): Upper clamp of the exp'd temperature (CLIP's 100).
        itc_weight (`float`, defaults to 1.0): Weight of the image-text contrastive loss.
        mlm_weight (`float`, defaults to 1.0): Weight of masked language modelling (needs a bidirectional text tower).
        itm_weight (`float`, defaults to 1.0): Weight of image-text matching with in-batch hard negatives (needs fusion).
        mlm_probability (`float`, defaults to 0.15): Share of (non-special) tokens masked for MLM.
        contrastive_targets (`str`, defaults to `"pair"`): The ITC target of an image.
            `"pair"`: its own report only (CLIP).
            `"label_aware"`: every report of the global batch in the same match group as its own (same findings
            labels, or the same report after normalisation; `match_groups` in the forward), spread evenly over them
            as a soft target, so that two normal studies are not pushed apart as negatives.
        classifier_dropout (`float`, defaults to 0.0): Dropout before the classification / answer heads.
        initializer_range (`float`, defaults to 0.02): Standard deviation of the initialiser of MedVL's own layers.
        tie_word_embeddings (`bool`, defaults to `True`): Tie the MLM / report LM heads to their token embeddings.
        text_projection_type (`str`, defaults to `"linear"`): `"linear"`: one bias-free linear map into the shared
            space (CLIP). `"mlp"`: linear, GELU, linear, both bias-free, through (hidden + projection_dim) // 2 units
            (open_clip's `hf_proj_type="mlp"`, as BiomedCLIP's text tower).
        lock_vision_tower (`bool`, defaults to `False`): Locked-image tuning (LiT): the vision tower's weights take
            no gradient (they are left out of the optimiser) and the tower stays in eval mode while training.
        lock_text_tower (`bool`, defaults to `False`): The same for the text tower.

    The classification and question-answering heads size their output from `num_labels` / `id2label` and choose
    their loss from `problem_type` (`"single_label_classification"` or `"multi_label_classification"`).
    """

    model_type = "medvl"
    sub_configs_defaults = {"vision_config": MedVLVisionConfig, "text_config": MedVLTextConfig}
    # The same map under the name transformers before 5.24 reads (it builds no sub-config itself: see below).
    sub_configs = sub_configs_defaults

    vision_config: dict | MedVLVisionConfig | None = None
    text_config: dict | MedVLTextConfig | None = None
    projection_dim: int = 512
    fusion_type: str = "cross_attention"
    num_fusion_layers: int = 2
    num_decoder_layers: int = 2
    logit_scale_init_value: float = 2.6592
    logit_scale_max: float = 100.0
    itc_weight: float = 1.0
    mlm_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_probability: float = 0.15
    contrastive_targets: str = "pair"
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    text_projection_type: str = "linear"
    lock_vision_tower: bool = False
    lock_text_tower: bool = False

    def __post_init__(self, **kwargs):
        for key, config_class in self.sub_configs.items():
            value = getattr(self, key)
            if not isinstance(value, config_class):
                setattr(self, key, config_class(**(value or {})))
        super().__post_init__(**kwargs)
        self.check_fields()

    def check_fields(self):
        """Invalid combinations fail here with a `ValueError`, not deep inside a forward pass."""
        if self.fusion_type not in FUSION_TYPES:
            raise ValueError(f"fusion_type must be one of {FUSION_TYPES}, got {self.fusion_type!r}.")
        if self.fusion_type != "none" and self.num_fusion_layers < 1:
            raise ValueError(f"fusion_type={self.fusion_type!r} needs num_fusion_layers >= 1, got {self.num_fusion_layers}.")
        if self.contrastive_targets not in CONTRASTIVE_TARGETS:
            raise ValueError(
                f"contrastive_targets must be one of {CONTRASTIVE_TARGETS}, got {self.contrastive_targets!r}."
            )
        if self.num_decoder_layers < 1:
            raise ValueError(f"num_decoder_layers must be >= 1, got {self.num_decoder_layers}.")
        if self.text_projection_type not in PROJECTION_TYPES:
            raise ValueError(
                f"text_projection_type must be one of {PROJECTION_TYPES}, got {self.text_projection_type!r}."
            )
        if self.projection_dim <= 0:
            raise ValueError(f"projection_dim must be positive, got {self.projection_dim}.")
        for name in ("itc_weight", "mlm_weight", "itm_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.logit_scale_max <= 0:
            raise ValueError(f"logit_scale_max must be positive, got {self.logit_scale_max}.")
        text_config = self.text_config
        if self.mlm_weight > 0:
            if text_config.is_causal:
                raise ValueError(
                    "mlm_weight > 0 needs a bidirectional text tower, but text_config.is_causal=True "
                    "(a causal CLIP-style tower): set mlm_weight=0."
                )
            if text_config.mask_token_id is None:
                raise ValueError("mlm_weight > 0 needs text_config.mask_token_id.")
        if self.itm_weight > 0 and self.fusion_type == "none":
            raise ValueError("itm_weight > 0 needs fusion layers, but fusion_type='none': set itm_weight=0.")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MedVLConfig":
        """Build the config of a named variant. `overrides` replace top-level fields; pass `vision_config` /
        `text_config` dicts to change fields of a tower (merged into the preset's)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown MedVL preset {name!r}; choose one of {sorted(PRESETS)}.")
        preset = copy.deepcopy(PRESETS[name])
        for key in ("vision_config", "text_config"):
            preset[key].update(overrides.pop(key, None) or {})
        preset.update(overrides)
        return cls(**preset)


_BERT_BASE_TEXT = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "is_causal": False,
    "pad_token_id": 0,
    "bos_token_id": 101,
    "eos_token_id": 102,
    "mask_token_id": 103,
}

_TINY_TEXT = {
    "vocab_size": 1000,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "mask_token_id": 3,
}

# The papers' variants, plus "tiny" (a ViT, for tests) and "tiny-convnext" (for CPU learning runs).
PRESETS = {
    "tiny": {
        "vision_config": {
            "backbone": "vit_tiny_patch16_224",
            "backbone_kwargs": {"embed_dim": 128, "depth": 3, "num_heads": 4, "patch_size": 8},
            "image_size": 64,
        },
        "text_config": {**_TINY_TEXT},
        "projection_dim": 64,
        "num_fusion_layers": 1,
        "num_decoder_layers": 1,
    },
    # The demo's and the learning check's model: a ConvNeXt-atto tower learns SynthCXR's findings at 64 px within
    # a few hundred CPU steps (a supervised classifier on it: macro AUC 0.93 after 300 steps, where the tiny ViT
    # reaches 0.68; see README, "What the tiny recipes learn").
    "tiny-convnext": {
        "vision_config": {"backbone": "convnext_atto", "image_size": 64},
        "text_config": {**_TINY_TEXT},
        "projection_dim": 64,
        "num_fusion_layers": 1,
        "num_decoder_layers": 1,
    },
    "swin-base-384": {
        "vision_config": {"backbone": "swin_base_patch4_window12_384", "image_size": 384},
        "text_config": dict(_BERT_BASE_TEXT),
        "projection_dim": 512,
        "num_fusion_layers": 6,
        "num_decoder_layers": 6,
    },
    "swin-base-512": {
        # 512 px: 128x128 patches after the stem; windows of 16 tile every stage exactly.
        "vision_config": {
            "backbone": "swin_base_patch4_window12_384",
            "backbone_kwargs": {"window_size": 16},
            "image_size": 512,
        },
        "text_config": dict(_BERT_BASE_TEXT),
        "projection_dim": 512,
        "num_fusion_layers": 6,
        "num_decoder_layers": 6,
    },
    # Exactly OpenAI CLIP ViT-L/14-336's towers (QuickGELU, pre-LayerNorm text tower, 77 positions):
    # `MedVLModel.from_clip` fills them from a transformers CLIPModel folder.
    "vit-l14-336": {
        "vision_config": {"backbone": "vit_large_patch14_clip_quickgelu_336", "image_size": 336},
        "text_config": {
            "vocab_size": 49408,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "is_causal": True,
            "hidden_act": "quick_gelu",
            "norm_position": "pre",
            "layer_norm_eps": 1e-5,
            "max_position_embeddings": 77,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            # Not the EOS id: padding_idx rows are zero and never trained, and the causal tower pools at EOS.
            "pad_token_id": 0,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "mask_token_id": None,
        },
        "projection_dim": 768,
        "mlm_weight": 0.0,
        "num_fusion_layers": 6,
        "num_decoder_layers": 6,
    },
}

MedVLConfig.register_for_auto_class()

__all__ = ["MedVLConfig", "MedVLTextConfig", "MedVLVisionConfig"]
