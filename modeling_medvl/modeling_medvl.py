"""MedVL: dual encoder (timm vision tower + BERT/CLIP-style text tower) with cross-modal fusion, and the
shared base class of every MedVL model."""

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, logging

from .clip_layout_medvl import build_text_projection, build_text_tower
from .configuration_medvl import MedVLConfig
from .fusion_medvl import MedVLFusion
from .layers_medvl import MedVLTextEncoder
from .losses_medvl import contrastive_loss
from .temperature_medvl import (
    TEMPERATURE_SHAPE,
    register_temperature_conversion,
    reshape_temperature_on_load,
)
from .tower_init_medvl import load_pretrained_towers
from .vision_medvl import MedVLAttentionPool, MedVLVisionTower

logger = logging.get_logger(__name__)

# Every saved MedVL folder answers every Auto class, whichever head was saved (file.Class of the flat copies).
AUTO_MAP = {
    "AutoConfig": "configuration_medvl.MedVLConfig",
    "AutoModel": "modeling_medvl.MedVLModel",
    "AutoModelForPreTraining": "pretraining_medvl.MedVLForPreTraining",
    "AutoModelForImageClassification": "heads_medvl.MedVLForImageClassification",
    "AutoModelForVisualQuestionAnswering": "heads_medvl.MedVLForQuestionAnswering",
    "AutoModelForImageTextToText": "generation_medvl.MedVLForConditionalGeneration",
    "AutoModelForZeroShotImageClassification": "modeling_medvl.MedVLModel",
}


@dataclass
class MedVLOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): Contrastive loss, when `return_loss=True`.
    logits_per_image (`torch.FloatTensor` of shape `(image_batch, text_batch)`):
        Scaled cosine similarities, image rows against text columns.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch, image_batch)`): The transpose.
    image_embeds (`torch.FloatTensor` of shape `(image_batch, projection_dim)`): L2-normalised image embeddings.
    text_embeds (`torch.FloatTensor` of shape `(text_batch, projection_dim)`): L2-normalised text embeddings.
    logit_scale (`torch.FloatTensor` of shape `()`): The exp'd inverse temperature, at most `logit_scale_max`.
    fused_hidden_state (`torch.FloatTensor` of shape `(batch, text_length, text_hidden_size)`, *optional*):
        Text states after the fusion layers, when asked with `compute_fusion=True`.
    text_model_output (`BaseModelOutputWithPooling`): Text tower output; `pooler_output` is the projected (not
        normalised) text embedding, as `get_text_features` returns it.
    vision_model_output (`BaseModelOutputWithPooling`): Vision tower output (patch tokens); `pooler_output` is the
        projected (not normalised) image embedding, as `get_image_features` returns it.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    fused_hidden_state: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self):
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else getattr(self, k).to_tuple()
            for k in self.keys()
        )


@dataclass
class MedVLEncoding(ModelOutput):
    r"""
    What every MedVL model builds on: both towers run once, embeddings projected and normalised.

    image_embeds (`torch.FloatTensor` of shape `(image_batch, projection_dim)`): L2-normalised image embeddings.
    text_embeds (`torch.FloatTensor` of shape `(text_batch, projection_dim)`): L2-normalised text embeddings.
    image_tokens (`torch.FloatTensor` of shape `(image_batch, num_image_tokens, vision_hidden_size)`): Patch tokens.
    text_states (`torch.FloatTensor` of shape `(text_batch, text_length, text_hidden_size)`): Token states.
    vision_model_output / text_model_output: the outputs of `get_image_features` / `get_text_features`.
    """

    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_tokens: torch.FloatTensor | None = None
    text_states: torch.FloatTensor | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    text_model_output: BaseModelOutputWithPooling | None = None


def check_paired_batch(input_ids: torch.Tensor | None, pixel_values: torch.Tensor | None) -> None:
    """Paired objectives need one text per image."""
    if pixel_values is None:
        raise ValueError("pixel_values are required: this model reads the image (got pixel_values=None).")
    if input_ids is None:
        raise ValueError("input_ids are required: this model reads the text (got input_ids=None).")
    if pixel_values.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"pixel_values holds {pixel_values.shape[0]} images but input_ids holds {input_ids.shape[0]} texts: "
            "each image needs exactly one text."
        )


def _input_requires_grad(module, args):
    if args and isinstance(args[0], torch.Tensor) and not args[0].requires_grad and args[0].is_floating_point():
        args[0].requires_grad_(True)


class MedVLPreTrainedModel(PreTrainedModel):
    config: MedVLConfig
    config_class = MedVLConfig
    base_model_prefix = "medvl"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # Flash kernels receive 2-D padding masks and a causal flag (see `layers_medvl.attention_mask_for`).
    _supports_flash_attn = True
    _supports_flex_attn = False
    _no_split_modules = ["MedVLLayer"]  # plus the timm backbone's block classes, set per instance in `post_init`
    # The forward passes take **kwargs but average their losses themselves: Trainer must not pass
    # `num_items_in_batch` expecting a sum, or it would skip its accumulation division and scale by the process count.
    accepts_loss_kwargs = False

    def __init__(self, config: MedVLConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self._share_attn_implementation()

    def post_init(self):
        # FSDP and `device_map="auto"` may split between blocks: MedVL's layers and the timm backbone's own blocks.
        block_classes = {
            type(block).__name__
            for module in self.modules() if isinstance(module, MedVLVisionTower)
            for block in module.blocks
        }
        self._no_split_modules = ["MedVLLayer", *sorted(block_classes)]
        super().post_init()
        self.lock_towers()

    def enable_input_require_grads(self):
        """Also each vision tower's first block input: under reentrant checkpointing a block whose input needs no
        gradient gives its parameters none, so a frozen stem would leave the vision tower's adapters untrained."""
        super().enable_input_require_grads()
        self._vision_require_grads_hooks = [
            module.blocks[0].register_forward_pre_hook(_input_requires_grad)
            for module in self.modules() if isinstance(module, MedVLVisionTower) and module.blocks
        ]

    def disable_input_require_grads(self):
        super().disable_input_require_grads()
        for hook in getattr(self, "_vision_require_grads_hooks", []):
            hook.remove()
        self._vision_require_grads_hooks = []

    def _share_attn_implementation(self) -> None:
        """The towers are plain modules reading their sub-config: give those left unresolved the implementation
        chosen for the model (transformers resolves it on the top-level config only). A tower set explicitly (e.g.
        `config.text_config._attn_implementation = "eager"`, or a per-sub-config dict) keeps its own."""
        for sub_config in (self.config.text_config, self.config.vision_config):
            if sub_config._attn_implementation is None:
                sub_config._attn_implementation_internal = self.config._attn_implementation

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        if isinstance(attn_implementation, str):
            # Validate first: an unsupported name must raise before any sub-config is touched.
            attn_implementation = self._check_and_adjust_attn_implementation(attn_implementation)
            # Set the towers first, so transformers finds nothing left to set "in the dark" (and does not warn).
            for sub_config in (self.config.text_config, self.config.vision_config):
                sub_config._attn_implementation_internal = attn_implementation
        super().set_attn_implementation(attn_implementation, *args, **kwargs)
        self._share_attn_implementation()

    @classmethod
    def from_pretrained_towers(
        cls,
        config: MedVLConfig,
        vision_weights: str | Path | None = None,
        text_model_path: str | Path | None = None,
    ) -> "MedVLPreTrainedModel":
        """Build the model from `config`, then load separately pretrained towers held locally:
        `vision_weights`, a timm weight file for the vision backbone (adapted by timm's own checkpoint filter, e.g.
        a 224 px ViT's position table resampled to `config.vision_config.image_size`); `text_model_path`, a folder
        written by transformers' `BertModel` / `BertForMaskedLM.save_pretrained` (BERT, PubMedBERT, CXR-BERT
        layouts), mapped onto the text tower (and the report decoder's self-attention layers; and the MLM head when
        the folder has one). Fusion layers, projections and heads keep their fresh initialisation; the log says
        what was loaded and what is new."""
        model = cls(config)
        load_pretrained_towers(model, vision_weights, text_model_path)
        return model

    @classmethod
    def from_clip(cls, path: str | Path, **config_overrides) -> "MedVLPreTrainedModel":
        """Start from a transformers `CLIPModel` folder (e.g. a local copy of openai/clip-vit-large-patch14-336): its
        vision tower (as a timm CLIP ViT), causal text tower, both projections and the temperature, exactly; MedVL's
        own layers (fusion, heads) are new and logged as such. `config_overrides` set MedVL fields, e.g.
        `fusion_type="cross_attention"`. The folder's tokenizer stays usable with the model (its size is checked)."""
        from .weight_conversion_medvl import convert_hf_clip

        return convert_hf_clip(cls, path, **config_overrides)

    @classmethod
    def from_open_clip(
        cls, path: str | Path, model_name: str | None = None, model_config: dict | None = None, **config_overrides
    ) -> "MedVLPreTrainedModel":
        """Start from an open_clip checkpoint: a weight file with `model_name` (an open_clip model name, its
        config read from the installed open_clip) or `model_config` (an open_clip model config dict), or a folder in
        open_clip's Hub layout (`open_clip_config.json` + weights, as BiomedCLIP's). OpenAI-style ViT towers,
        timm-tower models and hf-text-tower models (a BERT-style text model) convert exactly."""
        from .open_clip_conversion_medvl import convert_open_clip

        return convert_open_clip(cls, path, model_name, model_config, **config_overrides)

    def locked_modules(self) -> list[nn.Module]:
        """The towers (with their projections) that `config.lock_vision_tower` / `lock_text_tower` lock (LiT)."""
        locked = []
        for name, module in self.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if self.config.lock_vision_tower and (isinstance(module, MedVLVisionTower) or leaf == "visual_projection"):
                locked.append(module)
            # The report decoder subclasses the text tower's class and is never locked with it.
            elif self.config.lock_text_tower and (type(module) is MedVLTextEncoder or leaf == "text_projection"):
                locked.append(module)
        return locked

    def lock_towers(self) -> None:
        """Apply the config's tower locks: locked weights take no gradient (optimisers built over trainable
        parameters leave them out) and locked towers stay in eval mode. Called by `post_init`; call it again
        after changing `config.lock_*_tower` on a built model."""
        for module in self.locked_modules():
            module.requires_grad_(False)
            module.eval()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        # Loading replaces the parameters (and their requires_grad flags): apply the config's locks again.
        (loaded[0] if isinstance(loaded, tuple) else loaded).lock_towers()
        return loaded

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.locked_modules():
            module.eval()
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also writes the model code (flat `*.py` files) and an `auto_map` for every MedVL Auto class, so that
        `AutoModel*.from_pretrained(folder, trust_remote_code=True)` loads any head from any saved MedVL folder."""
        # A model loaded as remote code only has the files its own class needed: map only what can be shipped.
        code_folder = Path(__file__).parent
        self.config.auto_map = {
            auto_class: target for auto_class, target in AUTO_MAP.items()
            if (code_folder / f"{target.split('.')[0]}.py").is_file()
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for source in code_folder.glob("*.py"):
                if source.name != "__init__.py":
                    shutil.copy(source, Path(save_directory) / source.name)

    @torch.no_grad()
    def _init_weights(self, module):
        """MedVL's own layers get transformers' initialisation; a timm backbone keeps timm's own (its tower owns
        that contract, see `MedVLVisionTower.initialize_from_timm`), so that a fresh model's vision tower equals
        `timm.create_model` of the same name. Tensors flagged `_is_hf_initialized` (loaded weights) are kept."""
        tower = getattr(module, "_medvl_vision_tower", None)
        if tower is not None:
            tower.initialize_from_timm()
            return
        super()._init_weights(module)
        if isinstance(module, MedVLAttentionPool):
            init.normal_(module.positions, std=module.positions.shape[-1] ** -0.5)
        if isinstance(module, MedVLModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp every learned temperature of this model into [0, log(logit_scale_max)] in place.

        Call it after each optimiser step (`train/pretrain.py` does): the forward pass only guards the value, so a
        parameter left above the limit would keep drifting with Adam's momentum and never come back."""
        for module in self.modules():
            if isinstance(module, MedVLModel):
                module.logit_scale.clamp_(0.0, module.log_logit_scale_max())

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs):
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        for module in self.modules():
            if isinstance(module, MedVLVisionTower):
                # The same checkpoint function (with the user's gradient_checkpointing_kwargs) as the text layers.
                module.set_block_checkpointing(module._gradient_checkpointing_func if enable else None)


class MedVLModel(MedVLPreTrainedModel):
    """Vision tower + text tower projected into one space (ITC, zero-shot), plus the fusion layers."""

    # A pretraining checkpoint's MLM and ITM heads, which the base model (AutoModel of an exported folder) leaves out.
    _keys_to_ignore_on_load_unexpected = [r"^(mlm_head|itm_head)\."]

    def __init__(self, config: MedVLConfig):
        super().__init__(config)
        self.vision_model = MedVLVisionTower(config.vision_config)
        self.text_model = build_text_tower(config.text_config)
        self.visual_projection = nn.Linear(self.vision_model.hidden_size, config.projection_dim, bias=False)
        self.text_projection = build_text_projection(config)
        # One element, not 0-d, so that FSDP can shard it; checkpoints hold it 0-d (see temperature_medvl.py).
        self.logit_scale = nn.Parameter(torch.full(TEMPERATURE_SHAPE, config.logit_scale_init_value))
        self.register_load_state_dict_pre_hook(reshape_temperature_on_load)
        self.fusion = None
        if config.fusion_type != "none":
            self.fusion = MedVLFusion(config, self.vision_model.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.embeddings.word_embeddings = value

    def get_image_features(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs):
        """Returns the vision tower's output with `pooler_output` replaced by the projected (not normalised) image
        embedding `(batch, projection_dim)`; `last_hidden_state` holds the patch tokens."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        vision_outputs = self.vision_model(pixel_values)
        vision_outputs.pooler_output = self.visual_projection(vision_outputs.pooler_output)
        return vision_outputs if return_dict else vision_outputs.to_tuple()

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ):
        """Returns the text tower's output with `pooler_output` replaced by the projected (not normalised) text
        embedding `(batch, projection_dim)`."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        text_outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
            output_attentions=bool(self.config.output_attentions if output_attentions is None else output_attentions),
            output_hidden_states=bool(
                self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
            ),
        )
        text_outputs.pooler_output = self.text_projection(text_outputs.pooler_output)
        return text_outputs if return_dict else text_outputs.to_tuple()

    def encode(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MedVLEncoding:
        """Both towers once: the one forward path of `forward`, the pretraining model and the task heads."""
        if pixel_values is None or input_ids is None:
            raise ValueError("MedVL needs both pixel_values and input_ids; use get_image_features / "
                             "get_text_features for one modality.")
        vision_outputs = self.get_image_features(pixel_values, return_dict=True)
        text_outputs = self.get_text_features(
            input_ids, attention_mask, position_ids, return_dict=True, token_type_ids=token_type_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        return MedVLEncoding(
            image_embeds=nn.functional.normalize(vision_outputs.pooler_output, dim=-1),
            text_embeds=nn.functional.normalize(text_outputs.pooler_output, dim=-1),
            image_tokens=vision_outputs.last_hidden_state,
            text_states=text_outputs.last_hidden_state,
            vision_model_output=vision_outputs,
            text_model_output=text_outputs,
        )

    def log_logit_scale_max(self) -> float:
        return math.log(self.config.logit_scale_max)

    def clamped_logit_scale(self) -> torch.Tensor:
        """exp(logit_scale), its value guarded at `logit_scale_max`. The guard passes the gradient through (a plain
        clamp would cut it at the limit, and a parameter there could never come back down); the parameter itself
        is kept in range by `clamp_logit_scale_` after each optimiser step."""
        logit_scale = self.logit_scale.reshape(())
        excess = (logit_scale - self.log_logit_scale_max()).clamp(min=0).detach()
        return (logit_scale - excess).exp()

    def fuse(
        self, text_states: torch.Tensor, attention_mask: torch.Tensor | None, image_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Fused text states `(batch, text_length, text_hidden)`; the text states unchanged when fusion_type='none'."""
        if self.fusion is None:
            return text_states
        return self.fusion(text_states, attention_mask, image_tokens)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        compute_fusion: bool | None = None,
        contrastive_process_group=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> MedVLOutput | tuple:
        r"""
        Scores every image against every text (the batches may differ in size, as in zero-shot classification).

        return_loss (`bool`, *optional*): Also return the contrastive loss (needs paired batches).
        compute_fusion (`bool`, *optional*): Also run the fusion layers over the paired batches and return
            `fused_hidden_state` (default: no).
        contrastive_process_group (*optional*): The `torch.distributed` group whose ranks' batches form the
            contrastive loss's global batch (every rank of it must then call); default: this process's batch alone.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoding = self.encode(
            input_ids, pixel_values, attention_mask, position_ids, token_type_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        logit_scale = self.clamped_logit_scale()
        logits_per_text = logit_scale * encoding.text_embeds @ encoding.image_embeds.t()
        fused = None
        if compute_fusion:
            check_paired_batch(input_ids, pixel_values)
            fused = self.fuse(encoding.text_states, attention_mask, encoding.image_tokens)
        loss = None
        if return_loss:
            check_paired_batch(input_ids, pixel_values)
            loss = contrastive_loss(
                encoding.image_embeds, encoding.text_embeds, logit_scale, process_group=contrastive_process_group
            )
        output = MedVLOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            image_embeds=encoding.image_embeds,
            text_embeds=encoding.text_embeds,
            logit_scale=logit_scale,
            fused_hidden_state=fused,
            text_model_output=encoding.text_model_output,
            vision_model_output=encoding.vision_model_output,
        )
        return output if return_dict else output.to_tuple()


MedVLModel.register_for_auto_class("AutoModel")
register_temperature_conversion(MedVLModel.__name__)

__all__ = ["AUTO_MAP", "MedVLEncoding", "MedVLModel", "MedVLOutput", "MedVLPreTrainedModel", "check_paired_batch"]
