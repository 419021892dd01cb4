"""MedVL: medical vision-language models native to the Hugging Face stack."""

from .configuration_medvl import MedVLConfig, MedVLTextConfig, MedVLVisionConfig
from .generation_medvl import MedVLForConditionalGeneration, MedVLGenerationOutput
from .heads_medvl import MedVLForImageClassification, MedVLForQuestionAnswering
from .losses_medvl import contrastive_loss, itm_loss, mlm_loss
from .modeling_medvl import (
    MedVLForPreTraining,
    MedVLModel,
    MedVLOutput,
    MedVLPreTrainedModel,
    MedVLPreTrainingOutput,
)

__all__ = [
    "MedVLConfig",
    "MedVLForConditionalGeneration",
    "MedVLForImageClassification",
    "MedVLForPreTraining",
    "MedVLForQuestionAnswering",
    "MedVLGenerationOutput",
    "MedVLModel",
    "MedVLOutput",
    "MedVLPreTrainedModel",
    "MedVLPreTrainingOutput",
    "MedVLTextConfig",
    "MedVLVisionConfig",
    "contrastive_loss",
    "itm_loss",
    "mlm_loss",
]
