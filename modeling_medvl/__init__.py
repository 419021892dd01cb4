"""MedVL: medical vision-language models native to the Hugging Face stack."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoModelForZeroShotImageClassification,
)

from .configuration_medvl import MedVLConfig, MedVLTextConfig, MedVLVisionConfig
from .generation_medvl import MedVLForConditionalGeneration, MedVLGenerationOutput
from .heads_medvl import MedVLForImageClassification, MedVLForQuestionAnswering
from .losses_medvl import contrastive_loss, itm_loss, mlm_loss
from .modeling_medvl import MedVLModel, MedVLOutput, MedVLPreTrainedModel
from .pretraining_medvl import MedVLForPreTraining, MedVLPreTrainingOutput

# With the package imported, the Auto classes (and pipelines) know MedVL without trust_remote_code.
AutoConfig.register("medvl", MedVLConfig, exist_ok=True)
for _auto_class, _model_class in (
    (AutoModel, MedVLModel),
    (AutoModelForZeroShotImageClassification, MedVLModel),
    (AutoModelForPreTraining, MedVLForPreTraining),
    (AutoModelForImageClassification, MedVLForImageClassification),
    (AutoModelForVisualQuestionAnswering, MedVLForQuestionAnswering),
    (AutoModelForImageTextToText, MedVLForConditionalGeneration),
):
    _auto_class.register(MedVLConfig, _model_class, exist_ok=True)

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
