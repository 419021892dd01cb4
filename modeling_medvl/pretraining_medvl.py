"""MedVL's pretraining model: image-text contrast (ITC), masked language modelling on the fused text (MLM) and
image-text matching with in-batch hard negatives (ITM), weighted by the config, each term reported."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput, logging

from .configuration_medvl import MedVLConfig
from .layers_medvl import MedVLLMHead
from .losses_medvl import IGNORE_INDEX, contrastive_loss, itm_loss, mask_tokens, mlm_loss, sample_hard_negatives
from .modeling_medvl import MedVLModel, MedVLPreTrainedModel, check_paired_batch
from .temperature_medvl import register_temperature_conversion

logger = logging.get_logger(__name__)

LOSS_TERMS = ("itc", "mlm", "itm")


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
    mlm_logits (`torch.FloatTensor` of shape `(batch, num_masked, vocab_size)`, *optional*): MLM predictions at
        each row's masked positions only (`mlm_positions`), rows padded to the most masked tokens in the batch: the
        fused text and the vocabulary projection are computed nowhere else.
    mlm_labels (`torch.LongTensor` of shape `(batch, num_masked)`, *optional*): MLM targets at those positions
        (-100 = padding).
    mlm_positions (`torch.LongTensor` of shape `(batch, num_masked)`, *optional*): The text positions of
        `mlm_logits` (0 where padded).
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
    mlm_positions: torch.LongTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None


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
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        loss_terms: tuple[str, ...] | list[str] | str | None = None,
        contrastive_process_group=None,
        match_groups: torch.LongTensor | None = None,
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
        contrastive_process_group (*optional*): The `torch.distributed` group over whose ranks ITC is computed
            (every rank of it must call; `torch.distributed.group.WORLD` under DDP); default: this batch alone.
        match_groups (`torch.LongTensor` of shape `(batch,)`, *optional*): Rows with the same id say the same thing
            (same findings labels, or the same normalised report; the pretraining collator computes them). ITM never
            takes such a pair as a negative; ITC uses them as soft targets with `contrastive_targets="label_aware"`.
        """
        check_paired_batch(input_ids, pixel_values)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return_loss = True if return_loss is None else return_loss
        terms = self.resolve_loss_terms(loss_terms) if return_loss else ()
        if "itc" in terms and self.config.contrastive_targets == "label_aware" and match_groups is None:
            raise ValueError("contrastive_targets='label_aware' needs match_groups (one group id per row).")
        if match_groups is not None and match_groups.shape != (input_ids.shape[0],):
            raise ValueError(
                f"match_groups must hold one id per row: shape ({input_ids.shape[0]},), got {tuple(match_groups.shape)}."
            )
        if (mlm_input_ids is None) != (mlm_labels is None) and "mlm" in terms:
            raise ValueError("Pass mlm_input_ids and mlm_labels together (or neither, to mask input_ids here).")

        medvl = self.medvl
        encoding = medvl.encode(input_ids, pixel_values, attention_mask, position_ids, token_type_ids)
        image_embeds, text_embeds = encoding.image_embeds, encoding.text_embeds
        logit_scale = medvl.clamped_logit_scale()
        logits_per_image = logit_scale * image_embeds @ text_embeds.t()

        losses: dict[str, torch.Tensor] = {}
        mlm_logits = itm_logits = itm_labels = None
        if "itc" in terms:
            losses["itc"] = contrastive_loss(
                image_embeds, text_embeds, logit_scale, process_group=contrastive_process_group,
                match_groups=match_groups if self.config.contrastive_targets == "label_aware" else None,
            )
        if "mlm" in terms:
            if mlm_input_ids is None:
                mlm_input_ids, mlm_labels = self.mask_for_mlm(input_ids, attention_mask)
            masked_states = medvl.text_model(
                input_ids=mlm_input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).last_hidden_state
            mlm_positions, mlm_labels = masked_positions(mlm_labels)
            mlm_logits = self.mlm_head(self.fuse_at(masked_states, attention_mask, encoding.image_tokens, mlm_positions))
            losses["mlm"] = mlm_loss(mlm_logits, mlm_labels)
        if "itm" in terms:
            itm_logits, itm_labels = self.image_text_matching(
                encoding.image_tokens, encoding.text_states, input_ids, attention_mask, logits_per_image, match_groups
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
            mlm_positions=mlm_positions if "mlm" in terms else None,
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

    def fuse_at(self, text_states, attention_mask, image_tokens, positions):
        """Fused text states `(batch, k, hidden)` at `positions` `(batch, k)` only."""
        if self.medvl.fusion is None:
            return text_states.gather(1, positions[..., None].expand(-1, -1, text_states.shape[-1]))
        return self.medvl.fusion(text_states, attention_mask, image_tokens, query_index=positions)

    def image_text_matching(
        self,
        image_tokens: torch.Tensor,
        text_states: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        logits_per_image: torch.Tensor,
        match_groups: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Positives plus one hard negative text per image and one hard negative image per text. Pairs with
        identical reports or the same match group are never negatives: a normal image with another normal study's
        report is a match in all but wording, and would teach the head nothing but its prior."""
        batch = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Identical reports (same tokens where both are real) are not negatives of each other.
        tokens = input_ids.masked_fill(attention_mask == 0, -1)
        same_text = (tokens[:, None, :] == tokens[None, :, :]).all(dim=-1)
        if match_groups is not None:
            same_text |= match_groups[:, None] == match_groups[None, :]
        image_rows, negative_texts, text_rows, negative_images = sample_hard_negatives(logits_per_image, same_text)
        if image_rows.numel() + text_rows.numel() == 0:
            logger.warning(
                f"ITM skipped for this batch: its {batch} texts all say the same, so there are no negatives."
            )
            return None, None
        image_index = torch.cat([torch.arange(batch, device=input_ids.device), image_rows, negative_images])
        text_index = torch.cat([torch.arange(batch, device=input_ids.device), negative_texts, text_rows])
        first_token = torch.zeros(text_index.shape[0], 1, dtype=torch.long, device=input_ids.device)
        fused = self.fuse_at(text_states[text_index], attention_mask[text_index], image_tokens[image_index], first_token)
        itm_logits = self.itm_head(fused[:, 0])
        itm_labels = torch.zeros(image_index.shape[0], dtype=torch.long, device=input_ids.device)
        itm_labels[:batch] = 1
        return itm_logits, itm_labels


MedVLForPreTraining.register_for_auto_class("AutoModelForPreTraining")
register_temperature_conversion(MedVLForPreTraining.__name__)

def masked_positions(mlm_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(positions, labels)`, each `(batch, k)`: every row's masked positions (labels other than -100) in order,
    rows padded to the batch's most masked tokens with position 0 and label -100 (k >= 1)."""
    masked = mlm_labels != IGNORE_INDEX
    width = max(int(masked.sum(dim=1).max()), 1) if masked.numel() else 1
    # A stable sort puts each row's masked positions first, in text order.
    order = torch.sort((~masked).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = masked.gather(1, order)
    positions = order.masked_fill(~valid, 0)
    return positions, mlm_labels.gather(1, order).masked_fill(~valid, IGNORE_INDEX)


__all__ = ["LOSS_TERMS", "MedVLForPreTraining", "MedVLPreTrainingOutput"]
