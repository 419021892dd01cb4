"""MedVL: dual encoder (timm vision tower + BERT/CLIP-style text tower) with cross-modal fusion, and its
pretraining model (ITC + MLM + ITM)."""

from dataclasses import dataclass

import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, logging

from .configuration_medvl import MedVLConfig
from .fusion_medvl import MedVLFusion
from .layers_medvl import MedVLLMHead, MedVLTextEncoder
from .losses_medvl import contrastive_loss, itm_loss, mask_tokens, mlm_loss, sample_hard_negatives
from .tower_init_medvl import bert_mlm_head_to_medvl, bert_to_medvl_text, read_bert_checkpoint
from .vision_medvl import MedVLVisionTower

logger = logging.get_logger(__name__)

LOSS_TERMS = ("itc", "mlm", "itm")

# Every saved MedVL folder answers every Auto class, whichever head was saved (file.Class of the flat copies).
AUTO_MAP = {
    "AutoConfig": "configuration_medvl.MedVLConfig",
    "AutoModel": "modeling_medvl.MedVLModel",
    "AutoModelForPreTraining": "modeling_medvl.MedVLForPreTraining",
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
    logit_scale (`torch.FloatTensor` of shape `()`): The exp'd inverse temperature, clamped to `logit_scale_max`.
    fused_hidden_state (`torch.FloatTensor` of shape `(batch, text_length, text_hidden_size)`, *optional*):
        Text states after the fusion layers (image and text batches paired; `None` without fusion).
    text_model_output (`BaseModelOutputWithPooling`): Text tower output (`pooler_output` before projection).
    vision_model_output (`BaseModelOutputWithPooling`): Vision tower output (patch tokens, pooled features).
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
class MedVLPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): Weighted sum of the computed terms.
    loss_terms (`dict[str, torch.FloatTensor]`, *optional*): Each computed term (`"itc"`, `"mlm"`, `"itm"`),
        unweighted, as a scalar.
    logits_per_image (`torch.FloatTensor` of shape `(batch, batch)`): Scaled image-to-text similarities.
    logits_per_text (`torch.FloatTensor` of shape `(batch, batch)`): The transpose.
    image_embeds (`torch.FloatTensor` of shape `(batch, projection_dim)`): L2-normalised image embeddings.
    text_embeds (`torch.FloatTensor` of shape `(batch, projection_dim)`): L2-normalised text embeddings.
    logit_scale (`torch.FloatTensor` of shape `()`): The exp'd, clamped inverse temperature.
    mlm_logits (`torch.FloatTensor` of shape `(batch, text_length, vocab_size)`, *optional*): MLM predictions.
    mlm_labels (`torch.LongTensor` of shape `(batch, text_length)`, *optional*): MLM targets (-100 = ignored).
    itm_logits (`torch.FloatTensor` of shape `(num_pairs, 2)`, *optional*): Match logits over positives then
        hard negatives.
    itm_labels (`torch.LongTensor` of shape `(num_pairs,)`, *optional*): 1 for matching pairs.
    """

    loss: torch.FloatTensor | None = None
    loss_terms: dict[str, torch.FloatTensor] | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    mlm_labels: torch.LongTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None


def check_paired_batch(pixel_values: torch.Tensor | None, input_ids: torch.Tensor | None) -> None:
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


def _has_standard_init(module: nn.Module) -> bool:
    """Module kinds that `PreTrainedModel._init_weights` initialises itself."""
    name = module.__class__.__name__
    standard = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.GroupNorm, nn.BatchNorm2d)
    return isinstance(module, standard) or "LayerNorm" in name or "RMSNorm" in name


class MedVLPreTrainedModel(PreTrainedModel):
    config: MedVLConfig
    config_class = MedVLConfig
    base_model_prefix = "medvl"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MedVLLayer", "MedVLVisionTower"]

    def __init__(self, config: MedVLConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self._share_attn_implementation()

    def _share_attn_implementation(self) -> None:
        """The towers are plain modules reading their sub-config: give them the implementation chosen for the model
        (transformers resolves it on the top-level config only)."""
        for sub_config in (self.config.text_config, self.config.vision_config):
            sub_config._attn_implementation_internal = self.config._attn_implementation

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        if isinstance(attn_implementation, str):
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
        `vision_weights`, a timm weight file for the vision backbone; `text_model_path`, a folder written by
        transformers' `BertModel` / `BertForMaskedLM.save_pretrained`, mapped onto the text tower (and the report
        decoder's self-attention layers; and the MLM head when the folder has one). Fusion layers, projections and
        heads keep their fresh initialisation."""
        model = cls(config)
        if vision_weights is not None:
            for module in model.modules():
                if isinstance(module, MedVLVisionTower):
                    module.load_backbone_weights(vision_weights)
        if text_model_path is not None:
            bert_config, bert_state_dict = read_bert_checkpoint(text_model_path)
            for name, module in model.named_modules():
                if isinstance(module, MedVLTextEncoder):
                    mapped = bert_to_medvl_text(bert_config, bert_state_dict, config.text_config, len(module.layers))
                    # strict=False: a decoder's cross-attention layers have no BERT counterpart.
                    result = module.load_state_dict(mapped, strict=False)
                    if result.unexpected_keys:
                        raise ValueError(f"BERT weights did not fit {name}: {result.unexpected_keys[:5]}")
                    logger.info(f"Initialised {name} from {text_model_path} ({len(mapped)} tensors).")
                elif isinstance(module, MedVLLMHead) and name == "mlm_head":
                    head_weights = bert_mlm_head_to_medvl(bert_state_dict)
                    if head_weights is not None:
                        module.load_state_dict(head_weights, strict=False)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also writes the model code (flat `*.py` files) and an `auto_map` for every MedVL Auto class, so that
        `AutoModel*.from_pretrained(folder, trust_remote_code=True)` loads any head from any saved MedVL folder."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for source in Path(__file__).parent.glob("*.py"):
                if source.name != "__init__.py":
                    shutil.copy(source, Path(save_directory) / source.name)

    @torch.no_grad()
    def _init_weights(self, module):
        """One deterministic scheme for every weight, timm backbone included, so that building a model and loading
        one with missing weights agree. Tensors flagged `_is_hf_initialized` are skipped by the `init` helpers:
        weights loaded from a local file (`vision_config.weights_path`) and derived buffers survive."""
        if hasattr(module, "_medvl_restore_derived_buffers"):
            module._medvl_restore_derived_buffers()
        super()._init_weights(module)
        if isinstance(module, MedVLModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif getattr(module, "_medvl_timm_module", False) and not _has_standard_init(module):
            # Bare parameters of timm modules (pos_embed, cls_token, relative position tables, layer scales).
            for name, parameter in module.named_parameters(recurse=False):
                if name.endswith("bias"):
                    init.zeros_(parameter)
                elif name == "gamma":
                    init.constant_(parameter, 1e-6)  # layer scale starts near zero, as in timm's ConvNeXt
                else:
                    init.trunc_normal_(parameter, std=self.config.initializer_range)

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs):
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        for module in self.modules():
            if isinstance(module, MedVLVisionTower):
                module.gradient_checkpointing = enable


class MedVLModel(MedVLPreTrainedModel):
    """Vision tower + text tower projected into one space (ITC, zero-shot), plus the fusion layers."""

    def __init__(self, config: MedVLConfig):
        super().__init__(config)
        self.vision_model = MedVLVisionTower(config.vision_config)
        self.text_model = MedVLTextEncoder(config.text_config)
        self.visual_projection = nn.Linear(self.vision_model.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.fusion = None
        if config.fusion_type != "none":
            self.fusion = MedVLFusion(config, self.vision_model.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.embeddings.word_embeddings = value

    def get_image_features(self, pixel_values: torch.Tensor, return_dict: bool = True, **kwargs):
        """Returns the vision tower's output with `pooler_output` replaced by the projected (not normalised) image
        embedding `(batch, projection_dim)`; `last_hidden_state` holds the patch tokens."""
        vision_outputs = self.vision_model(pixel_values)
        vision_outputs.pooler_output = self.visual_projection(vision_outputs.pooler_output)
        return vision_outputs if return_dict else vision_outputs.to_tuple()

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool = True,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ):
        """Returns the text tower's output with `pooler_output` replaced by the projected (not normalised) text
        embedding `(batch, projection_dim)`."""
        text_outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, token_type_ids=token_type_ids
        )
        text_outputs.pooler_output = self.text_projection(text_outputs.pooler_output)
        return text_outputs if return_dict else text_outputs.to_tuple()

    def clamped_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.config.logit_scale_max)

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
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> MedVLOutput | tuple:
        r"""
        Scores every image against every text (the batches may differ in size, as in zero-shot classification).

        return_loss (`bool`, *optional*): Also return the contrastive loss (needs paired batches).
        compute_fusion (`bool`, *optional*): Run the fusion layers and return `fused_hidden_state`. Default: when
            the model has fusion layers and the image and text batches have the same size.
        """
        if pixel_values is None or input_ids is None:
            raise ValueError("MedVLModel needs both pixel_values and input_ids; use get_image_features / "
                             "get_text_features for one modality.")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        vision_outputs = self.vision_model(pixel_values)
        text_outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
            token_type_ids=token_type_ids,
        )
        image_embeds = nn.functional.normalize(self.visual_projection(vision_outputs.pooler_output), dim=-1)
        text_embeds = nn.functional.normalize(self.text_projection(text_outputs.pooler_output), dim=-1)
        logit_scale = self.clamped_logit_scale()
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()
        logits_per_image = logits_per_text.t()

        paired = pixel_values.shape[0] == input_ids.shape[0]
        if compute_fusion is None:
            compute_fusion = self.fusion is not None and paired
        fused = None
        if compute_fusion:
            check_paired_batch(pixel_values, input_ids)
            fused = self.fuse(text_outputs.last_hidden_state, attention_mask, vision_outputs.last_hidden_state)

        loss = None
        if return_loss:
            check_paired_batch(pixel_values, input_ids)
            loss = contrastive_loss(image_embeds, text_embeds, logit_scale)
        output = MedVLOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            logit_scale=logit_scale,
            fused_hidden_state=fused,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )
        return output if return_dict else output.to_tuple()


class MedVLForPreTraining(MedVLPreTrainedModel):
    """MedVL with its composite pretraining objective: ITC (+ MLM on fused text) (+ ITM with hard negatives)."""

    _tied_weights_keys = {"mlm_head.decoder.weight": "medvl.text_model.embeddings.word_embeddings.weight"}

    def __init__(self, config: MedVLConfig):
        super().__init__(config)
        self.medvl = MedVLModel(config)
        text_config = config.text_config
        self.mlm_head = MedVLLMHead(text_config) if not text_config.is_causal else None
        self.itm_head = nn.Linear(text_config.hidden_size, 2) if config.fusion_type != "none" else None
        if self.mlm_head is None:
            self._tied_weights_keys = {}
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.medvl.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.medvl.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.mlm_head.decoder if self.mlm_head is not None else None

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.mlm_head.decoder = value

    def resolve_loss_terms(self, loss_terms) -> tuple[str, ...]:
        """Default: every term with a positive weight that this architecture supports."""
        if loss_terms is None:
            terms = [name for name in LOSS_TERMS if getattr(self.config, f"{name}_weight") > 0]
        else:
            terms = [loss_terms] if isinstance(loss_terms, str) else list(loss_terms)
        unknown = [name for name in terms if name not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"Unknown loss term(s) {unknown}; choose from {LOSS_TERMS}.")
        if "mlm" in terms and self.mlm_head is None:
            raise ValueError("The 'mlm' term needs a bidirectional text tower (text_config.is_causal=False).")
        if "itm" in terms and self.itm_head is None:
            raise ValueError("The 'itm' term needs fusion layers (fusion_type='none' has none).")
        return tuple(terms)

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        loss_terms: tuple[str, ...] | list[str] | str | None = None,
        position_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> MedVLPreTrainingOutput | tuple:
        r"""
        mlm_input_ids (`torch.LongTensor` of shape `(batch, text_length)`, *optional*): Masked copy of `input_ids`
            for MLM (with `mlm_labels`). When absent, `input_ids` are masked here with torch's RNG.
        mlm_labels (`torch.LongTensor` of shape `(batch, text_length)`, *optional*): MLM targets, -100 = ignored.
        return_loss (`bool`, *optional*): Compute the losses (default `True` for this pretraining model).
        loss_terms (`tuple[str]`, *optional*): Which of `"itc"`, `"mlm"`, `"itm"` to compute; default every term
            whose weight in the config is positive. `loss` is the config-weighted sum of the computed terms.
        """
        check_paired_batch(pixel_values, input_ids)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return_loss = True if return_loss is None else return_loss
        terms = self.resolve_loss_terms(loss_terms) if return_loss else ()
        if (mlm_input_ids is None) != (mlm_labels is None) and "mlm" in terms:
            raise ValueError("Pass mlm_input_ids and mlm_labels together (or neither, to mask input_ids here).")

        medvl = self.medvl
        vision_outputs = medvl.vision_model(pixel_values)
        text_outputs = medvl.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, token_type_ids=token_type_ids
        )
        image_embeds = nn.functional.normalize(medvl.visual_projection(vision_outputs.pooler_output), dim=-1)
        text_embeds = nn.functional.normalize(medvl.text_projection(text_outputs.pooler_output), dim=-1)
        logit_scale = medvl.clamped_logit_scale()
        logits_per_image = logit_scale * image_embeds @ text_embeds.t()
        image_tokens = vision_outputs.last_hidden_state

        losses: dict[str, torch.Tensor] = {}
        mlm_logits = itm_logits = itm_labels = None
        if "itc" in terms:
            losses["itc"] = contrastive_loss(image_embeds, text_embeds, logit_scale)
        if "mlm" in terms:
            if mlm_input_ids is None:
                mlm_input_ids, mlm_labels = self.mask_for_mlm(input_ids, attention_mask)
            masked_states = medvl.text_model(
                input_ids=mlm_input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).last_hidden_state
            mlm_logits = self.mlm_head(medvl.fuse(masked_states, attention_mask, image_tokens))
            losses["mlm"] = mlm_loss(mlm_logits, mlm_labels)
        if "itm" in terms:
            itm_logits, itm_labels = self.image_text_matching(
                image_tokens, text_outputs.last_hidden_state, input_ids, attention_mask, logits_per_image
            )
            if itm_logits is not None:
                losses["itm"] = itm_loss(itm_logits, itm_labels)

        loss = None
        if losses:
            loss = sum(getattr(self.config, f"{name}_weight") * value for name, value in losses.items())
        output = MedVLPreTrainingOutput(
            loss=loss,
            loss_terms=losses or None,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            logit_scale=logit_scale,
            mlm_logits=mlm_logits,
            mlm_labels=mlm_labels if "mlm" in terms else None,
            itm_logits=itm_logits,
            itm_labels=itm_labels,
        )
        return output if return_dict else output.to_tuple()

    def mask_for_mlm(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_config = self.config.text_config
        special = [
            token_id
            for token_id in (text_config.pad_token_id, text_config.bos_token_id, text_config.eos_token_id,
                             text_config.mask_token_id)
            if token_id is not None
        ]
        return mask_tokens(
            input_ids, attention_mask, text_config.mask_token_id, text_config.vocab_size, special,
            self.config.mlm_probability,
        )

    def image_text_matching(
        self,
        image_tokens: torch.Tensor,
        text_states: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        logits_per_image: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Positives plus one hard negative text per image and one hard negative image per text."""
        batch = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Identical reports (same tokens where both are real) are not negatives of each other.
        tokens = input_ids.masked_fill(attention_mask == 0, -1)
        same_text = (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1)
        image_rows, negative_texts, text_rows, negative_images = sample_hard_negatives(logits_per_image, same_text)
        if image_rows.numel() + text_rows.numel() == 0:
            logger.warning(
                f"ITM skipped for this batch: its {batch} texts are all identical, so there are no negatives."
            )
            return None, None
        image_index = torch.cat([torch.arange(batch, device=input_ids.device), image_rows, negative_images])
        text_index = torch.cat([torch.arange(batch, device=input_ids.device), negative_texts, text_rows])
        fused = self.medvl.fuse(text_states[text_index], attention_mask[text_index], image_tokens[image_index])
        itm_logits = self.itm_head(fused[:, 0])
        itm_labels = torch.zeros(image_index.shape[0], dtype=torch.long, device=input_ids.device)
        itm_labels[:batch] = 1
        return itm_logits, itm_labels


MedVLModel.register_for_auto_class("AutoModel")
MedVLForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = ["AUTO_MAP", "MedVLForPreTraining", "MedVLModel", "MedVLOutput", "MedVLPreTrainedModel", "MedVLPreTrainingOutput"]
