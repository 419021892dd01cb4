"""The pieces every fine-tuning task shares (classification, VQA, report generation): resuming, the model with or
without LoRA (and the fresh base a LoRA adapter belongs to), callbacks, the best checkpoint and the run's result
files (eval_results.json, train_summary.json)."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import EarlyStoppingCallback, TrainerCallback, set_seed

from train import checkpointing
from train.finetune_args import save_finetune_config
from train.finetune_model import checked_init_folder, load_task_weights
from train.finetune_preemption import PreemptionCallback
from train.logging_utils import get_logger
from train.lora_presets import apply_lora, parse_lora_spec, trainable_parameters

logger = get_logger("medvl.finetune")

BEST_FOLDER = "checkpoint-best"
BASE_FOLDER = "base_model"
EVAL_RESULTS_FILE = "eval_results.json"
SUMMARY_FILE = "train_summary.json"


@dataclass
class RunStart:
    """What every task's run settles before reading data: the clock, folders, rank, LoRA spec and checkpoint."""

    started: float
    output_dir: Path
    is_main: bool
    lora: object
    resume: str | None
    cache_root: Path


def start_run(model_args, data_args, args) -> RunStart:
    """Seeds, then checks the arguments that name things (LoRA spec, --init folder, checkpoint to resume) before any
    data is read or generated."""
    started = time.time()
    output_dir = Path(args.output_dir)
    set_seed(args.seed)
    lora = parse_lora_spec(model_args.lora)
    if model_args.init:
        checked_init_folder(model_args.init)
    resume = resolve_resume(args.resume_from_checkpoint, output_dir)
    cache_root = Path(data_args.cache_dir) if data_args.cache_dir else output_dir / "data_cache"
    return RunStart(started, output_dir, args.process_index == 0, lora, resume, cache_root)


class SaveModelConfig(TrainerCallback):
    """Writes the model's config.json into each LoRA checkpoint (peft saves only the adapter), so that a checkpoint
    alone tells the loader the label set and the model class."""

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            model.get_base_model().config.save_pretrained(str(folder))


def resolve_resume(value, output_dir):
    """`--resume_from_checkpoint` (or `--resume_from`): a checkpoint folder; `latest` (also `last`) for the newest
    complete checkpoint-<step> in the run folder, a half-written one never counts; `auto`, the same or None to start
    fresh when there is none (a requeued job's command line). See `train.checkpointing.resolve_resume`."""
    if not value:
        return None
    resolved = checkpointing.resolve_resume("latest" if value.lower() in ("last", "true") else value, output_dir)
    return str(resolved) if resolved else None


def prepare_model(model_args, lora, output_dir, resume, is_main: bool, build):
    """(model, processor, base path or None): `build()`'s (model, processor), wrapped with LoRA when `lora` is
    given. LoRA from scratch saves its fresh base in the run folder, the weights the adapter belongs to; a resumed
    run reloads the base its checkpoint's adapter names (or the run folder's)."""
    model, processor = build()
    model.config.architectures = [type(model).__name__]  # a pretraining checkpoint's config names its own class
    if lora is None:
        return model, processor, None
    if model_args.init:
        base_path = Path(model_args.init)
    else:
        base_path = Path(output_dir) / BASE_FOLDER
        recorded = Path(resume or "") / "adapter_config.json"
        if resume and recorded.is_file():
            base_path = Path(json.loads(recorded.read_text()).get("base_model_name_or_path") or base_path)
        if resume and (base_path / "config.json").is_file():
            model = load_task_weights(type(model), base_path, model.config)
        elif is_main:
            model.save_pretrained(str(base_path))
    return apply_lora(model, lora, base_path), processor, base_path


def log_parameters(parameters: dict, is_main: bool):
    if is_main:
        logger.info(f"trainable parameters: {parameters['trainable']:,} of {parameters['total']:,} "
                    f"({100 * parameters['share']:.2f}%)")


def training_callbacks(args, base_path, extra=()) -> list:
    callbacks = list(extra)
    if args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if base_path is not None:
        callbacks.append(SaveModelConfig())
    callbacks.append(PreemptionCallback(SUMMARY_FILE))
    return callbacks


def save_run_config(output_dir, model_args, data_args, training_values: dict, resolved: dict, is_main: bool):
    if is_main:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        save_finetune_config(Path(output_dir) / "run_config.yaml", model_args, data_args, training_values, resolved)


def save_best(trainer, output_dir, lora: bool) -> Path:
    folder = Path(output_dir) / BEST_FOLDER
    trainer.save_model(str(folder))  # the model (or the adapter alone) and the processor
    if lora and trainer.is_world_process_zero():
        trainer.model.get_base_model().config.save_pretrained(str(folder))
    return folder


def write_run_files(trainer, train_result, results: dict, facts: dict, metric: str, started: float) -> dict:
    """eval_results.json (`results`, the best model's evaluation with its baselines) and train_summary.json (the
    run's course: steps, early stop, best checkpoint, `final_<metric>`); returns `results`."""
    output_dir, state = Path(trainer.args.output_dir), trainer.state
    results = {**results, "model": str(output_dir / BEST_FOLDER), "best_checkpoint": state.best_model_checkpoint}
    (output_dir / EVAL_RESULTS_FILE).write_text(json.dumps(results, indent=2))
    run_summary = {
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epochs": state.epoch,
        "stopped_early": state.global_step < state.max_steps,
        "best_metric": state.best_metric,
        "best_checkpoint": state.best_model_checkpoint,
        "train_metrics": train_result.metrics,
        "trainable_parameters": facts["trainable_parameters"],
        "lora": facts["lora"],
        f"final_{metric}": results[metric],
        "elapsed_s": time.time() - started,
    }
    (output_dir / SUMMARY_FILE).write_text(json.dumps(run_summary, indent=2))
    return results


__all__ = [
    "BASE_FOLDER",
    "BEST_FOLDER",
    "EVAL_RESULTS_FILE",
    "SUMMARY_FILE",
    "SaveModelConfig",
    "log_parameters",
    "prepare_model",
    "resolve_resume",
    "save_best",
    "save_run_config",
    "training_callbacks",
    "trainable_parameters",
    "write_run_files",
]
