"""Pretraining run configuration: three argument dataclasses parsed from a YAML file and the
command line (`--config run.yaml --learning_rate 3e-4`: the command line wins), saved with the run.

YAML values are turned into command-line tokens placed before the real ones, so they get the same
type conversion and `choices` checks as flags typed by hand.
"""

import argparse
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from transformers import HfArgumentParser

from train.user_errors import MissingPathError, UserError, raise_parse_errors_as_user_errors


@dataclass
class ModelArguments:
    model_preset: str = field(
        default="tiny",
        metadata={"help": "MedVLConfig preset: tiny, swin-base-384, swin-base-512 or vit-l14-336."},
    )
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Start from this saved MedVL model folder instead of a fresh preset."}
    )
    model_overrides: list[str] = field(
        default_factory=list,
        metadata={"help": "Config attributes to override, as key=value (e.g. itm_weight=0.0 "
                  "text_config.hidden_dropout_prob=0.0); values are parsed as YAML scalars."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    torch_compile: bool = field(default=False, metadata={"help": "Compile the model with torch.compile."})


@dataclass
class DataArguments:
    data: list[str] = field(
        default_factory=list,
        metadata={"help": "Training sources, concatenated: mimic-cxr:/dir, openi:/dir, pairs:/file.jsonl, "
                  "saved:/datasets_folder, wds:/shards/*.tar (streamed), synthcxr:n=2000,size=64,seed=0. Reader "
                  "options follow a '?': mimic-cxr:/dir?split=train&view=PA,AP (defaults: the official training "
                  "split, frontal views; view=all keeps every view; the test split is never read here)."},
    )
    validation_data: Optional[str] = field(
        default=None,
        metadata={"help": "Labelled validation source for zero-shot AUC (same forms as --data; a source with "
                  "official splits gives its validation split). Default for synthcxr training data: fresh SynthCXR "
                  "studies with another seed; for mimic-cxr: its validate split."},
    )
    validation_size: int = field(default=256, metadata={"help": "Studies in the default SynthCXR validation set."})
    tokenizer: Optional[str] = field(
        default=None, metadata={"help": "Tokenizer folder; if unset, a clinical BPE tokenizer is trained on the "
                                "training reports at start and saved with the run."}
    )
    tokenizer_vocab_size: Optional[int] = field(
        default=None, metadata={"help": "Vocabulary size of a tokenizer trained at start (default: the model's)."}
    )
    max_text_length: int = field(default=256, metadata={"help": "Reports are truncated to this many tokens."})
    augment: bool = field(default=True, metadata={"help": "Joint image-report augmentation while training."})
    flip: str = field(
        default="swap_laterality",
        metadata={"help": "Horizontal flip of the augmentation: 'swap_laterality' (left and right swapped in the "
                          "report too), 'image_only' (what a generic image augmentation does: the report then "
                          "names the wrong side; for the laterality ablation) or 'off'.",
                  "choices": ["swap_laterality", "image_only", "off"]},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of report tokens masked for MLM."})
    num_workers: int = field(default=2, metadata={"help": "Dataloader worker processes per rank."})
    shuffle_buffer: int = field(default=1000, metadata={"help": "Shuffle buffer of streamed (wds) data."})
    zero_shot_prompts: Optional[str] = field(
        default=None, metadata={"help": "YAML/JSON prompts in the layout of train/configs/zero_shot_prompts.yaml "
                                        "(labels: {label: {positive: [...], negative: [...]}}); the labels it names "
                                        "replace the versioned defaults."}
    )


@dataclass
class PretrainArguments:
    output_dir: str = field(metadata={"help": "Run folder: checkpoints, logs, run_config.yaml, plots."})
    seed: int = 0
    per_device_batch_size: int = field(default=32, metadata={"help": "Pairs per micro-batch on one process."})
    gradient_accumulation_steps: Optional[int] = field(
        default=None, metadata={"help": "Micro-batches per step (default: derived from --global_batch_size)."}
    )
    global_batch_size: Optional[int] = field(
        default=None, metadata={"help": "Pairs per optimizer step over all processes; must equal "
                                "per_device_batch_size x processes x gradient_accumulation_steps."}
    )
    max_steps: Optional[int] = field(default=None, metadata={"help": "Optimizer steps (default: from num_epochs)."})
    num_epochs: float = field(default=1.0, metadata={"help": "Epochs when --max_steps is not given."})
    learning_rate: float = 1e-4
    weight_decay: float = field(default=0.02, metadata={"help": "Not applied to biases, norms or the temperature."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warmup over this fraction of the steps."})
    warmup_steps: Optional[int] = field(default=None, metadata={"help": "Warmup step count (overrides the ratio)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping at this global norm (0: off)."})
    mixed_precision: str = field(default="no", metadata={"choices": ["no", "bf16", "fp16"]})
    logging_steps: int = 10
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N steps (0: only at the end)."})
    save_total_limit: int = field(default=3, metadata={"help": "Keep the last K step checkpoints."})
    eval_steps: int = field(default=500, metadata={"help": "Zero-shot validation every N steps (0: off)."})
    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without a better zero-shot AUC (0 or unset: never)."}
    )
    resume_from: Optional[str] = field(default=None, metadata={
        "help": "Resume exactly from a checkpoint folder, 'latest' (the newest complete checkpoint in --output_dir) or "
                "'auto' (latest if there is one, else start fresh: for jobs that are requeued after preemption)."})
    max_consecutive_nonfinite: int = field(
        default=5, metadata={"help": "Stop after this many non-finite losses in a row (each one skips its step)."}
    )
    report_to: str = field(default="tensorboard", metadata={"choices": ["tensorboard", "none"]})
    ddp_find_unused_parameters: Optional[bool] = field(
        default=None, metadata={"help": "DDP's find_unused_parameters (default: on when a loss term's weight is "
                                "0, since its head then gets no gradient)."}
    )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, PretrainArguments)
RESOLVED_KEY = "resolved"  # derived values saved alongside the arguments, ignored when re-read


def _argument_fields(argument_classes=ARGUMENT_CLASSES):
    return {f.name: f for cls in argument_classes for f in dataclasses.fields(cls)}


def yaml_to_cli_tokens(values: dict, source: str, argument_classes=ARGUMENT_CLASSES) -> list:
    """Turn a YAML mapping into `--key value` tokens; unknown keys are an error naming them."""
    known = _argument_fields(argument_classes)
    unknown = sorted(set(values) - set(known) - {RESOLVED_KEY})
    if unknown:
        guesses = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
        hints = [f"{key} -> {match[0]}?" for key, match in guesses.items() if match]
        hint = f"did you mean {', '.join(hints)}" if hints else f"known keys: {sorted(known)}"
        raise UserError(f"{source}: unknown configuration key(s) {unknown} ({hint})")
    tokens = []
    for key, value in values.items():
        if key == RESOLVED_KEY or value is None:
            continue
        if isinstance(value, (list, tuple)):
            if value:
                tokens += [f"--{key}", *[str(item) for item in value]]
        elif isinstance(value, dict):
            raise UserError(f"{source}: key {key!r} must be a scalar or a list, got a mapping")
        else:
            tokens += [f"--{key}", str(value)]
    return tokens


def config_tokens(argument_classes, argv=None) -> list:
    """`[--config run.yaml] [--flag value ...]` as one token list: the YAML's values first, so the command line
    wins."""
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    known, rest = pre_parser.parse_known_args(argv)
    tokens = []
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise MissingPathError(f"--config {path}: no such file (check the path)")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UserError(f"--config {path}: not valid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(values, dict):
            raise UserError(f"{path}: expected a mapping of argument names to values")
        tokens = yaml_to_cli_tokens(values, str(path), argument_classes)
    return tokens + list(rest)


def parse_config_and_args(argument_classes, argv=None):
    """Parse `[--config run.yaml] [--flag value ...]` into one instance of each of `argument_classes`
    (dataclasses, as HfArgumentParser takes them); the command line wins over the YAML file."""
    parser = raise_parse_errors_as_user_errors(HfArgumentParser(argument_classes))
    *parsed, unused = parser.parse_args_into_dataclasses(
        args=config_tokens(argument_classes, argv), look_for_args_file=False, return_remaining_strings=True
    )
    if unused:
        raise UserError(f"unrecognized arguments: {' '.join(unused)} (see --help)")
    return tuple(parsed)


def parse_pretrain_args(argv=None):
    """Parse `[--config run.yaml] [--flag value ...]` into (model, data, training) arguments."""
    model_args, data_args, train_args = parse_config_and_args(ARGUMENT_CLASSES, argv)
    validate_args(model_args, data_args, train_args)
    return model_args, data_args, train_args


def validate_args(model_args, data_args, train_args):
    if Path(train_args.output_dir).exists() and not Path(train_args.output_dir).is_dir():
        raise UserError(f"--output_dir {train_args.output_dir} is a file (give a folder path)")
    if not data_args.data:
        raise UserError("--data: give at least one training source (e.g. synthcxr:n=2000,size=64,seed=0)")
    for name in ("per_device_batch_size", "logging_steps"):
        if getattr(train_args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(train_args, name)}")
    if not 0.0 <= train_args.warmup_ratio <= 1.0:
        raise UserError(f"--warmup_ratio must be in [0, 1], got {train_args.warmup_ratio}")
    if not 0.0 < data_args.mlm_probability < 1.0:
        raise UserError(f"--mlm_probability must be in (0, 1), got {data_args.mlm_probability}")
    if train_args.max_consecutive_nonfinite < 1:
        raise UserError("--max_consecutive_nonfinite must be >= 1")
    for name in ("save_steps", "eval_steps"):
        if getattr(train_args, name) < 0:
            raise UserError(f"--{name} must be >= 0 (0: off), got {getattr(train_args, name)}")
    if train_args.max_steps is not None and train_args.max_steps < 1:
        raise UserError(f"--max_steps must be >= 1, got {train_args.max_steps}")
    if train_args.save_total_limit < 1 or train_args.num_epochs <= 0 or train_args.learning_rate <= 0:
        raise UserError("--save_total_limit must be >= 1, --num_epochs and --learning_rate > 0")
    # Problems found later would cost a process group, a data set and a model first: check them now.
    from train.data_sources import check_pretraining_spec
    from train.pretrain_setup import preset_config

    for spec in data_args.data:
        check_pretraining_spec(spec, "train")
    if data_args.validation_data:
        check_pretraining_spec(data_args.validation_data, "validation")
    if not model_args.model_name_or_path:
        preset_config(model_args)


def resolve_accumulation(per_device_batch_size, num_processes, gradient_accumulation_steps, global_batch_size):
    """Return (accumulation steps, global batch) with global = per-device x processes x accumulation."""
    per_step = per_device_batch_size * num_processes
    if gradient_accumulation_steps is None and global_batch_size is None:
        return 1, per_step
    if gradient_accumulation_steps is None:
        if global_batch_size % per_step:
            raise UserError(
                f"--global_batch_size {global_batch_size} is not a multiple of per_device_batch_size "
                f"{per_device_batch_size} x {num_processes} process(es) = {per_step}"
            )
        return global_batch_size // per_step, global_batch_size
    if gradient_accumulation_steps < 1:
        raise UserError(f"--gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}")
    implied = per_step * gradient_accumulation_steps
    if global_batch_size is not None and global_batch_size != implied:
        raise UserError(
            f"inconsistent batch sizes: --global_batch_size {global_batch_size} != per_device_batch_size "
            f"{per_device_batch_size} x {num_processes} process(es) x gradient_accumulation_steps "
            f"{gradient_accumulation_steps} = {implied}"
        )
    return gradient_accumulation_steps, implied


def resolve_warmup_steps(max_steps, warmup_steps, warmup_ratio):
    if warmup_steps is not None:
        if not 0 <= warmup_steps <= max_steps:
            raise UserError(f"--warmup_steps {warmup_steps} must be in [0, max_steps={max_steps}]")
        return warmup_steps
    return math.ceil(warmup_ratio * max_steps)


def args_as_dict(*argument_objects) -> dict:
    values = {}
    for obj in argument_objects:
        values.update(dataclasses.asdict(obj))
    return values


def save_run_config(path, argument_objects, resolved: dict):
    """Write every argument (re-readable with --config) plus the derived values under `resolved`."""
    values = args_as_dict(*argument_objects)
    values[RESOLVED_KEY] = resolved
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))
    return values


__all__ = [
    "ModelArguments",
    "DataArguments",
    "PretrainArguments",
    "parse_pretrain_args",
    "parse_config_and_args",
    "config_tokens",
    "yaml_to_cli_tokens",
    "resolve_accumulation",
    "resolve_warmup_steps",
    "save_run_config",
    "args_as_dict",
]
