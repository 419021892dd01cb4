"""Fine-tuning run configuration: model and data dataclasses plus transformers' `TrainingArguments` with the
defaults a fine-tuning run wants, read from `--config run.yaml` and the command line like pretraining (the command
line wins; see `train.run_config.parse_config_and_args`) and saved as `run_config.yaml` in the run folder."""

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import yaml
from transformers import TrainingArguments

from train.run_config import config_tokens, parse_config_and_args

TASKS = ("classification", "vqa", "report_generation")
# The validation metric each task stops early on and keeps its best checkpoint by (Trainer prefixes `eval_`).
TASK_METRICS = {"classification": "auroc_macro", "vqa": "accuracy", "report_generation": "cider"}
DEFAULT_SYNTHCXR_PRESET = "tiny-convnext"


@dataclass
class FinetuneModelArguments:
    task: str = field(
        default="classification",
        metadata={"help": "What to fine-tune for: 'classification' (multi-label findings), 'vqa' (answers over the "
                          "training split's answer vocabulary) or 'report_generation' (image to report).",
                  "choices": list(TASKS)},
    )
    init: Optional[str] = field(
        default=None,
        metadata={"help": "A saved MedVL folder to start from: a pretraining checkpoint (MedVLForPreTraining or "
                          "MedVLModel, with its processor beside it) or a classifier. Without it, a fresh "
                          "--model_preset."},
    )
    model_preset: Optional[str] = field(
        default=None,
        metadata={"help": "MedVLConfig preset of a model trained from scratch (default for synthcxr data: "
                          f"{DEFAULT_SYNTHCXR_PRESET}; required for other data without --init)."},
    )
    model_overrides: list[str] = field(
        default_factory=list,
        metadata={"help": "Config attributes to override, as key=value (e.g. classifier_dropout=0.1 "
                          "vision_config.drop_path_rate=0.1); values are parsed as YAML scalars."},
    )
    lora: Optional[str] = field(
        default=None,
        metadata={"help": "Train LoRA adapters instead of every weight: 'r=16,alpha=32,dropout=0.05,targets=vision+text"
                          "+fusion' (every key optional; defaults r=8, alpha=2r, dropout=0.05, targets: every part the "
                          "model has). The head is trained in full. 'none' or unset: full fine-tuning."},
    )


@dataclass
class FinetuneDataArguments:
    data: Optional[str] = field(
        default=None,
        metadata={"help": "Labelled source: chexpert:/dir (train.csv / valid.csv), mimic-cxr:/dir (train / validate "
                          "splits), saved:/datasets_folder (a DatasetDict with train and validation splits), or "
                          "synthcxr:n=2000,size=64,seed=0. VQA also reads vqa-rad:/dir and slake:/dir; report "
                          "generation also openi:/dir."},
    )
    validation_data: Optional[str] = field(
        default=None,
        metadata={"help": "Validation source (same forms); default: the source's own validation split, or for "
                          "synthcxr fresh studies with another seed."},
    )
    validation_size: int = field(default=256, metadata={"help": "Studies in the default SynthCXR validation set."})
    cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Where generated SynthCXR sets are kept (default: <output_dir>/data_cache)."}
    )
    labels: list[str] = field(
        default_factory=list, metadata={"help": "CheXpert label names to predict (default: all 14)."}
    )
    uncertain_policy: str = field(
        default="ones",
        metadata={"help": "Uncertain (-1) labels: 'ones' (U-Ones), 'zeros' (U-Zeros) or 'ignore' (U-Ignore: left "
                          "out of the loss and the AUC).", "choices": ["ones", "zeros", "ignore"]},
    )
    blank_policy: str = field(
        default="zeros",
        metadata={"help": "Blank labels (the report does not mention the finding): 'zeros' (negative, CheXpert's "
                          "practice) or 'ignore'.", "choices": ["zeros", "ignore"]},
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of the training images held out for validation when a source has no validation "
                          "split (vqa-rad, openi); chosen by a hash of the image name, so every question of an image "
                          "lands on one side."},
    )
    max_text_length: int = field(
        default=128, metadata={"help": "Tokens kept of a question (VQA) or a report (report generation)."}
    )
    tokenizer_vocab_size: Optional[int] = field(
        default=None,
        metadata={"help": "Vocabulary of the tokenizer trained on the training texts when there is no --init "
                          "(default: the preset's text vocabulary)."},
    )
    max_new_tokens: int = field(
        default=128, metadata={"help": "Report generation: the most tokens generated per report (greedy decoding)."}
    )
    html_examples: int = field(
        default=8, metadata={"help": "Report generation: validation studies shown in examples.html (0: none)."}
    )
    augment: bool = field(default=True, metadata={"help": "Random resized crop and brightness/contrast jitter."})
    horizontal_flip: bool = field(
        default=False,
        metadata={"help": "Also flip training images left-right at random (off by default: a flipped chest has its "
                          "heart on the wrong side)."},
    )


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """`TrainingArguments` with fine-tuning defaults: evaluation and a checkpoint every epoch, the best by the
    task's validation metric (macro AUC, VQA accuracy, CIDEr) kept and loaded at the end, cosine decay after a 10%
    warmup, TensorBoard logs."""

    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: 'no', 'steps' or 'epoch'."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint: 'no', 'steps' or 'epoch'."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Reload the best checkpoint at the end."})
    metric_for_best_model: Optional[str] = field(
        default="auroc_macro",
        metadata={"help": "Validation metric that picks the best checkpoint and stops early (default: the task's: "
                          "auroc_macro, accuracy for vqa, cider for report_generation)."},
    )
    greater_is_better: Optional[bool] = field(default=True, metadata={"help": "Whether a larger metric is better."})
    save_total_limit: Optional[int] = field(
        default=2, metadata={"help": "Step checkpoints kept (the best one is never deleted)."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.02, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule after the warmup."})
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Warmup steps; a value below 1 is a fraction of the training steps."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training studies per device and step."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation studies per device."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs, unless --max_steps is given."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "Where to log: 'tensorboard', 'none', or any Trainer integration."}
    )
    # Pinned host memory only helps copies to a GPU; without one torch warns on every data loader.
    dataloader_pin_memory: bool = field(default_factory=lambda: torch.cuda.is_available(),
                                        metadata={"help": "Pin batches in host memory (default: when CUDA is there)."})
    # The collator needs the `image` and `labels` columns, which the model's forward does not name.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep every data set column (needed)."})
    # A PEFT-wrapped model's forward takes **kwargs, so Trainer could not find the label column by itself.
    label_names: Optional[list[str]] = field(
        default_factory=lambda: ["labels"], metadata={"help": "Batch keys holding the targets."}
    )
    early_stopping_patience: Optional[int] = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better metric (0 or unset: never)."}
    )
    bootstrap_samples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples for the final evaluation's 95%% intervals (0: none)."}
    )
    evaluate_initial_model: bool = field(
        default=True, metadata={"help": "Score the model before training on the validation split (a baseline)."}
    )
    resume_from_checkpoint: Optional[str] = field(
        default=None,
        metadata={"help": "Continue a run (also --resume_from): a checkpoint-<step> folder, 'latest' (or 'last'; the "
                          "newest complete checkpoint in --output_dir) or 'auto' (the same, or a fresh start when "
                          "there is none: a requeued job's command line)."},
    )
    # Trainer's default forgets the early-stopping count on resume: the resumed run could outlast the uninterrupted one.
    restore_callback_states_from_checkpoint: bool = field(
        default=True,
        metadata={"help": "On resume, restore the callbacks' state (evaluations without improvement) from the "
                          "checkpoint."},
    )


ARGUMENT_CLASSES = (FinetuneModelArguments, FinetuneDataArguments, FinetuneTrainingArguments)
EXTRA_TRAINING_FIELDS = ("early_stopping_patience", "bootstrap_samples", "evaluate_initial_model")


def validate_finetune_args(model_args, data_args, train_args):
    if not data_args.data:
        raise ValueError("--data: give a labelled source (e.g. chexpert:/data/CheXpert-v1.0-small or "
                         "synthcxr:n=2000,size=64,seed=0)")
    if not train_args.output_dir:
        raise ValueError("--output_dir: give the run folder")
    if train_args.bootstrap_samples < 0:
        raise ValueError(f"--bootstrap_samples must be >= 0, got {train_args.bootstrap_samples}")
    if train_args.early_stopping_patience is not None and train_args.early_stopping_patience < 0:
        raise ValueError(f"--early_stopping_patience must be >= 0, got {train_args.early_stopping_patience}")
    if data_args.validation_size < 1:
        raise ValueError(f"--validation_size must be >= 1, got {data_args.validation_size}")
    if data_args.max_text_length < 2 or data_args.max_new_tokens < 1:
        raise ValueError("--max_text_length must be >= 2 and --max_new_tokens >= 1")
    if not 0 < data_args.validation_fraction < 1:
        raise ValueError(f"--validation_fraction must be in (0, 1), got {data_args.validation_fraction}")
    if model_args.task != "classification" and train_args.metric_for_best_model == TASK_METRICS["classification"]:
        # The default names classification's metric; another task keeps its best checkpoint by its own.
        train_args.metric_for_best_model = TASK_METRICS[model_args.task]
        train_args.greater_is_better = True
    if model_args.init is None and model_args.model_preset is None:
        if not data_args.data.startswith("synthcxr:"):
            raise ValueError("give --init (a pretrained MedVL folder) or --model_preset (training from scratch)")
        model_args.model_preset = DEFAULT_SYNTHCXR_PRESET


def parse_finetune_args(argv=None):
    """Parse `[--config run.yaml] [--flag value ...]` into (model, data, training) arguments."""
    model_args, data_args, train_args = parse_config_and_args(ARGUMENT_CLASSES, argv)
    validate_finetune_args(model_args, data_args, train_args)
    return model_args, data_args, train_args


def _yaml_value(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return json.dumps(value)  # TrainingArguments' dict fields also take a JSON string
    if isinstance(value, (list, tuple)):
        return [_yaml_value(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _given_names(argv, names) -> set:
    """Argument names given in the YAML file or on the command line (argparse's unique prefixes resolved)."""
    given = set()
    for token in config_tokens(ARGUMENT_CLASSES, argv):
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        matches = [name] if name in names else [known for known in names if known.startswith(name)]
        given.update(matches if len(matches) == 1 else ())
    return given


def training_values(train_args, argv=None) -> dict:
    """The training arguments a run chose (in its YAML file or on its command line), plus output_dir and the
    fine-tuning fields: saving every field of TrainingArguments would also freeze the values it derives itself."""
    names = [spec.name for spec in dataclasses.fields(train_args) if spec.init]
    kept = _given_names(argv, names) | {"output_dir", *EXTRA_TRAINING_FIELDS}
    values = {name: _yaml_value(getattr(train_args, name)) for name in names if name in kept}
    if values.get("report_to") == []:
        values["report_to"] = "none"  # what TrainingArguments turns into [] (an empty list would read back as unset)
    return values


def save_finetune_config(path, model_args, data_args, chosen_training_values: dict, resolved: dict) -> dict:
    """Write run_config.yaml: every model and data argument, the training arguments the run chose (see
    `training_values`), and the derived values under `resolved` (ignored when read back with --config)."""
    values = {**dataclasses.asdict(model_args), **dataclasses.asdict(data_args), **chosen_training_values}
    values["resolved"] = resolved
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))
    return values


__all__ = [
    "FinetuneModelArguments",
    "FinetuneDataArguments",
    "FinetuneTrainingArguments",
    "TASKS",
    "TASK_METRICS",
    "parse_finetune_args",
    "save_finetune_config",
    "training_values",
]
