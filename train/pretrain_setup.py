"""Build what a pretraining run needs before its first step: tokenizer, processor, model."""

from pathlib import Path

import yaml
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoTokenizer

from modeling_medvl import MedVLConfig, MedVLForPreTraining
from processing.image_processing_medvl import MedVLImageProcessor
from processing.processing_medvl import MedVLProcessor
from processing.tokenizer_training import train_clinical_tokenizer
from train.user_errors import MissingPathError, UserError

TOKENIZER_FOLDER = "tokenizer"
PROCESSOR_FOLDER = "processor"


def parse_model_overrides(items) -> dict:
    """["itm_weight=0", "text_config.hidden_dropout_prob=0.1"] -> nested dict of YAML-parsed values."""
    overrides = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UserError(f"--model_overrides {item!r}: expected key=value (e.g. itm_weight=0)")
        target = overrides
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        try:
            target[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--model_overrides {item!r}: the value is not a YAML scalar (quote it)") from None
    return overrides


def _match_field_types(overrides: dict, config) -> dict:
    """YAML reads `0` as an int; the strict config wants a float where its field is one."""
    matched = {}
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise UserError(f"--model_overrides: the model config has no field {key!r} (see the preset's "
                            "config.json for the field names)")
        current = getattr(config, key, None)
        if isinstance(value, dict) and current is not None and not isinstance(current, dict):
            value = _match_field_types(value, current)
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        matched[key] = value
    return matched


def config_overrides(items, config) -> dict:
    """`--model_overrides` items as a nested dict typed like the fields of `config`."""
    return _match_field_types(parse_model_overrides(items), config)


def _from_preset(name, **overrides) -> MedVLConfig:
    """`MedVLConfig.from_preset` with an unknown preset or an override the config refuses as a `UserError`."""
    from modeling_medvl.configuration_medvl import PRESETS

    if name not in PRESETS:
        raise UserError(f"--model_preset {name!r}: unknown preset (choose one of {sorted(PRESETS)})")
    try:
        return MedVLConfig.from_preset(name, **overrides)
    except StrictDataclassError as error:
        raise UserError(f"--model_overrides: {' '.join(str(error).split())}") from None


def preset_overrides(model_args) -> dict:
    """`--model_overrides` as a nested dict typed like the preset's fields."""
    return config_overrides(model_args.model_overrides, _from_preset(model_args.model_preset))


def preset_config(model_args) -> MedVLConfig:
    return _from_preset(model_args.model_preset, **preset_overrides(model_args))


def prepare_tokenizer(data_args, text_config, train_data, output_dir, accelerator):
    """`--tokenizer` if given, else the run's own (trained on its training reports on first start)."""
    if data_args.tokenizer:
        if ("/" in data_args.tokenizer or "\\" in data_args.tokenizer) and not Path(data_args.tokenizer).is_dir():
            raise MissingPathError(f"--tokenizer {data_args.tokenizer}: no such folder (check the path)")
        return AutoTokenizer.from_pretrained(data_args.tokenizer)
    folder = Path(output_dir) / TOKENIZER_FOLDER
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (folder / "tokenizer_config.json").is_file():
            tokenizer = train_clinical_tokenizer(
                train_data,
                vocab_size=data_args.tokenizer_vocab_size or text_config.vocab_size,
                style="clip" if text_config.is_causal else "bert",
                max_length=data_args.max_text_length,
                text_column="report",
            )
            tokenizer.save_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return tokenizer


def token_ids(tokenizer) -> dict:
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": start,
        "eos_token_id": end,
        "mask_token_id": tokenizer.mask_token_id,
    }


def build_model(model_args, tokenizer) -> MedVLForPreTraining:
    """A fresh model sized to the tokenizer, or `--model_name_or_path` checked against it."""
    if model_args.model_name_or_path:
        model = MedVLForPreTraining.from_pretrained(model_args.model_name_or_path)
        vocab = model.config.text_config.vocab_size
        if vocab < len(tokenizer):
            raise UserError(
                f"--model_name_or_path {model_args.model_name_or_path}: text vocabulary {vocab} is smaller than "
                f"the tokenizer's {len(tokenizer)} (give the tokenizer the model was trained with)"
            )
    else:
        overrides = preset_overrides(model_args)
        text_overrides = dict(overrides.pop("text_config", {}))
        text_overrides.update(token_ids(tokenizer))
        config = MedVLConfig.from_preset(model_args.model_preset, text_config=text_overrides, **overrides)
        model = MedVLForPreTraining(config)
    if model_args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


def enable_activation_checkpointing(model) -> None:
    """transformers 5.24 renamed `gradient_checkpointing_enable` (which now warns) to
    `activation_checkpointing_enable`; earlier supported releases have only the old name."""
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()


def build_processor(tokenizer, image_size: int) -> MedVLProcessor:
    image_processor = MedVLImageProcessor(size={"height": image_size, "width": image_size})
    return MedVLProcessor(image_processor=image_processor, tokenizer=tokenizer)


__all__ = [
    "token_ids",
    "parse_model_overrides",
    "config_overrides",
    "preset_overrides",
    "preset_config",
    "prepare_tokenizer",
    "build_model",
    "build_processor",
]
