"""Fine-tune MedVL with transformers' Trainer, in full or with LoRA adapters: findings classification (here), VQA
(train/finetune_vqa.py) and report generation (train/finetune_generation.py).

    accelerate launch train/finetune.py --task classification --data chexpert:/data/CheXpert-v1.0-small \\
        --init runs/p1/checkpoint-best --lora r=16 --output_dir runs/ft1
    accelerate launch train/finetune.py --data synthcxr:n=2000,size=64,seed=0 --output_dir runs/ft-synth
    accelerate launch train/finetune.py --config my_run.yaml --resume_from_checkpoint last
    accelerate launch train/finetune.py --task vqa --data vqa-rad:/data/vqa-rad --init runs/p1/checkpoint-best
    accelerate launch train/finetune.py --task report_generation --data mimic-cxr:/data/mimic-cxr-jpg --init ...

Multi-label CheXpert classification (14 labels or `--labels`), uncertain labels by `--uncertain_policy`, early
stopping on the validation split's macro AUC (`eval_auroc_macro`). The run folder gets run_config.yaml,
checkpoint-<step>/ (Trainer's, with the processor), checkpoint-best/ (the best model, or its LoRA adapter alone
plus config.json; `train.lora_presets.load_finetuned_model` loads either), base_model/ (LoRA from scratch: the
adapter's base), eval_results.json (validation AUC with bootstrap 95% intervals, the majority and untrained
baselines), roc_curves/roc_<label>.png and train_summary.json.
"""

from pathlib import Path

from transformers import Trainer

from processing.augmentation import JointAugmentation
from train.finetune_args import parse_finetune_args, training_values
from train.finetune_data import (
    AugmentedRows,
    ClassificationCollator,
    EpochCallback,
    load_classification_splits,
    resolve_label_names,
)
from train.finetune_eval import AurocMetrics, auroc, majority_baseline, plot_roc_curves, probabilities, summary
from train.finetune_model import build_classifier
from train.finetune_run import (
    start_run,
    BASE_FOLDER,
    BEST_FOLDER,
    EVAL_RESULTS_FILE,
    SUMMARY_FILE,
    log_parameters,
    prepare_model,
    resolve_resume,
    save_best,
    save_run_config,
    training_callbacks,
    write_run_files,
)
from train.logging_utils import get_logger
from train.lora_presets import trainable_parameters

logger = get_logger("medvl.finetune")


def predict_scores(trainer, dataset):
    output = trainer.predict(dataset, metric_key_prefix="final")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return probabilities(logits), output.label_ids


def run_classification(model_args, data_args, args, chosen_training_values=None) -> dict:
    # Argument errors first, before any data is read or generated.
    label_names = resolve_label_names(data_args.labels)
    run = start_run(model_args, data_args, args)
    started, output_dir, is_main, lora, resume, cache_root = (
        run.started, run.output_dir, run.is_main, run.lora, run.resume, run.cache_root
    )
    splits = load_classification_splits(data_args, label_names, cache_root, args.dataloader_num_workers)
    if is_main:
        logger.info(f"training {splits.train_spec}: {len(splits.train)} studies; validation {splits.validation_spec}: "
                    f"{len(splits.validation)} studies; labels (positive/negative/unknown): "
                    + ", ".join(f"{name} {c['positive']}/{c['negative']}/{c['unknown']}"
                                for name, c in splits.train_counts.items()))
        unlearnable = [name for name, count in splits.train_counts.items() if not count["positive"]]
        if unlearnable:
            logger.warning(f"no positive training study for {unlearnable}: the model can only learn to deny them")
    model, processor, base_path = prepare_model(model_args, lora, output_dir, resume, is_main,
                                                lambda: build_classifier(model_args, label_names))
    parameters = trainable_parameters(model)
    log_parameters(parameters, is_main)

    train_dataset, extra = splits.train, []
    if data_args.augment:
        augmentation = JointAugmentation(horizontal_flip=data_args.horizontal_flip, swap_laterality_on_flip=False)
        train_dataset = AugmentedRows(splits.train, augmentation, seed=args.seed)
        extra.append(EpochCallback(train_dataset))
    callbacks = training_callbacks(args, base_path, extra)
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
    save_run_config(output_dir, model_args, data_args, chosen_training_values or training_values(args), resolved,
                    is_main)

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
    results = {
        "task": "classification",
        "split": "validation",
        "data": splits.train_spec,
        "validation_data": splits.validation_spec,
        "num_studies": len(targets),
        **{key: facts[key] for key in ("label_names", "uncertain_policy", "blank_policy")},
        "validation_label_counts": splits.validation_counts,
        "bootstrap_samples": args.bootstrap_samples,
        **summary(final),
        "baselines": baselines,
        "trainable_parameters": facts["trainable_parameters"],
    }
    results["roc_curves"] = plot_roc_curves(scores, targets, label_names, final, output_dir)
    results = write_run_files(trainer, train_result, results, facts, "auroc_macro", started)
    compared = ", ".join(f"{name} {baseline['auroc_macro']:.4f}" for name, baseline in baselines.items())
    low, high = final["auroc_macro_ci"]
    logger.info(f"validation macro AUC {final['auroc_macro']:.4f} (95% CI {low:.4f}-{high:.4f}); baselines: "
                f"{compared}; results in {output_dir / EVAL_RESULTS_FILE}")
    return results


def main(argv=None) -> dict:
    model_args, data_args, args = parse_finetune_args(argv)
    if model_args.task == "vqa":
        from train.finetune_vqa import run_vqa as run
    elif model_args.task == "report_generation":
        from train.finetune_generation import run_report_generation as run
    else:
        run = run_classification
    return run(model_args, data_args, args, training_values(args, argv))


__all__ = [
    "BASE_FOLDER",
    "BEST_FOLDER",
    "EVAL_RESULTS_FILE",
    "SUMMARY_FILE",
    "main",
    "prepare_model",
    "resolve_resume",
    "run_classification",
]

if __name__ == "__main__":
    from train.user_errors import run_main

    run_main(main)
