"""MedVL report generation: a causal text decoder that cross-attends to the vision tower's image tokens."""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin
from transformers.cache_utils import Cache, DynamicCache
from transformers.utils import ModelOutput

from .configuration_medvl import MedVLConfig
from .layers_medvl import MedVLLMHead, MedVLTextEncoder
from .losses_medvl import IGNORE_INDEX
from .modeling_medvl import MedVLPreTrainedModel
from .vision_medvl import MedVLVisionTower


@dataclass
class MedVLGenerationOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): Next-token cross-entropy (labels shifted inside).
    logits (`torch.FloatTensor` of shape `(batch, text_length, vocab_size)`): Next-token scores.
    past_key_values (`Cache`, *optional*): The decoder's self-attention cache.
    image_tokens (`torch.FloatTensor` of shape `(batch, num_image_tokens, vision_hidden_size)`): Encoded image,
        reused by later generation steps instead of re-running the vision tower.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    image_tokens: torch.FloatTensor | None = None


class MedVLForConditionalGeneration(MedVLPreTrainedModel, GenerationMixin):
    """Vision tower + causal decoder (self-attention, cross-attention to image tokens, feed-forward), sized by the
    text config with `config.num_decoder_layers` layers. Generates reports, or open-ended answers after a
    question prompt: `model.generate(pixel_values=px, input_ids=prompt_ids)`."""

    _tied_weights_keys = {"lm_head.decoder.weight": "decoder.embeddings.word_embeddings.weight"}

    def __init__(self, config: MedVLConfig):
        super().__init__(config)
        self.vision_model = MedVLVisionTower(config.vision_config)
        self.decoder = MedVLTextEncoder(
            config.text_config,
            num_layers=config.num_decoder_layers,
            is_causal=True,
            cross_attention_dim=self.vision_model.hidden_size,
        )
        self.lm_head = MedVLLMHead(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.decoder.embeddings.word_embeddings = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head.decoder

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head.decoder = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        image_tokens: torch.FloatTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> MedVLGenerationOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch, text_length)`, *optional*): Targets aligned with `input_ids`
            (usually a copy with padding set to -100); shifted inside so position t predicts token t+1.
        image_tokens (`torch.FloatTensor`, *optional*): Output of an earlier call, instead of `pixel_values`.
        """
        if input_ids is None:
            raise ValueError("input_ids are required (at least a start token per example).")
        if image_tokens is None:
            if pixel_values is None:
                raise ValueError("MedVLForConditionalGeneration needs pixel_values: it describes an image.")
            if pixel_values.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"pixel_values holds {pixel_values.shape[0]} images but input_ids holds {input_ids.shape[0]} "
                    "texts: each image needs exactly one text."
                )
            image_tokens = self.vision_model(pixel_values).last_hidden_state
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if use_cache and past_key_values is None and not self.training:
            past_key_values = DynamicCache()
        decoder_outputs = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            encoder_hidden_states=image_tokens,
            past_key_values=past_key_values if use_cache or past_key_values is not None else None,
            token_type_ids=token_type_ids,
        )
        logits = self.lm_head(decoder_outputs.last_hidden_state)
        loss = None
        if labels is not None:
            shifted_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            shifted_labels = labels[:, 1:].reshape(-1)
            loss = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX)
        output = MedVLGenerationOutput(
            loss=loss, logits=logits, past_key_values=decoder_outputs.past_key_values, image_tokens=image_tokens
        )
        return output if return_dict else output.to_tuple()

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, image_tokens=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, past_key_values=past_key_values, **kwargs)
        if image_tokens is not None:
            # The image was encoded at the first step; pixel_values are not needed again.
            model_inputs["image_tokens"] = image_tokens
            model_inputs.pop("pixel_values", None)
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        model_kwargs["image_tokens"] = outputs.image_tokens
        return model_kwargs


MedVLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = ["MedVLForConditionalGeneration", "MedVLGenerationOutput"]
