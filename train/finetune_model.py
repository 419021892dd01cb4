"""The model and processor a classification fine-tuning run starts from.

`--init FOLDER` loads a saved MedVL folder into `MedVLForImageClassification`: a pretraining checkpoint saves its
weights under `medvl.vision_model.*` (MedVLForPreTraining) or `vision_model.*` (MedVLModel), and the classifier
keeps its tower at `vision_model.*`; transformers drops the `medvl.` prefix when loading, and
`load_classifier_weights` checks that every vision-tower tensor was found, since a tower left at its fresh
initialisation would train silently from scratch. Without `--init`, a fresh model from `--model_preset`.
"""

import json
import logging
from pathlib import Path

from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from modeling_medvl import MedVLConfig, MedVLForImageClassification
from processing.image_processing_medvl import MedVLImageProcessor
from processing.processing_medvl import MedVLProcessor
from train.pretrain_setup import config_overrides, preset_config

VISION_PREFIX = "vision_model."
PROBLEM_TYPE = "multi_label_classification"

logger = logging.getLogger("medvl.finetune")


def label_config(label_names) -> dict:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "problem_type": PROBLEM_TYPE,
    }


def _apply_overrides(config, overrides: dict):
    for key, value in overrides.items():
        if isinstance(value, dict):
            _apply_overrides(getattr(config, key), value)
        else:
            setattr(config, key, value)


def checked_init_folder(init) -> Path:
    folder = Path(init)
    if (folder / "config.json").is_file():
        return folder
    if (folder / "adapter_config.json").is_file():
        raise ValueError(f"--init {init}: a LoRA adapter folder; load it with train.lora_presets.load_finetuned_model "
                         "and merge_and_unload() it into a full model first")
    raise FileNotFoundError(f"--init {init}: not a saved MedVL model folder (no config.json)")


def load_classifier_weights(folder, config) -> MedVLForImageClassification:
    """`MedVLForImageClassification` with `config`, weights from `folder`; raises if any vision-tower tensor is
    missing there. The checkpoint's text tower, fusion and pretraining heads are expected leftovers (not logged);
    a classifier of another shape is replaced by a fresh one."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' load report lists every unused text-tower tensor
    try:
        model, info = MedVLForImageClassification.from_pretrained(
            str(folder), config=config, output_loading_info=True, ignore_mismatched_sizes=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    missing_tower = sorted(key for key in info["missing_keys"] if key.startswith(VISION_PREFIX))
    if missing_tower:
        raise ValueError(
            f"{folder}: {len(missing_tower)} vision-tower tensor(s) not found in the checkpoint (e.g. "
            f"{missing_tower[:3]}); is it a MedVL model with the same vision backbone?"
        )
    fresh = sorted(info["missing_keys"]) + sorted(str(item[0]) for item in info.get("mismatched_keys", ()))
    logger.info(f"loaded the vision tower from {folder}; newly initialised: {fresh or 'nothing'}")
    return model


def load_processor(folder, image_size: int):
    """The processor saved beside a checkpoint (a MedVLProcessor, or an image processor alone), else a fresh image
    processor at the model's size."""
    folder = Path(folder)
    processor_file = folder / "processor_config.json"
    if processor_file.is_file():
        # Built from the installed classes: ProcessorMixin.from_pretrained would follow the folder's auto_map and
        # ask to run the code saved there.
        settings = json.loads(processor_file.read_text())
        return MedVLProcessor(
            image_processor=MedVLImageProcessor.from_pretrained(str(folder)),
            tokenizer=PreTrainedTokenizerFast.from_pretrained(str(folder)),
            normalizer=settings.get("normalizer"),
            normalize_text=settings.get("normalize_text", True),
        )
    if (folder / "preprocessor_config.json").is_file():
        return MedVLImageProcessor.from_pretrained(str(folder))
    logger.warning(f"{folder} holds no processor: using a fresh MedVLImageProcessor at {image_size} px")
    return build_image_processor(image_size)


def build_image_processor(image_size: int) -> MedVLImageProcessor:
    # MedVLProcessor requires a tokenizer, which an image classifier never calls: from scratch, the image
    # processor alone is the run's processing class (AutoProcessor and AutoImageProcessor both load it back).
    return MedVLImageProcessor(size={"height": image_size, "width": image_size})


def build_classifier(model_args, label_names):
    """(model, processor) for `--init` or a fresh `--model_preset`, with the label set in the config."""
    labels = label_config(label_names)
    if model_args.init:
        folder = checked_init_folder(model_args.init)
        config = MedVLConfig.from_pretrained(str(folder))
        _apply_overrides(config, config_overrides(model_args.model_overrides, config))
        for key, value in labels.items():
            setattr(config, key, value)
        model = load_classifier_weights(folder, config)
        processor = load_processor(folder, config.vision_config.image_size)
    else:
        config = preset_config(model_args)
        for key, value in labels.items():
            setattr(config, key, value)
        model = MedVLForImageClassification(config)
        processor = build_image_processor(config.vision_config.image_size)
    return model, processor


__all__ = [
    "build_classifier",
    "build_image_processor",
    "checked_init_folder",
    "label_config",
    "load_classifier_weights",
    "load_processor",
]
