"""MedVL task heads: findings classification (multi-label / multi-class) and visual question answering."""

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import ImageClassifierOutput, SequenceClassifierOutput

from .configuration_medvl import MedVLConfig
from .losses_medvl import IGNORE_INDEX
from .modeling_medvl import MedVLModel, MedVLPreTrainedModel, check_paired_batch
from .temperature_medvl import register_temperature_conversion
from .vision_medvl import MedVLVisionTower


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Loss for `problem_type`:
    - `"multi_label_classification"`: BCE-with-logits over `(batch, num_labels)` 0/1 (or soft) targets; entries
      equal to -100 (e.g. uncertain or blank CheXpert labels) are ignored.
    - `"single_label_classification"`: cross-entropy over `(batch,)` class indices, -100 ignored.
    - `"regression"`: mean squared error.
    """
    if problem_type == "multi_label_classification":
        if labels.shape != logits.shape:
            raise ValueError(
                f"Multi-label targets must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}."
            )
        labels = labels.float()
        known = labels != IGNORE_INDEX
        per_entry = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(0, 1), reduction="none")
        return (per_entry * known).sum() / known.sum().clamp(min=1)
    if problem_type == "single_label_classification":
        if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"Single-label targets must be class indices of shape ({logits.shape[0]},), got {tuple(labels.shape)}."
            )
        return F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX)
    return F.mse_loss(logits.float().squeeze(-1), labels.float().reshape(logits.shape[0], -1).squeeze(-1))


def infer_problem_type(config: MedVLConfig, labels: torch.Tensor) -> str:
    """transformers' convention: one output is regression, integer labels are single-label, else multi-label."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


class MedVLForImageClassification(MedVLPreTrainedModel):
    """Vision tower + linear classifier over its pooled features (e.g. CheXpert's 14 findings, multi-label)."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: MedVLConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = MedVLVisionTower(config.vision_config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.vision_model.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor`, *optional*): `(batch,)` class indices (multi-class) or `(batch, num_labels)`
            0/1 targets with -100 for unknown entries (multi-label); the loss follows `config.problem_type`.
        """
        if pixel_values is None:
            raise ValueError("MedVLForImageClassification needs pixel_values (batch, channels, height, width).")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        vision_outputs = self.vision_model(pixel_values)
        logits = self.classifier(self.dropout(vision_outputs.pooler_output))
        loss = None
        if labels is not None:
            problem_type = infer_problem_type(self.config, labels)
            self.config.problem_type = problem_type
            loss = classification_loss(logits, labels, problem_type)
        output = ImageClassifierOutput(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()


class MedVLForQuestionAnswering(MedVLPreTrainedModel):
    """Answer-vocabulary classifier over the fused image-question representation (VQA-RAD, SLAKE style).

    The representation is the fused state of the first question token; without fusion layers
    (`fusion_type="none"`), the concatenated image and question embeddings. `id2label` holds the answers.
    """

    def __init__(self, config: MedVLConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.medvl = MedVLModel(config)
        width = config.text_config.hidden_size if config.fusion_type != "none" else 2 * config.projection_dim
        self.answer_head = nn.Sequential(
            nn.Dropout(config.classifier_dropout),
            nn.Linear(width, 2 * width),
            nn.GELU(),
            nn.LayerNorm(2 * width),
            nn.Linear(2 * width, config.num_labels),
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.medvl.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.medvl.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor`, *optional*): `(batch,)` answer indices (cross-entropy, -100 ignored) or
            `(batch, num_labels)` float soft scores (VQA score targets; binary cross-entropy scaled by the number of
            answers, as in VQA practice).
        """
        check_paired_batch(input_ids, pixel_values)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        medvl = self.medvl
        encoding = medvl.encode(input_ids, pixel_values, attention_mask, token_type_ids=token_type_ids)
        if medvl.fusion is not None:
            representation = medvl.fuse(encoding.text_states, attention_mask, encoding.image_tokens)[:, 0]
        else:
            representation = torch.cat(
                [encoding.vision_model_output.pooler_output, encoding.text_model_output.pooler_output], dim=-1
            )
        logits = self.answer_head(representation)
        loss = None
        if labels is not None:
            if labels.is_floating_point():
                if labels.shape != logits.shape:
                    raise ValueError(
                        f"Soft answer scores must have shape {tuple(logits.shape)} (batch, num_answers), "
                        f"got {tuple(labels.shape)}."
                    )
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels) * labels.shape[1]
            else:
                loss = classification_loss(logits, labels, "single_label_classification")
        output = SequenceClassifierOutput(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()


MedVLForImageClassification.register_for_auto_class("AutoModelForImageClassification")
MedVLForQuestionAnswering.register_for_auto_class("AutoModelForVisualQuestionAnswering")
register_temperature_conversion(MedVLForQuestionAnswering.__name__)

__all__ = ["MedVLForImageClassification", "MedVLForQuestionAnswering", "classification_loss"]
