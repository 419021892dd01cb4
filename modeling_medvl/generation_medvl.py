"""MedVL report generation: a causal text decoder that cross-attends to the vision tower's image tokens."""

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_medvl import MedVLConfig
from .layers_medvl import MedVLLMHead, MedVLReportDecoder
from .losses_medvl import IGNORE_INDEX
from .modeling_medvl import MedVLPreTrainedModel, check_paired_batch
from .vision_medvl import MedVLVisionTower

# transformers 5.24 renamed the generation cache from `past_key_values` to `cache` (in `generate()`'s model kwargs
# and in model outputs). The name this installed version's `generate()` passes and reads back:
GENERATION_CACHE_NAME = (
    "cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    else "past_key_values"
)


@dataclass
class MedVLGenerationOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): Next-token cross-entropy (labels shifted inside).
    logits (`torch.FloatTensor` of shape `(batch, text_length, vocab_size)`): Next-token scores.
    cache (`EncoderDecoderCache`, *optional*): The decoder's self-attention keys/values and the cross-attention
        keys/values of the image tokens (projected once, at the first step).
    image_tokens (`torch.FloatTensor` of shape `(batch, num_image_tokens, vision_hidden_size)`): Encoded image,
        reused by later generation steps instead of re-running the vision tower.
    image_outputs (`BaseModelOutputWithPooling`, *optional*): The vision tower's output, when this call ran it.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    image_tokens: torch.FloatTensor | None = None
    image_outputs: BaseModelOutputWithPooling | None = None

    @property
    def past_key_values(self) -> Cache | None:
        """The cache under its name before transformers 5.24, which that version's assisted decoding reads."""
        return self.cache


class MedVLForConditionalGeneration(MedVLPreTrainedModel, GenerationMixin):
    """Vision tower + causal report decoder (self-attention, cross-attention to image tokens, feed-forward), sized
    by the text config with `config.num_decoder_layers` layers. Generates reports, or open-ended answers after a
    question prompt: `model.generate(input_ids=prompt_ids, pixel_values=px)`."""

    _tied_weights_keys = {"lm_head.decoder.weight": "decoder.embeddings.word_embeddings.weight"}

    def __init__(self, config: MedVLConfig):
        super().__init__(config)
        self.vision_model = MedVLVisionTower(config.vision_config)
        self.decoder = MedVLReportDecoder(
            config.text_config, num_layers=config.num_decoder_layers, cross_attention_dim=self.vision_model.hidden_size
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

    @deprecate_kwarg("past_key_values", version="6.0.0", new_name="cache", raise_if_both_names=True)
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
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
        cache (`Cache`, *optional*): Keys/values of earlier steps (`past_key_values`, its name before transformers
            5.24, is accepted too). A plain self-attention cache is wrapped in an `EncoderDecoderCache`, so the image
            tokens' cross-attention keys/values are computed once.
        use_cache (`bool`, *optional*): Start a cache when none is given (not in training).
        image_tokens (`torch.FloatTensor`, *optional*): Output of an earlier call, instead of `pixel_values`.
        """
        if input_ids is None:
            raise ValueError("input_ids are required (at least a start token per example).")
        image_outputs = None
        if image_tokens is None:
            check_paired_batch(input_ids, pixel_values)
            image_outputs = self.vision_model(pixel_values)
            image_tokens = image_outputs.last_hidden_state
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if cache is None and use_cache and not self.training:
            cache = DynamicCache()
        if cache is not None and not isinstance(cache, EncoderDecoderCache):
            cache = EncoderDecoderCache(cache, DynamicCache())
        decoder_outputs = self.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            encoder_hidden_states=image_tokens,
            cache=cache,
            token_type_ids=token_type_ids,
        )
        logits = self.lm_head(decoder_outputs.last_hidden_state)
        loss = None
        if labels is not None:
            shifted_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            shifted_labels = labels[:, 1:].reshape(-1)
            loss = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX)
        output = MedVLGenerationOutput(
            loss=loss, logits=logits, cache=cache, image_tokens=image_tokens, image_outputs=image_outputs
        )
        return output if return_dict else output.to_tuple()

    def prepare_inputs_for_generation(self, input_ids, image_tokens=None, past_key_values=None, **kwargs):
        # transformers before 5.24 passes a cache handed to generate() (an assistant's, from its second draft round)
        # as `past_key_values`, and only if this signature names it.
        if past_key_values is not None:
            kwargs["past_key_values"] = past_key_values
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if "past_key_values" in model_inputs:  # transformers before 5.24
            model_inputs["cache"] = model_inputs.pop("past_key_values")
        if image_tokens is not None:
            # The image was encoded at the first step; pixel_values are not needed again.
            model_inputs["image_tokens"] = image_tokens
            model_inputs.pop("pixel_values", None)
        elif kwargs.get("pixel_values") is not None:
            # No image tokens yet: the image must be encoded now, though transformers (from 5.x releases after 5.10)
            # drops pixel_values from calls it does not count as the first step. An assistant model's every draft
            # round is such a call: a generate() that continues its cache, which hands back no image tokens.
            model_inputs["pixel_values"] = kwargs["pixel_values"]
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        # Hand the (wrapped) cache back under the name this transformers' generate() reads; without a cache
        # (use_cache=False) set none, or beam search tries to reorder a None cache.
        if outputs.cache is not None:
            model_kwargs[GENERATION_CACHE_NAME] = outputs.cache
        model_kwargs["image_tokens"] = outputs.image_tokens
        return model_kwargs


MedVLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = ["GENERATION_CACHE_NAME", "MedVLForConditionalGeneration", "MedVLGenerationOutput"]
