"""Fine-tune MedVL for findings classification with transformers' Trainer, in full or with LoRA adapters.

    accelerate launch train/finetune.py --task classification --data chexpert:/data/CheXpert-v1.0-small \\
        --init runs/p1/checkpoint-best --lora r=16 --output_dir runs/ft1
    accelerate launch train/finetune.py --data synthcxr:n=2000,size=64,seed=0 --output_dir runs/ft-synth
    accelerate launch train/finetune.py --config my_run.yaml --resume_from_checkpoint last

Multi-label CheXpert classification (14 labels or `--labels`), uncertain labels by `--uncertain_policy`, early
stopping on the validation split's macro AUC (`eval_auroc_macro`). The run folder gets run_config.yaml,
checkpoint-<step>/ (Trainer's, with the processor), checkpoint-best/ (the best model, or its LoRA adapter alone
plus config.json; `train.lora_presets.load_finetuned_model` loads either), base_model/ (LoRA from scratch: the
adapter's base), eval_results.json (validation AUC with bootstrap 95% intervals, the majority and untrained
baselines), roc_curves/roc_<label>.png and train_summary.json.
"""

import json
import time
from pathlib import Path

from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from processing.augmentation import JointAugmentation
from train.finetune_args import parse_finetune_args, save_finetune_config, training_values
from train.finetune_data import (
    AugmentedRows,
    ClassificationCollator,
    EpochCallback,
    load_classification_splits,
    resolve_label_names,
)
from train.finetune_eval import AurocMetrics, auroc, majority_baseline, plot_roc_curves, probabilities, summary
from train.finetune_model import build_classifier, checked_init_folder, load_classifier_weights
from train.logging_utils import get_logger
from train.lora_presets import apply_lora, parse_lora_spec, trainable_parameters

logger = get_logger("medvl.finetune")

BEST_FOLDER = "checkpoint-best"
BASE_FOLDER = "base_model"
EVAL_RESULTS_FILE = "eval_results.json"
SUMMARY_FILE = "train_summary.json"


class SaveModelConfig(TrainerCallback):
    """Writes the model's config.json into each LoRA checkpoint (peft saves only the adapter), so that a checkpoint
    alone tells the loader the label set and the model class."""

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            model.get_base_model().config.save_pretrained(str(folder))


def resolve_resume(value, output_dir):
    """`--resume_from_checkpoint`: a checkpoint folder, or 'last' for the newest one in the run folder."""
    if not value:
        return None
    if value.lower() in ("last", "true"):
        last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-<step> folder in {output_dir}")
        return last
    if not Path(value).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    return value


def prepare_model(model_args, lora, label_names, output_dir, resuming: bool, is_main: bool):
    """(model, processor, base path or None): the classifier, wrapped with LoRA when `lora` is given. LoRA from
    scratch saves its fresh base in the run folder, the weights the adapter belongs to (and reloads it on resume)."""
    model, processor = build_classifier(model_args, label_names)
    model.config.architectures = [type(model).__name__]  # a pretraining checkpoint's config names its own class
    if lora is None:
        return model, processor, None
    if model_args.init:
        base_path = checked_init_folder(model_args.init)
    else:
        base_path = output_dir / BASE_FOLDER
        if resuming and (base_path / "config.json").is_file():
            model = load_classifier_weights(base_path, model.config)
        elif is_main:
            model.save_pretrained(str(base_path))
    return apply_lora(model, lora, base_path), processor, base_path


def save_best(trainer, output_dir, lora: bool) -> Path:
    folder = output_dir / BEST_FOLDER
    trainer.save_model(str(folder))  # the model (or the adapter alone) and the processor
    if lora and trainer.is_world_process_zero():
        trainer.model.get_base_model().config.save_pretrained(str(folder))
    return folder


def predict_scores(trainer, dataset):
    output = trainer.predict(dataset, metric_key_prefix="final")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return probabilities(logits), output.label_ids


def run_classification(model_args, data_args, args, chosen_training_values=None) -> dict:
    started = time.time()
    output_dir = Path(args.output_dir)
    set_seed(args.seed)
    is_main = args.process_index == 0
    # Argument errors first, before any data is read or generated.
    label_names = resolve_label_names(data_args.labels)
    lora = parse_lora_spec(model_args.lora)
    if model_args.init:
        checked_init_folder(model_args.init)
    resume = resolve_resume(args.resume_from_checkpoint, output_dir)
    cache_root = Path(data_args.cache_dir) if data_args.cache_dir else output_dir / "data_cache"
    splits = load_classification_splits(data_args, label_names, cache_root, args.dataloader_num_workers)
    if is_main:
        logger.info(f"training {splits.train_spec}: {len(splits.train)} studies; validation {splits.validation_spec}: "
                    f"{len(splits.validation)} studies; labels (positive/negative/unknown): "
                    + ", ".join(f"{name} {c['positive']}/{c['negative']}/{c['unknown']}"
                                for name, c in splits.train_counts.items()))
        unlearnable = [name for name, count in splits.train_counts.items() if not count["positive"]]
        if unlearnable:
            logger.warning(f"no positive training study for {unlearnable}: the model can only learn to deny them")
    model, processor, base_path = prepare_model(model_args, lora, label_names, output_dir, resume is not None, is_main)
    parameters = trainable_parameters(model)
    if is_main:
        logger.info(f"trainable parameters: {parameters['trainable']:,} of {parameters['total']:,} "
                    f"({100 * parameters['share']:.2f}%)")

    train_dataset, callbacks = splits.train, []
    if data_args.augment:
        augmentation = JointAugmentation(horizontal_flip=data_args.horizontal_flip, swap_laterality_on_flip=False)
        train_dataset = AugmentedRows(splits.train, augmentation, seed=args.seed)
        callbacks.append(EpochCallback(train_dataset))
    if args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    if base_path is not None:
        callbacks.append(SaveModelConfig())
    collator = ClassificationCollator(processor, label_names, data_args.uncertain_policy, data_args.blank_policy)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=splits.validation,
        data_collator=collator,
        processing_class=processor,
        compute_metrics=AurocMetrics(label_names),
        callbacks=callbacks,
    )
    resolved = {
        "label_names": label_names,
        "trainable_parameters": parameters,
        "validation_data": splits.validation_spec,
        "lora_base_model": str(base_path) if base_path else None,
    }
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_finetune_config(output_dir / "run_config.yaml", model_args, data_args,
                             chosen_training_values or training_values(args), resolved)

    baselines = {}
    if args.evaluate_initial_model and resume is None:
        scores, targets = predict_scores(trainer, splits.validation)
        baselines["initial_model"] = summary(auroc(scores, targets, label_names))
    train_result = trainer.train(resume_from_checkpoint=resume)
    save_best(trainer, output_dir, base_path is not None)
    scores, targets = predict_scores(trainer, splits.validation)
    if not trainer.is_world_process_zero():
        return {}

    facts = {
        "label_names": label_names,
        "uncertain_policy": data_args.uncertain_policy,
        "blank_policy": data_args.blank_policy,
        "trainable_parameters": parameters,
        "lora": model_args.lora if lora is not None else None,
    }
    return write_results(trainer, train_result, splits, scores, targets, baselines, facts, args, started)


def write_results(trainer, train_result, splits, scores, targets, baselines, facts, args, started) -> dict:
    """eval_results.json (the best model's validation AUC with bootstrap intervals, the baselines and the run's
    `facts`), the ROC curves and train_summary.json; returns the evaluation record."""
    output_dir, label_names = Path(args.output_dir), facts["label_names"]
    final = auroc(scores, targets, label_names, bootstrap_samples=args.bootstrap_samples, seed=args.seed)
    baselines["majority"] = summary(majority_baseline(splits.train_counts, targets, label_names))
    state = trainer.state
    results = {
        "task": "classification",
        "split": "validation",
        "data": splits.train_spec,
        "validation_data": splits.validation_spec,
        "num_studies": len(targets),
        **{key: facts[key] for key in ("label_names", "uncertain_policy", "blank_policy")},
        "validation_label_counts": splits.validation_counts,
        "model": str(output_dir / BEST_FOLDER),
        "best_checkpoint": state.best_model_checkpoint,
        "bootstrap_samples": args.bootstrap_samples,
        **summary(final),
        "baselines": baselines,
        "trainable_parameters": facts["trainable_parameters"],
    }
    results["roc_curves"] = plot_roc_curves(scores, targets, label_names, final, output_dir)
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
        "final_auroc_macro": final["auroc_macro"],
        "elapsed_s": time.time() - started,
    }
    (output_dir / SUMMARY_FILE).write_text(json.dumps(run_summary, indent=2))
    compared = ", ".join(f"{name} {baseline['auroc_macro']:.4f}" for name, baseline in baselines.items())
    low, high = final["auroc_macro_ci"]
    logger.info(f"validation macro AUC {final['auroc_macro']:.4f} (95% CI {low:.4f}-{high:.4f}); baselines: "
                f"{compared}; results in {output_dir / EVAL_RESULTS_FILE}")
    return results


def main(argv=None) -> dict:
    model_args, data_args, args = parse_finetune_args(argv)
    return run_classification(model_args, data_args, args, training_values(args, argv))


__all__ = ["BASE_FOLDER", "BEST_FOLDER", "main", "prepare_model", "resolve_resume", "run_classification"]

if __name__ == "__main__":
    main()
