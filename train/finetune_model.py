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

from accelerate import PartialState
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from modeling_medvl import MedVLConfig, MedVLForImageClassification
from modeling_medvl.vision_medvl import MedVLVisionTower
from processing.image_processing_medvl import MedVLImageProcessor
from processing.processing_medvl import MedVLProcessor
from processing.tokenizer_training import train_clinical_tokenizer
from train.pretrain_setup import build_processor, config_overrides, preset_config, preset_overrides, token_ids

TOKENIZER_FOLDER = "tokenizer"
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


def vision_tower_prefix(model) -> str:
    """Where `model` keeps its vision tower in its state dict (`vision_model.` or `medvl.vision_model.`)."""
    for name, module in model.named_modules():
        if isinstance(module, MedVLVisionTower):
            return f"{name}."
    raise ValueError(f"{type(model).__name__} has no vision tower")


def load_task_weights(model_class, folder, config):
    """`model_class` (a MedVL task model) with `config`, weights from `folder`; raises if any vision-tower tensor is
    missing there. A pretraining checkpoint's parts the task model lacks are expected leftovers (not logged); a head
    of another shape is replaced by a fresh one."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' load report lists every unused tensor
    try:
        model, info = model_class.from_pretrained(
            str(folder), config=config, output_loading_info=True, ignore_mismatched_sizes=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = vision_tower_prefix(model)
    missing_tower = sorted(key for key in info["missing_keys"] if key.startswith(prefix))
    if missing_tower:
        raise ValueError(
            f"{folder}: {len(missing_tower)} vision-tower tensor(s) not found in the checkpoint (e.g. "
            f"{missing_tower[:3]}); is it a MedVL model with the same vision backbone?"
        )
    fresh = sorted(info["missing_keys"]) + sorted(str(item[0]) for item in info.get("mismatched_keys", ()))
    shown = fresh if len(fresh) <= 8 else fresh[:8] + [f"... {len(fresh) - 8} more"]
    logger.info(f"loaded {type(model).__name__} from {folder}; newly initialised: {shown or 'nothing'}")
    return model


def load_classifier_weights(folder, config) -> MedVLForImageClassification:
    """`MedVLForImageClassification` from `folder` (see `load_task_weights`)."""
    return load_task_weights(MedVLForImageClassification, folder, config)


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



def run_tokenizer(texts, output_dir, vocab_size: int, max_length: int, is_main: bool, resume=None):
    """The tokenizer of a run trained from scratch: the one saved with the checkpoint it resumes from, else trained on
    the training split's `texts` at the first start, saved in `<output_dir>/tokenizer` and read back from there (on
    a restart, and by every rank)."""
    if resume and (Path(resume) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(resume))
    folder = Path(output_dir) / TOKENIZER_FOLDER
    if is_main and not (folder / "tokenizer_config.json").is_file():
        tokenizer = train_clinical_tokenizer(list(texts), vocab_size=vocab_size, max_length=max_length)
        tokenizer.save_pretrained(str(folder))
    PartialState().wait_for_everyone()
    return AutoTokenizer.from_pretrained(str(folder))


def build_text_task_model(model_args, model_class, texts, output_dir, is_main=True, config_values=None,
                          max_length=256, resume=None):
    """(model, processor) of a task that reads or writes text (VQA, report generation): `--init` with the
    tokenizer saved beside it, or a fresh `--model_preset` with a tokenizer trained on `texts` (the training split's
    questions or reports). `config_values`: config attributes to set (a head's `label_config`, ...)."""
    if model_args.init:
        folder = checked_init_folder(model_args.init)
        processor = load_processor(folder, 0)
        if not isinstance(processor, MedVLProcessor):
            raise ValueError(f"--init {folder}: no tokenizer saved beside the model; {model_class.__name__} reads "
                             "text, so start from a pretraining checkpoint (its processor holds the tokenizer)")
        config = MedVLConfig.from_pretrained(str(folder))
        _apply_overrides(config, config_overrides(model_args.model_overrides, config))
        if config.text_config.vocab_size < len(processor.tokenizer):
            raise ValueError(f"--init {folder}: text vocabulary {config.text_config.vocab_size} is smaller than the "
                             f"tokenizer's {len(processor.tokenizer)}")
        for key, value in (config_values or {}).items():
            setattr(config, key, value)
        return load_task_weights(model_class, folder, config), processor
    overrides = preset_overrides(model_args)
    text_overrides = dict(overrides.pop("text_config", {}))
    vocab_size = text_overrides.get("vocab_size") or MedVLConfig.from_preset(model_args.model_preset).text_config.vocab_size
    tokenizer = run_tokenizer(texts, output_dir, vocab_size, max_length, is_main, resume)
    text_overrides.update(token_ids(tokenizer))
    config = MedVLConfig.from_preset(model_args.model_preset, text_config=text_overrides, **overrides, **(config_values or {}))
    return model_class(config), build_processor(tokenizer, config.vision_config.image_size)


__all__ = [
    "build_classifier",
    "build_image_processor",
    "build_text_task_model",
    "checked_init_folder",
    "label_config",
    "load_classifier_weights",
    "load_processor",
    "load_task_weights",
    "run_tokenizer",
    "vision_tower_prefix",
]
